"""Connections to the catalog database: engine, sessions, migrations, outages.

One :class:`Catalog` per process. Connections are pooled and checked before use
(``pool_pre_ping``), so after a database outage the pool replaces dead connections by
itself; while the database is unreachable every call raises
:class:`~sdmatlas.errors.DatabaseUnavailableError` (HTTP 503), never a raw driver error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from sdmatlas.errors import DatabaseUnavailableError, InvalidInputError
from sdmatlas.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA journal_mode = WAL")  # readers never wait for the one writer
    cur.execute("PRAGMA busy_timeout = 5000")
    cur.close()


def make_engine(url: str, pool_size: int = 5, timeout: float = 3.0) -> Engine:
    """An engine for ``url`` (PostgreSQL or SQLite) with the catalog's pool settings."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise InvalidInputError(f"database URL {url!r} is not a SQLAlchemy URL: {e}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": timeout})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        # GeoAlchemy2 registers DDL listeners when imported, which must be in place
        # before any table is created (they pair up around CREATE TABLE); only
        # PostgreSQL needs it, so it is imported here, not with the schema
        import geoalchemy2  # noqa: F401

        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeout,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"connect_timeout": max(1, round(timeout))},
        )
    raise InvalidInputError(f"unsupported catalog database {backend!r}: use postgresql or sqlite")


class Catalog:
    """The catalog database of one process: a pooled engine and a session factory."""

    def __init__(self, url: str, pool_size: int = 5, timeout: float = 3.0) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size, timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(settings.catalog_url, settings.database_pool_size, settings.database_timeout)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def where(self) -> str:
        """The database's location without credentials, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.
        An unreachable database becomes a :class:`DatabaseUnavailableError`."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except (exc.OperationalError, exc.InterfaceError) as e:
            if self.dialect == "sqlite" and "locked" in str(getattr(e, "orig", "")):
                raise DatabaseUnavailableError(
                    f"catalog database {self.where} is busy; retry"
                ) from e
            raise DatabaseUnavailableError(
                f"catalog database {self.where} is unreachable; retry later "
                f"({type(e.orig).__name__ if isinstance(e, exc.DBAPIError) else 'error'})"
            ) from e

    def ping(self) -> None:
        """Raise :class:`DatabaseUnavailableError` unless the database answers."""
        from sqlalchemy import text

        with self.session() as s:
            s.execute(text("SELECT 1"))

    def revision(self) -> str | None:
        """The schema's migration revision (``None`` on an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision``."""
        from alembic import command

        cfg = _alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def downgrade(self, revision: str = "base") -> None:
        from alembic import command

        cfg = _alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)

    def is_current(self) -> bool:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        return self.revision() == head

    def dispose(self) -> None:
        self.engine.dispose()


def _alembic_config() -> Any:
    # Alembic is imported where a migration runs, not with the catalog: it takes 0.1 s to
    # import, on every CLI command and worker
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("sdmatlas.catalog") / "migrations"))
    return cfg
