"""The tile cache: an in-process LRU, a disk cache and Redis, stackable, in front of
every tile-producing path (XYZ, WMTS, TMS, and WMS GetMaps that are exactly a tile).

Keys are the tiles' strong ETags, which hash the layer version with every parameter
that shapes the bytes: a republished or retired release changes the version, so an
old tile is never served and nothing needs purging to be correct. Entries are
grouped by release (a disk directory or a Redis key prefix per release), so the disk
space of old releases can be reclaimed with ``sdmatlas cache purge``.

A lookup tries the backends in order and copies a hit into the faster ones before it.
A backend that fails (Redis down, a full or read-only disk) is skipped for
``cache_retry_seconds``, with a log line and ``sdmatlas_tile_cache_up = 0``, then
tried again; tiles are rendered uncached meanwhile, never refused.

Concurrent requests for one missing tile render it once: :meth:`TileCache.flight`
holds a lock per key across processes (a Redis ``SET NX`` lock when Redis is in the
stack, else an ``flock`` in the disk cache, else a lock per key in this process), and
the waiters read the tile the winner stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sdmatlas.serve.observe import metrics
from sdmatlas.settings import Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger("sdmatlas.cache")
_NS = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_KEY = re.compile(r"^[0-9a-f]{16,64}$")


class CacheError(Exception):
    """A backend failed (unreachable, full, read-only); the stack skips it for a while."""


class Backend(Protocol):
    name: str

    def get(self, ns: str, key: str) -> bytes | None: ...
    def put(self, ns: str, key: str, value: bytes) -> None: ...
    def contains(self, ns: str, key: str) -> bool: ...


def _check(ns: str, key: str) -> None:
    if not _NS.match(ns) or not _KEY.match(key):
        raise ValueError(f"bad cache key {ns!r}/{key!r}")


class MemoryCache:
    """A bounded LRU of tiles in this process (bytes-bounded)."""

    name = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, ns: str, key: str) -> bytes | None:
        with self._lock:
            v = self._items.get((ns, key))
            if v is not None:
                self._items.move_to_end((ns, key))
            return v

    def contains(self, ns: str, key: str) -> bool:
        with self._lock:
            return (ns, key) in self._items

    def put(self, ns: str, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._items.pop((ns, key), None)
            self._bytes += len(value) - (len(old) if old else 0)
            self._items[(ns, key)] = value
            while self._bytes > self.max_bytes:
                _, v = self._items.popitem(last=False)
                self._bytes -= len(v)
                metrics.EVICTIONS.labels("memory", "size").inc()


class DiskCache:
    """Files ``<root>/<release>/<key[:2]>/<key>``, written atomically (a temporary file
    in the same directory, then a rename), so readers never see half a tile.

    Bounded: after every ``max_bytes / 20`` bytes written, one process (an ``flock``
    decides which) sweeps the tree in a background thread: unversioned tiles past their
    TTL go first, then the least recently used (a hit refreshes a file's mtime at most
    hourly) until the cache is at 90 % of its cap. Requests never wait for a sweep, so
    the cap is soft by one sweep interval (5 %): writes made while a sweep runs are
    swept by the next one."""

    name = "disk"

    def __init__(
        self, root: Path, max_bytes: int = 10 * 2**30, transient_ttl_s: float = 86400.0
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.transient_ttl_s = transient_ttl_s
        self._written = 0
        self._sweeping = threading.Lock()

    def path(self, ns: str, key: str) -> Path:
        return Path(self._name(ns, key))

    def _name(self, ns: str, key: str) -> str:
        # a string, not a Path: a seed looks up and writes every tile once, and pathlib's
        # joins cost more than the stat itself (~10 us a tile)
        _check(ns, key)
        return f"{self.root}/{ns}/{key[:2]}/{key}"

    def get(self, ns: str, key: str) -> bytes | None:
        p = self.path(ns, key)
        try:
            raw = p.read_bytes()
            age = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"disk cache {self.root}: {exc}") from exc
        if Entry.is_transient(raw):
            if age > self.transient_ttl_s:
                return None  # expired: re-rendered and rewritten by the caller
        elif age > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(p)  # the LRU clock of versioned tiles
        return raw

    def contains(self, ns: str, key: str) -> bool:
        return os.path.isfile(self._name(ns, key))

    def file(self, ns: str, key: str) -> Path | None:
        """The entry's file, its LRU clock refreshed, if it is there (for entries served
        as files, such as COG downloads answered with Range)."""
        p = self.path(ns, key)
        try:
            age = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(p)
        return p

    def put(self, ns: str, key: str, value: bytes) -> None:
        p = self._name(ns, key)
        folder = os.path.dirname(p)
        tmp = f"{folder}/.{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            try:
                fh = open(tmp, "wb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:  # the first tile of this directory: made on demand,
                os.makedirs(folder, exist_ok=True)  # not checked on every write
                fh = open(tmp, "wb")  # noqa: SIM115
            with fh:
                fh.write(value)
            os.replace(tmp, p)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CacheError(f"disk cache {self.root}: {exc}") from exc
        self._written += len(value)
        if self._written >= self.max_bytes // 20 and self._sweeping.acquire(blocking=False):
            self._written = 0
            threading.Thread(target=self._sweep_in_background, daemon=True).start()

    def _sweep_in_background(self) -> None:
        try:
            while True:  # again while the writes during a sweep passed the threshold
                self.sweep()
                if self._written < self.max_bytes // 20:
                    break
                self._written = 0
        except OSError as exc:  # a sweep that fails is retried after the next writes
            log.warning("disk tile cache sweep failed: %s", exc)
        finally:
            self._sweeping.release()

    def sweep(self) -> tuple[int, int]:
        """Expire and evict now, if no other process is sweeping; (expired, evicted)."""
        lock = self.root / ".locks" / "sweep"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, 0
            try:
                return self._sweep()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _sweep(self) -> tuple[int, int]:
        now = time.time()
        files: list[tuple[float, int, Path]] = []
        expired = 0
        for d in self.root.glob("*/*"):
            if d.parts[-2].startswith(".") or not d.is_dir():
                continue
            for p in d.iterdir():
                try:
                    st = p.stat()
                    if p.name.startswith("."):
                        continue
                    if now - st.st_mtime > self.transient_ttl_s and _transient_file(p):
                        p.unlink(missing_ok=True)
                        expired += 1
                        continue
                except OSError:
                    continue
                files.append((st.st_mtime, st.st_size, p))
        total = sum(f[1] for f in files)
        evicted = 0
        if total > self.max_bytes:
            target = self.max_bytes * 0.9
            for _, size, p in sorted(files, key=lambda f: f[0]):
                if total <= target:
                    break
                with contextlib.suppress(OSError):
                    p.unlink(missing_ok=True)
                    total -= size
                    evicted += 1
        metrics.EVICTIONS.labels("disk", "ttl").inc(expired)
        metrics.EVICTIONS.labels("disk", "size").inc(evicted)
        return expired, evicted

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An exclusive ``flock`` shared by every process of this host. Keys are striped
        over at most 65,536 lock files (the key's first 4 hex digits), so the lock files
        stay bounded; two tiles of one stripe merely wait for each other."""
        p = self.root / ".locks" / key[:4]
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def purge(self, ns: str | None = None, older_than_s: float | None = None) -> tuple[int, int]:
        """Delete the tiles of one release (or all), optionally only those not written
        for ``older_than_s`` seconds. Returns (files, bytes) removed."""
        if ns is not None:
            _check(ns, "0" * 16)
        roots = (
            [self.root / ns]
            if ns
            else [p for p in self.root.glob("*") if p.is_dir() and not p.name.startswith(".")]
        )
        files = size = 0
        cutoff = time.time() - older_than_s if older_than_s is not None else None
        for root in roots:
            if not root.is_dir():
                continue
            if cutoff is None:
                for p in root.rglob("*"):
                    if p.is_file():
                        files += 1
                        size += p.stat().st_size
                shutil.rmtree(root, ignore_errors=True)
                continue
            for p in root.rglob("*"):
                if p.is_file() and p.stat().st_mtime < cutoff:
                    files += 1
                    size += p.stat().st_size
                    p.unlink(missing_ok=True)
        return files, size


