"""The `robin` command as scripts use it: a real subprocess, a real database file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
    created = robin("token", "create", "--admin", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"robin_[A-Za-z0-9_-]{43}\n", created.stdout)

    from robin import create_app

    with create_app(Settings(database_url=env["ROBIN_DATABASE_URL"], ceph_conf=env["ROBIN_CEPH_CONF"])).app_context():
        identity = identity_for_secret(created.stdout.strip())
    assert identity.role.value == "admin" and identity.name == "ci"


def test_member_token_needs_an_existing_project(env):
    robin("db", "upgrade", env=env)
    result = robin("token", "create", "--project", "nope", env=env)
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
