"""Name normalisation and pg_trgm-compatible trigrams.

Written by hand (a dozen lines) so that SQLite's fuzzy search gives PostgreSQL's
answers: pg_trgm splits a string into words of letters and digits, lower-cases them,
pads each with two spaces in front and one behind, and takes every 3-character
window; similarity is |A ∩ B| / |A ∪ B| over the two trigram sets. A test compares
these trigrams with pg_trgm's ``show_trgm`` on a real PostgreSQL.
"""

from __future__ import annotations

import re
import unicodedata

from sdmatlas.errors import InvalidInputError

MAX_QUERY = 200
_WORD = re.compile(r"[^\W_]+")
#: pg_trgm's default ``similarity_threshold``.
FUZZY_THRESHOLD = 0.3


def name_key(name: str) -> str:
    """The indexed form of a name: NFC, case-folded, single spaces, trimmed."""
    return " ".join(unicodedata.normalize("NFC", name).lower().split())


def trigrams(text: str) -> set[str]:
    """pg_trgm's trigram set of ``text``."""
    out: set[str] = set()
    for word in _WORD.findall(text.lower()):
        padded = f"  {word} "
        out.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return out


def similarity(a: str, b: str) -> float:
    ta, tb = trigrams(a), trigrams(b)
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def clean_query(q: str) -> str:
    """A search string, checked: not empty, at most :data:`MAX_QUERY` characters, no
    control characters. SQL metacharacters need nothing: every query is parametrised."""
    if len(q) > MAX_QUERY:
        raise InvalidInputError(f"search text is {len(q)} characters long; at most {MAX_QUERY}")
    if any(unicodedata.category(c) == "Cc" for c in q):
        raise InvalidInputError("search text contains control characters")
    key = name_key(q)
    if not key:
        raise InvalidInputError("search text is empty")
    return key
