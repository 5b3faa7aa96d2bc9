"""A STAC catalog of a release: one collection, one item per layer (species and indicators).

Items carry the projection extension (EPSG code, shape, transform of the release
grid) and the raster extension (data type, nodata, scale, offset, unit). Each
item has a ``data`` asset, the layer's COG (exported by :func:`write_stac` with
``cogs=True``), and a ``zarr`` asset, the release's Zarr group.

Validation: the core STAC schemas ship with pystac and are checked offline. The
projection and raster extension schemas are not shipped, and these machines
cannot fetch them, so :func:`check_extensions` checks those fields one by one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.validation import JsonSchemaSTACValidator, set_validator
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import box, mapping

from sdmatlas.errors import InvalidInputError
from sdmatlas.publish.export import export_cog
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.release.manifest import Manifest
from sdmatlas.storage import open_release


def _layers(meta: Manifest, names: dict[int, str]) -> list[tuple[str, str]]:
    species = [(f"species/{i}", names.get(i, f"species {i}")) for i in meta.species.ids]
    # the release's own indicators (a version-2 release has fewer than this sdmatlas knows)
    return species + [(f"indicator/{n}", meta.indicators[n].title) for n in meta.indicator_order]


def write_stac(release_path: Path, out_dir: Path, cogs: bool = True) -> pystac.Collection:
    """Write ``out_dir/collection.json`` and one item per layer; returns the collection."""
    release_path = Path(release_path).resolve()
    rel = open_release(release_path)
    meta = rel.manifest
    grid = meta.grid
    names = {int(i): n for i, n in zip(rel.species_ids.tolist(), rel.species_names, strict=True)}
    # densified: straight edges in EPSG:3035 are curves in WGS84
    footprint = box(*grid.bounds).segmentize(grid.res * 16)
    geometry = transform_geom(grid.crs, "EPSG:4326", mapping(footprint), precision=6)
    bbox = list(transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21))
    when = dt.datetime.fromisoformat(meta.published)
    rid = meta.release_id
    collection = pystac.Collection(
        id=rid,
        description=f"sdmatlas release {rid}: species distribution probabilities and "
        f"biodiversity indicators ({len(meta.species.ids)} species, model "
        f"{meta.model_name} {meta.model_version})",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[when, when]])),
        license="other",
        title=f"sdmatlas release {rid}",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = grid.transform
    for layer, title in _layers(meta, names):
        item_id = layer.replace("/", "-")
        item = pystac.Item(
            id=item_id,
            geometry=geometry,
            bbox=bbox,
            datetime=when,
            properties={"title": title, "sdmatlas:layer": layer},
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.code = grid.crs
        proj.shape = [grid.height, grid.width]
        proj.transform = [t.a, t.b, t.c, t.d, t.e, t.f]
        is_species = layer.startswith("species/")
        band = RasterBand.create(
            data_type=DataType.UINT8 if is_species else DataType.FLOAT32,
            nodata=float(NODATA) if is_species else NoDataStrings.NAN,
            scale=SCALE if is_species else None,
            offset=0.0 if is_species else None,
            unit="probability" if is_species else meta.indicators[layer.split("/")[1]].units,
            spatial_resolution=grid.res,
        )
        if cogs:
            cog = export_cog(rel, layer, out_dir / "cogs" / f"{item_id}.tif")
            asset = pystac.Asset(
                href=str(cog), media_type=pystac.MediaType.COG, roles=["data"], title=title
            )
            item.add_asset("data", asset)
            RasterExtension.ext(asset, add_if_missing=True).bands = [band]
        item.add_asset(
            "zarr",
            pystac.Asset(
                href=str(release_path),
                media_type="application/vnd+zarr",
                roles=["data"],
                title="release Zarr group",
                extra_fields={"sdmatlas:layer": layer},
            ),
        )
        collection.add_item(item)
    collection.normalize_hrefs(str(out_dir))
    collection.make_all_asset_hrefs_relative()
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return collection


def validate_stac(collection_path: Path) -> int:
    """Validate every object against the core schemas shipped with pystac (offline) and
    check the extension fields; returns the number of objects checked."""
    collection = pystac.Collection.from_file(str(collection_path))
    set_validator(_CoreOnlyValidator())
    n = 0
    try:
        for obj in [collection, *collection.get_items(recursive=True)]:
            obj.validate()
            n += 1
            if isinstance(obj, pystac.Item):
                check_extensions(obj)
    finally:
        set_validator(JsonSchemaSTACValidator())
    return n


def check_extensions(item: pystac.Item) -> None:
    """The projection and raster fields, checked against what the extensions require."""
    d = item.to_dict()
    props = d["properties"]
    problems = []
    if not isinstance(props.get("proj:code"), str) or ":" not in props["proj:code"]:
        problems.append("proj:code must be an authority:code string")
    shape = props.get("proj:shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and v > 0 for v in shape)
    ):
        problems.append("proj:shape must be two positive integers")
    tr = props.get("proj:transform")
    if not (
        isinstance(tr, list) and len(tr) in (6, 9) and all(isinstance(v, (int, float)) for v in tr)
    ):
        problems.append("proj:transform must be 6 or 9 numbers")
    for key, asset in d["assets"].items():
        for band in asset.get("raster:bands", []):
            if band.get("data_type") not in {t.value for t in DataType}:
                problems.append(f"asset {key}: raster:bands data_type {band.get('data_type')}")
            if "nodata" not in band:
                problems.append(f"asset {key}: raster:bands without nodata")
    if problems:
        raise InvalidInputError(f"STAC item {item.id}: " + "; ".join(problems))


class _CoreOnlyValidator(JsonSchemaSTACValidator):
    """pystac's validator (core schemas resolve to the copies pystac ships) that skips
    the extension schemas, which it would fetch from the network."""

    def validate_extension(self, *args: Any, **kwargs: Any) -> Any:
        return None
