"""Cluster execution (issue 15): predict and publish through a real single-node SLURM
started by the tests (Debian's slurmctld, slurmd and munge; sdmatlas.testing.localslurm),
SLURM job arrays, and cluster profiles refused before any job is submitted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import World, cube_chunk_bytes, wait_for_markers
from sdmatlas.cluster import ClusterProfileError, SlurmProfile, load_profile, parse_profile
from sdmatlas.predict.cube import open_cube
from sdmatlas.testing.localslurm import LocalSlurm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# -- profiles (no SLURM needed) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,message",
    [
        ({"partiton": "gpu"}, "partiton: unknown setting"),
        ({"memory": "-4GiB"}, "memory: '-4GiB' must be a positive size"),
        ({"memory": "lots"}, "memory: 'lots' is not a size"),
        ({"walltime": "2 hours"}, "walltime: '2 hours' is not a SLURM time"),
        ({"walltime": "1:2:3:4"}, "is not a SLURM time"),
        ({"cores": 0}, "cores:"),
        ({"gpus": -1}, "gpus:"),
        ({"kind": "pbs"}, "kind:"),
        (["slurm"], "expected a mapping"),
    ],
)
def test_bad_profiles_are_refused_with_the_field_named(data: object, message: str) -> None:
    with pytest.raises(ClusterProfileError, match="cluster profile") as e:
        parse_profile(data, "test.yaml")
    assert message in str(e.value)


def test_profiles_become_slurm_job_scripts(tmp_path: Path) -> None:
    p = parse_profile({"partition": "gpu", "account": "sdm", "cores": 4, "processes": 2,
                       "memory": "16GiB", "walltime": "1-02:00:00", "gpus": 1,
                       "prologue": ["module load cuda"], "maximum_jobs": 8}, "x")  # fmt: skip
    kw = p.jobqueue_kwargs()
    assert kw["queue"] == "gpu" and kw["account"] == "sdm" and kw["cores"] == 4
    assert "--gres=gpu:1" in kw["job_extra_directives"] and p.adaptive
    with pytest.raises(ClusterProfileError, match="processes"):
        SlurmProfile(cores=1, processes=2).jobqueue_kwargs()
    from dask_jobqueue.slurm import SLURMCluster

    with SLURMCluster(**kw) as cluster:
        script = cluster.job_script()
    for line in ["#SBATCH -p gpu", "#SBATCH -A sdm", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gres=gpu:1", "#SBATCH -t 1-02:00:00", "module load cuda"]:  # fmt: skip
        assert line in script, line
    # files and named profiles
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"partition": "debug", "jobs": 3}))
    assert load_profile(str(f)).jobs == 3
    named = tmp_path / "profiles.yaml"
    named.write_text(yaml.safe_dump({"big": {"cores": 8}, "small": {"cores": 1}}))
    assert load_profile("big", named).cores == 8
    with pytest.raises(ClusterProfileError, match="known: big, small"):
        load_profile("huge", named)
    with pytest.raises(ClusterProfileError, match="does not exist"):
        load_profile(str(tmp_path / "nope.yaml"))
    assert load_profile("slurm") == SlurmProfile()


def _cli(world: World, card: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "sdmatlas"), "predict", "--card", str(card), "--territory",
            str(world.territory_path), "--covariates", str(world.root / "covariates"),
            "--out", str(out), "--chunk", str(world.grid.chunk), *extra]  # fmt: skip


# -- a real SLURM ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    with LocalSlurm(cpus=4) as s:
        yield s


def _profile(tmp_path: Path, slurm: LocalSlurm, **extra: object) -> Path:
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump({"partition": slurm.partition, "cores": 1, "memory": "2GiB",
                                    "walltime": "00:20:00", "interface": "lo",
                                    "log_directory": str(tmp_path / "logs"),
                                    "worker_start_timeout": 120, **extra}))  # fmt: skip
    return path


def _env(slurm: LocalSlurm) -> dict[str, str]:
    return {**os.environ, **slurm.env()}


@pytest.mark.slow
def test_bad_profile_submits_no_job(
    tmp_path: Path, demo_card: Path, coast: World, slurm: LocalSlurm
) -> None:
    bad = _profile(tmp_path, slurm, memory="-1GiB")
    done = subprocess.run(_cli(coast, demo_card, tmp_path / "c.zarr", "--cluster", str(bad)),
                          capture_output=True, text=True, env=_env(slurm), timeout=120)  # fmt: skip
    assert done.returncode != 0 and "memory" in done.stderr and "positive" in done.stderr
    assert slurm.jobs() == [] and not (tmp_path / "c.zarr").exists()


@pytest.mark.slow
def test_predict_and_publish_on_slurm_equal_the_local_run(
    tmp_path: Path, demo_card: Path, coast: World, cube: Path, slurm: LocalSlurm
) -> None:
    """Two SLURM worker jobs (dask-jobqueue): the cube is byte-identical to the one the
    in-process run made, and the run record names the cluster and the workers' device.
    Publishing the cube on SLURM gives the same release as publishing it locally."""
    profile = _profile(tmp_path, slurm, jobs=2)
    out = tmp_path / "slurm.zarr"
    done = subprocess.run(_cli(coast, demo_card, out, "--cluster", str(profile)),
                          capture_output=True, text=True, env=_env(slurm), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert cube_chunk_bytes(out) == cube_chunk_bytes(cube)
    run = open_cube(out).meta["runs"][-1]
    assert run["scheduler"] == "slurm" and run["cluster"]["partition"] == slurm.partition
    assert run["worker_devices"] == ["cpu"]
    logs = list((tmp_path / "logs").glob("*.err"))
    assert len(logs) >= 1  # the workers were SLURM jobs: their logs are there

    releases = tmp_path / "releases"
    pub = [str(BIN / "sdmatlas"), "publish", str(out), "--id", "r", "--no-register",
           "--root", str(releases)]  # fmt: skip
    done = subprocess.run([*pub, "--cluster", str(profile)], capture_output=True, text=True,
                          env=_env(slurm), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    local = tmp_path / "local"
    subprocess.run([*pub[:-1], str(local), "--workers", "0"], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    assert _tree_bytes(releases / "r") == _tree_bytes(local / "r")
    slurm.wait_for_jobs(60)  # the worker jobs were cancelled at the end of each run


def _tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a release but its manifest (which records times and the executor)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p != root / "zarr.json"}  # fmt: skip


@pytest.mark.slow
def test_slurm_workers_get_the_local_workers_environment(
    tmp_path: Path, slurm: LocalSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What bench/cluster.py found: SLURM workers first kept Dask's default
    MALLOC_TRIM_THRESHOLD_ (60 % slower tasks, docs/publish.md); they now run in the
    environment a LocalCluster's workers get."""
    from sdmatlas.executor import ExecutorOptions, open_executor

    def environment() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "GDAL_CACHEMAX",
                                               "OMP_NUM_THREADS")}  # fmt: skip

    for key, value in slurm.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    profile = load_profile(str(_profile(tmp_path, slurm, jobs=1)))
    with open_executor(ExecutorOptions(cluster=profile)) as ex:
        on_slurm = list(ex.client.run(environment).values())
    with open_executor(ExecutorOptions(workers=1)) as ex:
        local = list(ex.client.run(environment).values())
    assert on_slurm == local == [{"MALLOC_TRIM_THRESHOLD_": None, "GDAL_CACHEMAX": "16",
                                  "OMP_NUM_THREADS": "1"}]  # fmt: skip


