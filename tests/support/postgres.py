"""A throwaway PostgreSQL server for the test session: its own data directory, 127.0.0.1 only,
a free port, trust auth; stopped by its postmaster pid (pg_ctl), never by name."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port

START_TIMEOUT_S = 60


def _bin(name: str) -> str:
    """Debian keeps the server tools in a versioned directory, off PATH."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return candidates[-1]


def _as_postgres(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """initdb and postgres refuse to run as root: drop to the postgres user when we are root."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


@dataclass
class PostgresServer:
    directory: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        directory = Path(tempfile.mkdtemp(prefix="robin-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        server = cls(directory=directory, port=free_port())
        try:
            _as_postgres([_bin("initdb"), "-D", str(directory / "data"), "-U", "postgres", "--auth=trust",
                          "--no-sync", "-E", "UTF8"])
            options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {directory} -c fsync=off "
                       "-c max_connections=200")
            _as_postgres([_bin("pg_ctl"), "-D", str(directory / "data"), "-o", options,
                          "-l", str(directory / "log"), "-w", "-t", str(START_TIMEOUT_S), "start"])
        except (subprocess.CalledProcessError, RuntimeError):
            server.stop()
            raise
        return server

    def create_database(self, name: str) -> str:
        _as_postgres([_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return self.url_for(name)

    def stop(self) -> None:
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        deadline = time.monotonic() + 10
        while (data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.directory, ignore_errors=True)