#: A versioned tile's mtime is refreshed on a hit at most this often (the LRU clock).
TOUCH_AFTER_S = 3600.0


def _transient_file(p: Path) -> bool:
    with open(p, "rb") as fh:
        return Entry.is_transient(fh.read(1))


class RedisCache:
    """Tiles in Redis under ``sdmatlas:tile:<release>:<key>``, shared by every replica;
    short socket timeouts so an unreachable Redis costs milliseconds, not seconds."""

    name = "redis"

    def __init__(self, url: str, ttl_seconds: int | None) -> None:
        import redis  # here: a process with no Redis cache (a seed's, a CLI's) skips ~0.15 s

        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False
        )
        self.ttl = ttl_seconds
        self._error: type[Exception] = redis.RedisError

    @staticmethod
    def _k(ns: str, key: str) -> str:
        _check(ns, key)
        return f"sdmatlas:tile:{ns}:{key}"

    def get(self, ns: str, key: str) -> bytes | None:
        try:
            v = self.client.get(self._k(ns, key))
        except self._error as exc:
            raise CacheError(f"redis: {exc}") from exc
        return v if isinstance(v, bytes) else None

    def contains(self, ns: str, key: str) -> bool:
        try:
            return bool(self.client.exists(self._k(ns, key)))
        except self._error as exc:
            raise CacheError(f"redis: {exc}") from exc

    def put(self, ns: str, key: str, value: bytes) -> None:
        try:
            self.client.set(self._k(ns, key), value, ex=self.ttl)
        except self._error as exc:
            raise CacheError(f"redis: {exc}") from exc

    def purge(self, ns: str | None = None) -> int:
        pattern = f"sdmatlas:tile:{ns}:*" if ns else "sdmatlas:tile:*"
        n = 0
        for k in self.client.scan_iter(match=pattern, count=1000):
            n += int(self.client.delete(k))
        return n

    @contextlib.contextmanager
    def lock(self, key: str, hold_s: float = 30.0) -> Iterator[bool]:
        """Try to take the render lock; yields whether it was taken."""
        name = f"sdmatlas:lock:{key}"
        token = uuid.uuid4().hex
        try:
            got = bool(self.client.set(name, token, nx=True, px=int(hold_s * 1000)))
        except self._error as exc:
            raise CacheError(f"redis: {exc}") from exc
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(self._error):
                    if self.client.get(name) == token.encode():
                        self.client.delete(name)


