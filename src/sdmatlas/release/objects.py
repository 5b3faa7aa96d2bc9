"""Bytes of a release on an fsspec filesystem (an object store: s3://, gs://, memory://),
read whole, by tails or by ranges, in batches, with store faults turned into the errors
of :mod:`sdmatlas.errors`.

Batches go through fsspec's ``cat_ranges``: on an async filesystem (s3fs, gcsfs) the
ranges of one batch are requested concurrently, so a tile's four chunks or an area
report's boundary blocks cost one round trip, not one each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sdmatlas.errors import StorageUnavailableError

log = logging.getLogger("sdmatlas.release")


class FsspecObjects:
    """The objects below ``root`` on ``fs`` (:class:`sdmatlas.chunks.ByteRanges`)."""

    def __init__(self, fs: Any, root: str, release: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.release = release

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _unavailable(self, exc: BaseException, key: str) -> StorageUnavailableError:
        # the bucket and path go to the log; the client sees the release and the key
        log.warning("release %s: reading %s failed: %r", self.release, self._path(key), exc)
        return StorageUnavailableError(
            f"release {self.release}: its object store did not answer for {key} "
            f"({type(exc).__name__}); retry later"
        )

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._unavailable(exc, key) from exc

    def read_tails(self, keys: list[str], n: int) -> list[bytes | None]:
        return self._batch(keys, [-n] * len(keys), [None] * len(keys), missing_ok=True)

    def read_ranges(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        keys = [k for k, _, _ in requests]
        starts = [off for _, off, _ in requests]
        ends = [off + size for _, off, size in requests]
        out = self._batch(keys, starts, ends, missing_ok=False)
        return [b for b in out if b is not None]

    def _batch(
        self, keys: list[str], starts: list[int], ends: Sequence[int | None], missing_ok: bool
    ) -> list[bytes | None]:
        try:
            got = self.fs.cat_ranges([self._path(k) for k in keys], starts, ends, on_error="return")
        except Exception as exc:
            raise self._unavailable(exc, keys[0]) from exc
        out: list[bytes | None] = []
        for key, value in zip(keys, got, strict=True):
            if isinstance(value, FileNotFoundError) and missing_ok:
                out.append(None)
            elif isinstance(value, FileNotFoundError):
                # an index named this chunk: the shard went away under us (republished?)
                raise StorageUnavailableError(
                    f"release {self.release}: {key} disappeared while being read; retry"
                )
            elif isinstance(value, BaseException):
                raise self._unavailable(value, key) from value
            else:
                out.append(bytes(value))
        return out
