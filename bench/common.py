"""What every benchmark shares: its argument parser's common options and the results file.

A fresh clone has no ``bench/results/`` (results are not committed), so the folder is
created, and checked writable, before any measurement starts: a benchmark that runs for
25 minutes must not fail when it writes its figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the module's docstring and ``--results DIR``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder of the JSON results, created if missing (default: bench/results)",
    )
    return ap


def results_file(folder: Path, name: str) -> Path:
    """``folder/<name>-<date>.json``; the folder is created now, and must be writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"error: cannot create the results folder {folder}: {exc}") from None
    if not os.access(folder, os.W_OK):
        raise SystemExit(f"error: the results folder {folder} is not writable")
    return folder / f"{name}-{dt.date.today().isoformat()}.json"


class Scratch:
    """Output folders of a benchmark's runs, all deleted when the benchmark ends, none
    before.

    Deleting many files just before a timed run slows that run's own file creation, on
    both sides of a comparison: ext4's inode allocator skips, one at a time, the inodes
    freed in the last minute or so (``recently_deleted`` in fs/ext4/ialloc.c; up to
    ~6 minutes while their inode table blocks are dirty). On this VM, after a seed's
    cache of ~15,000 files was removed, creating a file took 0.3-0.6 ms of kernel time
    instead of ~0.05 ms for the next minutes (perf: ``ext4_create`` → ``recently_deleted``):
    a seeding benchmark that cleared its folder before each run measured that, not the
    seeder. So each run writes into a new folder; a killed benchmark's leftovers are
    moved aside (a rename) and deleted at the end with the rest. A benchmark started
    within minutes of another's end still meets that one's deletions: wait between runs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trash: list[Path] = []
        if root.exists():  # an earlier run's, not deleted: deleted at the end, with ours
            old = root.with_name(f"{root.name}.old-{os.getpid()}")
            root.rename(old)
            self._trash.append(old)
        root.mkdir(parents=True)

    def folder(self, prefix: str) -> Path:
        """A new, empty folder for one run's output."""
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.root))

    def close(self) -> None:
        for p in [*self._trash, self.root]:
            shutil.rmtree(p, ignore_errors=True)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def median(values: list[float]) -> float:
    return float(statistics.median(values))
