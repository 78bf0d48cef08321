"""Configuration: the one place robin reads its environment, validated at start.

Each component has a section, a frozen dataclass whose `from_env` reads it from `ROBIN_*` environment variables
and from the TOML file named by ROBIN_CONFIG_FILE alike:

  Settings             the server (`robin serve` and the CLI's commands), with the data gateway's `gateway_*`
                       fields (ROBIN_GATEWAY_*): `robin gateway`, the node agent, mounts activated volumes; the
                       API records activations and waits ROBIN_GATEWAY_ACTIVATION_WAIT for the agent
  ProvisionerSettings  `robin provisioner` (ROBIN_PROVISIONER_*)
  CsiSettings          the CSI plugin, `python -m csi_shim` (ROBIN_CSI_*)
  ClientSettings       robin's API for the programs that call it (ROBIN_URL, ROBIN_TOKEN, ROBIN_TOKEN_FILE)
  MigrateSettings      `robin migrate gluster` (ROBIN_MIGRATE_*)

Precedence: explicit keyword arguments (command-line flags) > environment > file > defaults. A file key is its
variable's name without `ROBIN_`, in lower case (ROBIN_PORT: `port`, ROBIN_PROVISIONER_WORKERS:
`provisioner_workers`), so one file serves every component; a key no section knows is an error. A bad value stops
the process at start with a message naming the variable, instead of failing later inside a request.
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

ENV_PREFIX = "ROBIN_"
CONFIG_FILE = "ROBIN_CONFIG_FILE"
# The largest value of the database's BigInteger columns (sizes, quotas in bytes).
BIGINT_MAX = 2**63 - 1
RBD_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten")
# How a host maps RBD images: rbd-fuse needs no kernel module.
RBD_MOUNTERS = ("rbd-fuse", "krbd", "rbd-nbd")
# How a CephFS file system holds robin's volumes (Settings.cephfs_layouts).
CEPHFS_DIRECTORY, CEPHFS_SUBVOLUME = "directory", "subvolume"
CEPHFS_LAYOUTS = (CEPHFS_DIRECTORY, CEPHFS_SUBVOLUME)
CSI_MODES = ("controller", "node", "all")
LOG_FORMATS = ("auto", "json", "human")
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# robin serve's workers when ROBIN_WORKERS is 0: this many per CPU the process may use, within the bounds. A request
# costs CPU under the interpreter's lock, so processes, not threads, spread reads over the CPUs (BENCHMARKS.md); each
# worker is a whole interpreter with the app loaded, about 110 MiB resident, hence the upper bound.
WORKERS_PER_CPU = 2
AUTO_WORKERS_MIN, AUTO_WORKERS_MAX = 2, 8
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Settings.database_lock_timeout's default, and robin.db's for the processes that configure it without settings.
DATABASE_LOCK_TIMEOUT_S = 10.0


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _env(name: str, default: str = "") -> str:
    """The one read of this process's environment (a variable set empty counts as unset)."""
    return os.environ.get(name) or default


