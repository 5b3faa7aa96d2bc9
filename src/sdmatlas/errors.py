"""The one exception hierarchy of sdmatlas.

Every error raised on purpose by the library derives from :class:`SdmAtlasError`
and carries a message that says what to fix. Each class has an ``http_status``
so that the web layer maps the whole hierarchy to HTTP in one place.
"""

from __future__ import annotations


class SdmAtlasError(Exception):
    """Root of every error sdmatlas raises on purpose."""

    http_status: int = 500


class InvalidInputError(SdmAtlasError, ValueError):
    """Something a user or client gave is malformed or out of range."""

    http_status = 400


class NotFoundError(SdmAtlasError, LookupError):
    """A named thing (file, layer, species, release) does not exist."""

    http_status = 404


class ConflictError(SdmAtlasError):
    """The request would overwrite or mix with something that already exists."""

    http_status = 409


class ModelCardError(InvalidInputError):
    """A model card is malformed, or does not match its model file."""


class ModelMismatchError(InvalidInputError):
    """A model card does not match the covariates, grid or model outputs given with it."""


class CovariateError(InvalidInputError):
    """Covariate rasters are missing, misaligned, incomplete or hold invalid values."""


class GridError(InvalidInputError):
    """A reference grid is malformed, or a raster does not sit on it."""


class TerritoryError(InvalidInputError):
    """A territory is empty, invalid or outside the grid."""


class ReleaseExistsError(ConflictError):
    """An output location already holds a cube (another release, or the same one)."""


class IncompleteReleaseError(ConflictError):
    """A cube was read or published before its prediction run completed."""


class PredictionFailedError(SdmAtlasError):
    """One or more chunk tasks failed; finished chunks stay recorded for --resume."""


class CorruptDataError(SdmAtlasError):
    """Stored data (a cube or release chunk) exists but cannot be decoded."""


class DatabaseUnavailableError(SdmAtlasError):
    """The catalog database cannot be reached; the request may succeed if retried."""

    http_status = 503


class StorageUnavailableError(SdmAtlasError):
    """Release storage cannot be read; the request may succeed if retried."""

    http_status = 503
