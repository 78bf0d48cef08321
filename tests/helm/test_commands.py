"""Every robin container the chart runs is a real robin command with real flags, every ROBIN_* variable it sets is
one robin.config reads, and the configuration file it writes is one robin accepts: checked against robin's own
click command tree, csi_shim's argument parser and robin.config's settings classes, not against lists kept here."""
from __future__ import annotations

import dataclasses

import click
import pytest

from robin import config
from robin.cli import main as robin_cli
from tests.helm.chart import VALUES_FILES, config_file, manifests, merged_values, robin_containers, values_of

CSI_SHIM = ["python3", "-m", "csi_shim"]
# Variables the chart sets from the downward API; robin.config reads them as a pod's defaults.
KUBERNETES_VARIABLES = {"POD_NAMESPACE", "NODE_NAME"}


def robin_variables() -> set[str]:
    """Every environment variable robin.config reads: each section's fields, and the configuration file's."""
    names = {config.CONFIG_FILE}
    for section in config.SECTIONS:
        names.update(config._variable(section, f) for f in dataclasses.fields(section))
    return names


def argv(container: dict) -> list[str]:
    return list(container.get("command", [])) + list(container.get("args", []))


def rendered(values_file):
    overrides = values_of(values_file)
    objects = manifests(overrides)
    return objects, robin_containers(objects, merged_values(overrides))


def _robin_command(args: list[str]) -> click.Command:
    """The click command `robin args...` runs, its options parsed as click would (an unknown flag or a bad
    value raises click.UsageError)."""
    command, path = robin_cli, ["robin"]
    while isinstance(command, click.Group):
        assert args and args[0] in command.commands, f"`{' '.join(path + args)}`: not a robin command"
        command, path, args = command.commands[args[0]], path + [args[0]], args[1:]
    command.make_context(" ".join(path), list(args))
    return command


def _container_environment(container: dict, robin_toml: str, tmp_path) -> dict[str, str]:
    """The container's environment as the program sees it: its values, placeholders for what Kubernetes fills in
    (Secrets, the downward API), and the files it reads at start (robin.toml, the token) where it names them."""
    env = {}
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", f"from-kubernetes-{variable['name'].lower()}")
    if config.CONFIG_FILE in env:
        (tmp_path / "robin.toml").write_text(robin_toml)
        env[config.CONFIG_FILE] = str(tmp_path / "robin.toml")
    if "ROBIN_TOKEN_FILE" in env:
        (tmp_path / "token").write_text("robin-token-from-the-secret\n")
        env["ROBIN_TOKEN_FILE"] = str(tmp_path / "token")
    return env


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_robin_containers_run_real_commands_with_real_flags(values_file, monkeypatch, tmp_path):
    from csi_shim.config import parse as parse_shim_flags

    objects, containers = rendered(values_file)
    robin_toml = config_file(objects)
    assert containers
    for workload, container in containers:
        args = argv(container)
        if args[:3] == CSI_SHIM:
            # The shim parses its flags over its environment: set what the container's is.
            for name, value in _container_environment(container, robin_toml, tmp_path).items():
                monkeypatch.setenv(name, value)
            try:
                shim = parse_shim_flags(args[3:])
            except SystemExit:
                pytest.fail(f"{workload['metadata']['name']}: `{' '.join(args)}` is refused by csi_shim")
            assert shim.mode in ("controller", "node")
        else:
            assert args[0] == "robin", f"{workload['metadata']['name']} runs {args[0]!r}, not robin"
            try:
                _robin_command(args[1:])
            except click.UsageError as exc:
                pytest.fail(f"{workload['metadata']['name']}: `{' '.join(args)}`: {exc.format_message()}")


