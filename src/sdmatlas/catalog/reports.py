"""Stored territory reports: one row per (release, territory), with the stamp of what it
was computed from (see :mod:`sdmatlas.serve.reports`). A row with another stamp is stale."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sdmatlas.catalog.schema import Release, Territory, TerritoryReport


def _ids(session: Session, release_key: str, territory_code: str) -> tuple[int, int] | None:
    rid = session.scalar(select(Release.id).where(Release.key == release_key))
    tid = session.scalar(select(Territory.id).where(Territory.code == territory_code))
    return None if rid is None or tid is None else (rid, tid)


def get(session: Session, release_key: str, territory_code: str, stamp: str) -> bytes | None:
    """The stored report body if there is one with this ``stamp``."""
    row = session.execute(
        select(TerritoryReport.body)
        .join(Release, Release.id == TerritoryReport.release_id)
        .join(Territory, Territory.id == TerritoryReport.territory_id)
        .where(
            Release.key == release_key,
            Territory.code == territory_code,
            TerritoryReport.stamp == stamp,
        )
    ).first()
    return None if row is None else bytes(row[0])


def put(
    session: Session,
    release_key: str,
    territory_code: str,
    stamp: str,
    body: bytes,
    seconds: float,
) -> None:
    """Store (or replace) a report. Two writers racing both succeed: the last one wins,
    and both computed the same report."""
    ids = _ids(session, release_key, territory_code)
    if ids is None:  # the release or territory went away meanwhile: nothing to keep
        return
    rid, tid = ids
    try:
        with session.begin_nested():  # a savepoint: a lost race undoes only this
            session.execute(
                delete(TerritoryReport).where(
                    TerritoryReport.release_id == rid, TerritoryReport.territory_id == tid
                )
            )
            session.add(
                TerritoryReport(
                    release_id=rid,
                    territory_id=tid,
                    stamp=stamp,
                    body=body,
                    seconds=round(seconds, 4),
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:  # another writer stored it between our delete and insert
        pass


def count(session: Session, release_key: str) -> int:
    """Stored reports of a release (any stamp)."""
    rows = session.scalars(
        select(TerritoryReport.territory_id)
        .join(Release, Release.id == TerritoryReport.release_id)
        .where(Release.key == release_key)
    ).all()
    return len(rows)
