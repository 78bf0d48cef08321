"""The gateway's pure parts: password hashes, login throttling, path normalisation, the mount table, why a
session ends."""
from __future__ import annotations

import pytest

from robin.gateway import mountinfo, passwords
from robin.gateway.confined import normalize
from robin.gateway.passwords import hash_password, needs_rehash, verify_password
from robin.gateway.service import AccountState, Login
from robin.gateway.sessions import why_end
from robin.gateway.throttle import LoginThrottle, ThrottleRules


def test_a_password_verifies_against_its_own_salted_hash_only():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)


def test_scrypt_cost_is_owasps_and_older_hashes_verify_but_want_a_rehash(monkeypatch):
    current = hash_password("s3cret")
    assert current.startswith("scrypt$131072$8$1$") and not needs_rehash(current)
    monkeypatch.setattr(passwords, "N", 2**14)
    older = hash_password("s3cret")
    monkeypatch.undo()
    assert verify_password("s3cret", older) and needs_rehash(older)


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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


RULES = ThrottleRules(delay=1.0, max_delay=4.0, account_lockout=4, address_lockout=6, window=60.0)


def test_failed_logins_double_the_delay_up_to_its_cap_then_lock_the_account():
    throttle = LoginThrottle(RULES, Clock())
    delays = []
    for _ in range(4):
        delays.append(throttle.delay("alice", "10.0.0.1"))
        throttle.failed("alice", "10.0.0.1")
    assert delays == [0.0, 1.0, 2.0, 4.0]
    assert throttle.locked("alice", "10.0.0.1") == "account"
    assert throttle.locked("alice", "10.0.0.2") == "account"  # from anywhere
    assert throttle.locked("bob", "10.0.0.2") is None


def test_an_address_spraying_many_accounts_is_locked_and_a_success_does_not_clear_it():
    throttle = LoginThrottle(RULES, Clock())
    for n in range(6):
        throttle.failed(f"user{n}", "10.0.0.1")
        throttle.succeeded("mine")
    assert throttle.locked("mine", "10.0.0.1") == "address"
    assert throttle.locked("mine", "10.0.0.9") is None


def test_a_success_clears_the_account_and_the_window_forgets_everything():
    clock = Clock()
    throttle = LoginThrottle(RULES, clock)
    throttle.failed("alice", "10.0.0.1")
    throttle.succeeded("alice")
    assert throttle.delay("alice", "10.0.0.2") == 0.0
    for _ in range(4):
        throttle.failed("alice", "10.0.0.1")
    clock.now += RULES.window
    assert throttle.locked("alice", "10.0.0.1") is None and throttle.delay("alice", "10.0.0.1") == 0.0
