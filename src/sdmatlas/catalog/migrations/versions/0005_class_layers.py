"""Class layers: ``classes`` joins the layer kinds (worst status, habitats).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

The kind is a string with a CHECK constraint named ``layerkind`` (0001). PostgreSQL
replaces the constraint; SQLite cannot alter one, so the table is rebuilt by Alembic's
batch mode, which drops the table's triggers with the old table: the R-tree triggers of
0001 are made again, unchanged (the R-tree keeps its rows: layer ids do not change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OLD = ("species", "indicator", "habitat")
_NEW = (*_OLD, "classes")


def _enum(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name="layerkind", native_enum=False, length=32, create_constraint=True)


def _rtree_triggers() -> None:
    values = "NEW.id, NEW.minx, NEW.maxx, NEW.miny, NEW.maxy"
    op.execute(
        "CREATE TRIGGER layer_rtree_insert AFTER INSERT ON layer WHEN NEW.minx IS NOT NULL "
        f"BEGIN INSERT INTO layer_rtree VALUES ({values}); END"
    )
    op.execute(
        "CREATE TRIGGER layer_rtree_update AFTER UPDATE ON layer BEGIN "
        "DELETE FROM layer_rtree WHERE id = OLD.id; "
        f"INSERT INTO layer_rtree SELECT {values} WHERE NEW.minx IS NOT NULL; END"
    )
    op.execute(
        "CREATE TRIGGER layer_rtree_delete AFTER DELETE ON layer BEGIN "
        "DELETE FROM layer_rtree WHERE id = OLD.id; END"
    )


def _change(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        listed = ", ".join(f"'{v}'" for v in new)
        op.execute("ALTER TABLE layer DROP CONSTRAINT IF EXISTS layerkind")
        op.execute(f"ALTER TABLE layer ADD CONSTRAINT layerkind CHECK (kind IN ({listed}))")
        return
    for t in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS layer_rtree_{t}")
    with op.batch_alter_table("layer", recreate="always") as batch:
        batch.alter_column(
            "kind", existing_type=_enum(old), type_=_enum(new), existing_nullable=False
        )
    _rtree_triggers()


def upgrade() -> None:
    _change(_OLD, _NEW)


def downgrade() -> None:
    op.execute("DELETE FROM layer WHERE kind = 'classes'")
    _change(_NEW, _OLD)
