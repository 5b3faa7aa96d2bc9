"""A throwaway PostgreSQL + PostGIS cluster in a directory, for tests, benchmarks and
local development.

It runs the Debian binaries (``/usr/lib/postgresql/<v>/bin``) directly: ``initdb`` in a
fresh directory, ``pg_ctl start`` on a free loopback port, with its socket in the same
directory. As root the server runs as the ``postgres`` user (PostgreSQL refuses root).
Nothing here touches a system cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdmatlas.errors import SdmAtlasError

PG_VERSION = os.environ.get("SDMATLAS_PG_VERSION", "15")
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
POSTGIS_CONTROL = Path(f"/usr/share/postgresql/{PG_VERSION}/extension/postgis.control")


class LocalPostgresError(SdmAtlasError):
    """The throwaway cluster could not be created, started or stopped."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    """One cluster in ``directory`` (by default a new directory in the system's temporary
    directory: as root it must be one the ``postgres`` user can reach, which pytest's
    private temporary directories are not); :meth:`start` creates it on first use."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sdmatlas-pg-")))
    port: int = field(default_factory=_free_port)
    user: str = "sdmatlas"
    database: str = "sdmatlas"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LocalPostgresError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
            )
        return done

    def _check_install(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise LocalPostgresError(
                f"PostgreSQL {PG_VERSION} is not installed ({PG_BIN}); "
                "run scripts/install-system-packages.sh"
            )
        if not POSTGIS_CONTROL.exists():
            raise LocalPostgresError(
                f"PostGIS for PostgreSQL {PG_VERSION} is not installed; "
                "run scripts/install-system-packages.sh"
            )

    def start(self) -> LocalPostgres:
        self._check_install()
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        if not self._database_exists():
            self._run(
                "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database
            )
        return self

    def _database_exists(self) -> bool:
        out = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
        )
        return out.stdout.strip() == "1"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster's directory."""
        if self.is_running():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def is_running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status")
        except LocalPostgresError:
            return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise LocalPostgresError(f"PostgreSQL on port {self.port} did not come up")
