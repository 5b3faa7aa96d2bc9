"""On-demand prediction: registered covariates, jobs over an area, live point predictions,
API keys (issue 17).

Everything runs for real: the committed demo model on windows of the demo world, the
job runner's thread in the app (through Starlette's TestClient, whose lifespan starts
it), and for the restart test a real ``sdmatlas serve`` killed with SIGKILL and started
again on the same catalog.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import box, mapping

from conftest import ROOT, World
from sdmatlas.catalog.covariates import find_covariates, register_covariates
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_territories
from sdmatlas.catalog.keys import create_key, revoke_key
from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.predict.cube import open_cube
from sdmatlas.quantize import NODATA
from sdmatlas.release import layout
from sdmatlas.serve.app import create_app
from sdmatlas.settings import Settings
from sdmatlas.storage import open_release

PERIOD = "2020"


@dataclass
class Env:
    settings: Settings
    catalog: Catalog
    token: str
    world: World

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def lonlat_box(self, r0: int, c0: int, r1: int, c1: int) -> list[float]:
        """The lon/lat bbox of grid pixels rows r0..r1, cols c0..c1 of the world (shrunk
        a little so that its projected outline stays inside those pixels' centres)."""
        g = self.world.grid
        xs = [g.x0 + (c0 + 0.6) * g.res, g.x0 + (c1 - 0.6) * g.res]
        ys = [g.y0 - (r1 - 0.6) * g.res, g.y0 - (r0 + 0.6) * g.res]
        from pyproj import Transformer

        t = Transformer.from_crs(g.crs, 4326, always_xy=True)
        lon0, lat0, lon1, lat1 = t.transform_bounds(xs[0], ys[0], xs[1], ys[1])
        return [lon0, lat0, lon1, lat1]


def make_env(
    root: Path, world: World, demo_card: Path, database_url: str | None = None, **settings: Any
) -> Env:
    s = Settings(
        data_dir=root,
        database_url=database_url or f"sqlite:///{root / 'catalog.sqlite'}",
        jobs_poll_seconds=0.05,
        tile_cache=[],
        **settings,
    )
    catalog = Catalog.from_settings(s)
    catalog.upgrade()
    import_territories(catalog, ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson")
    register_covariates(
        catalog, demo_card, PERIOD, world.covariates, world.territory_path, chunk=world.grid.chunk
    )
    _, token = create_key(catalog, "tester", ["jobs:write"])
    return Env(s, catalog, token, world)


@pytest.fixture
def env(tmp_path: Path, coast: World, demo_card: Path) -> Iterator[Env]:
    e = make_env(tmp_path, coast, demo_card)
    yield e
    e.catalog.dispose()


@pytest.fixture
def client(env: Env) -> Iterator[TestClient]:
    with TestClient(create_app(env.settings, env.catalog)) as c:
        yield c


def wait_job(
    client: TestClient, job_id: str, until: set[str], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def post_job(client: TestClient, env: Env, area: dict[str, Any], **extra: Any) -> Any:
    return client.post(
        "/jobs",
        json={"model": "demo-sdm", "period": PERIOD, "area": area, **extra},
        headers=env.headers(),
    )


# -- registration -------------------------------------------------------------------------------


def test_registration_checks_covariates_as_predict_does(
    tmp_path: Path, coast: World, demo_card: Path
) -> None:
    env = make_env(tmp_path, coast, demo_card)
    cov = find_covariates(env.catalog, "demo-sdm", PERIOD)
    assert cov.model == "demo-sdm@1.0.0" and cov.grid == coast.grid.model_copy()
    assert set(cov.checksums) == set(coast.covariates)
    assert find_covariates(env.catalog, "demo-sdm@1.0.0").id == cov.id
    with pytest.raises(NotFoundError, match="no covariates for period '2041/2060'"):
        find_covariates(env.catalog, "demo-sdm", "2041/2060")
    with pytest.raises(NotFoundError, match="has no registered covariates"):
        find_covariates(env.catalog, "other-model")
    missing = {k: v for k, v in coast.covariates.items() if k != "elevation"}
    with pytest.raises(Exception, match="needs covariates \\['elevation'\\]"):
        register_covariates(env.catalog, demo_card, PERIOD, missing, coast.territory_path)
    with pytest.raises(InvalidInputError, match="not in ISO 8601"):
        register_covariates(env.catalog, demo_card, "2020-2030", coast.covariates,
                            coast.territory_path)  # fmt: skip


# -- jobs ---------------------------------------------------------------------------------------


def test_job_release_equals_the_batch_window_byte_for_byte(
    env: Env, client: TestClient, cube: Path
) -> None:
    area = {"bbox": env.lonlat_box(10, 20, 50, 75)}
    r = post_job(client, env, area)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" and not job["reused"]
    done = wait_job(client, job["id"], {"done", "failed"})
    assert done["status"] == "done", done
    assert done["progress"]["chunks_done"] == done["progress"]["chunks_total"] > 1
    assert {"predict_s", "publish_s", "register_s", "queued_s"} <= set(done["timings"])

    # the release: its level 0 equals the batch cube on the job's pixels, nodata elsewhere
    with env.catalog.session() as s:
        from sdmatlas.catalog.queries import get_release

        info = get_release(s, done["release"])
    assert info.expires_at is not None
    rel = open_release(info.storage_uri)
    g, ref = rel.grid, env.world.grid
    r0, c0 = round((ref.y0 - g.y0) / ref.res), round((g.x0 - ref.x0) / ref.res)
    assert r0 % g.chunk == 0 and c0 % g.chunk == 0 and ref.chunk % g.chunk == 0
    mine = rel.read(layout.level_array(0, layout.PROBABILITY))
    batch = open_cube(cube).read()[:, r0 : r0 + g.height, c0 : c0 + g.width]
    have = mine[0] != NODATA
    poly = shapely.transform(box(*area["bbox"]), lambda xy: xy)  # lon/lat
    assert have.sum() > 500
    np.testing.assert_array_equal(mine[:, have], batch[:, have])  # byte for byte
    # the job's pixels are exactly the batch's pixels inside the area
    xs, ys = g.pixel_centres()
    from pyproj import Transformer

    t = Transformer.from_crs(g.crs, 4326, always_xy=True)
    lon, lat = t.transform(*np.meshgrid(xs, ys))
    inside = shapely.contains_xy(poly, lon, lat) & (batch[0] != NODATA)
    assert (have == inside).mean() > 0.995  # the outline is densified, not a straight box

    # served by every endpoint under its id
    rk = done["release"]
    tile = client.get(f"/tiles/{rk}:species:{rel.species_ids[0]}/WebMercatorQuad/10/550/364.png")
    assert tile.status_code in (200, 204), tile.text
    lon_c, lat_c = (area["bbox"][0] + area["bbox"][2]) / 2, (area["bbox"][1] + area["bbox"][3]) / 2
    pt = client.get("/point", params={"release": rk, "lon": lon_c, "lat": lat_c}).json()
    assert pt["release"] == rk
    rep = client.post(f"/report?release={rk}", json=mapping(box(*area["bbox"])))
    assert rep.status_code == 200, rep.text
    bbox = f"{lat_c - 0.05},{lon_c - 0.05},{lat_c + 0.05},{lon_c + 0.05}"
    wms = client.get("/wms", params={
        "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "STYLES": "",
        "LAYERS": f"{rk}.indicator.richness", "CRS": "EPSG:4326", "BBOX": bbox,
        "WIDTH": 64, "HEIGHT": 64, "FORMAT": "image/png"})  # fmt: skip
    assert wms.headers["content-type"] == "image/png", wms.text[:300]
    # ...but not listed with the published releases
    assert rk not in [x["key"] for x in client.get("/releases").json()]

    # the same request again: the same job, not a new computation
    again = post_job(client, env, area)
    assert again.status_code == 200 and again.json()["id"] == job["id"] and again.json()["reused"]


@pytest.mark.slow
def test_a_job_on_postgis(
    tmp_path: Path, coast: World, demo_card: Path, cube: Path, postgres: Any
) -> None:
    """The same life on a real PostgreSQL + PostGIS catalog: claim, progress, register
    with expiry, deduplication, deleting a finished job, keys."""
    from conftest import new_database

    env = make_env(tmp_path, coast, demo_card, database_url=new_database(postgres))
    try:
        with TestClient(create_app(env.settings, env.catalog)) as client:
            area = {"bbox": env.lonlat_box(40, 60, 70, 90)}
            job = post_job(client, env, area).json()
            done = wait_job(client, job["id"], {"done", "failed"})
            assert done["status"] == "done", done
            rk = done["release"]
            assert done["expires_at"].endswith("+00:00")
            assert client.get(f"/releases/{rk}").status_code == 200
            with env.catalog.session() as s:
                from sdmatlas.catalog.queries import get_release

                rel = open_release(get_release(s, rk).storage_uri)
            g, ref = rel.grid, coast.grid
            r0, c0 = round((ref.y0 - g.y0) / ref.res), round((g.x0 - ref.x0) / ref.res)
            mine = rel.read(layout.level_array(0, layout.PROBABILITY))
            batch = open_cube(cube).read()[:, r0 : r0 + g.height, c0 : c0 + g.width]
            have = mine[0] != NODATA
            np.testing.assert_array_equal(mine[:, have], batch[:, have])
            assert post_job(client, env, area).json()["id"] == job["id"]
            assert client.post("/jobs", json={}).status_code == 401
            d = client.delete(f"/jobs/{job['id']}", headers=env.headers())
            assert d.status_code == 202
            deadline = time.monotonic() + 30
            while client.get(f"/releases/{rk}").status_code != 404:
                assert time.monotonic() < deadline, "the deleted job's release stayed"
                time.sleep(0.05)
            assert not (env.settings.jobs_path / job["id"]).exists()
    finally:
        env.catalog.dispose()


def test_cancel_mid_run_removes_everything(
    tmp_path: Path, many_chunks: World, demo_card: Path
) -> None:
    env = make_env(tmp_path, many_chunks, demo_card, batch_size=64, jobs_max_area_km2=20_000)
    with TestClient(create_app(env.settings, env.catalog)) as client:
        r = post_job(client, env, {"bbox": env.lonlat_box(0, 0, 160, 200)})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        seen = wait_job(client, job_id, {"running", "done"})
        deadline = time.monotonic() + 60
        while seen["progress"]["chunks_done"] < 3 and seen["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
            seen = client.get(f"/jobs/{job_id}").json()
        assert seen["status"] == "running", "the job ended before it could be cancelled"
        assert (env.settings.jobs_path / job_id / "cube.zarr").exists()
        d = client.delete(f"/jobs/{job_id}", headers=env.headers())
        assert d.status_code == 202 and d.json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        while (env.settings.jobs_path / job_id).exists():
            assert time.monotonic() < deadline, "the cancelled job's data stayed"
            time.sleep(0.05)
        final = client.get(f"/jobs/{job_id}").json()
        assert final["status"] == "cancelled"
        assert final["progress"]["chunks_done"] < final["progress"]["chunks_total"]
        assert client.get(f"/releases/job-{job_id}").status_code == 404


def test_restart_mid_job_resumes_then_fails_visibly(
    tmp_path: Path, many_chunks: World, demo_card: Path
) -> None:
    """A real server killed with SIGKILL mid-job: the next server resumes the job (its
    finished chunks are kept); with one attempt allowed, it fails it with the reason."""
    import httpx

    from conftest import sdmatlas_server

    env = make_env(tmp_path, many_chunks, demo_card)
    base_env = {
        "SDMATLAS_DATA_DIR": str(tmp_path),
        "SDMATLAS_DATABASE_URL": env.settings.catalog_url,
        "SDMATLAS_JOBS_POLL_SECONDS": "0.05",
        "SDMATLAS_JOBS_STALE_SECONDS": "1",
        "SDMATLAS_BATCH_SIZE": "64",
        "SDMATLAS_TILE_CACHE": "[]",
        "SDMATLAS_JOBS_MAX_AREA_KM2": "20000",
    }
    request = {"model": "demo-sdm", "period": PERIOD,
               "area": {"bbox": env.lonlat_box(0, 0, 160, 200)}}  # fmt: skip
    with sdmatlas_server(base_env) as base:
        r = httpx.post(f"{base}/jobs", headers=env.headers(), timeout=30, json=request)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            seen = httpx.get(f"{base}/jobs/{job_id}").json()
            if seen["progress"]["chunks_done"] >= 5 or (
                seen["status"] != "queued" and (seen["status"] != "running")
            ):
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert seen["status"] == "running", seen
        _kill_server(base)
    done_before = len(os.listdir(tmp_path / "jobs" / job_id / "cube.zarr" / "_sdmatlas" / "done"))
    assert done_before > 0
    with sdmatlas_server(base_env) as base:
        deadline = time.monotonic() + 120
        while (job := httpx.get(f"{base}/jobs/{job_id}").json())["status"] not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["attempts"] == 2
    assert job["timings"]["chunks_resumed"] >= done_before
    assert job["timings"]["chunks_computed"] + job["timings"]["chunks_resumed"] == job[
        "progress"]["chunks_total"]  # fmt: skip

    # the same again with one attempt allowed: the restarted server fails it, visibly
    env.catalog.dispose()
    with sdmatlas_server(base_env) as base:
        r = httpx.post(f"{base}/jobs", headers=env.headers(), timeout=30,
                       json={"model": "demo-sdm", "period": PERIOD,
                             "area": {"bbox": env.lonlat_box(0, 0, 150, 200)}})  # fmt: skip
        job_id = r.json()["id"]
        while httpx.get(f"{base}/jobs/{job_id}").json()["progress"]["chunks_done"] < 2:
            time.sleep(0.02)
        _kill_server(base)
    with sdmatlas_server({**base_env, "SDMATLAS_JOBS_MAX_ATTEMPTS": "1"}) as base:
        deadline = time.monotonic() + 60
        while (job := httpx.get(f"{base}/jobs/{job_id}").json())["status"] != "failed":
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert "interrupted" in job["error"] and "jobs_max_attempts=1" in job["error"]
    assert not (tmp_path / "jobs" / job_id).exists()


def _kill_server(base: str) -> None:
    """SIGKILL the server listening at ``base`` (its process group): no clean shutdown."""
    import psutil

    port = int(base.rsplit(":", 1)[1])
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            os.killpg(os.getpgid(c.pid), signal.SIGKILL)
            return
    raise AssertionError(f"no process listens on {port}")


def test_limits_are_refused_with_their_status(
    tmp_path: Path, coast: World, demo_card: Path
) -> None:
    env = make_env(tmp_path, coast, demo_card, jobs_max_area_km2=100.0, jobs_max_active=2,
                   jobs_max_active_per_key=1, jobs_requests_per_minute=4,
                   jobs_runner=False)  # fmt: skip
    with TestClient(create_app(env.settings, env.catalog)) as client:
        big = post_job(client, env, {"bbox": env.lonlat_box(0, 0, 70, 90)})
        assert big.status_code == 413 and "jobs_max_area_km2" in big.json()["detail"]
        one = post_job(client, env, {"bbox": env.lonlat_box(0, 0, 10, 10)})
        assert one.status_code == 202  # queued: no runner in this app
        two = post_job(client, env, {"bbox": env.lonlat_box(20, 70, 30, 80)})
        assert two.status_code == 429 and "jobs_max_active_per_key=1" in two.json()["detail"]
        assert "retry-after" in two.headers
        _, other = create_key(env.catalog, "other", ["jobs:write"])
        three = client.post("/jobs", headers=env.headers(other), json={
            "model": "demo-sdm", "period": PERIOD,
            "area": {"bbox": env.lonlat_box(40, 60, 50, 70)}})  # fmt: skip
        assert three.status_code == 202
        _, third = create_key(env.catalog, "third", ["jobs:write"])
        four = client.post("/jobs", headers=env.headers(third), json={
            "model": "demo-sdm", "period": PERIOD,
            "area": {"bbox": env.lonlat_box(50, 50, 60, 60)}})  # fmt: skip
        assert four.status_code == 429 and "jobs_max_active=2" in four.json()["detail"]
        # the rate limit: 4 requests a minute per key; three were counted already (the
        # refused ones too), the fourth is the deduplicated job, the fifth is refused
        codes = [post_job(client, env, {"bbox": env.lonlat_box(0, 0, 10, 10)})
                 for _ in range(2)]  # fmt: skip
        assert [c.status_code for c in codes] == [200, 429]
        assert "jobs_requests_per_minute=4" in codes[1].json()["detail"]
        assert int(codes[1].headers["retry-after"]) > 0


@pytest.mark.parametrize(
    ("area", "status", "message"),
    [
        (
            {"bbox": [2.0, 48.0, 2.5, 48.5]},
            400,
            "outside model demo-sdm@1.0.0's covariate coverage",
        ),
        ({"bbox": [13.9, 45.5, 13.8, 45.6]}, 400, "west < east"),
        ({"bbox": [45.6, 13.8, 45.7, 13.9]}, 400, "outside"),
        ({"bbox": [1, 2, 3]}, 400, "four finite numbers"),
        ({}, 400, "exactly one of bbox"),
        ({"bbox": [13.8, 45.6, 13.9, 45.7], "territory": "HR"}, 400, "exactly one"),
        ({"territory": "nowhere"}, 404, "no territory with code 'nowhere'"),
        ({"geometry": {"type": "Point", "coordinates": [13.8, 45.6]}}, 400, "Polygon"),
    ],
)
def test_bad_areas(
    env: Env, client: TestClient, area: dict[str, Any], status: int, message: str
) -> None:
    r = post_job(client, env, area)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_bad_requests(env: Env, client: TestClient) -> None:
    area = {"bbox": env.lonlat_box(10, 20, 30, 40)}
    r = client.post("/jobs", headers=env.headers(),
                    json={"model": "nope", "period": PERIOD, "area": area})  # fmt: skip
    assert r.status_code == 404 and "has no registered covariates" in r.json()["detail"]
    r = client.post("/jobs", headers=env.headers(),
                    json={"model": "demo-sdm", "period": "2099", "area": area})  # fmt: skip
    assert r.status_code == 404 and "registered periods: ['2020']" in r.json()["detail"]
    r = client.post("/jobs", headers=env.headers(), content=b"{not json")
    assert r.status_code == 400 and "not valid" in r.json()["detail"]
    r = client.post("/jobs", headers=env.headers(),
                    json={"model": "demo-sdm", "period": PERIOD, "area": area, "x": 1})  # fmt: skip
    assert r.status_code == 400 and "x: Extra inputs" in r.json()["detail"]
    # a box on the grid but over the sea: no pixel of the coverage to predict
    r = post_job(client, env, {"bbox": env.lonlat_box(20, 20, 30, 30)})
    assert r.status_code == 400 and "no pixel of the area lies" in r.json()["detail"]


def test_covariates_that_disappeared_fail_the_job_naming_the_file(
    tmp_path: Path, coast: World, demo_card: Path
) -> None:
    import shutil

    copy = tmp_path / "cov"
    shutil.copytree(coast.covariates["elevation"].parent, copy)
    world = World(coast.root, coast.grid, coast.territory)
    env = make_env(tmp_path / "a", world, demo_card)
    register_covariates(env.catalog, demo_card, PERIOD, {p.stem: p for p in copy.glob("*.tif")},
                        coast.territory_path, chunk=coast.grid.chunk)  # fmt: skip
    (copy / "temperature.tif").unlink()
    with TestClient(create_app(env.settings, env.catalog)) as client:
        job = post_job(client, env, {"bbox": env.lonlat_box(10, 20, 40, 60)}).json()
        done = wait_job(client, job["id"], {"done", "failed"})
    assert done["status"] == "failed"
    assert str(copy / "temperature.tif") in done["error"]


# -- auth ---------------------------------------------------------------------------------------


def test_auth(env: Env, client: TestClient) -> None:
    body = {"model": "demo-sdm", "period": PERIOD, "area": {"bbox": env.lonlat_box(1, 1, 5, 5)}}
    r = client.post("/jobs", json=body)
    assert r.status_code == 401 and "needs an API key" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/jobs", json=body, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    wrong = env.token[:-4] + ("aaaa" if not env.token.endswith("aaaa") else "bbbb")
    r = client.post("/jobs", json=body, headers=env.headers(wrong))
    assert r.status_code == 401 and r.json()["detail"] == "the API key is not valid"
    r = client.post("/jobs", json=body, headers=env.headers("sdm_00000000_" + "x" * 43))
    assert r.status_code == 401 and r.json()["detail"] == "the API key is not valid"
    _, admin_only = create_key(env.catalog, "reader", ["admin"])
    _, revoked = create_key(env.catalog, "gone", ["jobs:write"])
    revoke_key(env.catalog, "gone")
    r = client.post("/jobs", json=body, headers=env.headers(revoked))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # the right key (and admin, which holds every scope)
    r = client.post("/jobs", json=body, headers=env.headers())
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    # another key may not cancel it: 403; the owner may
    _, stranger = create_key(env.catalog, "stranger", ["jobs:write"])
    r = client.delete(f"/jobs/{job_id}", headers=env.headers(stranger))
    assert r.status_code == 403 and "only the key that created" in r.json()["detail"]
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 401
    r = client.delete(f"/jobs/{job_id}", headers=env.headers(admin_only))
    assert r.status_code == 202
    # read routes stay open
    assert client.get(f"/jobs/{job_id}").status_code == 200


def test_wrong_scope_is_403(tmp_path: Path, coast: World, demo_card: Path) -> None:
    from sdmatlas.catalog import keys

    env = make_env(tmp_path, coast, demo_card)
    keys.SCOPES["reports:write"] = "a scope no job route accepts (this test only)"
    try:
        _, token = create_key(env.catalog, "narrow", ["reports:write"])
    finally:
        del keys.SCOPES["reports:write"]
    with TestClient(create_app(env.settings, env.catalog)) as client:
        r = client.post("/jobs", headers=env.headers(token), json={})
    assert r.status_code == 403 and "lacks the scope 'jobs:write'" in r.json()["detail"]


# -- live point predictions --------------------------------------------------------------------


def test_live_point_equals_the_cube(env: Env, client: TestClient, cube: Path) -> None:
    codes = open_cube(cube).read()
    g = env.world.grid
    land = np.argwhere(codes[0] != NODATA)
    rng = np.random.default_rng(7)
    ids = np.asarray(open_cube(cube).species_ids)
    for r, c in land[rng.choice(len(land), 12, replace=False)]:
        lon, lat = g.lonlat(np.array([r]), np.array([c]))
        body = client.get("/predict/point", params={"model": "demo-sdm", "lon": float(lon[0]),
                          "lat": float(lat[0]), "limit": 10_000}).json()  # fmt: skip
        assert body["inside"] and (body["row"], body["col"]) == (r, c)
        assert body["model_version"] == "1.0.0" and body["total"] == len(ids)
        got = {s["id"]: s["probability"] for s in body["species"]}
        expect = codes[:, r, c] / 254.0
        for i, sid in enumerate(ids):  # within quantisation: the very same code
            assert abs(got[int(sid)] - expect[i]) < 0.5 / 254, (sid, got[int(sid)], expect[i])
        probs = [s["probability"] for s in body["species"]]
        assert probs == sorted(probs, reverse=True)
    again = client.get("/predict/point", params={"model": "demo-sdm", "lon": float(lon[0]),
                       "lat": float(lat[0])}).json()  # fmt: skip
    assert again["cached"]


def test_live_point_bad_input(env: Env, client: TestClient) -> None:
    q = {"model": "demo-sdm"}
    for lon, lat in [(200, 45), (13, 95), ("nan", 45), (13, "inf")]:
        r = client.get("/predict/point", params={**q, "lon": lon, "lat": lat})
        assert r.status_code == 400, (lon, lat, r.text)
    r = client.get("/predict/point", params={"model": "nope", "lon": 13.8, "lat": 45.6})
    assert r.status_code == 404
    r = client.get("/predict/point", params={**q, "period": "2099", "lon": 13.8, "lat": 45.6})
    assert r.status_code == 404 and "registered periods" in r.json()["detail"]
    # outside the coverage: not an error, nothing inside (as /point)
    r = client.get("/predict/point", params={**q, "lon": 2.35, "lat": 48.85}).json()
    assert r["inside"] is False and r["species"] == []


def test_covariate_values_missing_at_a_point_are_not_a_fault(env: Env) -> None:
    """A sea pixel inside the grid: the coverage mask says no; nothing is predicted."""
    from sdmatlas.predict.live import LivePredictor

    cov = find_covariates(env.catalog, "demo-sdm")
    sea = np.argwhere(~env.world.territory.mask)[0]
    lon, lat = env.world.grid.lonlat(np.array([sea[0]]), np.array([sea[1]]))
    res = LivePredictor("cpu").predict(cov, float(lon[0]), float(lat[0]))
    assert not res.inside and (res.codes == NODATA).all()


# -- the command line ---------------------------------------------------------------------------


def test_command_line_keys_covariates_and_a_separate_runner(
    tmp_path: Path, coast: World, demo_card: Path
) -> None:
    """`keys create/list/revoke`, `covariates register/list`, and `jobs run` taking a job
    that an API process without a runner queued."""
    import subprocess
    import sys

    import httpx

    from conftest import sdmatlas_server

    exe = str(Path(sys.executable).parent / "sdmatlas")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMATLAS_")} | {
        "SDMATLAS_DATA_DIR": str(tmp_path),
        "SDMATLAS_CHUNK_SIZE": str(coast.grid.chunk),
        "SDMATLAS_JOBS_POLL_SECONDS": "0.05",
    }

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=120)
        assert (r.returncode == 0) == ok, r.stderr
        return r

    token = cli("keys", "create", "ci", "--scope", "jobs:write").stdout.strip()
    assert token.startswith("sdm_") and len(token) == 56
    assert "a key named 'ci' exists" in cli("keys", "create", "ci", ok=False).stderr
    bad_scope = cli("keys", "create", "x", "--scope", "root", ok=False)
    assert "not known" in bad_scope.stderr and bad_scope.returncode == 2
    folder = str(coast.covariates["elevation"].parent)
    cli("covariates", "register", str(demo_card), "--period", PERIOD,
        "--territory", str(coast.territory_path), "--covariates", folder)  # fmt: skip
    assert "demo-sdm@1.0.0\t2020\televation,landcover" in cli("covariates", "list").stdout
    with sdmatlas_server({**{k: v for k, v in env.items() if k.startswith("SDMATLAS_")},
                          "SDMATLAS_JOBS_RUNNER": "false"}) as base:  # fmt: skip
        e = Env(Settings(data_dir=tmp_path), None, token, coast)  # type: ignore[arg-type]
        r = httpx.post(f"{base}/jobs", headers=e.headers(), timeout=30, json={
            "model": "demo-sdm", "period": PERIOD,
            "area": {"bbox": e.lonlat_box(40, 60, 60, 80)}})  # fmt: skip
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        time.sleep(0.5)
        assert httpx.get(f"{base}/jobs/{job_id}").json()["status"] == "queued"
        runner = subprocess.Popen([exe, "jobs", "run"], env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while (job := httpx.get(f"{base}/jobs/{job_id}").json())["status"] != "done":
                assert time.monotonic() < deadline and job["status"] != "failed", job
                time.sleep(0.1)
        finally:
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(30) == 0
        assert httpx.get(f"{base}/releases/{job['release']}").status_code == 200
    cli("keys", "revoke", "ci")
    assert "revoked" in cli("keys", "list").stdout