@dataclass(frozen=True)
class Entry:
    """A cached tile: the body and what the response needs besides it. ``transient``:
    first asked for without the layer version (``?v=``), so it expires from the disk
    cache after ``tile_cache_unversioned_ttl_hours``.

    Stored as two header bytes (flags: 1 empty, 2 transient; the pyramid level or 255)
    and the body."""

    body: bytes
    empty: bool
    level: int | None
    transient: bool = False

    def encode(self) -> bytes:
        flags = (1 if self.empty else 0) | (2 if self.transient else 0)
        return bytes([flags, 255 if self.level is None else self.level]) + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        return cls(raw[2:], bool(raw[0] & 1), None if raw[1] == 255 else raw[1], bool(raw[0] & 2))

    @staticmethod
    def is_transient(raw: bytes) -> bool:
        return bool(raw[:1]) and bool(raw[0] & 2)


class TileCache:
    """The configured backends, fastest first."""

    def __init__(self, backends: list[Backend], retry_seconds: float = 5.0) -> None:
        self.backends = backends
        self.retry_seconds = retry_seconds
        self._down_until: dict[str, float] = {}
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()
        for b in backends:
            metrics.CACHE_UP.labels(b.name).set(1)

    @property
    def enabled(self) -> bool:
        return bool(self.backends)

    def _up(self, b: Backend) -> bool:
        until = self._down_until.get(b.name)
        return until is None or time.monotonic() >= until

    def _failed(self, b: Backend, exc: CacheError) -> None:
        if b.name not in self._down_until:
            log.warning("tile cache backend %s is down, serving uncached: %s", b.name, exc)
        self._down_until[b.name] = time.monotonic() + self.retry_seconds
        metrics.CACHE.labels(b.name, "error").inc()
        metrics.CACHE_UP.labels(b.name).set(0)

    def _worked(self, b: Backend) -> None:
        if self._down_until.pop(b.name, None) is not None:
            log.warning("tile cache backend %s is back", b.name)
            metrics.CACHE_UP.labels(b.name).set(1)

    @property
    def in_process(self) -> bool:
        """True when every backend is in this process's memory: no lookup blocks."""
        return all(isinstance(b, MemoryCache) for b in self.backends)

    def get(self, ns: str, key: str, memory_only: bool = False) -> tuple[Entry, str] | None:
        """The tile from the first backend that has it (copied into the faster ones);
        with ``memory_only``, from the in-process LRU alone (safe on the event loop)."""
        for i, b in enumerate(self.backends):
            if memory_only and not isinstance(b, MemoryCache):
                break
            if not self._up(b):
                continue
            try:
                raw = b.get(ns, key)
            except CacheError as exc:
                self._failed(b, exc)
                continue
            self._worked(b)
            if raw is None:
                metrics.CACHE.labels(b.name, "miss").inc()
                continue
            metrics.CACHE.labels(b.name, "hit").inc()
            for faster in self.backends[:i]:
                self._put_one(faster, ns, key, raw)
            return Entry.decode(raw), b.name
        return None

    def contains(self, ns: str, key: str) -> bool:
        """Whether any backend holds the tile (for seeding: no read of the bytes)."""
        for b in self.backends:
            if not self._up(b):
                continue
            try:
                if b.contains(ns, key):
                    return True
            except CacheError as exc:
                self._failed(b, exc)
        return False

    def put(self, ns: str, key: str, entry: Entry) -> None:
        raw = entry.encode()
        for b in self.backends:
            if self._up(b):
                self._put_one(b, ns, key, raw)

    def _put_one(self, b: Backend, ns: str, key: str, raw: bytes) -> None:
        try:
            b.put(ns, key, raw)
        except CacheError as exc:
            self._failed(b, exc)
        else:
            self._worked(b)

    @contextlib.contextmanager
    def flight(self, ns: str, key: str) -> Iterator[None]:
        """Held while one tile is rendered, so concurrent requests render it once."""
        with self._local_lock(key), contextlib.ExitStack() as held:
            locked = False
            shared = next(
                (b for b in self.backends if isinstance(b, RedisCache) and self._up(b)), None
            )
            if shared is not None:
                try:
                    held.enter_context(self._redis_flight(shared, ns, key))
                    locked = True
                except CacheError as exc:
                    self._failed(shared, exc)
            disk = next(
                (b for b in self.backends if isinstance(b, DiskCache) and self._up(b)), None
            )
            if not locked and disk is not None:
                try:
                    held.enter_context(disk.lock(key))
                except OSError as exc:
                    self._failed(disk, CacheError(str(exc)))
            yield

    @contextlib.contextmanager
    def _redis_flight(self, r: RedisCache, ns: str, key: str) -> Iterator[None]:
        deadline = time.monotonic() + 10.0
        while True:
            with r.lock(key) as got:
                if got:
                    yield
                    return
            # another process renders it: wait for the tile (or for its lock to go)
            time.sleep(0.005)
            if r.contains(ns, key) or time.monotonic() > deadline:
                yield
                return

    @contextlib.contextmanager
    def _local_lock(self, key: str) -> Iterator[None]:
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        with lock:
            yield
        with self._flights_lock:
            if len(self._flights) > 10_000:
                self._flights.clear()


def build_cache(settings: Settings) -> TileCache:
    """The stack named by ``settings.tile_cache`` (for example ``memory,disk,redis``)."""
    backends: list[Backend] = []
    for name in settings.tile_cache:
        if name == "memory":
            backends.append(MemoryCache(settings.tile_cache_memory_mb * 2**20))
        elif name == "disk":
            backends.append(
                DiskCache(
                    settings.tile_cache_path,
                    settings.tile_cache_disk_mb * 2**20,
                    settings.tile_cache_unversioned_ttl_hours * 3600,
                )
            )
        elif name == "redis":
            ttl = int(settings.tile_cache_redis_ttl_days * 86400) or None
            backends.append(RedisCache(settings.redis_url, ttl))
    return TileCache(backends, settings.tile_cache_retry_seconds)
