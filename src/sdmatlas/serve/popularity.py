"""Popularity-driven seeding: the most requested layers or tiles, from the API's JSON
access logs (``SDMATLAS_LOG_FORMAT=json``; gzip-compressed files too).

Each access-log line is one request (:mod:`sdmatlas.serve.observe.logs`); the XYZ tile
requests (``/tiles/<layer>/<tms>/<z>/<x>/<y>.<fmt>``) that were answered (200 or 304)
are counted per layer and per tile, over an optional period. Prometheus metrics are not
a source: they carry no layer label (a label per layer would be 10,000 series).
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sdmatlas.errors import InvalidInputError

TILE_PATH = re.compile(
    r"^/tiles/(?P<layer>[^/]{1,200})/(?P<tms>[A-Za-z0-9_]{1,64})/(?P<z>\d{1,2})/(?P<x>\d{1,9})/"
    r"(?P<y>\d{1,9})\.(?P<fmt>[a-z]{2,4})$"
)
Job = tuple[str, str, int, int, int]


@dataclass
class Popularity:
    layers: Counter[str] = field(default_factory=Counter)
    tiles: Counter[Job] = field(default_factory=Counter)
    lines: int = 0
    unreadable: int = 0  # lines that are not JSON objects (skipped)

    def top_layers(self, n: int) -> list[str]:
        return [lid for lid, _ in self.layers.most_common(n)]

    def top_tiles(self, n: int) -> list[Job]:
        return [job for job, _ in self.tiles.most_common(n)]


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time (UTC when no offset is given)."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{text!r} is not an ISO 8601 date or time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _open(path: Path) -> IO[str]:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8", errors="replace")
        return path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InvalidInputError(f"cannot read the log file {path}: {exc.strerror or exc}") from None


def _lines(path: Path) -> Iterator[str]:
    with _open(path) as fh:
        try:
            yield from fh
        except (OSError, EOFError) as exc:  # a truncated gzip, a directory
            raise InvalidInputError(f"cannot read the log file {path}: {exc}") from None


def read_access_logs(
    paths: list[Path], since: datetime | None = None, until: datetime | None = None
) -> Popularity:
    """Tile requests per layer and per tile in the logs, within [since, until)."""
    if not paths:
        raise InvalidInputError("give the access log files to read (--log FILE)")
    pop = Popularity()
    for path in paths:
        if path.is_dir():
            raise InvalidInputError(f"cannot read the log file {path}: it is a directory")
        for line in _lines(path):
            pop.lines += 1
            try:
                doc = json.loads(line)
            except ValueError:
                pop.unreadable += 1
                continue
            if not isinstance(doc, dict) or doc.get("message") != "request":
                continue
            if doc.get("status") not in (200, 304):
                continue
            m = TILE_PATH.match(str(doc.get("path", "")))
            if m is None:
                continue
            if since is not None or until is not None:
                try:
                    ts = parse_time(str(doc.get("ts", "")))
                except InvalidInputError:
                    continue
                if (since is not None and ts < since) or (until is not None and ts >= until):
                    continue
            layer = m["layer"]
            pop.layers[layer] += 1
            pop.tiles[(layer, m["tms"], int(m["z"]), int(m["x"]), int(m["y"]))] += 1
    if not pop.layers:
        period = f" between {since} and {until}" if since or until else ""
        raise InvalidInputError(
            f"no answered tile request in {', '.join(map(str, paths))}{period} "
            f"({pop.lines} lines read; JSON access logs come from SDMATLAS_LOG_FORMAT=json)"
        )
    return pop
