"""Jobs in the catalog: submission (deduplication and limits), state changes, views.

A job's state lives only in the catalog, so any API process can answer for it, a job
survives a restart, and the runners of several processes share the queue: a runner
claims a job with one conditional UPDATE (the same on SQLite and PostgreSQL), so two
never run the same job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from sdmatlas.catalog.covariates import CovariateSet, request_digest
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.schema import Job, JobStatus
from sdmatlas.catalog.schema import Release as ReleaseRow
from sdmatlas.errors import NotFoundError, PermissionDeniedError, QuotaExceededError
from sdmatlas.jobs.area import JobArea

ACTIVE = (JobStatus.queued, JobStatus.running)
REUSABLE = (JobStatus.queued, JobStatus.running, JobStatus.done)


@dataclass(frozen=True)
class Limits:
    max_active: int
    max_active_per_key: int
    ttl_hours: float


def now() -> datetime:
    return datetime.now(UTC)


def aware(t: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were written in UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def request_key(cov: CovariateSet, area: JobArea, mask_digest: str) -> str:
    """What a job's result depends on: the model digest, the covariates' checksums, the
    period, the grid window and the pixels (two polygons with the same pixels are one
    request)."""
    return request_digest(
        {**cov.identity(), "window": area.grid.model_dump(mode="json"), "mask": mask_digest}
    )


def submit(
    catalog: Catalog,
    cov: CovariateSet,
    area: JobArea,
    mask_digest: str,
    chunks: int,
    request: dict[str, Any],
    key_id: int | None,
    limits: Limits,
) -> tuple[Job, bool]:
    """The job for this request: an existing one (queued, running or done and not yet
    expired) for the same request key, else a new queued job within the limits. Returns
    the job and whether it is new."""
    rkey = request_key(cov, area, mask_digest)
    t = now()
    with catalog.session() as s:
        existing = s.scalar(
            select(Job)
            .where(Job.request_key == rkey, Job.status.in_(REUSABLE), Job.expires_at > t)
            .order_by(Job.created_at.desc())
            .limit(1)
        )
        if existing is not None:
            return existing, False
        active = s.scalar(select(func.count()).where(Job.status.in_(ACTIVE))) or 0
        if active >= limits.max_active:
            raise QuotaExceededError(
                f"{active} jobs are queued or running, the most the server takes "
                f"(jobs_max_active={limits.max_active}): retry later"
            )
        if key_id is not None:
            mine = s.scalar(
                select(func.count()).where(Job.api_key_id == key_id, Job.status.in_(ACTIVE))
            )
            if (mine or 0) >= limits.max_active_per_key:
                raise QuotaExceededError(
                    f"this key has {mine} jobs queued or running, the most one key may have "
                    f"(jobs_max_active_per_key={limits.max_active_per_key}): wait for one "
                    "to finish or cancel one"
                )
        job = Job(
            id=secrets.token_hex(8),
            request_key=rkey,
            api_key_id=key_id,
            covariates_id=cov.id,
            status=JobStatus.queued,
            request=request,
            window=area.to_json(),
            area_km2=area.area_km2,
            chunks_total=chunks,
            chunks_done=0,
            timings={},
            attempts=0,
            created_at=t,
            expires_at=t + timedelta(hours=limits.ttl_hours),
        )
        s.add(job)
        s.flush()
        return job, True


def get(catalog: Catalog, job_id: str) -> Job:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id[:40]!r}")
        return job


def request_cancel(
    catalog: Catalog, job_id: str, key_id: int | None, admin: bool
) -> tuple[Job, JobStatus]:
    """Mark a job cancelled; returns it and its status before. A running job's data is
    removed by its runner (or, if that runner died, by the sweep); the caller removes a
    queued or finished job's at once. Only the key that made it, or an admin key, may."""
    with catalog.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFoundError(f"no job {job_id[:40]!r}")
        if not admin and job.api_key_id != key_id:
            raise PermissionDeniedError(
                "only the key that created a job (or an admin key) may cancel it"
            )
        before = JobStatus(job.status)
        if before in (JobStatus.queued, JobStatus.running, JobStatus.done):
            job.status = JobStatus.cancelled
            job.finished_at = job.finished_at or now()
        if before != JobStatus.running:
            job.runner = None  # nobody runs it: its data (if any) goes now
        return job, before


