"""Static tile archives: one PMTiles v3 file per layer (``sdmatlas seed --to pmtiles DIR``),
or one MBTiles 1.3 file (``--to mbtiles DIR``) for the clients and servers that read those
(GDAL, QGIS, mbtileserver, TileServer GL).

A PMTiles archive holds a layer's WebMercatorQuad tiles in one file that any static
host or bucket serves with HTTP range requests: no tile server, a CDN in front. The
tiles are rendered by the API's own tile path (``make_tile``, the same bytes and, with
a persistent tile cache, the same cache entries), in the worker processes that
``sdmatlas seed`` uses, and written in tile-id order (a clustered archive) by the
``pmtiles`` package's writer, which stores identical tiles once (the many uniform
tiles of a species map: all absent, all sea). Empty tiles (no data at all) are left
out, as PMTiles readers expect: a missing tile draws nothing.

An archive is written beside its final name (``.<name>.<random>.tmp``) and renamed into
place, so a reader never sees a partial archive; the temporary file a killed seed leaves
is removed by the next seed of that layer (so: one seed per archive folder at a time).
The ``pmtiles`` writer stages the tile bodies in the system's temporary directory
(``TMPDIR``) until it writes the archive. The metadata carries the layer's version:
running the seed again skips an archive of the current version and rewrites one of an
older version.

MBTiles is SQLite: tiles are stored deduplicated in the usual ``map`` + ``images`` tables
with a ``tiles`` view (as ``mb-util`` and TileMill write them), rows in TMS order (y from
the bottom), the metadata in ``metadata`` (name, format, bounds, center, minzoom,
maxzoom, attribution, type, version). It is written with Python's ``sqlite3`` into the
temporary file and renamed, like a PMTiles archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtiles.reader import MmapSource, Reader
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

from sdmatlas.errors import InvalidInputError
from sdmatlas.serve import seed as seeding
from sdmatlas.serve.seed_plan import PlanCaches, Verdict, batch_verdicts
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.core import make_tile
from sdmatlas.serve.tiles.layers import LayerRef

#: PMTiles addresses tiles in this TileMatrixSet only (z/x/y of spherical Mercator).
ARCHIVE_TMS = "WebMercatorQuad"
TILE_TYPES = {"png": TileType.PNG, "webp": TileType.WEBP}
ATTRIBUTION = "sdmatlas: AI-predicted species distributions"


@dataclass
class ArchiveReport:
    layer: str
    path: Path | None
    status: str  # "written", "current" (already of this version), "no data"
    tiles: int = 0  # tiles with data in the archive
    empty: int = 0  # tiles left out (no data)
    unique: int = 0  # distinct tile bodies stored


KINDS = ("pmtiles", "mbtiles")


def archive_path(folder: Path, layer: str, kind: str = "pmtiles") -> Path:
    """``<folder>/<layer id, dots for colons>.<kind>`` (the WMS name: safe in URLs)."""
    return folder / f"{layer.replace(':', '.')}.{kind}"


def check_folder(folder: Path) -> None:
    """The target folder exists or can be made, and is writable (before any work)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the archive folder {folder}: {exc}") from None
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"the archive folder {folder} is not writable")


def archive_version(path: Path) -> str | None:
    """The layer version recorded in an archive (None: no archive, or not readable)."""
    if path.suffix == ".mbtiles":
        if not path.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                row = db.execute("SELECT value FROM metadata WHERE name = 'version'").fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None
    try:
        with open(path, "rb") as f:
            meta = Reader(MmapSource(f)).metadata()
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return str(version) if version is not None else None


def _render(
    jobs: list[seeding.Job], fmt: str, params: dict[str, str | None],
    verdicts: list[Verdict | None], refs: list[LayerRef],
) -> list[bytes | None]:  # fmt: skip
    """In a seed worker: each tile's body, or None for an empty tile."""
    return render_batch(seeding.worker_services(refs), jobs, fmt, params, verdicts)


