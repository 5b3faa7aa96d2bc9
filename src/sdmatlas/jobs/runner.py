"""The job runner: a thread in each API process that claims jobs from the catalog and
runs them (``sdmatlas predict``'s chunk tasks on the Dask executor, then ``publish``
and registering), and removes the data of cancelled and expired jobs.

A job's cube and release live under ``<jobs_dir>/<job id>/``. A runner beats the job's
heartbeat while it works; a job whose heartbeat stops (the process was killed) is
claimed again by any runner, which resumes it: the cube keeps its finished chunks
(done markers) and publish its finished tasks. After ``jobs_max_attempts`` claims the
job fails, with the reason, instead of running for ever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from sdmatlas.catalog.covariates import get_covariates
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.schema import Job, JobStatus
from sdmatlas.catalog.statuses import species_info
from sdmatlas.errors import JobCancelledError, ReleaseExistsError, SdmAtlasError
from sdmatlas.executor import ExecutorOptions
from sdmatlas.jobs import store
from sdmatlas.jobs.area import JobArea
from sdmatlas.settings import Settings

log = logging.getLogger("sdmatlas.jobs")


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_path / job_id


def release_key(job_id: str) -> str:
    return f"job-{job_id}"


class JobRunner:
    """Runs jobs one at a time in a daemon thread (one runner per API process)."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.name = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdmatlas-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        said, said_at = "", 0.0
        while not self._stop.is_set():
            try:
                self.clean()
                job = store.claim(self.catalog, self.name, self.settings.jobs_stale_seconds)
            except SdmAtlasError as exc:  # the catalog is down (or not migrated): later
                if str(exc) != said or time.monotonic() - said_at > 60:
                    log.warning("job runner: %s", exc)
                    said, said_at = str(exc), time.monotonic()
                job = None
            if job is None:
                self._stop.wait(self.settings.jobs_poll_seconds)
                continue
            self.run(job)

    # -- one job ----------------------------------------------------------------------------

    def run(self, job: Job) -> None:
        """Run (or resume) a claimed job to its end state."""
        s = self.settings
        if job.attempts > s.jobs_max_attempts:
            self._fail(
                job,
                f"the job was interrupted {job.attempts - 1} times (the server stopped while "
                f"it ran) and is not tried again (jobs_max_attempts={s.jobs_max_attempts}); "
                "submit it again",
            )
            return
        beat = _Heartbeat(self, job.id)
        try:
            with beat:
                timings = self._execute(job, beat)
        except JobCancelledError:
            log.info("job %s cancelled while running", job.id)
            self._remove(job)
            return
        except SdmAtlasError as exc:
            self._fail(job, str(exc))
            return
        except Exception as exc:
            log.error("job %s failed: %r", job.id, exc, exc_info=exc)
            self._fail(job, f"internal error ({type(exc).__name__}); it is logged")
            return
        if not store.finish(
            self.catalog, job.id, JobStatus.done, release_key=release_key(job.id), timings=timings
        ):
            self._remove(job)  # cancelled while it was being registered

    def _execute(self, job: Job, beat: _Heartbeat) -> dict[str, Any]:
        from sdmatlas.catalog.register import register_release
        from sdmatlas.predict.pipeline import PredictOptions, predict
        from sdmatlas.publish.release import PublishOptions, publish
        from sdmatlas.publish.workspace import workspace_for
        from sdmatlas.storage import LocalReleaseStore, open_release

        s = self.settings
        cov = get_covariates(self.catalog, job.covariates_id)
        area = JobArea.from_json(job.window)
        territory = area.territory(cov, name=f"job-{job.id}")
        root = job_dir(s, job.id)
        root.mkdir(parents=True, exist_ok=True)
        cube = root / "cube.zarr"
        queued_s = (store.now() - store.aware(job.created_at)).total_seconds()
        t0 = time.perf_counter()
        executor = ExecutorOptions(workers=s.jobs_workers, scheduler=s.jobs_scheduler)

        summary = predict(
            cov.card_path,
            {k: Path(v) for k, v in cov.covariates.items()},
            territory,
            cube,
            PredictOptions(
                batch_size=s.batch_size,
                workers=s.jobs_workers,
                scheduler=s.jobs_scheduler,
                device=s.device,
                resume=True,
            ),
            progress=beat.progress,
        )
        t1 = time.perf_counter()
        beat.check()
        key = release_key(job.id)
        releases = LocalReleaseStore(root / "releases")
        if not releases.exists(key):
            resume = workspace_for(root / "releases", key).path.exists()
            info = species_info(self.catalog, summary_ids(cube))
            publish(
                cube,
                releases,
                key,
                info,
                PublishOptions(executor=executor, resume=resume),
            )
        t2 = time.perf_counter()
        beat.check()
        location = str((root / "releases" / key).resolve())
        # already registered if an earlier attempt stopped right after registering
        with contextlib.suppress(ReleaseExistsError):
            register_release(self.catalog, open_release(location), location, cov.period)
        _set_expiry(self.catalog, key, job)
        t3 = time.perf_counter()
        return {
            "queued_s": round(queued_s, 3),
            "predict_s": round(t1 - t0, 3),
            "publish_s": round(t2 - t1, 3),
            "register_s": round(t3 - t2, 3),
            "run_s": round(t3 - t0, 3),
            "pixels": summary.pixels,
            "species": summary.n_species,
            "chunks_computed": summary.computed,
            "chunks_resumed": summary.already_done,
            "attempt": job.attempts,
        }

    def _fail(self, job: Job, message: str) -> None:
        log.warning("job %s failed: %s", job.id, message)
        self._remove_data(job)
        store.finish(self.catalog, job.id, JobStatus.failed, error=message[:2000])

    def _remove_data(self, job: Job) -> None:
        remove_data(self.catalog, self.settings, job.id)

    def _remove(self, job: Job, expired: bool = False) -> None:
        self._remove_data(job)
        store.mark_cleaned(self.catalog, job.id, expired)

    def clean(self) -> None:
        """Remove the data of cancelled jobs no runner handles and of expired results."""
        for job in store.to_clean(self.catalog, self.settings.jobs_stale_seconds):
            if job.runner == self.name and job.status == JobStatus.cancelled:
                continue  # this runner's own job: it cleans up when it sees the cancel
            self._remove(job, expired=job.status == JobStatus.done)


