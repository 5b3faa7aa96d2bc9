"""Small helpers shared by the OGC/OSGeo service documents (WMS, WMTS, TMS)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from fastapi import Response

from sdmatlas.serve.tiles.versions import SHORT


def text_child(parent: ET.Element, tag: str, text: str) -> ET.Element:
    """A child element holding ``text``."""
    el = ET.SubElement(parent, tag)
    el.text = text
    return el


def xml_bytes(root: ET.Element, doctype: bytes | None = None) -> bytes:
    """The document as UTF-8 with its declaration, and a DOCTYPE after it if given."""
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    if doctype is None:
        return body
    head, _, rest = body.partition(b"\n")
    return head + b"\n" + doctype + b"\n" + rest


def xml_response(
    root: ET.Element, media: str = "application/xml", status: int = 200,
    doctype: bytes | None = None,
) -> Response:  # fmt: skip
    """The document as UTF-8 with its declaration; service documents (200) may be cached
    briefly, exception reports are not."""
    body = xml_bytes(root, doctype)
    headers = {"Cache-Control": SHORT} if status == 200 else None
    return Response(body, status_code=status, media_type=media, headers=headers)
