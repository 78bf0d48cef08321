"""The `robin` command as scripts use it: a real subprocess, a real database file."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from robin.auth.service import identity_for_secret
from robin.config import Settings


def robin(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robin.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def env(tmp_path, ceph_conf):
    return {"ROBIN_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "ROBIN_CEPH_CONF": ceph_conf,
            "ROBIN_STATE_DIR": str(tmp_path / "state"), "ROBIN_LOG_LEVEL": "WARNING"}


def test_token_create_prints_the_token_alone(env):
    assert robin("db", "upgrade", env=env).returncode == 0
    created = robin("token", "create", "--direct", "--admin", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"robin_[A-Za-z0-9_-]{43}\n", created.stdout)

    from robin import create_app

    with create_app(Settings(database_url=env["ROBIN_DATABASE_URL"], ceph_conf=env["ROBIN_CEPH_CONF"])).app_context():
        identity = identity_for_secret(created.stdout.strip())
    assert identity.role.value == "admin" and identity.name == "ci"


def test_token_create_makes_a_node_token_of_no_project(env):
    assert robin("db", "upgrade", env=env).returncode == 0
    created = robin("token", "create", "--direct", "--role", "node", "--name", "csi-nodes", env=env)
    assert created.returncode == 0, created.stderr
    with_project = robin("token", "create", "--direct", "--role", "node", "--project", "web", env=env)
    assert with_project.returncode == 1 and "node tokens need none" in with_project.stderr

    from robin import create_app

    with create_app(Settings(database_url=env["ROBIN_DATABASE_URL"], ceph_conf=env["ROBIN_CEPH_CONF"])).app_context():
        identity = identity_for_secret(created.stdout.strip())
    assert (identity.role.value, identity.project, identity.name) == ("node", None, "csi-nodes")


def test_token_create_registers_a_given_secret_once(env, tmp_path):
    """An installer's Secret becomes a token: the same run again changes nothing, another role is refused."""
    assert robin("db", "upgrade", env=env).returncode == 0
    secret = "robin_" + "k" * 40
    given = tmp_path / "token"
    given.write_text(secret + "\n")
    for said in ("registered", "registered already: nothing changed"):
        result = robin("token", "create", "--admin", "--name", "clients", "--secret-file", str(given), env=env)
        assert (result.returncode, result.stdout, result.stderr.strip()) == (0, "", said)
    other_role = robin("token", "create", "--auditor", "--secret-file", str(given), env=env)
    assert other_role.returncode == 1 and "registered already as admin" in other_role.stderr

    from robin import create_app

    with create_app(Settings(database_url=env["ROBIN_DATABASE_URL"], ceph_conf=env["ROBIN_CEPH_CONF"])).app_context():
        identity = identity_for_secret(secret)
    assert identity.role.value == "admin" and identity.name == "clients"
    listed = json.loads(robin("token", "list", "--direct", "-o", "json", env=env).stdout)
    assert [token["name"] for token in listed] == ["clients"]
    assert robin("token", "revoke", "--direct", str(listed[0]["id"]), env=env).returncode == 0
    revoked = robin("token", "create", "--admin", "--secret-file", str(given), env=env)
    assert revoked.returncode == 1 and "was revoked" in revoked.stderr


@pytest.mark.parametrize("secret", ["", "robin_short", "k" * 46, "robin_" + "k" * 39 + "!"])
def test_token_create_refuses_a_weak_or_malformed_given_secret(env, tmp_path, secret):
    assert robin("db", "upgrade", env=env).returncode == 0
    given = tmp_path / "token"
    given.write_text(secret)
    result = robin("token", "create", "--admin", "--secret-file", str(given), env=env)
    assert result.returncode == 1 and "32 to 200 letters" in result.stderr
    assert json.loads(robin("token", "list", "--direct", "-o", "json", env=env).stdout) == []


