"""A private PostgreSQL cluster for the tests, from Debian's packages.

initdb in a temporary directory as the postgres user, its own port on
127.0.0.1 and its own socket directory; never the system's cluster.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ADMIN = "postgres"
DATABASE = "mail"
# One role per kind of host, each with its password in the tests' PGPASSFILE.
WRITER = "pop_writer"
READER = "mta_reader"
OWNER = "exactcron"  # may create schemas: exactcron then creates its own


def find_server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    bin: Path
    port: int
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    def _as_postgres(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", ADMIN, "--", *command],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            timeout=120,
        )

    def init(self) -> None:
        postgres = pwd.getpwnam(ADMIN)
        for directory in (self.data, self.socket_dir):
            directory.mkdir()
            os.chown(directory, postgres.pw_uid, postgres.pw_gid)
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-U",
            ADMIN,
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 60\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def ensure_running(self) -> None:
        """Start the server again if a test stopped it and failed before restarting it."""
        status = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False)
        if status.returncode != 0:
            self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def sql(self, statement: str, database: str = DATABASE) -> str:
        """Run SQL as the superuser over the private socket; its output, tuples only."""
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                ADMIN,
                "-d",
                database,
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def set_up_roles(self) -> None:
        self.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        lines = []
        for role in (WRITER, READER, OWNER):
            password = uuid.uuid4().hex
            self.passwords[role] = password
            self.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            lines.append(f"127.0.0.1:{self.port}:{DATABASE}:{role}:{password}\n")
        self.sql(f"GRANT CREATE ON DATABASE {DATABASE} TO {OWNER}")
        self.passfile.write_text("".join(lines))
        self.passfile.chmod(0o600)

    def url(self, role: str = OWNER) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/{DATABASE}"

    def store(self, schema: str, role: str = OWNER) -> str:
        """The `[store]` table of a host's configuration."""
        return f'[store]\nurl = "{self.url(role)}"\nschema = "{schema}"\n'

    def terminate(self, role: str) -> None:
        """Kill every session of `role`, as a DBA would (pg_terminate_backend)."""
        self.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")


def start_cluster() -> Cluster:
    binaries = find_server_binaries()
    if binaries is None or shutil.which("runuser") is None:
        message = "PostgreSQL server packages are not installed (the test bootstrap installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="exc-pg-"))
    root.chmod(0o755)
    cluster = Cluster(root, binaries, free_port())
    try:
        cluster.init()
        cluster.start()
        cluster.set_up_roles()
    except BaseException:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    cluster.stop("immediate")
    shutil.rmtree(cluster.root, ignore_errors=True)
