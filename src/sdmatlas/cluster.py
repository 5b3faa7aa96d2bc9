"""Cluster profiles: Dask workers for ``predict`` and ``publish`` from a cluster manager.

A profile says how to ask SLURM for worker jobs; dask-jobqueue's ``SLURMCluster``
writes and submits the job scripts, and the run's executor (``sdmatlas.executor``)
connects to the workers they start. Dask stays the engine: nothing here schedules
tasks. A profile comes from ``--cluster``:

* ``slurm``: the default SLURM profile (one 1-core, 4 GiB job);
* a path to a YAML or JSON file holding one profile;
* a name in the file of named profiles that ``SDMATLAS_CLUSTER_PROFILES`` points to.

Every field is checked before any job is submitted: an unknown key, a negative
memory or a walltime SLURM would not parse is a clear error naming the field.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdmatlas.errors import InvalidInputError

#: SLURM's time formats (sbatch --time): minutes, minutes:seconds, hours:minutes:seconds,
#: days-hours, days-hours:minutes and days-hours:minutes:seconds.
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class ClusterProfileError(InvalidInputError):
    """A cluster profile that cannot be used (refused before any job is submitted)."""


class SlurmProfile(BaseModel):
    """How to run Dask workers as SLURM jobs (dask-jobqueue's SLURMCluster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["slurm"] = "slurm"
    partition: str | None = None
    """``#SBATCH -p``; the cluster's default partition when left out."""
    account: str | None = None
    """``#SBATCH -A``."""
    cores: int = Field(1, ge=1)
    """CPU cores per job (``--cpus-per-task``)."""
    processes: int = Field(1, ge=1)
    """Dask worker processes per job; each gets ``cores / processes`` threads."""
    memory: str = "4GiB"
    """Memory per job, as ``8GiB`` or ``16000MB`` (``--mem``)."""
    walltime: str = "01:00:00"
    """``--time``: ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``..."""
    gpus: int = Field(0, ge=0)
    """GPUs per job: ``--gres=gpu:N``; the model then runs on CUDA on those workers."""
    prologue: list[str] = Field(default_factory=list)
    """Shell lines before the worker starts (``module load ...``, ``source venv/bin/activate``)."""
    extra_directives: list[str] = Field(default_factory=list)
    """More ``#SBATCH`` options, e.g. ``--constraint=skylake``."""
    jobs: int = Field(1, ge=1)
    """Worker jobs of a fixed-size run (when neither bound of adaptive scaling is set)."""
    minimum_jobs: int | None = Field(None, ge=0)
    """Adaptive scaling: at least this many jobs."""
    maximum_jobs: int | None = Field(None, ge=1)
    """Adaptive scaling: at most this many jobs."""
    interface: str | None = None
    """Network interface of the scheduler and workers (``ib0`` on many HPC sites)."""
    log_directory: str | None = None
    """Where the worker jobs' stdout and stderr go."""
    local_directory: str | None = None
    """Workers' scratch directory (node-local disk)."""
    worker_start_timeout: float = Field(600.0, gt=0)
    """Seconds to wait for the first worker (queueing included) before giving up."""

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        from dask.utils import parse_bytes

        try:
            n = parse_bytes(v)
        except (ValueError, TypeError):
            raise ValueError(f"{v!r} is not a size like 8GiB or 16000MB") from None
        if n <= 0:
            raise ValueError(f"{v!r} must be a positive size like 8GiB")
        return v

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        if not _WALLTIME.match(v.strip()):
            raise ValueError(f"{v!r} is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS)")
        return v.strip()

    @property
    def adaptive(self) -> bool:
        return self.minimum_jobs is not None or self.maximum_jobs is not None

    def jobqueue_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``dask_jobqueue.SLURMCluster``."""
        if self.processes > self.cores:
            raise ClusterProfileError(
                f"cluster profile: processes ({self.processes}) cannot exceed cores ({self.cores})"
            )
        directives = list(self.extra_directives)
        if self.gpus:
            directives.append(f"--gres=gpu:{self.gpus}")
        kw: dict[str, Any] = {
            "cores": self.cores,
            "processes": self.processes,
            "memory": self.memory,
            "walltime": self.walltime,
            "job_script_prologue": list(self.prologue),
            "job_extra_directives": directives,
        }
        for key, value in (("queue", self.partition), ("account", self.account),
                           ("interface", self.interface), ("log_directory", self.log_directory),
                           ("local_directory", self.local_directory)):  # fmt: skip
            if value is not None:
                kw[key] = value
        return kw


ClusterProfile = SlurmProfile
"""Every kind of profile (SLURM for now; Kubernetes runs its own scheduler, see
docs/cluster.md, and is reached with ``--scheduler``)."""


def parse_profile(data: object, origin: str) -> ClusterProfile:
    """A profile from a mapping; errors name the field and the origin."""
    if not isinstance(data, dict):
        raise ClusterProfileError(f"cluster profile {origin}: expected a mapping of settings")
    try:
        return SlurmProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e["loc"]) or "profile"
            if e["type"] == "extra_forbidden":
                known = ", ".join(SlurmProfile.model_fields)
                problems.append(f"{where}: unknown setting (known: {known})")
            else:
                problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        raise ClusterProfileError(f"cluster profile {origin}: " + "; ".join(problems)) from None


def load_profile(spec: str, profiles_file: Path | None = None) -> ClusterProfile:
    """The profile ``--cluster`` names: ``slurm``, a YAML/JSON file, or a named profile of
    ``profiles_file`` (a mapping of names to profiles)."""
    if spec == "slurm":
        return SlurmProfile()
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ClusterProfileError(f"cluster profile file {path} does not exist")
        return parse_profile(_read(path), str(path))
    if profiles_file is None:
        raise ClusterProfileError(
            f"--cluster {spec!r}: use slurm, a profile file (.yaml), or a profile name from "
            "the file SDMATLAS_CLUSTER_PROFILES points to (not set)"
        )
    named = _read(profiles_file)
    if not isinstance(named, dict) or spec not in named:
        known = ", ".join(sorted(named)) if isinstance(named, dict) else "none"
        raise ClusterProfileError(
            f"--cluster {spec!r} is not a profile of {profiles_file} (known: {known})"
        )
    return parse_profile(named[spec], f"{spec!r} of {profiles_file}")


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterProfileError(f"cannot read cluster profiles from {path}: {exc}") from None


@contextmanager
def slurm_cluster(profile: SlurmProfile) -> Iterator[Any]:
    """A dask-jobqueue SLURMCluster scaled as the profile says; its jobs are cancelled
    when the block ends (also on errors and Ctrl-C)."""
    if shutil.which("sbatch") is None:
        raise ClusterProfileError("--cluster slurm: sbatch is not on PATH (no SLURM client here)")
    from dask_jobqueue.slurm import SLURMCluster

    cluster = SLURMCluster(**profile.jobqueue_kwargs())
    try:
        if profile.adaptive:
            low = profile.minimum_jobs or 0
            cluster.adapt(minimum_jobs=low, maximum_jobs=profile.maximum_jobs or max(1, low))
        else:
            cluster.scale(jobs=profile.jobs)
        yield cluster
    finally:
        cluster.close()
