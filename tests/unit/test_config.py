from __future__ import annotations

import pytest

from robin.client import ClientConfig
from robin.config import ConfigError, CsiSettings, MigrateSettings, ProvisionerSettings, Settings


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("ROBIN_CEPH_TIMEOUT", "2.5")
    monkeypatch.setenv("ROBIN_RBD_POOLS", "rbd, fast")
    monkeypatch.setenv("ROBIN_WORKERS", "3")
    settings = Settings.from_env()
    assert settings.ceph_timeout == 2.5 and settings.rbd_pools == ("rbd", "fast") and settings.workers == 3


def test_file_then_environment(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text('port = 9000\nrbd_pools = ["rbd", "ssd"]\ndatabase_url = "sqlite:///x.db"\n')
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    monkeypatch.setenv("ROBIN_PORT", "9001")
    settings = Settings.from_env()
    assert settings.port == 9001 and settings.rbd_pools == ("rbd", "ssd") and settings.database_url == "sqlite:///x.db"


@pytest.mark.parametrize("variable, value, needle", [
    ("ROBIN_PORT", "eighty", "ROBIN_PORT"),
    ("ROBIN_PORT", "70000", "ROBIN_PORT"),
    ("ROBIN_CEPH_TIMEOUT", "0", "ROBIN_CEPH_TIMEOUT"),
    ("ROBIN_DATABASE_LOCK_TIMEOUT", "0", "ROBIN_DATABASE_LOCK_TIMEOUT"),
    ("ROBIN_RBD_DEFAULT_POOL", "elsewhere", "ROBIN_RBD_DEFAULT_POOL"),
    ("ROBIN_RBD_DEFAULT_FEATURES", "layering,warp-drive", "warp-drive"),
    ("ROBIN_GATEWAY_ACTIVATION_WAIT", "0", "ROBIN_GATEWAY_ACTIVATION_WAIT"),
    ("ROBIN_GATEWAY_RECONCILE_INTERVAL", "-1", "ROBIN_GATEWAY_RECONCILE_INTERVAL"),
    ("ROBIN_USAGE_HISTORY_RAW_DAYS", "0", "ROBIN_USAGE_HISTORY_RAW_DAYS"),
    ("ROBIN_USAGE_HISTORY_HOURLY_DAYS", "6", "ROBIN_USAGE_HISTORY_HOURLY_DAYS"),  # under the raw days' 7
    ("ROBIN_USAGE_FORECAST_DAYS", "0", "ROBIN_USAGE_FORECAST_DAYS"),
    ("ROBIN_SWITCH_INTERVAL_MS", "0", "ROBIN_SWITCH_INTERVAL_MS"),
    ("ROBIN_SWITCH_INTERVAL_MS", "5s", "ROBIN_SWITCH_INTERVAL_MS"),
])
def test_bad_values_stop_at_start_naming_the_variable(monkeypatch, variable, value, needle):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env()


def test_unknown_key_in_file_is_an_error(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text("colour = 'blue'\n")
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    with pytest.raises(ConfigError, match="colour"):
        Settings.from_env()


@pytest.mark.parametrize("root", ["/robin/..", "/robin/./x", "//", "/", "/a//b", "robin", "./robin",
                                  "/robin/../etc", "/robin\n"])
def test_cephfs_root_that_is_not_plainly_absolute_stops_at_start(monkeypatch, root):
    monkeypatch.setenv("ROBIN_CEPHFS_ROOT", root)
    with pytest.raises(ConfigError, match="ROBIN_CEPHFS_ROOT"):
        Settings.from_env()


@pytest.mark.parametrize("root, stored", [("/robin", "/robin"), ("/robin/", "/robin"), ("/a/b.c/d/", "/a/b.c/d")])
def test_cephfs_root_is_stored_normalised(monkeypatch, root, stored):
    monkeypatch.setenv("ROBIN_CEPHFS_ROOT", root)
    assert Settings.from_env().cephfs_root == stored


def test_max_volume_bytes_beyond_the_size_columns_stops_at_start(monkeypatch):
    monkeypatch.setenv("ROBIN_MAX_VOLUME_BYTES", str(2**63))
    with pytest.raises(ConfigError, match="ROBIN_MAX_VOLUME_BYTES"):
        Settings.from_env()


def test_state_dir_places_the_database_and_the_gateway_from_the_file_too(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text(f'state_dir = "{tmp_path}/state"\n')
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    settings = Settings.from_env()
    assert settings.database_url == f"sqlite:///{tmp_path}/state/robin.db"
    assert settings.gateway_dir == f"{tmp_path}/state/gateway"


def test_the_settings_never_look_for_the_dev_cluster(monkeypatch, tmp_path):
    (tmp_path / "ceph.conf").write_text("[global]\n")
    monkeypatch.setenv("ROBIN_DEV_CLUSTER_DIR", str(tmp_path))
    monkeypatch.delenv("ROBIN_CEPH_CONF", raising=False)
    assert Settings.from_env().ceph_conf == ""


def test_one_file_serves_every_component(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text('port = 9000\nprovisioner_workers = 3\nprovisioner_leader_elect = false\ncsi_mode = "node"\n'
                    'csi_endpoint = "unix:///tmp/x.sock"\nurl = "http://robin:8080/"\n'
                    f'token_file = "{tmp_path}/token"\nmigrate_rbd_mounter = "krbd"\n')
    (tmp_path / "token").write_text("robin_secret\n")
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    assert Settings.from_env().port == 9000
    provisioner = ProvisionerSettings.from_env()
    assert provisioner.workers == 3 and provisioner.leader_elect is False
    csi = CsiSettings.from_env()
    assert csi.mode == "node" and csi.endpoint == "unix:///tmp/x.sock"
    client = ClientConfig.from_env()
    assert client.url == "http://robin:8080" and client.token == "robin_secret"
    assert MigrateSettings.from_env().rbd_mounter == "krbd"


def test_environment_and_flags_win_over_the_file_in_every_section(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text('provisioner_workers = 3\nprovisioner_qps = 5.0\ncsi_workers = 4\nurl = "http://file"\n'
                    'token = "from-file"\n')
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    monkeypatch.setenv("ROBIN_PROVISIONER_WORKERS", "6")
    monkeypatch.setenv("ROBIN_CSI_WORKERS", "7")
    monkeypatch.setenv("ROBIN_URL", "http://env")
    provisioner = ProvisionerSettings.from_env(qps=9.0, burst=None)
    assert (provisioner.workers, provisioner.qps, provisioner.burst) == (6, 9.0, 100)
    assert CsiSettings.from_env().workers == 7
    client = ClientConfig.from_env()
    assert (client.url, client.token) == ("http://env", "from-file")


def test_the_kubernetes_downward_api_variables_are_fallbacks(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "storage")
    monkeypatch.setenv("NODE_NAME", "worker-3")
    assert ProvisionerSettings.from_env().lease_namespace == "storage"
    assert CsiSettings.from_env().node_id == "worker-3"
    monkeypatch.setenv("ROBIN_CSI_NODE_ID", "explicit")
    assert CsiSettings.from_env().node_id == "explicit"


@pytest.mark.parametrize("section, variable, value", [
    (ProvisionerSettings, "ROBIN_PROVISIONER_WORKERS", "0"),
    (ProvisionerSettings, "ROBIN_PROVISIONER_QPS", "fast"),
    (CsiSettings, "ROBIN_CSI_MODE", "both"),
    (CsiSettings, "ROBIN_CSI_MOUNTER", "nfs"),
    (CsiSettings, "ROBIN_CSI_WORKERS", "many"),
    (MigrateSettings, "ROBIN_MIGRATE_RBD_MOUNTER", "nfs"),
])
def test_every_section_names_its_bad_variable(monkeypatch, section, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        section.from_env()


def test_a_key_of_no_section_stops_every_component(monkeypatch, tmp_path):
    conf = tmp_path / "robin.toml"
    conf.write_text("provisioner_wrokers = 3\n")
    monkeypatch.setenv("ROBIN_CONFIG_FILE", str(conf))
    for section in (Settings, ProvisionerSettings, CsiSettings, MigrateSettings):
        with pytest.raises(ConfigError, match="provisioner_wrokers"):
            section.from_env()


def test_an_unconfigured_or_unreadable_api_is_named(monkeypatch, tmp_path):
    for variable in ("ROBIN_URL", "ROBIN_TOKEN", "ROBIN_TOKEN_FILE"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match="ROBIN_URL and ROBIN_TOKEN"):
        ClientConfig.from_env()
    with pytest.raises(ConfigError, match="ROBIN_TOKEN_FILE"):
        ClientConfig.from_env(url="http://robin", token_file=str(tmp_path / "missing"))


def test_the_cli_finds_the_dev_cluster_when_no_ceph_is_configured(monkeypatch, tmp_path):
    from robin import cli

    monkeypatch.setenv("ROBIN_DEV_CLUSTER_DIR", str(tmp_path))
    monkeypatch.delenv("ROBIN_CEPH_CONF", raising=False)
    assert cli._settings().ceph_conf == ""  # no cluster there yet
    (tmp_path / "ceph.conf").write_text("[global]\n")
    assert cli._settings().ceph_conf == str(tmp_path / "ceph.conf")
    monkeypatch.setenv("ROBIN_CEPH_CONF", "/etc/ceph/ceph.conf")
    assert cli._settings().ceph_conf == "/etc/ceph/ceph.conf"


def test_the_csi_flags_take_the_token_file_without_touching_the_environment(monkeypatch, tmp_path):
    import os

    from csi_shim import config as shim_config

    for variable in ("ROBIN_TOKEN", "ROBIN_TOKEN_FILE"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "token").write_text("robin_secret\n")
    parsed = shim_config.parse(["--mode", "controller", "--robin-url", "http://robin",
                                "--robin-token-file", str(tmp_path / "token")])
    assert parsed.robin.token == "robin_secret" and "ROBIN_TOKEN_FILE" not in os.environ


def test_a_bad_csi_variable_stops_the_plugin_naming_it(monkeypatch, capsys):
    from csi_shim import config as shim_config

    monkeypatch.setenv("ROBIN_CSI_WORKERS", "many")
    with pytest.raises(SystemExit):
        shim_config.parse(["--mode", "node"])
    assert "ROBIN_CSI_WORKERS" in capsys.readouterr().err


def test_no_workers_configured_means_two_per_available_cpu_within_bounds(monkeypatch):
    from robin.config import auto_workers, available_cpus

    monkeypatch.delenv("ROBIN_WORKERS", raising=False)
    assert Settings.from_env().workers == auto_workers() == min(8, max(2, 2 * available_cpus()))
    monkeypatch.setenv("ROBIN_WORKERS", "0")
    assert Settings.from_env().workers == auto_workers()


@pytest.mark.parametrize("cpu_max, cpus", [("50000 100000\n", 1), ("max 100000\n", None), ("garbage\n", None)])
def test_available_cpus_honour_a_cgroup_cpu_quota(tmp_path, cpu_max, cpus):
    import os

    from robin.config import available_cpus

    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(path) == (cpus or len(os.sched_getaffinity(0)))
    assert available_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("layouts", ["cephfs:volume", "cephfs", "other:subvolume", "cephfs:subvolume,cephfs:directory"])
def test_cephfs_layouts_that_name_no_known_file_system_and_layout_stop_at_start(monkeypatch, layouts):
    monkeypatch.setenv("ROBIN_CEPHFS_LAYOUTS", layouts)
    with pytest.raises(ConfigError, match="ROBIN_CEPHFS_LAYOUTS"):
        Settings.from_env()


def test_cephfs_layout_is_per_file_system_and_directory_unless_named(monkeypatch):
    monkeypatch.setenv("ROBIN_CEPHFS_FILESYSTEMS", "cephfs,archive,old")
    monkeypatch.setenv("ROBIN_CEPHFS_LAYOUTS", "cephfs:subvolume, old:directory")
    settings = Settings.from_env()
    assert [settings.cephfs_layout(fs) for fs in ("cephfs", "archive", "old")] == ["subvolume", "directory",
                                                                                  "directory"]