def claim(catalog: Catalog, runner: str, stale_after_s: float) -> Job | None:
    """Take the oldest queued job, or a running one whose runner stopped beating (a
    restarted server): one conditional UPDATE, so only one runner wins it."""
    t = now()
    stale = t - timedelta(seconds=stale_after_s)
    claimable = or_(
        Job.status == JobStatus.queued,
        and_(Job.status == JobStatus.running, Job.heartbeat_at < stale),
    )
    with catalog.session() as s:
        cand = s.scalar(select(Job.id).where(claimable).order_by(Job.created_at).limit(1))
        if cand is None:
            return None
        won = _rowcount(
            s.execute(
                update(Job)
                .where(Job.id == cand, claimable)
                .values(
                    status=JobStatus.running,
                    runner=runner,
                    heartbeat_at=t,
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, t),
                )
                .execution_options(synchronize_session=False)
            )
        )
        if not won:
            return None
        return s.get(Job, cand, populate_existing=True)


def beat(catalog: Catalog, job_id: str, runner: str, **values: Any) -> JobStatus:
    """Record progress and liveness; returns the job's status (cancelled: stop)."""
    with catalog.session() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.runner == runner)
            .values(heartbeat_at=now(), **values)
            .execution_options(synchronize_session=False)
        )
        status = s.scalar(select(Job.status).where(Job.id == job_id))
        return JobStatus(status) if status is not None else JobStatus.cancelled


def finish(catalog: Catalog, job_id: str, status: JobStatus, **values: Any) -> bool:
    """Move a running job to its end state, unless it was cancelled meanwhile (False)."""
    with catalog.session() as s:
        n = _rowcount(
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.running)
                .values(status=status, finished_at=now(), **values)
                .execution_options(synchronize_session=False)
            )
        )
        return bool(n)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's, which SQLAlchemy types as Result)."""
    return int(result.rowcount)


def drop_release(catalog: Catalog, release_key: str) -> None:
    with catalog.session() as s:
        s.execute(delete(ReleaseRow).where(ReleaseRow.key == release_key))


def to_clean(catalog: Catalog, stale_after_s: float) -> list[Job]:
    """Jobs whose data should go: cancelled ones that no live runner is handling, and
    results past their expiry."""
    t = now()
    stale = t - timedelta(seconds=stale_after_s)
    with catalog.session() as s:
        return list(
            s.scalars(
                select(Job).where(
                    or_(
                        and_(
                            Job.status == JobStatus.cancelled,
                            Job.runner.is_not(None),
                            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
                        ),
                        and_(Job.status == JobStatus.done, Job.expires_at < t),
                    )
                )
            )
        )


def mark_cleaned(catalog: Catalog, job_id: str, expired: bool) -> None:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        if expired and job.status == JobStatus.done:
            job.status = JobStatus.expired
        job.runner = None


def view(job: Job, base_url: str = "") -> dict[str, Any]:
    """The JSON a client sees of a job."""
    out: dict[str, Any] = {
        "id": job.id,
        "status": JobStatus(job.status).value,
        "model": job.request.get("model"),
        "period": job.request.get("period"),
        "area": job.request.get("area"),
        "area_km2": job.area_km2,
        "progress": {
            "chunks_done": job.chunks_done,
            "chunks_total": job.chunks_total,
            "fraction": round(job.chunks_done / job.chunks_total, 4) if job.chunks_total else 0,
        },
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "expires_at": _iso(job.expires_at),
        "timings": job.timings,
        "error": job.error,
        "release": job.release_key if job.status == JobStatus.done else None,
        "links": {"self": f"{base_url}/jobs/{job.id}"},
    }
    if job.status == JobStatus.done and job.release_key:
        rel = job.release_key
        xyz = "WebMercatorQuad/{z}/{x}/{y}.png"
        out["links"].update(
            {
                "release": f"{base_url}/releases/{rel}",
                "layers": f"{base_url}/layers?release={rel}",
                "tiles": f"{base_url}/tiles/{rel}:species:{{species_id}}/{xyz}",
                "point": f"{base_url}/point?release={rel}&lon={{lon}}&lat={{lat}}",
                "report": f"{base_url}/report?release={rel}",
            }
        )
    return out


def _iso(t: datetime | None) -> str | None:
    return aware(t).isoformat() if t is not None else None
