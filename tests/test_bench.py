"""The benchmarks' set-up, without their measurements: each one parses its defaults
and creates its results folder before measuring (a fresh clone has no bench/results/)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: every benchmark that writes a results file (loadgen.py is a helper writing to stdout)
BENCHMARKS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ("common", "loadgen"))


@pytest.fixture(scope="module", autouse=True)
def _bench_on_path() -> None:
    sys.path.insert(0, str(BENCH))


def test_every_benchmark_is_covered() -> None:
    assert {"cache", "catalog", "ogc", "predict", "queries", "tiles"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_creates_its_results_folder(name: str, tmp_path: Path) -> None:
    mod = importlib.import_module(name)
    assert mod.build_parser().parse_args([]).results == BENCH / "results"
    folder = tmp_path / "fresh-clone" / "bench" / "results"
    out = mod.output_path(mod.build_parser().parse_args(["--results", str(folder)]))
    assert folder.is_dir()
    assert out.parent == folder and out.name.startswith(name) and out.suffix == ".json"
    out.write_text("{}")  # the file the benchmark writes at its end can be written


def test_uncreatable_results_folder_fails_before_measuring(tmp_path: Path) -> None:
    import common

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder under a regular file cannot be made, even by root
    with pytest.raises(SystemExit, match="cannot create the results folder"):
        common.results_file(blocker / "results", "tiles")
