"""What every benchmark shares: its argument parser's common options and the results file.

A fresh clone has no ``bench/results/`` (results are not committed), so the folder is
created, and checked writable, before any measurement starts: a benchmark that runs for
25 minutes must not fail when it writes its figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
