"""The ``sdmatlas`` command line: thin wrappers over the library's functions."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sdmatlas.demo import DEMO_CARD, DEMO_HABITATS, DEMO_PERIOD
from sdmatlas.errors import InvalidInputError, SdmAtlasError
from sdmatlas.settings import Settings

if TYPE_CHECKING:
    from sdmatlas.catalog.db import Catalog

app = typer.Typer(
    help="Predict, publish and serve species distribution maps.", no_args_is_help=True
)
demo_app = typer.Typer(
    help="The demo: synthetic world, virtual species, demo model.", no_args_is_help=True
)
app.add_typer(demo_app, name="demo")
db_app = typer.Typer(help="The catalog database: migrations and status.", no_args_is_help=True)
app.add_typer(db_app, name="db")
cache_app = typer.Typer(help="The tile cache: disk space.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
keys_app = typer.Typer(help="API keys for write access (jobs).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
cov_app = typer.Typer(
    help="Covariates known to the server (on-demand prediction).", no_args_is_help=True
)
app.add_typer(cov_app, name="covariates")
jobs_app = typer.Typer(help="On-demand prediction jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)


@contextmanager
def _errors(hint: str | Callable[[], str | None] | None = None) -> Iterator[None]:
    """Print sdmatlas errors as one clear line and exit 2, instead of a traceback; then
    ``hint`` (or what it returns when called) if there is one."""
    try:
        yield
    except SdmAtlasError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        if callable(hint):
            hint = hint()
        if hint:
            console.print(hint, highlight=False)
        raise typer.Exit(code=2) from None


@contextmanager
def _catalog(settings: Settings) -> Iterator[Catalog]:
    """The settings' catalog database for one command, closed afterwards."""
    from sdmatlas.catalog.db import Catalog

    catalog = Catalog.from_settings(settings)
    try:
        yield catalog
    finally:
        catalog.dispose()


