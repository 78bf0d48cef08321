"""The gateway's pure parts: password hashes, path normalisation, the mount table, why a session ends."""
from __future__ import annotations

import pytest

from robin.gateway import mountinfo
from robin.gateway.confined import normalize
from robin.gateway.passwords import hash_password, verify_password
from robin.gateway.service import AccountState, Login
from robin.gateway.sessions import why_end


def test_a_password_verifies_against_its_own_salted_hash_only():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$16384$8$1$!!$!!", "md5$1$2$3$4$5", "scrypt$x$8$1$AA$AA"])
def test_a_malformed_hash_lets_nobody_in(stored):
    assert verify_password("anything", stored) is False


@pytest.mark.parametrize(("path", "expected"), [
    (b"", b"/"), (b".", b"/"), (b"..", b"/"), (b"/../../etc", b"/etc"), (b"a/./b/../c", b"/a/c"),
    (b"//a//b/", b"/a/b"), (b"/", b"/"),
])
def test_client_paths_are_normalised_below_the_root(path, expected):
    assert normalize(path) == expected


def test_mount_points_are_unescaped(tmp_path, monkeypatch):
    table = tmp_path / "mountinfo"
    table.write_text("36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n"
                     "37 35 0:5 / /proc rw - proc proc rw\n")
    monkeypatch.setattr(mountinfo, "MOUNTINFO", str(table))
    assert mountinfo.mount_points() == {"/mnt/with space", "/proc"}
    assert mountinfo.is_mount_point("/mnt/with space") and not mountinfo.is_mount_point("/mnt")


@pytest.mark.parametrize(("state", "mounted", "reason"), [
    (None, {"/m"}, "the account was removed"),
    (AccountState("/m", True), {"/m"}, "login is forbidden"),
    (AccountState("/other", False), {"/m", "/other"}, "the volume was mounted elsewhere"),
    (AccountState("/m", False), set(), "the volume is no longer mounted"),
    (AccountState("/m", False), {"/m"}, None),
])
def test_why_a_session_ends(state, mounted, reason):
    assert why_end(Login("user", "/m"), state, mounted) == reason
