"""The keys that encrypt secrets at rest: validated at start, read from the environment or a file."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from robin.config import ConfigError, Settings


def test_keys_from_the_environment_newest_first(monkeypatch):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("ROBIN_SECRET_KEY", f"{new}, {old}")
    settings = Settings.from_env()
    assert settings.secret_keys() == (new, old)
    assert new not in repr(settings)  # settings may be logged


def test_keys_from_a_file_with_comments(monkeypatch, tmp_path):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotated 2026-12\n{new}\n\n{old}\n")
    monkeypatch.setenv("ROBIN_SECRET_KEY_FILE", str(key_file))
    assert Settings.from_env().secret_keys() == (new, old)


def test_no_key_configured_means_robin_makes_its_own():
    assert Settings().secret_keys() == ()


@pytest.mark.parametrize("environment, needle", [
    ({"ROBIN_SECRET_KEY": "not-a-key"}, "ROBIN_SECRET_KEY: key 1 is not a Fernet key"),
    ({"ROBIN_SECRET_KEY": f"{Fernet.generate_key().decode()},short"}, "key 2 is not a Fernet key"),
    ({"ROBIN_SECRET_KEY_FILE": "/nonexistent/keys"}, "ROBIN_SECRET_KEY_FILE /nonexistent/keys"),
    ({"ROBIN_SECRET_KEY": Fernet.generate_key().decode(), "ROBIN_SECRET_KEY_FILE": "/etc/hostname"}, "not both"),
    ({"ROBIN_UI_SESSION_SECONDS": "0"}, "ROBIN_UI_SESSION_SECONDS"),
])
def test_bad_keys_stop_at_start_naming_the_variable(monkeypatch, environment, needle):
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env()


def test_an_empty_key_file_is_refused(monkeypatch, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# nothing yet\n")
    monkeypatch.setenv("ROBIN_SECRET_KEY_FILE", str(key_file))
    with pytest.raises(ConfigError, match="holds no key"):
        Settings.from_env()


@pytest.mark.parametrize("database_url, warned", [
    ("postgresql+psycopg://robin@127.0.0.1/robin", True),  # a shared database: replicas on other hosts
    ("", False),  # SQLite in the state directory: one host
])
def test_a_shared_database_without_a_configured_key_is_warned_about(tmp_path, caplog, database_url, warned):
    from robin import crypto

    settings = Settings(state_dir=str(tmp_path), database_url=database_url)
    crypto._Keyring().configure(settings)
    assert ("configure the same key on every replica" in caplog.text) is warned
    assert (tmp_path / "secret_key").exists()
