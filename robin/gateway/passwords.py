"""Password hashes for gateway accounts: scrypt with a random salt, as `scrypt$n$r$p$salt$hash`.

People choose these passwords (unlike API tokens, which are random), so the hash must be slow and
salted; the parameters are stored with it, so a hash made with older ones still verifies, and the
gateway hashes the password anew with today's parameters at its next successful login.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

# OWASP's recommendation (Password Storage Cheat Sheet): 128 MiB and a few hundred ms per check, so
# each guess costs an attacker the same; the gateway runs at most a few checks at once (server.py).
N, R, P = 2**17, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
MAX_PASSWORD_BYTES = 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem above what n and r need (128 * n * r), or OpenSSL refuses the larger settings.
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES,
                          maxmem=256 * n * r + 2**20)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_scrypt(password, salt, N, R, P))}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; the comparison takes the same time wherever they differ."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(expected))
    except ValueError:  # a malformed row never lets anyone in
        return False


def needs_rehash(stored: str) -> bool:
    """Whether `stored` (a hash that just verified) was made with other parameters than today's."""
    return not stored.startswith(f"scrypt${N}${R}${P}$")


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def burn_time(password: str) -> None:
    """Check against a hash nobody knows: a login naming no account then costs as long as a wrong
    password, so the time does not tell which usernames exist."""
    verify_password(password, _dummy_hash())