class _Section:
    """What every section shares: its variables are `<env_prefix><FIELD>` unless a field's metadata names its
    own (`env`), and it is read by `from_env`."""

    env_prefix: ClassVar[str] = ENV_PREFIX

    @classmethod
    def from_env(cls, **overrides) -> Self:
        """The file, then the environment, then the `overrides` that are not None; validated."""
        values = _file_values(cls)
        values.update(_env_values(cls))
        values.update({name: value for name, value in overrides.items() if value is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the variable of the first bad value."""


@dataclass(frozen=True)
class Settings(_Section):
    # The SQLite file (when database_url is not given), the metrics of `robin serve`, the keys robin makes itself.
    state_dir: str = str(Path.home() / ".local/state/robin")
    database_url: str = ""  # empty: SQLite in state_dir
    # Seconds a database statement waits for a lock another transaction holds (PostgreSQL's lock_timeout, SQLite's
    # busy timeout) before its request answers 503 database_busy. robin holds its own locks for milliseconds, never
    # across a Ceph call, so a wait this long means a stuck holder (a session that died mid-transaction, an
    # operator's psql), and each waiting request holds a worker's thread: short enough that a stuck project's
    # writers cannot take every thread, well inside the 60 s its clients wait for an answer.
    database_lock_timeout: float = DATABASE_LOCK_TIMEOUT_S
    # Empty: none, unless the command finds the dev cluster's (robin.cli), so `make run` needs no configuration.
    ceph_conf: str = ""
    ceph_client_id: str = "admin"
    # Seconds before a Ceph call gives up; applied to mon ops, OSD ops and the initial connect,
    # so an outage becomes a 503 within this time rather than a hung worker.
    ceph_timeout: float = 10.0
    rbd_default_pool: str = "rbd"
    # Pools tenants may place images in; others are refused so a project cannot write into,
    # say, the CephFS metadata pool.
    rbd_pools: tuple[str, ...] = ("rbd",)
    rbd_default_features: tuple[str, ...] = RBD_FEATURES
    # CephFS paths are directories <cephfs_root>/<project>/<name> in one of these file systems.
    cephfs_root: str = "/robin"
    cephfs_default_fs: str = "cephfs"
    cephfs_filesystems: tuple[str, ...] = ("cephfs",)
    # How each file system holds robin's new CephFS volumes, as <fs>:<layout> entries: "directory" (the
    # directories above; any file system not named) or "subvolume" (a mgr subvolume per volume, in a subvolume
    # group per project). A volume keeps the layout it was made with.
    cephfs_layouts: tuple[str, ...] = ()
    max_volume_bytes: int = 64 * 2**40
    # Seconds a deleted volume waits in the trash (restorable) before it is purged.
    trash_delay: int = 24 * 3600
    # Seconds between two rounds of the purge (and reconcile) loop in `robin serve`; 0 turns it off.
    maintenance_interval: int = 60
    # Seconds between two drift surveys of the maintenance loop; the metrics scrape reports the last one's
    # counts and age. 0: the loop never surveys.
    drift_interval: int = 900
    # RBD images a drift survey opens at most in each pool (robin.audit.image_checks): those whose header
    # changed first, then those checked longest ago; the rest come from their last check. A survey's cost is
    # bounded by this, not by the number of images.
    drift_opens: int = 200
    host: str = "127.0.0.1"
    port: int = 8080
    # gunicorn worker processes; 0: WORKERS_PER_CPU per CPU the process may use (auto_workers).
    workers: int = 0
    # Threads per worker: enough to overlap the waits for Ceph and the database, few enough that a worker's
    # requests do not queue for its interpreter lock.
    threads: int = 4
    # Milliseconds a thread runs Python before the interpreter asks it to let another take the lock
    # (sys.setswitchinterval, in each worker). A thread back from I/O (a database round trip, a Ceph call, a socket)
    # waits up to this long behind a thread running Python, several times per request (BENCHMARKS.md).
    switch_interval_ms: float = 5.0
    log_level: str = "INFO"
    # auto: human lines on a terminal, one JSON object a line otherwise (a log collector's); json or human to choose.
    log_format: str = "auto"
    # Bytes a request body may hold; a larger one is refused (413) before authentication, so nobody can
    # make robin read, parse or audit megabytes; robin's own bodies are small JSON documents.
    max_request_bytes: int = 2**20
    # Ceph calls made at once by a usage refresh (`robin audit usage`; a call measures 32 images of a pool
    # from their object maps, or one volume): the bindings release the GIL, so threads overlap their round
    # trips to the OSDs and the MDS.
    usage_parallelism: int = 16
    # Usage history (robin.audit.history): each refresh's samples are kept as they are for usage_history_raw_days,
    # then as hourly means until usage_history_hourly_days, then as daily means until usage_history_daily_days.
    usage_history_raw_days: int = 7
    usage_history_hourly_days: int = 90
    usage_history_daily_days: int = 730
    # Days of history a forecast fits its growth rates to (robin.audit.forecast).
    usage_forecast_days: int = 14
    # The Wayne platform's /v1 API: the project that owns the volumes it creates.
    wayne_project: str = "wayne"
    # The data gateway (`robin gateway`): SFTP for people, on volumes activated through /v1.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 2022
    # Where activated volumes are mounted, and the SSH host key (made on first start, kept across restarts).
    gateway_dir: str = ""  # empty: state_dir/gateway
    # How the gateway's host maps RBD images (the CSI node's mounters): rbd-fuse needs no kernel module.
    gateway_mounter: str = "rbd-fuse"
    # Seconds a /v1 activation or deactivation waits for `robin gateway` (the agent) to report its mount or
    # unmount before answering 503 gateway_unavailable (more than the 40 s a ceph-fuse daemon may take to exit
    # after its unmount); and how often the agent compares the activations the database asks for with what is
    # mounted.
    gateway_activation_wait: float = 60.0
    gateway_reconcile_interval: float = 1.0
    # Fernet keys that encrypt secrets at rest (registered clusters' cephx keys), newest first: robin encrypts
    # with the first and decrypts with any, so a rotation puts the new key first and keeps the old ones until
    # `robin secrets rotate` has re-encrypted every row. The dashboard's cookies are signed with a key derived
    # from the first, so every replica behind one load balancer needs the same keys. Neither set: a key made on
    # first start in $ROBIN_STATE_DIR/secret_key (0600), which only one host has. Kept out of repr: settings may
    # be logged.
    secret_key: str = field(default="", repr=False)
    secret_key_file: str = ""
    # The dashboard's logins: seconds a session lasts, and Secure cookies even when robin itself is reached over
    # plain HTTP (behind a TLS-terminating proxy); over HTTPS they are Secure anyway.
    ui_session_seconds: int = 8 * 3600
    ui_secure_cookies: bool = False
    # Threads doing the SFTP sessions' file I/O (each session uses one at a time): a hung file or FUSE mount
    # holds one of them, never the event loop.
    gateway_io_threads: int = 16
    # Failed logins, per account and per source address: the next attempt waits gateway_login_delay seconds,
    # doubled at each further failure (at most gateway_login_max_delay); after gateway_account_lockout failures
    # in a row the account (gateway_address_lockout: the address) is refused outright until
    # gateway_lockout_seconds passed since its last failure.
    gateway_login_delay: float = 1.0
    gateway_login_max_delay: float = 16.0
    gateway_account_lockout: int = 10
    gateway_address_lockout: int = 50
    gateway_lockout_seconds: int = 900
    # Where `robin dev-cluster` keeps its cluster (and where the CLI looks for its ceph.conf).
    dev_cluster_dir: str = str(Path.home() / ".local/state/robin/dev-cluster")

    def __post_init__(self) -> None:
        # Defaults that follow state_dir, wherever that was set.
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{Path(self.state_dir) / 'robin.db'}")
        if not self.gateway_dir:
            object.__setattr__(self, "gateway_dir", str(Path(self.state_dir) / "gateway"))
        if self.workers == 0:
            object.__setattr__(self, "workers", auto_workers())

    def validate(self) -> None:
        if self.ceph_timeout <= 0:
            raise ConfigError("ROBIN_CEPH_TIMEOUT must be a positive number of seconds")
        if self.database_lock_timeout <= 0:
            raise ConfigError("ROBIN_DATABASE_LOCK_TIMEOUT must be a positive number of seconds")
        if self.rbd_default_pool not in self.rbd_pools:
            raise ConfigError("ROBIN_RBD_DEFAULT_POOL must be one of ROBIN_RBD_POOLS")
        if self.cephfs_default_fs not in self.cephfs_filesystems:
            raise ConfigError("ROBIN_CEPHFS_DEFAULT_FS must be one of ROBIN_CEPHFS_FILESYSTEMS")
        self._validate_cephfs_layouts()
        # Stored normalised: every CephFS path robin makes, drift reports and adoption start from it.
        object.__setattr__(self, "cephfs_root", _cephfs_root(self.cephfs_root))
        unknown = set(self.rbd_default_features) - set(RBD_FEATURES)
        if unknown:
            raise ConfigError(f"ROBIN_RBD_DEFAULT_FEATURES has unknown features: {sorted(unknown)}")
        if self.workers < 0:
            raise ConfigError("ROBIN_WORKERS must be 0 (two per CPU) or more")
        _require_choice(self.log_format, LOG_FORMATS, "ROBIN_LOG_FORMAT")
        if not 0 < self.switch_interval_ms <= 1000:
            raise ConfigError("ROBIN_SWITCH_INTERVAL_MS must be more than 0 and at most 1000 milliseconds")
        if self.max_volume_bytes <= 0 or self.threads <= 0 or self.max_request_bytes <= 0:
            raise ConfigError("ROBIN_MAX_VOLUME_BYTES, ROBIN_THREADS and ROBIN_MAX_REQUEST_BYTES must be positive")
        if self.max_volume_bytes > BIGINT_MAX:
            raise ConfigError(f"ROBIN_MAX_VOLUME_BYTES must be at most {BIGINT_MAX} (what the database's size "
                              "columns hold)")
        if not 0 < self.usage_parallelism <= 256:
            raise ConfigError("ROBIN_USAGE_PARALLELISM must be between 1 and 256")
        if not 1 <= self.usage_history_raw_days <= self.usage_history_hourly_days <= self.usage_history_daily_days:
            raise ConfigError("ROBIN_USAGE_HISTORY_RAW_DAYS, ROBIN_USAGE_HISTORY_HOURLY_DAYS and "
                              "ROBIN_USAGE_HISTORY_DAILY_DAYS must be 1 or more days, each at least the one before")
        if not 1 <= self.usage_forecast_days <= self.usage_history_daily_days:
            raise ConfigError("ROBIN_USAGE_FORECAST_DAYS must be between 1 and ROBIN_USAGE_HISTORY_DAILY_DAYS days")
        if self.drift_opens < 4:
            raise ConfigError("ROBIN_DRIFT_OPENS must be 4 or more (a quarter goes to the images checked longest ago)")
        if self.trash_delay < 0 or self.maintenance_interval < 0 or self.drift_interval < 0:
            raise ConfigError("ROBIN_TRASH_DELAY, ROBIN_MAINTENANCE_INTERVAL and ROBIN_DRIFT_INTERVAL must be 0 or "
                              "more seconds")
        if not 0 < self.port < 65536 or not 0 < self.gateway_port < 65536:
            raise ConfigError("ROBIN_PORT and ROBIN_GATEWAY_PORT must be TCP ports")
        if self.ui_session_seconds <= 0:
            raise ConfigError("ROBIN_UI_SESSION_SECONDS must be a positive number of seconds")
        self._validate_gateway()
        self.secret_keys()

    def cephfs_layout(self, fs_name: str) -> str:
        """The layout of robin's new volumes in that file system (cephfs_layouts)."""
        layouts = dict(entry.split(":", 1) for entry in self.cephfs_layouts)
        return layouts.get(fs_name, CEPHFS_DIRECTORY)

    def _validate_cephfs_layouts(self) -> None:
        named = []
        for entry in self.cephfs_layouts:
            fs_name, _, layout = entry.partition(":")
            if fs_name not in self.cephfs_filesystems or layout not in CEPHFS_LAYOUTS:
                raise ConfigError(f"ROBIN_CEPHFS_LAYOUTS: {entry!r} is not <fs>:<layout> with <fs> one of "
                                  f"ROBIN_CEPHFS_FILESYSTEMS and <layout> one of {', '.join(CEPHFS_LAYOUTS)}")
            named.append(fs_name)
        if len(set(named)) != len(named):
            raise ConfigError("ROBIN_CEPHFS_LAYOUTS names a file system twice")

    def secret_keys(self) -> tuple[str, ...]:
        """The configured Fernet keys, newest first; () when robin is to make its own."""
        if self.secret_key and self.secret_key_file:
            raise ConfigError("set one of ROBIN_SECRET_KEY and ROBIN_SECRET_KEY_FILE, not both")
        if not self.secret_key_file:
            return _fernet_keys(self.secret_key, "ROBIN_SECRET_KEY")
        try:
            text = Path(self.secret_key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"ROBIN_SECRET_KEY_FILE {self.secret_key_file}: {exc.strerror}") from exc
        keys = _fernet_keys(text, "ROBIN_SECRET_KEY_FILE")
        if not keys:
            raise ConfigError(f"ROBIN_SECRET_KEY_FILE {self.secret_key_file} holds no key")
        return keys

    def _validate_gateway(self) -> None:
        _require_choice(self.gateway_mounter, RBD_MOUNTERS, "ROBIN_GATEWAY_MOUNTER")
        if self.gateway_io_threads <= 0:
            raise ConfigError("ROBIN_GATEWAY_IO_THREADS must be positive")
        if self.gateway_activation_wait <= 0 or self.gateway_reconcile_interval <= 0:
            raise ConfigError("ROBIN_GATEWAY_ACTIVATION_WAIT and ROBIN_GATEWAY_RECONCILE_INTERVAL must be positive "
                              "numbers of seconds")
        if not 0 <= self.gateway_login_delay <= self.gateway_login_max_delay:
            raise ConfigError("ROBIN_GATEWAY_LOGIN_DELAY must be 0 or more seconds, at most "
                              "ROBIN_GATEWAY_LOGIN_MAX_DELAY")
        if self.gateway_account_lockout <= 0 or self.gateway_address_lockout <= 0:
            raise ConfigError("ROBIN_GATEWAY_ACCOUNT_LOCKOUT and ROBIN_GATEWAY_ADDRESS_LOCKOUT must be positive "
                              "numbers of failed logins")
        if self.gateway_lockout_seconds <= 0:
            raise ConfigError("ROBIN_GATEWAY_LOCKOUT_SECONDS must be positive")


def auto_workers() -> int:
    """robin serve's workers when none are configured: WORKERS_PER_CPU per available CPU, within the bounds."""
    return min(AUTO_WORKERS_MAX, max(AUTO_WORKERS_MIN, WORKERS_PER_CPU * available_cpus()))


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on (its affinity), fewer if its cgroup's CPU quota (a container's CPU limit,
    cgroup v2's cpu.max: "quota period" or "max period") allows less, rounded up."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here (a host, or the root cgroup): the affinity it is
    return cpus


def _fernet_keys(text: str, source: str) -> tuple[str, ...]:
    """Keys separated by commas or lines ('#' starts a comment line), each checked: a typo must stop the
    process at start, not make every cluster key unreadable later."""
    from cryptography.fernet import Fernet

    lines = (line for line in text.splitlines() if not line.strip().startswith("#"))
    keys = tuple(key.strip() for line in lines for key in line.split(",") if key.strip())
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError as exc:
            raise ConfigError(f"{source}: key {position} is not a Fernet key (32 url-safe base64 bytes; "
                              "make one with `robin secrets new-key`)") from exc
    return keys


def _cephfs_root(root: str) -> str:
    """The root without its trailing slash. Anything a normalisation would have to guess at ('.',
    '..', '//') is refused rather than resolved: a root that points elsewhere than it reads would put
    every project's directories there."""
    parts = root.removesuffix("/").split("/")
    problem = None
    if not root.startswith("/"):
        problem = "must be an absolute path"
    elif not root.isprintable():
        problem = "must not contain control characters"
    elif parts == [""]:
        problem = "must be a directory other than /"
    elif {"", ".", ".."} & set(parts[1:]):
        problem = "must not contain '.', '..' or '//'"
    if problem:
        raise ConfigError(f"ROBIN_CEPHFS_ROOT {root!r} {problem}")
    return "/".join(parts)


def _default_identity() -> str:
    # Unique per process, so a restarted replica is a new holder and never mistakes an old lease for its own.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ProvisionerSettings(_Section):
    env_prefix: ClassVar[str] = "ROBIN_PROVISIONER_"

    kubeconfig: str = ""  # empty: in-cluster config, else $KUBECONFIG or ~/.kube/config
    workers: int = 8  # claims and volumes handled at the same time
    qps: float = 50.0  # Kubernetes API requests per second (watches excluded), as client-go's QPS ...
    burst: int = 100  # ... and burst
    # Server-side timeout of a watch; the client gives up on a silent connection a little after it.
    watch_timeout: int = 300
    resync_interval: float = 600.0  # every object is looked at again this often, whatever the watches said
    retry_base: float = 1.0  # first retry delay of a failed claim or volume; doubles up to retry_max
    retry_max: float = 300.0
    leader_elect: bool = True
    lease_name: str = "robin-provisioner"
    # The pod's namespace, which Kubernetes hands a pod as POD_NAMESPACE (the downward API).
    lease_namespace: str = field(default_factory=lambda: _env("POD_NAMESPACE", "default"))
    lease_duration: float = 15.0  # client-go's defaults: a dead leader is replaced within ~15 s
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = field(default_factory=_default_identity)
    metrics_address: str = "127.0.0.1:9808"  # host:port of /metrics; empty turns it off
    # Record the claim's name and namespace in the RBD image's metadata (as ceph-csi's --setmetadata): handy with
    # the rbd CLI, but opening the image for it costs about twice the create, so off unless asked for.
    image_metadata: bool = False
    # The quota of a project the provisioner creates for a namespace, unless the StorageClass gives one.
    default_quota_bytes: int = 100 * 2**30
    default_quota_volumes: int = 100
    default_quota_snapshots: int = 100

    def validate(self) -> None:
        if self.workers < 1 or self.qps <= 0 or self.burst < 1:
            raise ConfigError("ROBIN_PROVISIONER_WORKERS, _QPS and _BURST must be positive")
        if self.watch_timeout < 1 or self.resync_interval <= 0 or not 0 < self.retry_base <= self.retry_max:
            raise ConfigError("ROBIN_PROVISIONER_WATCH_TIMEOUT, _RESYNC_INTERVAL must be positive and "
                              "0 < _RETRY_BASE <= _RETRY_MAX")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ConfigError("leader election needs 0 < ROBIN_PROVISIONER_RETRY_PERIOD < _RENEW_DEADLINE < "
                              "_LEASE_DURATION")
        if self.metrics_address and ":" not in self.metrics_address:
            raise ConfigError("ROBIN_PROVISIONER_METRICS_ADDRESS must be host:port (or empty)")
        if min(self.default_quota_bytes, self.default_quota_volumes, self.default_quota_snapshots) < 0:
            raise ConfigError("ROBIN_PROVISIONER_DEFAULT_QUOTA_* must be 0 or more")


@dataclass(frozen=True)
class CsiSettings(_Section):
    """The defaults of `python -m csi_shim`'s flags (csi_shim.config)."""

    env_prefix: ClassVar[str] = "ROBIN_CSI_"

    # The socket's name in the CSI sidecars' convention.
    endpoint: str = field(default="unix:///csi/csi.sock", metadata={"env": "CSI_ENDPOINT"})
    mode: str = "all"
    # This node's name: Kubernetes hands it to a DaemonSet's pods as NODE_NAME (the downward API).
    node_id: str = field(default_factory=lambda: _env("NODE_NAME") or socket.gethostname())
    driver_name: str = "csi.robin.io"  # robin's provisioner points its PVs at this name too
    mounter: str = "krbd"
    state_dir: str = "/var/lib/robin-csi"
    # ceph-csi's config.json ([{"clusterID": fsid, "monitors": [...]}]), read at every stage: "" for none.
    cluster_map: str = ""
    default_project: str = "kubernetes"
    workers: int = 16
    # A node mounts each of robin's CephFS paths with the path's own cephx user, fetched from robin's API (ROBIN_URL
    # and a node token), instead of the node-stage secret's user.
    cephfs_users: bool = False
    log_level: str = field(default="INFO", metadata={"env": "ROBIN_LOG_LEVEL"})

    def validate(self) -> None:
        _require_choice(self.mode, CSI_MODES, "ROBIN_CSI_MODE")
        _require_choice(self.mounter, RBD_MOUNTERS, "ROBIN_CSI_MOUNTER")
        if self.workers < 1:
            raise ConfigError("ROBIN_CSI_WORKERS must be positive")


@dataclass(frozen=True)
class ClientSettings(_Section):
    """Where robin's API is, for the programs that call it (the provisioner, the CSI controller, the migration)."""

    url: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""  # e.g. a mounted Kubernetes secret; ROBIN_TOKEN wins over it

    def validate(self) -> None:
        if not self.url or not (self.token or self.token_file):
            raise ConfigError("robin's API is not configured: set ROBIN_URL and ROBIN_TOKEN (or ROBIN_TOKEN_FILE)")

    def api_token(self) -> str:
        if self.token:
            return self.token
        try:
            with open(self.token_file) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"ROBIN_TOKEN_FILE {self.token_file}: {exc.strerror}") from exc
        if not token:
            raise ConfigError(f"ROBIN_TOKEN_FILE {self.token_file} holds no token")
        return token


@dataclass(frozen=True)
class MigrateSettings(_Section):
    env_prefix: ClassVar[str] = "ROBIN_MIGRATE_"

    rbd_mounter: str = "rbd-fuse"  # how `robin migrate gluster` maps RBD destinations on its host

    def validate(self) -> None:
        _require_choice(self.rbd_mounter, RBD_MOUNTERS, "ROBIN_MIGRATE_RBD_MOUNTER")


SECTIONS = (Settings, ProvisionerSettings, CsiSettings, ClientSettings, MigrateSettings)


def _require_choice(value: str, choices: tuple[str, ...], variable: str) -> None:
    if value not in choices:
        raise ConfigError(f"{variable} must be one of {', '.join(choices)}, not {value!r}")


def _variable(cls, f: dataclasses.Field) -> str:
    return f.metadata.get("env", cls.env_prefix + f.name.upper())


def _file_key(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower()


def _env_values(cls) -> dict:
    """The fields of section `cls` that the environment sets, coerced to their types."""
    values = {}
    for f in dataclasses.fields(cls):
        variable = _variable(cls, f)
        raw = _env(variable)
        if raw:
            values[f.name] = _coerce(f, raw, source=variable)
    return values


def _file_values(cls) -> dict:
    """The fields of section `cls` that the file named by ROBIN_CONFIG_FILE sets; any key of no section is an
    error, whichever section is being read, so a typo is found by the first component to start."""
    path = _env(CONFIG_FILE)
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{CONFIG_FILE} {path}: {exc}") from exc
    known = {_file_key(_variable(section, f)) for section in SECTIONS for f in dataclasses.fields(section)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    fields = {_file_key(_variable(cls, f)): f for f in dataclasses.fields(cls)}
    return {fields[key].name: _coerce(fields[key], value, source=f"{path}: {key}")
            for key, value in raw.items() if key in fields}


def _coerce(f: dataclasses.Field, value, source: str):
    kind = f.type
    try:
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return _whole_number(value)
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(item.strip() for item in items if item.strip())
        return str(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {value!r} is not a valid {kind}") from exc


def _whole_number(value) -> int:
    # Helm hands every number in its values to templates as a float, so the chart's robin.toml says
    # `trash_delay = 86400.0`: a whole float is that number; one with a fraction is a mistake, not to be cut.
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not a whole number")
    return int(value)


def fault_points() -> str:
    """ROBIN_FAULT_POINTS, for crash tests only (robin.faults): never in a file, where it could outlive a test."""
    return _env("ROBIN_FAULT_POINTS")


def prometheus_multiproc_dir() -> str:
    """Where gunicorn's workers write their metrics: set by `robin serve` for the workers it starts, and named
    by prometheus_client's own variable, which the library reads too."""
    return _env(PROMETHEUS_MULTIPROC_DIR)


def child_environment(variables: dict[str, str]) -> dict[str, str]:
    """This process's environment with `variables` added: what a program robin starts (gunicorn) is handed, so
    that values reach it explicitly rather than by writing os.environ."""
    return {**os.environ, **variables}


def current() -> Settings:
    """The running app's settings (services run inside an app context, the CLI included)."""
    from flask import current_app

    return current_app.config["ROBIN_SETTINGS"]