@pytest.mark.slow
def test_job_array_shards_give_the_same_cube(
    tmp_path: Path, demo_card: Path, coast: World, cube: Path, slurm: LocalSlurm
) -> None:
    """deploy/slurm/predict-array.sbatch with N = 3, then its --finish job."""
    out = tmp_path / "array.zarr"
    args = " ".join(_cli(coast, demo_card, out)[2:])
    script = str(ROOT / "deploy" / "slurm" / "predict-array.sbatch")
    exe = f"SDMATLAS={BIN / 'sdmatlas'},SDM_ARGS={args}"
    first = slurm.run("sbatch", "--parsable", "--array=0-2", f"--export=ALL,SDM_SHARDS=3,{exe}",
                      f"--output={tmp_path}/array-%A_%a.out", script).stdout.strip()  # fmt: skip
    slurm.run("sbatch", f"--dependency=afterany:{first}", f"--export=ALL,SDM_FINISH=1,{exe}",
              f"--output={tmp_path}/finish.out", script)  # fmt: skip
    slurm.wait_for_jobs(600)
    outputs = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    c = open_cube(out)
    assert c.is_complete, outputs[-3000:]
    assert cube_chunk_bytes(out) == cube_chunk_bytes(cube)
    runs = c.meta["runs"]
    assert sorted(r.get("shard") for r in runs if "shard" in r) == ["0/3", "1/3", "2/3"]
    assert sum(r["chunks_computed"] for r in runs) == len(c.done_chunks())
    # --finish refuses a cube with missing chunks, and says what to do
    partial = tmp_path / "partial.zarr"
    subprocess.run(_cli(coast, demo_card, partial, "--shard", "0/3", "--workers", "0"),
                   check=True, capture_output=True)  # fmt: skip
    done = subprocess.run(_cli(coast, demo_card, partial, "--finish", "--workers", "0"),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "have no done marker" in " ".join(done.stderr.split())
    assert not open_cube(partial).is_complete


def _cancel_mid_run(
    tmp_path: Path, card: Path, world: World, slurm: LocalSlurm, **profile: object
) -> tuple[subprocess.Popen[bytes], int, Path, Path]:
    """An in-process reference cube, then a SLURM run whose worker jobs are all cancelled
    once it has done a few chunks: (the run, chunks done at the cancel, its cube, the
    reference)."""
    full = tmp_path / "full.zarr"
    subprocess.run(_cli(world, card, full, "--workers", "0"), check=True, capture_output=True)
    out = tmp_path / "cancelled.zarr"
    proc = subprocess.Popen(_cli(world, card, out, "--cluster",
                                 str(_profile(tmp_path, slurm, **profile))),
                            env=_env(slurm), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    wait_for_markers(out, proc)
    jobs = slurm.jobs()
    assert jobs, "a worker job must be running"
    slurm.run("scancel", *jobs)
    return proc, len(open_cube(out).done_chunks()), out, full


@pytest.mark.slow
def test_a_cancelled_worker_job_is_replaced(
    tmp_path: Path, demo_card: Path, many_chunks: World, slurm: LocalSlurm
) -> None:
    """scancel of a worker job mid-run: with adaptive scaling, dask-jobqueue submits a
    new job and the run finishes; the cube equals a local run's."""
    proc, at_cancel, out, full = _cancel_mid_run(tmp_path, demo_card, many_chunks, slurm,
                                                 minimum_jobs=1, maximum_jobs=1)  # fmt: skip
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    c = open_cube(out)
    total = len(c.done_chunks())
    assert c.is_complete and at_cancel < total, (at_cancel, total)  # cancelled mid-run
    started = {p.stem for p in (tmp_path / "logs").glob("dask-worker-*.err")}
    assert len(started) >= 2, started  # a second worker job replaced the cancelled one
    assert cube_chunk_bytes(out) == cube_chunk_bytes(full)


@pytest.mark.slow
def test_a_run_whose_workers_are_all_gone_stops_and_resumes(
    tmp_path: Path, demo_card: Path, many_chunks: World, slurm: LocalSlurm
) -> None:
    """A fixed-size run (one job, not replaced) whose job is cancelled: the run stops
    with a clear error after ``worker_start_timeout`` without a worker, keeps its done
    chunks, and ``--resume`` (here in-process) completes it byte-identically."""
    proc, _, out, full = _cancel_mid_run(tmp_path, demo_card, many_chunks, slurm, jobs=1,
                                         worker_start_timeout=15)  # fmt: skip
    _, err = proc.communicate(timeout=300)
    message = " ".join(err.decode().split())
    assert proc.returncode != 0 and "no worker for" in message and "--resume" in message
    c = open_cube(out)
    done_before = len(c.done_chunks())
    assert c.status == "running" and done_before > 0
    assert "no worker" in c.meta["runs"][-1]["error"]
    subprocess.run(_cli(many_chunks, demo_card, out, "--resume", "--workers", "0"), check=True,
                   capture_output=True)  # fmt: skip
    c = open_cube(out)
    assert c.is_complete and c.meta["runs"][-1]["chunks_already_done"] == done_before
    assert cube_chunk_bytes(out) == cube_chunk_bytes(full)


@pytest.mark.slow  # needs the system packages (make test installs them)
def test_slurm_binaries_are_installed_by_the_project() -> None:
    """The install script names SLURM and munge, so that CI has them (no test skips)."""
    text = (ROOT / "scripts" / "install-system-packages.sh").read_text()
    for pkg in ("slurmctld", "slurmd", "slurm-client", "munge"):
        assert pkg in text
    assert shutil.which("sbatch") and shutil.which("slurmd", path="/usr/sbin:/usr/bin")