def render_batch(
    svc: Services, jobs: list[seeding.Job], fmt: str, params: dict[str, str | None],
    verdicts: list[Verdict | None] | None = None,
) -> list[bytes | None]:  # fmt: skip
    """Each tile's body (None: empty): made from the planner's verdict for empty and
    uniform tiles, rendered for the others."""
    out: list[bytes | None] = []
    layers: dict[str, seeding.SeedLayer] = {}
    for i, job in enumerate(jobs):
        t = seeding.seed_tile(svc, job, fmt, params, layers)
        made = seeding.planned_entry(svc, t, verdicts[i] if verdicts else None)
        if made is not None:
            out.append(None if made.empty else made.body)
            continue
        tile = make_tile(svc, t.req)
        assert tile is not None
        out.append(None if tile.empty else tile.body)
    return out


def write_layer(
    svc: Services,
    ref: LayerRef,
    jobs: list[seeding.Job],
    folder: Path,
    fmt: str,
    params: dict[str, str | None],
    pool: Executor,
    progress: Callable[[int], None] | None = None,
    verdicts: dict[seeding.Job, Verdict] | None = None,
    kind: str = "pmtiles",
) -> ArchiveReport:
    """The layer's archive (``kind``: pmtiles or mbtiles) in ``folder`` from its planned
    WebMercatorQuad tiles, rendered by ``pool`` (:func:`sdmatlas.serve.seed.worker_pool`,
    one for all the layers of a seed)."""
    path = archive_path(folder, ref.id, kind)
    if archive_version(path) == ref.version:
        if progress is not None:
            progress(len(jobs))
        return ArchiveReport(ref.id, path, "current")
    for stale in folder.glob(f".{path.name}.*.tmp"):  # a killed seed's (one seed a folder)
        stale.unlink(missing_ok=True)
    jobs = sorted(jobs, key=lambda j: zxy_to_tileid(j[2], j[3], j[4]))  # clustered
    report = ArchiveReport(ref.id, None, "no data")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f, _sink(kind, f, tmp) as sink:
            for (_, _, z, x, y), body in _rendered(pool, svc, ref, jobs, fmt, params, progress,
                                                   verdicts):  # fmt: skip
                if body is None:
                    report.empty += 1
                    continue
                sink.add(z, x, y, body)
                report.tiles += 1
            if report.tiles:
                report.unique = sink.unique
                sink.finish(_header(ref, fmt, jobs), _metadata(ref, fmt, params, jobs))
        if not report.tiles:
            tmp.unlink()
            return report
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report.path, report.status = path, "written"
    return report


class _PMTilesSink:
    def __init__(self, f: Any) -> None:
        self.writer = Writer(f)

    def add(self, z: int, x: int, y: int, body: bytes) -> None:
        self.writer.write_tile(zxy_to_tileid(z, x, y), body)

    @property
    def unique(self) -> int:
        return len(self.writer.hash_to_offset)

    def finish(self, header: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.writer.finalize(header, metadata)

    def close(self) -> None:
        pass


class _MBTilesSink:
    """Tiles into an MBTiles 1.3 SQLite file, stored once per distinct body."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE metadata (name TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE images (tile_id TEXT PRIMARY KEY, tile_data BLOB);
            CREATE TABLE map (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
                              tile_id TEXT, PRIMARY KEY (zoom_level, tile_column, tile_row));
            CREATE VIEW tiles AS SELECT map.zoom_level AS zoom_level,
                map.tile_column AS tile_column, map.tile_row AS tile_row,
                images.tile_data AS tile_data
                FROM map JOIN images ON images.tile_id = map.tile_id;
            """
        )
        self.seen: set[str] = set()

    def add(self, z: int, x: int, y: int, body: bytes) -> None:
        tid = hashlib.sha256(body).hexdigest()
        if tid not in self.seen:
            self.db.execute("INSERT INTO images VALUES (?, ?)", (tid, body))
            self.seen.add(tid)
        # MBTiles rows count from the bottom (TMS), XYZ rows from the top
        self.db.execute("INSERT INTO map VALUES (?, ?, ?, ?)", (z, x, (1 << z) - 1 - y, tid))

    @property
    def unique(self) -> int:
        return len(self.seen)

    def finish(self, header: dict[str, Any], metadata: dict[str, Any]) -> None:
        w, s, e, n = (header[k] / 1e7 for k in ("min_lon_e7", "min_lat_e7", "max_lon_e7",
                                                 "max_lat_e7"))  # fmt: skip
        rows = {
            "name": metadata["name"],
            "format": metadata["format"],
            "bounds": f"{w},{s},{e},{n}",
            "center": f"{(w + e) / 2},{(s + n) / 2},{header['center_zoom']}",
            "minzoom": str(metadata["minzoom"]),
            "maxzoom": str(metadata["maxzoom"]),
            "attribution": metadata["attribution"],
            "description": metadata["description"],
            "type": metadata["type"],
            "version": metadata["version"],
            "json": json.dumps({k: metadata[k] for k in ("layer", "release", "colormap")}),
        }
        self.db.executemany("INSERT INTO metadata VALUES (?, ?)", rows.items())
        self.db.commit()

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def _sink(kind: str, f: Any, path: Path) -> Iterator[_PMTilesSink | _MBTilesSink]:
    if kind not in KINDS:
        raise InvalidInputError(f"archive kind {kind!r}: use one of {KINDS}")
    sink: _PMTilesSink | _MBTilesSink = _PMTilesSink(f) if kind == "pmtiles" else _MBTilesSink(path)
    try:
        yield sink
    finally:
        sink.close()


