"""Settings: read once from ROBIN_* environment variables (and an optional TOML file), validated at start.

Precedence: explicit keyword arguments > environment > file named by ROBIN_CONFIG_FILE > defaults.
A bad value stops the process at start with a message naming the variable, instead of failing later
inside a request.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from robin.dev.cluster import DEFAULT_DIR as DEV_CLUSTER_DIR

ENV_PREFIX = "ROBIN_"
# The largest value of the database's BigInteger columns (sizes, quotas in bytes).
BIGINT_MAX = 2**63 - 1
RBD_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten")


GATEWAY_MOUNTERS = ("rbd-fuse", "krbd", "rbd-nbd")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def state_dir() -> Path:
    return Path(os.environ.get("ROBIN_STATE_DIR") or Path.home() / ".local/state/robin")


def _default_ceph_conf() -> str:
    """The dev cluster's conf when one exists, so `make run` needs no configuration."""
    conf = DEV_CLUSTER_DIR / "ceph.conf"
    return str(conf) if conf.exists() else ""


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=lambda: f"sqlite:///{state_dir() / 'robin.db'}")
    ceph_conf: str = field(default_factory=_default_ceph_conf)
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
    max_volume_bytes: int = 64 * 2**40
    # Seconds a deleted volume waits in the trash (restorable) before it is purged.
    trash_delay: int = 24 * 3600
    # Seconds between two rounds of the purge (and reconcile) loop in `robin serve`; 0 turns it off.
    maintenance_interval: int = 60
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 4
    threads: int = 8
    log_level: str = "INFO"
    # Bytes a request body may hold; a larger one is refused (413) before authentication, so nobody can
    # make robin read, parse or audit megabytes; robin's own bodies are small JSON documents.
    max_request_bytes: int = 2**20
    # Volumes measured at once by a usage refresh (`robin audit usage`): librbd and libcephfs calls
    # release the GIL, so threads overlap their round trips to the OSDs and the MDS.
    usage_parallelism: int = 16
    # The Wayne platform's /v1 API: the project that owns the volumes it creates.
    wayne_project: str = "wayne"
    # The data gateway (`robin gateway`): SFTP for people, on volumes activated through /v1.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 2022
    # Where activated volumes are mounted, and the SSH host key (made on first start, kept across restarts).
    gateway_dir: str = field(default_factory=lambda: str(state_dir() / "gateway"))
    # How the gateway's host maps RBD images (the CSI node's mounters): rbd-fuse needs no kernel module.
    gateway_mounter: str = "rbd-fuse"
    # Fernet keys that encrypt secrets at rest (registered clusters' cephx keys), newest first: robin encrypts
    # with the first and decrypts with any, so a rotation puts the new key first and keeps the old ones until
    # `robin secrets rotate` has re-encrypted every row. Neither set: a key made on first start in
    # $ROBIN_STATE_DIR/secret_key (0600). Kept out of repr: settings may be logged.
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

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        values = _read_file(os.environ.get("ROBIN_CONFIG_FILE"))
        values.update(read_env(cls))
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.ceph_timeout <= 0:
            raise ConfigError("ROBIN_CEPH_TIMEOUT must be a positive number of seconds")
        if self.rbd_default_pool not in self.rbd_pools:
            raise ConfigError("ROBIN_RBD_DEFAULT_POOL must be one of ROBIN_RBD_POOLS")
        if self.cephfs_default_fs not in self.cephfs_filesystems:
            raise ConfigError("ROBIN_CEPHFS_DEFAULT_FS must be one of ROBIN_CEPHFS_FILESYSTEMS")
        # Stored normalised: every CephFS path robin makes, drift reports and adoption start from it.
        object.__setattr__(self, "cephfs_root", _cephfs_root(self.cephfs_root))
        unknown = set(self.rbd_default_features) - set(RBD_FEATURES)
        if unknown:
            raise ConfigError(f"ROBIN_RBD_DEFAULT_FEATURES has unknown features: {sorted(unknown)}")
        if self.max_volume_bytes <= 0 or self.workers <= 0 or self.threads <= 0 or self.max_request_bytes <= 0:
            raise ConfigError("ROBIN_MAX_VOLUME_BYTES, ROBIN_WORKERS, ROBIN_THREADS and ROBIN_MAX_REQUEST_BYTES "
                              "must be positive")
        if self.max_volume_bytes > BIGINT_MAX:
            raise ConfigError(f"ROBIN_MAX_VOLUME_BYTES must be at most {BIGINT_MAX} (what the database's size "
                              "columns hold)")
        if not 0 < self.usage_parallelism <= 256:
            raise ConfigError("ROBIN_USAGE_PARALLELISM must be between 1 and 256")
        if self.trash_delay < 0 or self.maintenance_interval < 0:
            raise ConfigError("ROBIN_TRASH_DELAY and ROBIN_MAINTENANCE_INTERVAL must be 0 or more seconds")
        if not 0 < self.port < 65536 or not 0 < self.gateway_port < 65536:
            raise ConfigError("ROBIN_PORT and ROBIN_GATEWAY_PORT must be TCP ports")
        if self.gateway_mounter not in GATEWAY_MOUNTERS:
            raise ConfigError(f"ROBIN_GATEWAY_MOUNTER must be one of {', '.join(GATEWAY_MOUNTERS)}")
        if self.ui_session_seconds <= 0:
            raise ConfigError("ROBIN_UI_SESSION_SECONDS must be a positive number of seconds")
        self._validate_gateway_logins()
        self.secret_keys()

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

    def _validate_gateway_logins(self) -> None:
        if self.gateway_io_threads <= 0:
            raise ConfigError("ROBIN_GATEWAY_IO_THREADS must be positive")
        if not 0 <= self.gateway_login_delay <= self.gateway_login_max_delay:
            raise ConfigError("ROBIN_GATEWAY_LOGIN_DELAY must be 0 or more seconds, at most "
                              "ROBIN_GATEWAY_LOGIN_MAX_DELAY")
        if self.gateway_account_lockout <= 0 or self.gateway_address_lockout <= 0:
            raise ConfigError("ROBIN_GATEWAY_ACCOUNT_LOCKOUT and ROBIN_GATEWAY_ADDRESS_LOCKOUT must be positive "
                              "numbers of failed logins")
        if self.gateway_lockout_seconds <= 0:
            raise ConfigError("ROBIN_GATEWAY_LOCKOUT_SECONDS must be positive")


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


def _read_file(path: str | None) -> dict:
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"ROBIN_CONFIG_FILE {path}: {exc}") from exc
    return {name: _coerce(Settings, name, value, source=path) for name, value in raw.items()}


def read_env(cls, prefix: str = ENV_PREFIX) -> dict:
    """The fields of dataclass `cls` that the environment sets (`<prefix><FIELD>`), coerced to their types."""
    values = {}
    for f in dataclasses.fields(cls):
        raw = os.environ.get(prefix + f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = _coerce(cls, f.name, raw, source=prefix + f.name.upper())
    return values


def _coerce(cls, name: str, value, source: str):
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    if name not in kinds:
        raise ConfigError(f"{source}: unknown setting {name!r}")
    kind = kinds[name]
    try:
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(item.strip() for item in items if item.strip())
        return str(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {value!r} is not a valid {kind}") from exc


def current() -> Settings:
    """The running app's settings (services run inside an app context, the CLI included)."""
    from flask import current_app

    return current_app.config["ROBIN_SETTINGS"]
