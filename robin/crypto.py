"""Secrets at rest (the cephx keys of registered clusters), encrypted with the configured Fernet keys.

MultiFernet encrypts with the first key and decrypts with any: a rotation puts a new key first, keeps the old
ones after it until `robin secrets rotate` has re-encrypted every row, then drops them. Without configured keys
robin makes one on first start in its state directory. The dashboard's cookie-signing key is derived from the first
key, so every replica given the same keys also signs alike.
"""
from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from robin.config import Settings
from robin.errors import RobinError

# Every Fernet token starts so (version byte 0x80, then a timestamp whose high bytes are zero until 2106);
# a cephx key (base64 of a struct starting with its type, 1) never does.
FERNET_PREFIX = "gAAAAA"

log = logging.getLogger(__name__)


class SecretKeyMismatch(RobinError):
    status = 500
    code = "secret_key_mismatch"


class _Keyring:
    """Bound to settings by the app factory."""

    fernet: MultiFernet | None = None

    def configure(self, settings: Settings) -> None:
        self.fernet = MultiFernet([Fernet(key) for key in secret_keys(settings)])
        if not settings.secret_keys() and not settings.database_url.startswith("sqlite"):
            # A shared database means replicas, which must decrypt each other's secrets and sessions.
            log.warning("no ROBIN_SECRET_KEY or ROBIN_SECRET_KEY_FILE: this host uses its own key in %s, which "
                        "robin processes on other hosts do not share; configure the same key on every replica",
                        Path(settings.state_dir) / "secret_key")


def secret_keys(settings: Settings) -> tuple[str, ...]:
    """The configured keys, newest first, or else the one robin made in its state directory (which replicas on
    other hosts do not share)."""
    return settings.secret_keys() or (state_secret(Path(settings.state_dir) / "secret_key", _new_key),)


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A key for `purpose` derived from the first secret key (HKDF-SHA256): what it signs reveals nothing about
    the key that encrypts secrets, and every process given the same keys derives the same one."""
    material = base64.urlsafe_b64decode(secret_keys(settings)[0])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(material)


keyring = _Keyring()


def _new_key() -> str:
    return Fernet.generate_key().decode()


def state_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret made once, 0600, in the state directory: gunicorn's workers (and restarts) must agree on it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(make())
        try:
            os.link(draft, path)  # atomic: the first worker's secret wins, the others read it
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def is_encrypted(value: str) -> bool:
    return value.startswith(FERNET_PREFIX)


def encrypt(plain: str) -> str:
    return keyring.fernet.encrypt(plain.encode()).decode()


def decrypt(stored: str, what: str) -> str:
    """The plain secret of a stored value. A value an older robin stored in plain text is returned as it is
    (robin encrypts those at start and on rotation)."""
    if not is_encrypted(stored):
        return stored
    try:
        return keyring.fernet.decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise _mismatch(what) from exc


def reencrypt(stored: str, what: str) -> str:
    """The value encrypted with the first key (plain values included)."""
    if not is_encrypted(stored):
        return encrypt(stored)
    try:
        return keyring.fernet.rotate(stored.encode()).decode()
    except InvalidToken as exc:
        raise _mismatch(what) from exc


def _mismatch(what: str) -> SecretKeyMismatch:
    return SecretKeyMismatch(f"{what} cannot be decrypted with any key of ROBIN_SECRET_KEY or ROBIN_SECRET_KEY_FILE: "
                             "add the key it was encrypted with after the current one (see `robin secrets rotate`)")