@pytest.mark.parametrize("values_file", ["all-components-values.yaml", "custom-sidecars-values.yaml"])
def test_the_node_plugin_fetches_cephfs_users_with_the_token_the_chart_mounts(values_file, monkeypatch, tmp_path):
    """csi.node.cephfsUsers turns the shim's --cephfs-users on, and the shim then reads robin's URL and the token
    from what the chart gives it (the token standing in for the mounted Secret's)."""
    from csi_shim.config import parse as parse_shim_flags

    objects, containers = rendered(values_file)
    (node,) = [c for w, c in containers if w["kind"] == "DaemonSet" and argv(c)[:3] == CSI_SHIM]
    env = _container_environment(node, config_file(objects), tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shim = parse_shim_flags(argv(node)[3:])
    assert shim.cephfs_users is True
    assert shim.robin.url == env["ROBIN_URL"]
    assert shim.robin.token == "robin-token-from-the-secret"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_variable_the_chart_sets_is_one_robin_reads(values_file):
    known = robin_variables()
    _, containers = rendered(values_file)
    for workload, container in containers:
        for variable in container.get("env", []):
            name = variable["name"]
            if name.startswith(config.ENV_PREFIX):
                assert name in known, f"{workload['metadata']['name']} sets {name}, which robin does not read"
            else:
                assert name in KUBERNETES_VARIABLES, f"{workload['metadata']['name']} sets {name}"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_files_the_variables_name_are_mounted(values_file):
    """A path robin is told to read or write lies in one of the container's volumes (the root is read-only)."""
    paths = {"ROBIN_CONFIG_FILE", "ROBIN_CEPH_CONF", "ROBIN_SECRET_KEY_FILE", "ROBIN_TOKEN_FILE",
             "ROBIN_STATE_DIR", "ROBIN_GATEWAY_DIR"}
    _, containers = rendered(values_file)
    for workload, container in containers:
        mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])]
        for variable in container.get("env", []):
            if variable["name"] in paths:
                path = variable["value"]
                assert any(path == m or path.startswith(m + "/") for m in mounts), \
                    f"{workload['metadata']['name']}: {variable['name']}={path} is in none of its volumes"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_robin_accepts_the_configuration_file(values_file, monkeypatch, tmp_path):
    """Each component reads the file at start and refuses a key no section knows or a malformed value."""
    robin_toml = config_file(manifests(values_of(values_file)))
    (tmp_path / "robin.toml").write_text(robin_toml)
    monkeypatch.setenv(config.CONFIG_FILE, str(tmp_path / "robin.toml"))
    monkeypatch.setenv("ROBIN_URL", "http://robin-api")
    monkeypatch.setenv("ROBIN_TOKEN", "token")
    for section in config.SECTIONS:
        section.from_env()


def test_the_configuration_check_finds_an_unknown_key(monkeypatch, tmp_path):
    robin_toml = config_file(manifests({"config": {"rbd_pool": "rbd"}}))
    (tmp_path / "robin.toml").write_text(robin_toml)
    monkeypatch.setenv(config.CONFIG_FILE, str(tmp_path / "robin.toml"))
    with pytest.raises(config.ConfigError, match="rbd_pool"):
        config.Settings.from_env()


def test_numbers_in_the_values_reach_robin_as_given(monkeypatch, tmp_path):
    """Helm hands templates every number as a float (`86400.0`, `1.099511627776e+12` in robin.toml): robin
    reads each as the number the values gave, and refuses a fraction where a whole number is meant."""
    given = {"trash_delay": 86400, "max_volume_bytes": 2**40 + 2**20, "ceph_timeout": 2.5, "workers": 3}
    (tmp_path / "robin.toml").write_text(config_file(manifests({"config": given})))
    monkeypatch.setenv(config.CONFIG_FILE, str(tmp_path / "robin.toml"))
    settings = config.Settings.from_env()
    assert {name: getattr(settings, name) for name in given} == given
    assert all(type(getattr(settings, name)) is type(value) for name, value in given.items())
    (tmp_path / "robin.toml").write_text(config_file(manifests({"config": {"trash_delay": 86400.5}})))
    with pytest.raises(config.ConfigError, match="trash_delay: 86400.5 is not a valid int"):
        config.Settings.from_env()