def test_member_token_needs_an_existing_project(env):
    robin("db", "upgrade", env=env)
    result = robin("token", "create", "--direct", "--project", "nope", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "project 'nope' does not exist" in result.stderr


def test_token_create_without_a_role_is_a_usage_error(env):
    result = robin("token", "create", env=env)
    assert result.returncode == 2 and "--admin" in result.stderr


def test_serve_refuses_an_unmigrated_database(env):
    result = robin("serve", "--port", "1", env=env)
    assert result.returncode == 1 and "robin db upgrade" in result.stderr


def test_bad_configuration_is_reported_before_anything_runs(env):
    result = robin("db", "upgrade", env={**env, "ROBIN_CEPH_TIMEOUT": "soon"})
    assert result.returncode == 1 and "ROBIN_CEPH_TIMEOUT" in result.stderr


def test_dev_cluster_status_of_a_missing_cluster(tmp_path, env):
    result = robin("dev-cluster", "status", "--dir", str(tmp_path / "none"), env=env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["healthy"] is False


def test_token_create_expires_in_and_token_list(env):
    assert robin("db", "upgrade", env=env).returncode == 0
    created = robin("token", "create", "--direct", "--role", "metrics", "--name", "prometheus", "--expires-in", "30d",
                    env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    listed = robin("token", "list", "--direct", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(row for row in json.loads(listed.stdout) if row["name"] == "prometheus")
    assert (row["role"], row["project"], row["prefix"], row["revoked_at"]) == ("metrics", None, secret[:12], None)
    lifetime = datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(row["created_at"])
    assert abs(lifetime - timedelta(days=30)) < timedelta(minutes=1)
    table = robin("token", "list", "--direct", env=env)
    assert table.returncode == 0 and "prometheus" in table.stdout and "metrics" in table.stdout
    for output in (listed.stdout, table.stdout):
        assert secret not in output and secret[12:] not in output


@pytest.mark.parametrize("expires_in", ["soon", "0d", "-1h", "500y"])
def test_token_create_refuses_a_bad_lifetime(env, expires_in):
    result = robin("token", "create", "--direct", "--admin", "--expires-in", expires_in, env=env)
    assert result.returncode == 2 and "--expires-in" in result.stderr and result.stdout == ""


def _insert_plain_cluster(database_url: str, name: str, key: str) -> None:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        connection.execute("INSERT INTO ceph_clusters (name, mon_host, cephx_key, client_id, is_default, created_at) "
                           "VALUES (?, 'v1:127.0.0.1:9', ?, 'admin', 0, '2026-01-01 00:00:00.000000')", (name, key))


def _stored_key(database_url: str, name: str) -> str:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        return connection.execute("SELECT cephx_key FROM ceph_clusters WHERE name = ?", (name,)).fetchone()[0]


def test_secrets_rotate_re_encrypts_cluster_keys(env):
    from cryptography.fernet import Fernet, InvalidToken

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    plain = "AQBlegacyplainkey00000000000000000000000=="
    url = env["ROBIN_DATABASE_URL"]
    assert robin("db", "upgrade", env=env).returncode == 0
    _insert_plain_cluster(url, "legacy", plain)
    # Any start of robin encrypts the keys an older robin left in plain text, with the first key.
    assert robin("token", "list", "--direct", env={**env, "ROBIN_SECRET_KEY": old}).returncode == 0
    assert Fernet(old).decrypt(_stored_key(url, "legacy").encode()).decode() == plain

    rotated = robin("secrets", "rotate", env={**env, "ROBIN_SECRET_KEY": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert "1 cluster key" in rotated.stdout
    assert Fernet(new).decrypt(_stored_key(url, "legacy").encode()).decode() == plain
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(_stored_key(url, "legacy").encode())
    # Without the key the rows are under, rotation stops and says which key is missing.
    refused = robin("secrets", "rotate", env={**env, "ROBIN_SECRET_KEY": old})
    assert refused.returncode == 1 and "legacy" in refused.stderr and "ROBIN_SECRET_KEY" in refused.stderr


def test_the_default_secret_key_is_made_once_and_private(env):
    assert robin("db", "upgrade", env=env).returncode == 0
    _insert_plain_cluster(env["ROBIN_DATABASE_URL"], "legacy", "AQBplain==")
    assert robin("token", "list", "--direct", env=env).returncode == 0
    key_file = Path(env["ROBIN_STATE_DIR"]) / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert robin("secrets", "rotate", env=env).returncode == 0
    assert key_file.read_text().strip() == key
    from cryptography.fernet import Fernet

    assert Fernet(key).decrypt(_stored_key(env["ROBIN_DATABASE_URL"], "legacy").encode()) == b"AQBplain=="
