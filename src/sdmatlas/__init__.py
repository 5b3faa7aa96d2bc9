"""sdmatlas: predict, publish, catalog and serve species distribution maps."""

__version__ = "0.1.0"