def _progress_bar(unit: str) -> Progress:
    """The one progress bar of the CLI: stage, bar, done/total ``unit``, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _covariate_paths(directory: Path | None, items: list[str] | None) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if directory is not None:
        if not directory.is_dir():
            raise typer.BadParameter(f"{directory} is not a directory", param_hint="--covariates")
        paths.update({p.stem: p for p in sorted(directory.glob("*.tif"))})
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--covariate")
        paths[name] = Path(path)
    if not paths:
        raise typer.BadParameter("give --covariates DIR and/or --covariate NAME=PATH")
    return paths


@app.command("predict")
def predict_cmd(
    card: Annotated[Path, typer.Option(help="Model card (YAML/JSON).")],
    territory: Annotated[
        Path, typer.Option(help="Territory: mask GeoTIFF, or GeoJSON with --res.")
    ],
    out: Annotated[Path, typer.Option(help="Output cube (a Zarr v3 directory).")],
    covariates: Annotated[
        Path | None, typer.Option(help="Directory of <name>.tif covariates.")
    ] = None,
    covariate: Annotated[list[str] | None, typer.Option(help="NAME=PATH, repeatable.")] = None,
    res: Annotated[
        float | None, typer.Option(help="Grid resolution for a GeoJSON territory.")
    ] = None,
    crs: Annotated[str, typer.Option(help="Grid CRS for a GeoJSON territory.")] = "EPSG:3035",
    chunk: Annotated[int | None, typer.Option(help="Chunk edge in pixels.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="LocalCluster workers (0: in-process).")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler address.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pixels per model call.")] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads per worker.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    framework: Annotated[str | None, typer.Option(help="Run one of the card's alternates.")] = None,
    halo: Annotated[
        int | None, typer.Option(help="Halo read around chunks (>= patch // 2).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Finish an interrupted run of this release.")
    ] = False,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP)] = None,
    shard: Annotated[
        str | None,
        typer.Option(help="i/N: run only share i of N of the chunks (SLURM job arrays)."),
    ] = None,
    finish: Annotated[
        bool,
        typer.Option(help="Run nothing: mark the cube complete once every chunk is done."),
    ] = False,
) -> None:
    """Run a model over a territory into a Zarr cube of species probabilities."""
    from sdmatlas.predict.pipeline import PredictOptions, predict
    from sdmatlas.territory import load_territory

    settings = Settings()
    with _errors():
        profile = _cluster_profile(cluster, settings)  # before any work or job
        paths = _covariate_paths(covariates, covariate)
        terr = load_territory(territory, res=res, crs=crs, chunk=chunk or settings.chunk_size)
        options = PredictOptions(
            batch_size=batch_size or settings.batch_size,
            workers=settings.workers if workers is None else workers,
            threads_per_worker=threads or settings.threads_per_worker,
            scheduler=scheduler or settings.scheduler,
            device=(device or settings.device),  # type: ignore[arg-type]
            framework=framework,
            halo=halo,
            resume=resume,
            cluster=profile,
            shard=_shard(shard),
            finish=finish,
        )
        summary = _run_predict(predict, card, paths, terr, out, options)
    _print_summary(summary)


CLUSTER_HELP = (
    "Run the workers as cluster jobs: slurm, a profile file (.yaml), or a profile name "
    "from SDMATLAS_CLUSTER_PROFILES (docs/cluster.md)."
)


def _cluster_profile(spec: str | None, settings: Settings) -> Any:
    """The validated profile of ``--cluster`` (None without it)."""
    if spec is None:
        return None
    from sdmatlas.cluster import load_profile

    profile = load_profile(spec, settings.cluster_profiles)
    profile.jobqueue_kwargs()  # cross-field checks too, before anything is submitted
    return profile


def _shard(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    i, sep, n = spec.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise typer.BadParameter(f"expected i/N such as 0/3, got {spec!r}", param_hint="--shard")
    return int(i), int(n)


def _run_predict(
    predict: Any, card: Path, paths: dict[str, Path], terr: Any, out: Path, options: Any
) -> Any:
    with _progress_bar("chunks") as bar:
        task = bar.add_task("predict", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return predict(card, paths, terr, out, options, progress=progress)


def _print_summary(s: Any) -> None:
    console.print(
        f"cube [bold]{s.cube}[/]: {s.computed} chunks computed, {s.already_done} already done "
        f"of {s.total_chunks}; {s.pixels:,} pixels x {s.n_species} species in {s.seconds:.1f} s "
        f"({s.pixel_species_per_s / 1e6:.1f} M pixel-species/s)"
    )


@app.command("publish")
def publish_cmd(
    cube: Annotated[Path, typer.Argument(help="A complete prediction cube.")],
    release_id: Annotated[str, typer.Option("--id", help="Release id (a-z, 0-9, . _ -).")],
    root: Annotated[
        str | None,
        typer.Option(
            help="Releases directory, object-store URL (s3://bucket/releases) or "
            "tiledb+DIR (the TileDB engine)."
        ),
    ] = None,
    species: Annotated[Path | None, typer.Option(help="CSV of species status flags.")] = None,
    threshold: Annotated[float, typer.Option(help="Presence threshold for indicators.")] = 0.5,
    period: Annotated[
        str | None,
        typer.Option(
            help="Period of the release in ISO 8601: 2020, 2020-06, 2041/2060 (default: this year)."
        ),
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the release in the catalog database.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="LocalCluster workers (0: in-process).")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler address.")] = None,
    tile: Annotated[
        int | None,
        typer.Option(help="Pixels per task side (a multiple of the chunk and of 64)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Finish an interrupted publish of this release.")
    ] = False,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP)] = None,
    species_set: Annotated[
        Path | None,
        typer.Option(
            help="The species-set rule of the set indicators: a report of sdmatlas "
            "calibrate, or a rule (JSON: threshold, top_k, floor, native_only); default: "
            "p >= --threshold."
        ),
    ] = None,
    habitats: Annotated[
        Path | None,
        typer.Option(
            help="A habitat classifier card: publish its habitat class layers too "
            "(habitat_l<level>, the finest from the classifier, coarser ones derived)."
        ),
    ] = None,
    statuses: Annotated[
        str | None,
        typer.Option(
            help="Take the species' flags and IUCN categories from the catalog's statuses "
            "in this territory (a catalog code; 'all': any territory) instead of --species."
        ),
    ] = None,
) -> None:
    """Publish a cube as a release (levels, cross-species index, indicators) and register
    it in the catalog. Runs as chunk tasks on the same executor as predict."""
    from sdmatlas.catalog.register import validate_period
    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.sets import read_set_rule
    from sdmatlas.storage import release_store

    settings = Settings()
    period = period or _this_year()
    releases = root or str(settings.data_dir / "releases")

    def hint() -> str | None:
        from sdmatlas.publish.workspace import workspace_for

        if "://" in releases or releases.startswith("tiledb+"):
            return None
        if not workspace_for(Path(releases), release_id).path.exists():
            return None
        return (
            f"the finished tasks are kept: add --resume to continue, or run "
            f"`sdmatlas clean {releases}` to remove them"
        )

    with _errors(hint=hint):
        validate_period(period)  # before any work, not after
        profile = _cluster_profile(cluster, settings)
        ids = open_cube(cube).species_ids
        if statuses is not None and species is not None:
            raise InvalidInputError("give --species (a CSV) or --statuses (the catalog), not both")
        if statuses is not None:
            from sdmatlas.catalog.db import Catalog
            from sdmatlas.catalog.statuses import species_info

            catalog = Catalog.from_settings(settings)
            try:
                info = species_info(catalog, ids, None if statuses == "all" else statuses)
            finally:
                catalog.dispose()
        else:
            info = species_info_from_csv(species, ids)
        rule = read_set_rule(species_set) if species_set else None
        executor = ExecutorOptions(
            workers=settings.workers if workers is None else workers,
            threads_per_worker=1,
            scheduler=scheduler or settings.scheduler,
            cluster=profile,
        )
        path = _run_publish(
            publish,
            cube,
            release_store(releases, settings.storage_options),
            release_id,
            info,
            PublishOptions(
                threshold=threshold,
                tile=tile,
                executor=executor,
                resume=resume,
                species_set=rule,
                habitats=habitats,
            ),
        )
    console.print(f"release [bold]{release_id}[/] published at {path}")
    if register:
        _register(settings, path, period)


def _location(text: str) -> str:
    """A release location as the catalog records it: URLs as given, paths absolute."""
    if ("://" in text and not text.startswith("file://")) or text.startswith("tiledb+"):
        return text
    return str(Path(text.removeprefix("file://")).resolve())


def _register(settings: Settings, path: str, period: str) -> None:
    """Register a published release; the release stays on storage if this fails, and
    ``sdmatlas register`` can be run again once the cause is fixed."""
    from sdmatlas.catalog.register import register_release
    from sdmatlas.storage import open_release

    location = _location(path)
    with _catalog(settings) as catalog:
        with _errors(hint=f"the release is published; retry with: sdmatlas register {path}"):
            catalog.upgrade()
            release = open_release(location, settings.storage_options)
            rid = register_release(catalog, release, location, period)
        console.print(
            f"release registered in the catalog {catalog.where} (id {rid}, period {period})"
        )


@app.command("register")
def register_cmd(
    release: Annotated[
        str,
        typer.Argument(
            help="A published release: its directory, object-store pointer "
            "(s3://bucket/releases/ID.json) or tiledb+DIR/ID."
        ),
    ],
    period: Annotated[
        str | None,
        typer.Option(help="Period of the release in ISO 8601 (default: this year)."),
    ] = None,
) -> None:
    """Register an already published release in the catalog (in one transaction)."""
    _register(Settings(), release, period or _this_year())


@app.command("clean")
def clean_cmd(
    root: Annotated[Path | None, typer.Argument(help="Releases directory.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List only; remove nothing.")] = False,
) -> None:
    """Find the workspaces that killed or failed publishes left in a releases directory,
    list them, then remove them (not those a running publish holds)."""
    from sdmatlas.publish.workspace import leftovers, remove_leftover

    releases = root or Settings().data_dir / "releases"
    found = leftovers(releases)
    if not found:
        console.print(f"no unfinished publish in {releases}")
        return
    for item in found:
        state = "in use by a running publish: kept" if item.in_use else "will be removed"
        console.print(
            f"{item.path}  release {item.release_id!r}, {item.bytes / 1e6:,.1f} MB, {state}"
        )
    if dry_run:
        return
    removed = [item for item in found if not item.in_use and remove_leftover(releases, item)]
    console.print(f"removed {len(removed)} of {len(found)}")


def _this_year() -> str:
    return str(datetime.now(UTC).year)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target migration.")] = "head",
) -> None:
    """Create or migrate the catalog schema (Alembic) up to REVISION."""
    with _catalog(Settings()) as catalog, _errors():
        catalog.upgrade(revision)
        console.print(f"catalog {catalog.where} at revision {catalog.revision()}")


@db_app.command("current")
def db_current() -> None:
    """Print the catalog's database and migration revision."""
    with _catalog(Settings()) as catalog:
        with _errors():
            rev = catalog.revision()
            state = "up to date" if catalog.is_current() else "needs: sdmatlas db upgrade"
        typer.echo(f"{catalog.where} revision {rev or '(empty)'} ({state})")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it).")],
    scope: Annotated[
        list[str] | None, typer.Option(help="A scope (repeat): jobs:write, admin.")
    ] = None,
) -> None:
    """Create an API key and print it on stdout, once: only its hash is stored."""
    from sdmatlas.catalog.keys import create_key

    with _catalog(Settings()) as catalog, _errors():
        catalog.upgrade()
        info, token = create_key(catalog, name, scope or ["jobs:write"])
    console.print(f"key [bold]{info.name}[/] with scopes {list(info.scopes)} (shown once):")
    typer.echo(token)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    from sdmatlas.catalog.keys import revoke_key

    with _catalog(Settings()) as catalog, _errors():
        info = revoke_key(catalog, name)
    console.print(f"key [bold]{info.name}[/] revoked at {info.revoked_at}")


