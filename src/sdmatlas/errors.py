"""The one exception hierarchy of sdmatlas.

Every error raised on purpose by the library derives from :class:`SdmAtlasError`
and carries a message that says what to fix. The web layer maps the hierarchy to
HTTP statuses and OGC exception codes in one table (``sdmatlas.serve.errors.TABLE``);
the classes here know nothing of HTTP.
"""

from __future__ import annotations


class SdmAtlasError(Exception):
    """Root of every error sdmatlas raises on purpose."""

    #: The request parameter at fault, when one is (an OGC exception's ``locator``).
    locator: str | None = None

    def at(self, locator: str) -> SdmAtlasError:
        """This error, naming the request parameter at fault."""
        self.locator = locator
        return self


class InvalidInputError(SdmAtlasError, ValueError):
    """Something a user or client gave is malformed or out of range."""


class BudgetExceededError(InvalidInputError):
    """A request would cost more than a budget of the settings (pixels, vertices, bytes)."""


class NotFoundError(SdmAtlasError, LookupError):
    """A named thing (file, layer, species, release) does not exist."""


class ConflictError(SdmAtlasError):
    """The request would overwrite or mix with something that already exists."""


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


class StorageUnavailableError(SdmAtlasError):
    """Release storage cannot be read; the request may succeed if retried."""


class BusyError(SdmAtlasError):
    """Too many heavy requests at once: the client should retry later (429)."""


class QuotaExceededError(BusyError):
    """A limit on running jobs or on request rate is reached (429); the message names it."""


class AuthenticationError(SdmAtlasError):
    """No API key, or one that is unknown, malformed or revoked (401)."""


class PermissionDeniedError(SdmAtlasError):
    """A valid API key without the scope the request needs (403)."""


class JobCancelledError(SdmAtlasError):
    """A prediction job was cancelled while it ran (its data is removed)."""


class DeadlineExceededError(SdmAtlasError):
    """A request ran past the per-request deadline; it may succeed when retried."""


class MissingParameterError(InvalidInputError):
    """A required request parameter is missing (OGC: MissingParameterValue)."""


class OperationNotSupportedError(InvalidInputError):
    """An OGC request names an operation the service does not offer."""


class InvalidCRSError(InvalidInputError):
    """A coordinate reference system that is not served (WMS: InvalidCRS / InvalidSRS)."""


class InvalidFormatError(InvalidInputError):
    """An output format that is not served (WMS: InvalidFormat)."""


class StyleNotDefinedError(InvalidInputError):
    """A style (colormap) that is not defined for the layer."""


class InvalidDimensionError(InvalidInputError):
    """A dimension value (WMS TIME) that the layer does not have."""


class InvalidPointError(InvalidInputError):
    """A GetFeatureInfo pixel outside the map or tile (WMS InvalidPoint, WMTS
    PointIJOutOfRange)."""


class LayerNotQueryableError(InvalidInputError):
    """A layer that GetFeatureInfo cannot query."""


class TileOutOfRangeError(InvalidInputError):
    """A WMTS TileRow or TileCol outside its tile matrix."""
