"""A throwaway single-node SLURM in a directory, for tests and benchmarks.

Debian's ``munged``, ``slurmctld`` and ``slurmd`` (packages munge, slurmctld, slurmd,
slurm-client; ``scripts/install-system-packages.sh``) run from a fresh directory with
their own key, socket, ports, state and logs; nothing touches a system SLURM or munge.
The commands (``sbatch``, ``squeue``, ``scancel``) find it through ``SLURM_CONF``,
which :meth:`LocalSlurm.env` gives.

Container settings (what made slurmd run here, as root, without systemd or cgroup
delegation): ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``JobAcctGatherType=jobacct_gather/none`` and no accounting, so that no cgroup is
needed; ``SlurmdParameters=config_overrides`` lets the node declare more CPUs than the
machine has (``cpus``), so that several one-core worker jobs run at once on 2 cores;
``SlurmUser=root`` since the tests run as root. munged runs with ``--force`` (its key
and socket live in a temporary directory it would otherwise call insecure).
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

DAEMONS = ("munged", "slurmctld", "slurmd")


class LocalSlurmError(SdmAtlasError):
    """The throwaway SLURM could not be started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise LocalSlurmError(
            f"{name} is not installed: run scripts/install-system-packages.sh (munge, "
            "slurmctld, slurmd, slurm-client)"
        )
    return path


@dataclass
class LocalSlurm:
    directory: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="sdmatlas-slurm-"))
    )
    cpus: int = 4
    memory_mb: int = 8000
    partition: str = "debug"
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    def env(self) -> dict[str, str]:
        """The variables that point SLURM's commands at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        d = self.directory
        host = socket.gethostname()
        (d / "state").mkdir(exist_ok=True)
        (d / "spool").mkdir(exist_ok=True)
        self.conf.write_text(
            f"""ClusterName=sdmatlas-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={d / "munge.socket"}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "slurmctld.pid"}
SlurmdPidFile={d / "slurmd.pid"}
SlurmctldLogFile={d / "slurmctld.log"}
SlurmdLogFile={d / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self, timeout: float = 60) -> LocalSlurm:
        d = self.directory
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._write_conf()
        munged = [_find("munged"), "--foreground", "--force", f"--key-file={key}",
                  f"--socket={d / 'munge.socket'}", f"--pid-file={d / 'munged.pid'}",
                  f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munge.seed'}"]  # fmt: skip
        env = {**os.environ, **self.env()}
        self._spawn(munged, env, "munged.out")
        self._wait(lambda: (d / "munge.socket").exists(), timeout, "munged")
        self._spawn([_find("slurmctld"), "-D", "-f", str(self.conf)], env, "slurmctld.out")
        self._spawn([_find("slurmd"), "-D", "-f", str(self.conf), "-N", socket.gethostname()],
                    env, "slurmd.out")  # fmt: skip
        self._wait(self._idle, timeout, "slurmd (node idle)")
        return self

    def _spawn(self, cmd: list[str], env: dict[str, str], log: str) -> None:
        with open(self.directory / log, "wb") as out:
            self._procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True))  # fmt: skip

    def _idle(self) -> bool:
        done = self.run("sinfo", "-h", "-o", "%T", check=False)
        return done.returncode == 0 and done.stdout.strip().startswith("idle")

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            dead = [p for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                               for p in sorted(self.directory.glob("*.log")) + sorted(
                                   self.directory.glob("*.out")))  # fmt: skip
                self.stop()
                raise LocalSlurmError(f"{what} did not start in {self.directory}:{logs}")
            time.sleep(0.2)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A SLURM command (sbatch, squeue, scancel, sinfo...) against this cluster."""
        return subprocess.run([_find(args[0]), *args[1:]], env={**os.environ, **self.env()},
                              capture_output=True, text=True, check=check, timeout=60)  # fmt: skip

    def jobs(self) -> list[str]:
        """Ids of the jobs queued or running."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def wait_for_jobs(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > deadline:
                raise LocalSlurmError(f"jobs still queued after {timeout} s: {self.jobs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self._procs:
            self.run("scancel", "--full", "-u", "root", check=False)
        for p in reversed(self._procs):
            p.terminate()
        for p in self._procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs.clear()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