@keys_app.command("list")
def keys_list() -> None:
    """The API keys: name, public prefix, scopes, created, revoked."""
    from sdmatlas.catalog.keys import list_keys

    with _catalog(Settings()) as catalog, _errors():
        for k in list_keys(catalog):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            typer.echo(f"{k.name}\tsdm_{k.prefix}_…\t{','.join(k.scopes)}\t{state}")


@cov_app.command("register")
def covariates_register(
    card: Annotated[Path, typer.Argument(help="The model card (YAML).")],
    period: Annotated[str, typer.Option(help="The period they describe (ISO 8601).")],
    territory: Annotated[
        Path, typer.Option(help="Mask raster of the coverage; its grid is the jobs' grid.")
    ],
    covariates: Annotated[
        Path | None, typer.Option(help="Directory of <name>.tif covariate rasters.")
    ] = None,
    covariate: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH of one covariate (repeatable).")
    ] = None,
) -> None:
    """Check covariates against the model card and the coverage grid (as predict does) and
    record them for the model and period: jobs and live point predictions use them."""
    from sdmatlas.catalog.covariates import register_covariates

    settings = Settings()
    paths = _covariate_paths(covariates, covariate)
    with _catalog(settings) as catalog, _errors():
        catalog.upgrade()
        reg = register_covariates(
            catalog, card, period, paths, territory, chunk=settings.chunk_size
        )
    console.print(
        f"covariates of [bold]{reg.model}[/] for {reg.period}: {sorted(reg.covariates)} on a "
        f"{reg.grid.width} x {reg.grid.height} grid at {reg.grid.res:g} m"
    )


@cov_app.command("list")
def covariates_list() -> None:
    """The registered covariates: model, period, names."""
    from sdmatlas.catalog.covariates import list_covariates

    with _catalog(Settings()) as catalog, _errors():
        for c in list_covariates(catalog):
            typer.echo(f"{c.model}\t{c.period}\t{','.join(sorted(c.covariates))}")


@jobs_app.command("run")
def jobs_run() -> None:
    """Run on-demand jobs in this process until stopped (Ctrl-C, SIGTERM): for API
    processes started with SDMATLAS_JOBS_RUNNER=false, or a machine of its own."""
    import signal
    import threading

    from sdmatlas.jobs.runner import JobRunner

    settings = Settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _catalog(settings) as catalog, _errors():
        catalog.upgrade()
        runner = JobRunner(settings, catalog)
        runner.start()
        console.print(f"job runner {runner.name} on {catalog.where}; Ctrl-C stops it")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        runner.stop()


@app.command("import-species")
def import_species_cmd(
    csv_file: Annotated[Path, typer.Argument(help="CSV: species_id, scientific_name, ...")],
    territory: Annotated[
        str | None, typer.Option(help="Territory code the status flags apply to.")
    ] = None,
) -> None:
    """Import or update species (names, genus, family, GBIF key, vernacular names, flags)."""
    from sdmatlas.catalog.imports import import_species

    with _catalog(Settings()) as catalog:
        with _errors():
            catalog.upgrade()
            report = import_species(catalog, csv_file, territory)
        console.print(f"species from {csv_file}: {report}")


