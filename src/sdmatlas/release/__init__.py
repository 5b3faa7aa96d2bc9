"""The release format, owned in one place: its layout (:mod:`.layout`), its typed and
versioned manifest (:mod:`.manifest`), the opened :class:`Release` (:mod:`.core`) and
the chunk sources that read its arrays (:mod:`.sources`).

Releases are opened through :meth:`sdmatlas.storage.ReleaseStore.open`, or from a
location with :func:`sdmatlas.storage.open_release`.
"""

from sdmatlas.release.core import Release
from sdmatlas.release.layout import FORMAT_VERSION
from sdmatlas.release.manifest import Manifest

__all__ = ["FORMAT_VERSION", "Manifest", "Release"]
