"""Contexts: robin APIs by name in $XDG_CONFIG_HOME/robin/config.toml, as kubeconfig has clusters, used by the
resource commands against the session's real `robin serve`."""
from __future__ import annotations

import json
import stat
import tomllib

from tests.cli.test_audit_events_cli import robin
from tests.conftest import make_token, unique

SILENT = "http://127.0.0.1:9"  # the discard port: nothing answers there


def test_contexts_are_kept_chosen_and_used(robin_url, admin_token, app, new_project, tmp_path):
    home = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    project = new_project()
    (tmp_path / "admin.token").write_text(admin_token + "\n")
    (tmp_path / "member.token").write_text(make_token(app, "member", project) + "\n")

    def run(*args: str, **env: str):
        result = robin(*args, env={**home, **env})
        assert "Traceback" not in result.stderr
        return result

    assert run("config", "set-context", "lab", "--url", robin_url, "--token-file",
               str(tmp_path / "admin.token")).returncode == 0
    assert run("config", "set-context", "away", "--url", SILENT, "--token-file", str(tmp_path / "admin.token"),
               "--project", project).returncode == 0
    path = tmp_path / "xdg" / "robin" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text())["current-context"] == "lab"  # the first one made
    assert json.loads(run("config", "get-contexts", "-o", "json").stdout) == [
        {"current": "*", "name": "lab", "url": robin_url, "token_file": str(tmp_path / "admin.token"),
         "project": ""},
        {"current": "", "name": "away", "url": SILENT, "token_file": str(tmp_path / "admin.token"),
         "project": project}]

    # The current context, with nothing in the environment.
    listed = run("project", "list", "-o", "name")
    assert listed.returncode == 0 and project in listed.stdout.split()
    # Another one, named by the flag or by ROBIN_CONTEXT.
    for chosen in (run("project", "list", "--context", "away"), run("project", "list", ROBIN_CONTEXT="away")):
        assert chosen.returncode == 1 and chosen.stderr.startswith(f"unreachable: robin's API at {SILENT}")
    # ROBIN_URL (with its token) wins over the current context; an explicitly chosen context wins over it.
    assert run("config", "use-context", "away").returncode == 0
    assert run("config", "current-context").stdout == "away\n"
    assert run("project", "list", ROBIN_URL=robin_url, ROBIN_TOKEN=admin_token).returncode == 0
    assert run("project", "list", "--context", "lab", ROBIN_URL=SILENT, ROBIN_TOKEN=admin_token).returncode == 0
    # Flags win over the context: its project is the default of commands given none.
    volume = unique("img")
    made = run("volume", "create", volume, "--size", "64Mi", "--url", robin_url, "--token-file",
               str(tmp_path / "member.token"), "-o", "json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["project"] == project
    assert run("volume", "delete", volume, "--purge", "--context", "lab", "-p", project).returncode == 0

    assert run("config", "delete-context", "away").returncode == 0
    assert run("config", "current-context").returncode == 1
    assert json.loads(run("config", "get-contexts", "-o", "json").stdout)[0]["name"] == "lab"


def test_unknown_contexts_and_broken_files_exit_1(tmp_path, robin_url):
    home = {"XDG_CONFIG_HOME": str(tmp_path)}
    unknown = robin("project", "list", "--context", "nowhere", env=home)
    assert unknown.returncode == 1 and "no context 'nowhere'" in unknown.stderr
    assert robin("config", "use-context", "nowhere", env=home).returncode == 1
    (tmp_path / "robin").mkdir()
    (tmp_path / "robin" / "config.toml").write_text('[contexts.x]\nurl = "http://h"\npasword = "typo"\n')
    typo = robin("project", "list", env=home)
    assert typo.returncode == 1 and "unknown key 'pasword'" in typo.stderr and "Traceback" not in typo.stderr
    (tmp_path / "robin" / "config.toml").write_text('current-context = "x"\n[contexts.x]\nurl = "http://h"\n')
    tokenless = robin("project", "list", env=home)
    assert tokenless.returncode == 1 and "context 'x' has no token-file" in tokenless.stderr
    (tmp_path / "robin" / "config.toml").write_text("current-context = \n")
    broken = robin("config", "get-contexts", env=home)
    assert broken.returncode == 1 and str(tmp_path / "robin" / "config.toml") in broken.stderr


def test_the_file_is_under_home_without_xdg_config_home(tmp_path, robin_url):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": ""}
    assert robin("config", "set-context", "lab", "--url", robin_url, "--token-file", "~/t", env=env).returncode == 0
    written = tomllib.loads((tmp_path / ".config" / "robin" / "config.toml").read_text())
    assert written == {"current-context": "lab", "contexts": {"lab": {"url": robin_url, "token-file": "~/t"}}}
    missing = robin("project", "list", env=env)
    assert missing.returncode == 1 and f"{tmp_path}/t" in missing.stderr  # ~ is the user's home