def _rendered(
    pool: Executor,
    svc: Services,
    ref: LayerRef,
    jobs: list[seeding.Job],
    fmt: str,
    params: dict[str, str | None],
    progress: Callable[[int], None] | None,
    verdicts: dict[seeding.Job, Verdict] | None = None,
) -> Iterator[tuple[seeding.Job, bytes | None]]:
    """Tile bodies in the order of ``jobs``, rendered by the seed's worker processes."""
    batches = [jobs[i : i + seeding.BATCH] for i in range(0, len(jobs), seeding.BATCH)]
    n = len(batches)
    caches = PlanCaches()

    def marks(batch: list[seeding.Job]) -> list[Verdict | None]:
        if verdicts is not None:
            return [verdicts.get(j) for j in batch]
        return batch_verdicts(svc, batch, fmt, params.get("colormap"), caches)

    # no verdicts: each batch planned here as it is handed to the workers (map submits
    # as it goes through this generator), so planning overlaps rendering
    planned = (marks(b) for b in batches)
    results = pool.map(_render, batches, [fmt] * n, [params] * n, planned, [[ref]] * n)
    for batch, bodies in zip(batches, results, strict=True):
        yield from zip(batch, bodies, strict=True)
        if progress is not None:
            progress(len(batch))


def _e7(v: float) -> int:
    return round(v * 10_000_000)


def _header(ref: LayerRef, fmt: str, jobs: list[seeding.Job]) -> dict[str, Any]:
    w, s, e, n = ref.bbox or (-180.0, -85.0, 180.0, 85.0)
    zooms = [j[2] for j in jobs]
    return {
        "tile_type": TILE_TYPES[fmt],
        "tile_compression": Compression.NONE,  # PNG and WebP are compressed already
        "min_lon_e7": _e7(w),
        "min_lat_e7": _e7(s),
        "max_lon_e7": _e7(e),
        "max_lat_e7": _e7(n),
        "center_zoom": min(zooms),
        "center_lon_e7": _e7((w + e) / 2),
        "center_lat_e7": _e7((s + n) / 2),
    }


def _metadata(
    ref: LayerRef, fmt: str, params: dict[str, str | None], jobs: list[seeding.Job]
) -> dict[str, Any]:
    zooms = [j[2] for j in jobs]
    return {
        "name": ref.title,
        "description": f"{ref.kind} layer {ref.id} of release {ref.release} ({ref.units})",
        "attribution": ATTRIBUTION,
        "version": ref.version,
        "layer": ref.id,
        "release": ref.release,
        "format": fmt,
        "colormap": params.get("colormap") or "default",
        "bounds": list(ref.bbox) if ref.bbox else None,
        "minzoom": min(zooms),
        "maxzoom": max(zooms),
        "type": "overlay",
    }
