"""The covariates a model runs on, per period, known to the server.

Registering checks them as ``sdmatlas predict`` does (names, CRS, resolution, alignment,
coverage of the reference grid) and records their checksums: an on-demand job or a live
point prediction then needs no file from the client, and a job's identity includes the
covariates' contents, so two jobs on different covariates never share a result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.register import validate_period
from sdmatlas.catalog.schema import ModelCovariates
from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.models.card import ModelCard, load_card
from sdmatlas.predict.covariates import CovariateStack

if TYPE_CHECKING:
    from sdmatlas.territory import Territory


@dataclass(frozen=True)
class CovariateSet:
    """A registration: a model (its card on disk), a period, its covariates and the
    reference grid with its coverage mask."""

    id: int
    model_name: str
    model_version: str
    model_digest: str
    card_path: Path
    period: str
    covariates: dict[str, str]
    checksums: dict[str, str]
    grid: Grid
    territory_path: Path

    @property
    def model(self) -> str:
        return f"{self.model_name}@{self.model_version}"

    def card(self) -> ModelCard:
        return load_card(self.card_path)

    def stack(self) -> CovariateStack:
        """The covariate rasters (NotFoundError names a file that disappeared)."""
        return CovariateStack({k: Path(v) for k, v in self.covariates.items()})

    def territory(self) -> Territory:
        """The coverage: where the model may predict (the reference grid's mask)."""
        from sdmatlas.territory import territory_from_mask_raster  # rasterio: when used

        if not self.territory_path.exists():
            raise NotFoundError(f"the coverage mask {self.territory_path} does not exist")
        t = territory_from_mask_raster(self.territory_path, chunk=self.grid.chunk)
        return t

    def identity(self) -> dict[str, Any]:
        """What a prediction's bytes depend on, besides the area (job deduplication)."""
        return {
            "model": self.model_digest,
            "covariates": self.checksums,
            "period": self.period,
            "grid": self.grid.model_dump(mode="json"),
        }


def _set(row: ModelCovariates) -> CovariateSet:
    return CovariateSet(
        id=row.id,
        model_name=row.model_name,
        model_version=row.model_version,
        model_digest=row.model_digest,
        card_path=Path(row.card_path),
        period=row.period,
        covariates=dict(row.covariates),
        checksums=dict(row.checksums),
        grid=Grid.model_validate(row.grid),
        territory_path=Path(row.territory),
    )


def register_covariates(
    catalog: Catalog,
    card_path: Path,
    period: str,
    covariates: Mapping[str, Path],
    territory: Path,
    chunk: int = 256,
) -> CovariateSet:
    """Check ``covariates`` against the card and the grid of the ``territory`` mask
    raster, and record them for the card's model and ``period`` (replacing an earlier
    registration of the same model and period)."""
    validate_period(period)
    card_path = Path(card_path).resolve()
    card = load_card(card_path)
    from sdmatlas.territory import territory_from_mask_raster  # rasterio: when used

    terr = territory_from_mask_raster(Path(territory), chunk=chunk)
    needed = {i.name for i in card.inputs}
    extra = sorted(set(covariates) - needed)
    if extra:
        raise InvalidInputError(
            f"covariates {extra} are not inputs of model {card.name} {card.version} "
            f"(it needs {sorted(needed)})"
        )
    paths = {k: Path(v).resolve() for k, v in covariates.items()}
    stack = CovariateStack(paths)
    stack.check(card, terr.grid)
    digest = card.digest()
    now = datetime.now(UTC)
    with catalog.session() as s:
        row = s.scalar(
            select(ModelCovariates).where(
                ModelCovariates.model_name == card.name,
                ModelCovariates.model_version == card.version,
                ModelCovariates.period == period,
            )
        )
        if row is None:
            row = ModelCovariates(model_name=card.name, model_version=card.version, period=period)
            s.add(row)
        row.model_digest = digest
        row.card_path = str(card_path)
        row.covariates = {k: str(v) for k, v in sorted(paths.items())}
        row.checksums = stack.checksums()
        row.grid = terr.grid.model_dump(mode="json")
        row.territory = str(Path(territory).resolve())
        row.registered_at = now
        s.flush()
        return _set(row)


def _split_model(model: str) -> tuple[str, str | None]:
    name, _, version = model.partition("@")
    if not name or len(model) > 265:
        raise InvalidInputError(f"model {model[:60]!r}: give a model name, or name@version")
    return name, version or None


def find_covariates(catalog: Catalog, model: str, period: str | None = None) -> CovariateSet:
    """The registration of ``model`` (``name`` or ``name@version``; the newest version
    without one) for ``period`` (the newest registered period without one)."""
    name, version = _split_model(model)
    if period is not None:
        validate_period(period)
    with catalog.session() as s:
        stmt = select(ModelCovariates).where(ModelCovariates.model_name == name)
        if version is not None:
            stmt = stmt.where(ModelCovariates.model_version == version)
        rows = list(s.scalars(stmt.order_by(ModelCovariates.registered_at.desc())))
        if not rows:
            known = sorted({f"{m}" for m in s.scalars(select(ModelCovariates.model_name))})
            raise NotFoundError(
                f"model {model!r} has no registered covariates (models: {known or 'none'}; "
                "register them with 'sdmatlas covariates register')"
            )
        if period is not None:
            match = [r for r in rows if r.period == period]
            if not match:
                periods = sorted({r.period for r in rows})
                raise NotFoundError(
                    f"model {model!r} has no covariates for period {period!r} "
                    f"(registered periods: {periods})"
                )
            rows = match
        return _set(rows[0])


def get_covariates(catalog: Catalog, covariates_id: int) -> CovariateSet:
    """A registration by its id (a job's)."""
    with catalog.session() as s:
        row = s.get(ModelCovariates, covariates_id)
        if row is None:
            raise NotFoundError(f"the covariate registration {covariates_id} was removed")
        return _set(row)


def list_covariates(catalog: Catalog) -> list[CovariateSet]:
    with catalog.session() as s:
        rows = s.scalars(select(ModelCovariates).order_by(ModelCovariates.id))
        return [_set(r) for r in rows]


def request_digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
