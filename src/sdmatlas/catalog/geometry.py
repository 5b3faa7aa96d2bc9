"""One geometry column type for both catalog backends.

On PostgreSQL it is a PostGIS ``geometry(<type>, 4326)`` (GeoAlchemy2), indexed with
GiST and queried with ``ST_Intersects``/``ST_Covers``. On SQLite it is the geometry's
WKB in a BLOB, indexed by an R*Tree of bounding boxes (kept by triggers, see the
migration) and refined with shapely. Python code sees shapely geometries on both.

GeoAlchemy2 is imported where PostgreSQL needs it (with a PostgreSQL engine, whose
tables its DDL listeners must see created: :func:`sdmatlas.catalog.db.make_engine`), not
with this module: a process on the SQLite catalog (the CLI, a seed) does not pay its
~0.15 s import.
"""

from __future__ import annotations

from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy.engine import Dialect
from sqlalchemy.types import LargeBinary, TypeDecorator, TypeEngine

SRID = 4326


class Geometry(TypeDecorator[BaseGeometry]):
    """A WGS 84 geometry: PostGIS ``geometry`` on PostgreSQL, WKB on SQLite."""

    impl = LargeBinary
    cache_ok = True
    # read by GeoAlchemy2's DDL listeners: the migrations create the GiST indexes by name
    spatial_index = False
    srid = SRID

    def __init__(self, geometry_type: str = "GEOMETRY") -> None:
        super().__init__()
        self.geometry_type = geometry_type

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # GeoAlchemy2's DDL listeners ask with no dialect: answer "not a managed spatial
        # column", since the migrations create the GiST indexes themselves.
        if dialect is not None and dialect.name == "postgresql":
            from geoalchemy2 import Geometry as PostGISGeometry

            # spatial_index=False: the GiST index is created by the migration, by name
            return dialect.type_descriptor(
                PostGISGeometry(self.geometry_type, srid=SRID, spatial_index=False)
            )
        return LargeBinary() if dialect is None else dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: BaseGeometry | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            from geoalchemy2.shape import from_shape

            return from_shape(value, srid=SRID)
        return shapely.to_wkb(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> BaseGeometry | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            from geoalchemy2.shape import to_shape

            return to_shape(value)
        return shapely.from_wkb(bytes(value))