@app.command("import-territories")
def import_territories_cmd(
    path: Annotated[Path, typer.Argument(help="GeoJSON or GeoPackage of polygons.")],
    level: Annotated[
        str | None,
        typer.Option(help="country, region, protected_area or custom (else a 'level' field)."),
    ] = None,
    code_field: Annotated[str, typer.Option(help="Field with the territory code.")] = "code",
    name_field: Annotated[str, typer.Option(help="Field with the territory name.")] = "name",
    layer: Annotated[str | None, typer.Option(help="Layer of a GeoPackage.")] = None,
) -> None:
    """Import or update territories; invalid polygons are repaired or refused by id."""
    from sdmatlas.catalog.imports import import_territories

    with _catalog(Settings()) as catalog:
        with _errors():
            catalog.upgrade()
            report = import_territories(catalog, path, level, code_field, name_field, layer)
        console.print(f"territories from {path}: {report}")


def _run_publish(
    publish: Any, cube: Path, root: Any, release_id: str, info: Any, options: Any
) -> str:
    with _progress_bar("steps") as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        path: str = publish(cube, root, release_id, info, options, progress=progress)
        return path


@app.command("export")
def export_cmd(
    release: Annotated[str, typer.Argument(help="A release directory or location.")],
    layer: Annotated[str, typer.Argument(help="species/<id>, indicator/<name> or classes/<name>.")],
    out: Annotated[Path, typer.Option(help="Output COG path.")],
    bbox: Annotated[
        str | None, typer.Option(help="left,bottom,right,top in the release CRS.")
    ] = None,
) -> None:
    """Export one layer of a release as a Cloud-Optimized GeoTIFF."""
    from sdmatlas.publish.export import export_cog
    from sdmatlas.storage import open_release

    with _errors():
        box = None
        if bbox:
            parts = bbox.split(",")
            if len(parts) != 4:
                raise typer.BadParameter("expected four numbers", param_hint="--bbox")
            try:
                left, bottom, right, top = (float(v) for v in parts)
            except ValueError:
                raise typer.BadParameter("expected four numbers", param_hint="--bbox") from None
            box = (left, bottom, right, top)
        path = export_cog(
            open_release(_location(release), Settings().storage_options), layer, out, bbox=box
        )
    console.print(f"wrote {path}")


@app.command("calibrate")
def calibrate_cmd(
    release: Annotated[str, typer.Argument(help="A release directory or location.")],
    surveys: Annotated[
        Path,
        typer.Option(help="Presence/absence surveys (CSV: site_id, x, y or lon, lat, sp1...)."),
    ],
    alpha: Annotated[
        float,
        typer.Option(
            help="Target miscoverage: a present species is in the set with "
            "probability >= 1 - alpha."
        ),
    ] = 0.1,
    split: Annotated[
        str | None, typer.Option(help="Use only sites with this value in the split column.")
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="Share of the sites held out to report the coverage.")
    ] = 0.25,
    test: Annotated[
        Path | None, typer.Option(help="Independent surveys to report the coverage on.")
    ] = None,
    species: Annotated[
        Path | None,
        typer.Option(help="Species CSV with iucn and status flags: coverage per status group."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out draw.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the report (JSON) here.")] = None,
    mondrian: Annotated[
        str | None,
        typer.Option(
            help="'iucn': one threshold per IUCN category (Mondrian conformal prediction: "
            "each group covered at 1 - alpha); needs --species with an iucn column."
        ),
    ] = None,
) -> None:
    """Calibrate a release's species-set threshold by split conformal prediction on
    surveys, and report the coverage and set size it gives."""
    from sdmatlas.calibration import calibrate
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.storage import open_release

    with _errors():
        rel = open_release(_location(release), Settings().storage_options)
        info = species_info_from_csv(species, rel.species_ids.tolist()) if species else None
        report = calibrate(rel, surveys, alpha, split=split, holdout=holdout, seed=seed,
                           test=test, info=info, mondrian=mondrian)  # fmt: skip
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text)
    typer.echo(text)


@demo_app.command("surveys")
def demo_surveys(
    out: Annotated[Path, typer.Option(help="The CSV to write.")],
    sites: Annotated[int, typer.Option(min=1, help="Number of survey sites.")] = 8000,
    seed: Annotated[int, typer.Option(help="Seed of the draw (the demo's own is 43).")] = 7,
) -> None:
    """Fresh presence/absence surveys of the demo's virtual species, drawn from their true
    probabilities (test data for a model or a calibration)."""
    from sdmatlas.demo.build import DemoPaths, load_species, sample_surveys, write_surveys
    from sdmatlas.territory import load_territory

    root = Settings().data_dir / "demo"
    with _errors():
        paths = DemoPaths(root)
        if not paths.exists():
            raise InvalidInputError(f"no demo inputs in {root}: run sdmatlas demo build first")
        species = load_species(paths)
        terr = load_territory(paths.territory)
        rows, cols, presence, _ = sample_surveys(species, terr, sites, seed, test_fraction=0.0)
        write_surveys(out, terr.grid, species, rows, cols, presence, presence[:, 0] < 0)
    console.print(f"{len(rows)} survey sites written to {out}")


@app.command("stac")
def stac_cmd(
    release: Annotated[Path, typer.Argument(help="A release directory.")],
    out: Annotated[Path, typer.Option(help="Directory of the STAC catalog.")],
    cogs: Annotated[bool, typer.Option(help="Export a COG per layer as item assets.")] = True,
) -> None:
    """Write (and validate) a STAC catalog of a release: one item per layer."""
    from sdmatlas.publish.stac import validate_stac, write_stac

    with _errors():
        write_stac(release, out, cogs=cogs)
        n = validate_stac(out / "collection.json")
    console.print(f"STAC catalog at {out / 'collection.json'}: {n} objects, valid")


@app.command("info")
def info_cmd(cube: Annotated[Path, typer.Argument(help="A cube directory.")]) -> None:
    """Print a cube's status and run metadata as JSON."""
    from sdmatlas.predict.cube import open_cube

    with _errors():
        meta = open_cube(cube).meta
        meta = {k: v for k, v in meta.items() if k != "species_ids"} | {
            "n_species": len(meta.get("species_ids", [])),
            "chunks_done": len(open_cube(cube).done_chunks()),
        }
    typer.echo(json.dumps(meta, indent=2))