class _Heartbeat:
    """Beats a running job's heartbeat from a thread (publish has no progress callback),
    records progress, and turns a cancel into :class:`JobCancelledError` at the next
    check."""

    def __init__(self, runner: JobRunner, job_id: str) -> None:
        self.runner = runner
        self.job_id = job_id
        self.cancelled = False
        self._done = threading.Event()
        self._last = 0.0

    def __enter__(self) -> _Heartbeat:
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def _beat(self) -> None:
        period = max(0.2, self.runner.settings.jobs_stale_seconds / 4)
        while not self._done.wait(period):
            self._send()

    def _send(self, **values: Any) -> None:
        try:
            status = store.beat(self.runner.catalog, self.job_id, self.runner.name, **values)
        except SdmAtlasError as exc:
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            return
        if status == JobStatus.cancelled:
            self.cancelled = True

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.25:  # at most 4 writes a second
            self.check()
            return
        self._last = now
        self._send(chunks_done=done, chunks_total=total)
        self.check()

    def check(self) -> None:
        if self.cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled")


def remove_data(catalog: Catalog, settings: Settings, job_id: str) -> None:
    """A job's release (catalog rows, then files) and its cube."""
    store.drop_release(catalog, release_key(job_id))
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)


def summary_ids(cube: Path) -> list[int]:
    from sdmatlas.predict.cube import open_cube

    return list(open_cube(cube).species_ids)


def _set_expiry(catalog: Catalog, key: str, job: Job) -> None:
    from sqlalchemy import update

    from sdmatlas.catalog.schema import Release

    with catalog.session() as s:
        s.execute(update(Release).where(Release.key == key).values(expires_at=job.expires_at))