@demo_app.command("build")
def demo_build(
    out: Annotated[Path | None, typer.Option(help="Directory of the demo inputs.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Build the demo inputs (covariates, territory, virtual species, surveys)."""
    from sdmatlas.demo.build import DemoPaths, build_demo

    root = out or Settings().data_dir / "demo"
    if DemoPaths(root).exists() and not force:
        console.print(f"demo inputs already in {root} (use --force to rebuild)")
        return
    with console.status("building demo inputs"):
        build_demo(root)
    console.print(f"demo inputs written to [bold]{root}[/]")


@demo_app.command("train")
def demo_train(
    out: Annotated[Path, typer.Option(help="Where the model and card go.")] = DEMO_CARD.parent,
    epochs: Annotated[int, typer.Option()] = 60,
) -> None:
    """Train the demo model with PyTorch (needs the \\[torch] extra)."""
    from sdmatlas.demo.build import DemoPaths, build_demo

    root = Settings().data_dir / "demo"
    if not DemoPaths(root).exists():
        build_demo(root)
    try:
        from sdmatlas.demo.train import train_demo_model
    except ImportError as exc:
        console.print(
            f"[bold red]error:[/] training needs PyTorch: pip install -e '.\\[torch]' "
            f"({escape(str(exc))})"
        )
        raise typer.Exit(2) from None
    train_demo_model(DemoPaths(root), out, epochs=epochs)


@demo_app.command("run")
def demo_run(
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers.")] = None,
) -> None:
    """The whole demo: build inputs, predict, and report how well the model recovers the truth."""
    from sdmatlas.demo.build import DemoPaths, build_demo, load_species
    from sdmatlas.demo.evaluate import recovery
    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.models.card import load_card
    from sdmatlas.predict.cube import is_cube, open_cube
    from sdmatlas.predict.pipeline import PredictOptions, predict
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.territory import load_territory

    settings = Settings()
    root = settings.data_dir / "demo"
    with _errors():
        paths = DemoPaths(root)
        if not paths.exists():
            with console.status("building demo inputs"):
                build_demo(root)
            console.print(f"demo inputs written to [bold]{root}[/]")
        card = load_card(DEMO_CARD)
        terr = load_territory(paths.territory, chunk=settings.chunk_size)
        out = settings.data_dir / "cubes" / f"demo-{card.version}.zarr"
        options = PredictOptions(
            batch_size=settings.batch_size,
            workers=settings.workers if workers is None else workers,
            threads_per_worker=settings.threads_per_worker,
            scheduler=settings.scheduler,
            device=settings.device,
            resume=True,
        )
        if is_cube(out) and open_cube(out).is_complete:
            console.print(f"cube [bold]{out}[/] is already complete")
        else:
            _print_summary(
                _run_predict(predict, DEMO_CARD, paths.covariate_paths(), terr, out, options)
            )
        with console.status("comparing with the true probabilities"):
            rec = recovery(open_cube(out), load_species(paths), terr)
        release_id = f"demo-{card.version}"
        release_root = settings.data_dir / "releases"
        if (release_root / release_id).exists():
            console.print(f"release [bold]{release_id}[/] is already published")
        else:
            ids = open_cube(out).species_ids
            _run_publish(
                publish,
                out,
                release_root,
                release_id,
                species_info_from_csv(paths.species, ids),
                PublishOptions(
                    executor=ExecutorOptions(workers=options.workers, scheduler=options.scheduler),
                    resume=(release_root / f".{release_id}.publishing").exists(),
                    habitats=DEMO_HABITATS,
                ),
            )
            console.print(f"release [bold]{release_id}[/] published at {release_root / release_id}")
        _demo_catalog(settings, paths.species, release_root / release_id)
    m = card.metrics
    console.print(
        f"[bold]model[/] {card.name} {card.version}: held-out survey AUC mean "
        f"{m.get('auc_mean')} (the true probabilities score {m.get('oracle_auc_mean')} "
        "on the same sites)\n"
        f"[bold]recovery[/] over {rec.n_species} virtual species: mean |p - p_true| "
        f"{rec.mean_abs_error:.3f}, Pearson r mean {rec.mean_correlation:.3f} "
        f"(median {rec.median_correlation:.3f})\n"
        "next: sdmatlas serve (make demo starts it), then open "
        f"http://{Settings().host}:{Settings().port}/ (the viewer)"
    )


@app.command("seed")
def seed_cmd(
    layers: Annotated[
        list[str] | None, typer.Argument(help="Layer ids (see GET /layers); or --release.")
    ] = None,
    release: Annotated[
        str | None, typer.Option(help="Seed every species, indicator and class layer of a release.")
    ] = None,
    tms: Annotated[list[str], typer.Option(help="TileMatrixSet (repeatable).")] = [  # noqa: B006
        "WebMercatorQuad"
    ],
    zoom: Annotated[
        str | None, typer.Option(help="Zoom or range, e.g. 5-9; default: the layer's range.")
    ] = None,
    bbox: Annotated[str | None, typer.Option(help="lon/lat west,south,east,north.")] = None,
    territory: Annotated[str | None, typer.Option(help="A territory code of the catalog.")] = None,
    processes: Annotated[int, typer.Option(min=1, max=256, help="Worker processes.")] = 2,
    dask: Annotated[
        bool, typer.Option(help="Seed on a Dask LocalCluster of --processes workers.")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Seed on a running Dask scheduler (tcp://host:8786); into the cache."),
    ] = None,
    colormap: Annotated[str | None, typer.Option(help="Colormap of the seeded tiles.")] = None,
    format: Annotated[str, typer.Option(help="png or webp.")] = "png",
    to: Annotated[
        tuple[str, str],
        typer.Option(
            help="Where tiles go: 'cache -' (the disk or Redis tile cache), 'pmtiles DIR' "
            "or 'mbtiles DIR' (one static archive per layer, WebMercatorQuad).",
            metavar="TARGET DIR",
        ),
    ] = ("cache", "-"),
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="Count the tiles (empty, uniform, dense), bytes and time per layer and zoom "
            "from the block aggregates; render only --sample dense tiles to measure them.",
        ),
    ] = False,
    sample: Annotated[
        int,
        typer.Option(
            min=0,
            max=1000,
            help="With --plan: dense tiles rendered (not stored) to measure their mean size "
            "and time per zoom; 0: the built-in means.",
        ),
    ] = 32,
    plan_json: Annotated[
        Path | None, typer.Option(help="With --plan: also write the plan as JSON here.")
    ] = None,
    popular: Annotated[
        int | None,
        typer.Option(
            min=1, help="Seed the N most requested layers (or tiles, --by tiles) in --log."
        ),
    ] = None,
    by: Annotated[str, typer.Option(help="With --popular: layers or tiles.")] = "layers",
    log: Annotated[
        list[Path] | None, typer.Option(help="JSON access log file (repeatable; .gz too).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="With --popular: requests from this ISO 8601 time on.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="With --popular: requests before this ISO 8601 time.")
    ] = None,
) -> None:
    """Pre-render tiles into the disk or Redis tile cache, or into static PMTiles
    archives (--to pmtiles DIR); run again to resume."""
    from rich.progress import (
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from shapely.geometry import box
    from shapely.geometry.base import BaseGeometry

    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.serve.seed import parse_zooms, plan, release_layers, seed, territory_outline
    from sdmatlas.serve.seed_plan import build_plan, process_elapsed, sample_dense
    from sdmatlas.serve.seed_plan import calibrate as calibrate_plan
    from sdmatlas.serve.services import Services
    from sdmatlas.serve.tiles import render
    from sdmatlas.serve.tiles.tiling import get_tms, warm_kernels

    settings = Settings()
    with _errors(), _catalog(settings) as catalog:
        svc = Services.build(settings, catalog)
        ids = list(layers or []) + (release_layers(svc, release) if release else [])
        popular_tiles = None
        if popular is not None:
            ids, popular_tiles = _popular(svc, ids, popular, by, log or [], since, until, zoom)
        if not ids:
            raise InvalidInputError("name layer ids, or a release with --release")
        area: BaseGeometry | None = None
        if bbox is not None:
            try:
                w, s, e, n = (float(v) for v in bbox.split(","))
            except ValueError:
                raise InvalidInputError(
                    "--bbox must be four numbers: west,south,east,north"
                ) from None
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise InvalidInputError("--bbox must have west < east and south < north (degrees)")
            area = box(w, s, e, n)
        if territory is not None:
            outline = territory_outline(svc, territory)
            area = outline if area is None else area.intersection(outline)
        for name in tms:
            get_tms(name)
        render.check_format(format)
        if format == "npy":
            raise InvalidInputError("seed png or webp tiles")
        render.parse_style(colormap, None, (0.0, 1.0))
        target, folder = to
        if target not in ("cache", "pmtiles", "mbtiles"):
            raise InvalidInputError(f"--to {target!r}: use cache, pmtiles DIR or mbtiles DIR")
        if (dask or scheduler) and target != "cache":
            raise InvalidInputError(
                "--dask and --scheduler seed the cache; archives use --processes"
            )
        if popular_tiles is not None and target != "cache":
            raise InvalidInputError("--by tiles seeds the cache; archives take --by layers")
        if plan_only:
            names = ["WebMercatorQuad"] if target != "cache" else tms
            jobs = popular_tiles or list(
                plan(svc, ids, names, parse_zooms(zoom) if zoom else None, area)
            )
            started = time.perf_counter()
            planned = build_plan(svc, jobs, format, colormap)
            # a seed plans batch by batch while its workers render: this time is shared
            planned.plan_seconds = time.perf_counter() - started
            # a seed does the rest again before its first tile (the sample aside), and its
            # workers load the compiled index-map kernels (in parallel): timed here too
            warm_kernels()
            planned.overhead = process_elapsed() - planned.plan_seconds
            planned.processes = processes
            measured = sample_dense(svc, planned, format, colormap, sample)
            if measured is not None:
                calibrate_plan(planned, measured)
            _print_plan(planned, plan_json, measured)
            return
        if target != "cache":
            _seed_archives(svc, settings, ids, Path(folder), zoom, area, format, colormap,
                           processes, target)  # fmt: skip
            return
        jobs = popular_tiles or list(plan(svc, ids, tms, parse_zooms(zoom) if zoom else None, area))
        on_dask = (
            ExecutorOptions(workers=processes, scheduler=scheduler) if dask or scheduler else None
        )
        columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn()]  # fmt: skip
        # no refresh thread: seed() forks its workers when this process runs no other one
        with Progress(*columns, console=console, transient=False, auto_refresh=False) as bar:
            task = bar.add_task(f"seeding {len(ids)} layer(s)", total=len(jobs))

            def advance(n: int) -> None:
                bar.update(task, advance=n, refresh=True)

            refs = {lid: svc.layers.resolve(lid) for lid in dict.fromkeys(j[0] for j in jobs)}
            # planned batch by batch as the workers render (empty and uniform tiles)
            report = seed(settings, jobs, format, {"colormap": colormap}, processes, advance,
                          None, on_dask, refs, plan=True, svc=svc)  # fmt: skip
    console.print(
        f"seeded {report.planned} tiles: {report.rendered} rendered, {report.uniform} empty "
        f"or uniform written from the plan, {report.cached} already "
        f"cached, {report.empty} empty, in {report.seconds:.1f} s "
        f"({report.tiles_per_s:.0f} tiles/s rendered) into "
        f"{', '.join(b for b in settings.tile_cache if b != 'memory')}"
    )
    _may_exit_at_once("seed")  # its workers joined, the catalog closed


def _popular(
    svc: Any, ids: list[str], n: int, by: str, logs: list[Path], since: str | None,
    until: str | None, zoom: str | None,
) -> tuple[list[str], list[Any] | None]:  # fmt: skip
    """``--popular N``: the N most requested layers (among ``ids`` when given), or the N
    most requested tiles and their layers, from the access logs; layers no longer in the
    catalog (retired releases) are left out."""
    from sdmatlas.errors import NotFoundError
    from sdmatlas.serve.popularity import parse_time, read_access_logs
    from sdmatlas.serve.seed import parse_zooms
    from sdmatlas.serve.tiles.tiling import check_tile, get_tms

    if by not in ("layers", "tiles"):
        raise InvalidInputError(f"--by {by!r}: use layers or tiles")
    pop = read_access_logs(logs, parse_time(since) if since else None,
                           parse_time(until) if until else None)  # fmt: skip
    wanted = set(ids)

    def known(lid: str) -> bool:
        try:
            svc.layers.resolve(lid)
        except (NotFoundError, InvalidInputError):
            return False
        return not wanted or lid in wanted

    if by == "layers":
        ranked = [lid for lid in pop.top_layers(len(pop.layers)) if known(lid)]
        console.print(f"the {min(n, len(ranked))} most requested of {len(ranked)} layers "
                      f"in {pop.lines} log lines")  # fmt: skip
        return ranked[:n], None

    def valid(job: Any) -> bool:
        try:
            check_tile(get_tms(job[1]), job[2], job[3], job[4])
        except InvalidInputError:
            return False
        return known(job[0])

    lo, hi = parse_zooms(zoom) if zoom else (0, 30)
    tiles = [j for j in pop.top_tiles(len(pop.tiles)) if lo <= j[2] <= hi and valid(j)][:n]
    console.print(f"the {len(tiles)} most requested tiles in {pop.lines} log lines")
    return sorted({j[0] for j in tiles}), tiles


def _print_plan(p: Any, out: Path | None, sample: Any = None) -> None:
    """The planner's table: per layer and zoom, then the total."""
    from rich.table import Table

    table = Table("layer", "zoom", "tiles", "empty", "uniform", "dense", "MB", "seconds")
    for (lid, z), r in sorted(p.rows.items()):
        table.add_row(lid, str(z), str(r.tiles), str(r.empty), str(r.uniform), str(r.dense),
                      f"{r.bytes / 2**20:.2f}", f"{r.seconds:.1f}")  # fmt: skip
    t = p.total
    table.add_row("total", "", str(t.tiles), str(t.empty), str(t.uniform), str(t.dense),
                  f"{t.bytes / 2**20:.2f}", f"{t.seconds:.1f}", style="bold")  # fmt: skip
    console.print(table)
    how = (
        f"the mean size and render time of {sample.tiles} of them rendered now"
        if sample is not None
        else "a measured mean size and render time (sdmatlas.serve.seed_plan)"
    )
    console.print(
        f"dense tiles are estimated at {how}; empty and uniform ones are exact and are "
        "written without rendering"
    )
    console.print(
        f"estimated wall time: {p.wall_seconds:.1f} s ({p.overhead:.1f} s to start, then "
        f"{p.plan_seconds:.1f} s of planning and {t.seconds:.1f} s of rendering over "
        f"{p.processes} process(es))"
    )
    if out is not None:
        doc = p.as_json()
        if sample is not None:
            doc["sample"] = {"tiles": sample.tiles, "bytes": sample.tile_bytes,
                             "seconds": sample.seconds,
                             "index_seconds": sample.index_seconds}  # fmt: skip
        out.write_text(json.dumps(doc, indent=1))
        console.print(f"plan written to {out}")


def _seed_archives(
    svc: Any, settings: Settings, ids: list[str], folder: Path, zoom: str | None, area: Any,
    format: str, colormap: str | None, processes: int, kind: str = "pmtiles",
) -> None:  # fmt: skip
    """``seed --to pmtiles|mbtiles DIR``: one archive per layer, each checked before any
    work."""
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from sdmatlas.serve.archive import ARCHIVE_TMS, check_folder, write_layer
    from sdmatlas.serve.seed import parse_zooms, plan, worker_pool

    check_folder(folder)
    zooms = parse_zooms(zoom) if zoom else None
    refs = [svc.layers.resolve(lid) for lid in ids]  # unknown layers: an error, no work
    plans = {ref.id: list(plan(svc, [ref.id], [ARCHIVE_TMS], zooms, area)) for ref in refs}
    total = sum(len(p) for p in plans.values())
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    # the workers start before the progress bar's thread (see worker_pool)
    with worker_pool(settings, processes) as pool, Progress(*columns, console=console) as bar:
        task = bar.add_task(f"archiving {len(refs)} layer(s)", total=total)
        for ref in refs:
            # no verdicts: planned batch by batch as the workers render
            r = write_layer(svc, ref, plans[ref.id], folder, format, {"colormap": colormap},
                            pool, lambda n: bar.advance(task, n), None, kind)  # fmt: skip
            what = {"written": f"{r.tiles} tiles ({r.unique} distinct), {r.empty} empty left out",
                    "current": "already of this layer version",
                    "no data": "no tile with data: no archive"}[r.status]  # fmt: skip
            console.print(f"{ref.id}: {r.path or '-'}: {what}", highlight=False)


@app.command("reports")
def reports_cmd(
    release: Annotated[str, typer.Argument(help="Release key.")],
    territory: Annotated[
        list[str] | None,
        typer.Option(help="Territory code (repeatable); default: every one the release covers."),
    ] = None,
) -> None:
    """Compute and store territory reports, so that GET /report?territory= answers from
    the catalog; run again after a new publication (stale reports are recomputed)."""
    from sdmatlas.catalog import queries as catalog_queries
    from sdmatlas.serve import reports
    from sdmatlas.serve.services import Services

    settings = Settings()
    with _errors(), _catalog(settings) as catalog:
        # offline work: the per-request budgets do not apply (a country at 50 m reads
        # gigabytes along its outline, once)
        unbounded = settings.model_copy(
            update={"max_report_values": 10**13, "max_report_boundary_pixels": 10**12}
        )
        svc = Services.build(unbounded, catalog)
        with catalog.session() as s:
            info = catalog_queries.get_release(s, release)
        rel = svc.reader.release(info.key, info.storage_uri)
        codes = list(territory or [])
        if not codes:
            bounds = reports.footprint_lonlat(rel).bounds
            with catalog.session() as s:
                found = catalog_queries.territories_in_bbox(s, bounds)
            codes = [t.code for t in found]
        for code in codes:
            t0 = time.perf_counter()
            try:
                got = reports.territory_report(svc, rel, code)  # stored and current: instant
            except InvalidInputError as exc:  # its box meets the release, its outline not
                console.print(f"{code}: skipped ({escape(str(exc))})", highlight=False)
                continue
            state = "already stored" if got.stored else "computed and stored"
            console.print(f"{code}: {state} ({time.perf_counter() - t0:.2f} s)")


@cache_app.command("purge")
def cache_purge(
    release: Annotated[
        str | None, typer.Option(help="Only this release's tiles (for example a retired one).")
    ] = None,
    older_than_days: Annotated[
        float | None, typer.Option(min=0, help="Only disk tiles not written for this long.")
    ] = None,
    redis_cache: Annotated[
        bool, typer.Option("--redis", help="Purge the Redis tile cache too.")
    ] = False,
) -> None:
    """Free disk (and Redis) space. Never needed for correctness: keys carry versions."""
    from sdmatlas.serve.cache import DiskCache, RedisCache

    settings = Settings()
    with _errors():
        disk = DiskCache(settings.tile_cache_path)
        try:
            files, size = disk.purge(release, None if older_than_days is None else
                                     older_than_days * 86400)  # fmt: skip
        except ValueError:
            raise InvalidInputError(f"{release!r} is not a release key") from None
        console.print(f"disk cache {disk.root}: {files} tiles removed ({size / 2**20:.1f} MB)")
        if redis_cache:
            n = RedisCache(settings.redis_url, None).purge(release)
            console.print(f"redis {settings.redis_url}: {n} tiles removed")


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the API (tiles, point queries, area reports, metadata) with uvicorn."""
    import os

    # BLAS threads are set in the app factory (serve/process.py), for every way of
    # starting the app. Prometheus multiprocess mode needs its directory before the
    # workers import prometheus_client: every worker writes its samples here and
    # /metrics, answered by any worker, sums them. Emptied at start, as it asks.
    import shutil
    import tempfile

    import uvicorn

    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.makedirs(metrics_dir, exist_ok=True)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sdmatlas-metrics-")
    settings = Settings()
    h, p = host or settings.host, port or settings.port
    console.print(
        f"serving on http://{h}:{p} (web viewer at /, API docs at /docs), "
        f"catalog {settings.catalog_url}"
    )
    uvicorn.run(
        "sdmatlas.serve.app:app_from_env",
        factory=True,
        host=h,
        port=p,
        workers=workers or settings.serve_workers,
        proxy_headers=True,
        log_level="warning",
        access_log=False,  # sdmatlas writes its own (JSON) access log: serve/observe/logs.py
    )


def _demo_catalog(settings: Settings, species_csv: Path, release: Path) -> None:
    """Catalog the demo: its territories (real countries, simulated protected areas),
    its virtual species with their flags in the demo region, and the release."""
    from sdmatlas.catalog.covariates import register_covariates
    from sdmatlas.catalog.imports import import_species, import_territories
    from sdmatlas.catalog.queries import get_release
    from sdmatlas.catalog.register import register_release
    from sdmatlas.demo import TERRITORIES
    from sdmatlas.demo.build import DemoPaths
    from sdmatlas.errors import NotFoundError
    from sdmatlas.storage import open_release

    with _catalog(settings) as catalog:
        catalog.upgrade()
        terr = import_territories(catalog, TERRITORIES)
        sp = import_species(catalog, species_csv, territory="demo-region")
        try:
            with catalog.session() as s:
                get_release(s, release.name)
            state = "already registered"
        except NotFoundError:
            register_release(catalog, open_release(release), str(release.resolve()), DEMO_PERIOD)
            state = "registered"
        demo = DemoPaths(species_csv.parent)
        register_covariates(
            catalog, DEMO_CARD, DEMO_PERIOD, demo.covariate_paths(), demo.territory,
            chunk=settings.chunk_size,
        )  # fmt: skip
        console.print(
            f"catalog [bold]{catalog.where}[/]: territories {terr}; species {sp}; "
            f"release {release.name} {state}; the demo model's covariates registered for "
            "on-demand jobs and live point predictions"
        )


_finished: list[str] = []
"""Commands that ended having closed everything they opened (:func:`_may_exit_at_once`)."""


def _may_exit_at_once(command: str) -> None:
    """Mark ``command`` as done: the ``sdmatlas`` program (:func:`main`) may then leave
    without the interpreter's teardown, which frees every module and the compiled numba
    kernels one by one: 0.3-0.6 s measured after a seed (2-core VM, 2026-12-03), as long
    as a small seed's own work. Only for commands whose pools, catalogs and files are
    closed by then; in-process callers (tests, CliRunner) are unaffected."""
    _finished.append(command)


def main() -> None:  # pragma: no cover (the console script; tests call ``app``)
    import os
    import sys

    try:
        app()
    except SystemExit as exc:
        if not _finished or exc.code not in (0, None):
            raise
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
