"""Colouring and encoding tiles: palettes, rescaling, PNG / WebP / NPY, legends.

Everything a tile shows goes through a 256-entry RGBA palette: entries 0-254 are the
data values' colours, 255 is transparent nodata. Species layers are stored as uint8
codes (p = code / 254), so their tile *is* the palette image: no per-pixel colour
mapping, and PNG is written in palette mode (one byte per pixel). Indicator values
(float32) are first quantised to 0-254 over the rescale range.

Species maps fade low probabilities to transparent, as species distribution maps
usually do, so the basemap shows where a species is absent: the alpha of a species
palette rises linearly from 0 at the bottom of the range to opaque at
:data:`SPECIES_FADE` of it (p = 0.2 with the default range 0-1). Each named colormap
has an ``<name>_opaque`` variant without the fade (the behaviour before it); custom
colour lists fade too. Indicator layers stay opaque. The PNG palette carries the alpha
(tRNS), so fading costs nothing per tile.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from sdmatlas import classes
from sdmatlas.classes import ClassScheme
from sdmatlas.errors import InvalidInputError
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.serve.tiles import png

FORMATS: dict[str, str] = {
    "png": "image/png",
    "webp": "image/webp",
    "npy": "application/x-npy",
}

# Control points of the named colormaps (matplotlib's perceptual maps and
# ColorBrewer's sequential ones), interpolated linearly to 255 colours.
COLORMAPS: dict[str, tuple[str, ...]] = {
    "viridis": (
        "440154",
        "472d7b",
        "3b528b",
        "2c728e",
        "21918c",
        "28ae80",
        "5ec962",
        "addc30",
        "fde725",
    ),
    "magma": (
        "000004",
        "1c1044",
        "4f127b",
        "812581",
        "b5367a",
        "e55064",
        "fb8761",
        "fec287",
        "fcfdbf",
    ),
    "inferno": (
        "000004",
        "1f0c48",
        "550f6d",
        "88226a",
        "ba3655",
        "e35933",
        "f98e09",
        "f9cb35",
        "fcffa4",
    ),
    "plasma": (
        "0d0887",
        "46039f",
        "7201a8",
        "9c179e",
        "bd3786",
        "d8576b",
        "ed7953",
        "fb9f3a",
        "fdca26",
        "f0f921",
    ),
    "cividis": (
        "00224e",
        "123570",
        "3b496c",
        "575d6d",
        "707173",
        "8a8678",
        "a59c74",
        "c3b369",
        "e1cc55",
        "fee838",
    ),
    "greens": (
        "f7fcf5",
        "e5f5e0",
        "c7e9c0",
        "a1d99b",
        "74c476",
        "41ab5d",
        "238b45",
        "006d2c",
        "00441b",
    ),
    "ylgn": (
        "ffffe5",
        "f7fcb9",
        "d9f0a3",
        "addd8e",
        "78c679",
        "41ab5d",
        "238443",
        "006837",
        "004529",
    ),
    "ylorrd": (
        "ffffcc",
        "ffeda0",
        "fed976",
        "feb24c",
        "fd8d3c",
        "fc4e2a",
        "e31a1c",
        "bd0026",
        "800026",
    ),
    "blues": (
        "f7fbff",
        "deebf7",
        "c6dbef",
        "9ecae1",
        "6baed6",
        "4292c6",
        "2171b5",
        "08519c",
        "08306b",
    ),
    "greys": (
        "ffffff",
        "f0f0f0",
        "d9d9d9",
        "bdbdbd",
        "969696",
        "737373",
        "525252",
        "252525",
        "000000",
    ),
}
DEFAULT_COLORMAP = "viridis"
#: suffix of the named colormaps that do not fade (``viridis_opaque``)
OPAQUE = "_opaque"
#: every style name a client may ask for: the colormaps and their opaque variants
STYLE_NAMES: tuple[str, ...] = (*COLORMAPS, *(f"{n}{OPAQUE}" for n in COLORMAPS))
#: the styles listed in capabilities documents and the viewer: each colormap, and the
#: default's opaque variant (every ``_opaque`` variant is accepted; listing all of them
#: would double the per-layer size of WMTS capabilities)
LISTED_STYLES: tuple[str, ...] = (*COLORMAPS, f"{DEFAULT_COLORMAP}{OPAQUE}")
#: species layers: opacity is full from this fraction of the colour range up
SPECIES_FADE = 0.2
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
MAX_CUSTOM_COLORS = 32


def check_format(fmt: str) -> str:
    """A served tile format, or a 400 naming them."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"format {fmt!r} is not served; use one of {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Style:
    """How a layer is coloured: control colours, the value range they span, and the
    fraction of that range over which the colours fade in from transparent (0: opaque)."""

    colors: tuple[str, ...]
    vmin: float
    vmax: float
    name: str  # the colormap's name, or "custom"
    fade: float = 0.0

    def key(self) -> str:
        colors = ",".join(self.colors) if self.name == "custom" else ""
        return f"{self.name}:{colors}:{self.vmin!r}:{self.vmax!r}:{self.fade!r}"


def parse_style(
    colormap: str | None,
    rescale: str | None,
    default_range: tuple[float, float],
    fade: float = 0.0,
) -> Style:
    """Validate ``colormap`` (a name, a name with ``_opaque``, or 2 to 32 comma-separated
    hex colours) and ``rescale`` ("min,max" in the layer's units). ``fade`` is the
    layer kind's default (:data:`SPECIES_FADE` for species); ``_opaque`` names drop it."""
    name = (colormap or DEFAULT_COLORMAP).strip()
    lower = name.lower()
    if lower.endswith(OPAQUE) and lower[: -len(OPAQUE)] in COLORMAPS:
        colors, label, fade = COLORMAPS[lower[: -len(OPAQUE)]], lower, 0.0
    elif lower in COLORMAPS:
        colors, label = COLORMAPS[lower], lower
    else:
        parts = [p.strip() for p in name.split(",")]
        matches = [_HEX.match(p) for p in parts]
        if len(parts) < 2 or not all(matches):
            raise InvalidInputError(
                f"colormap {name[:60]!r} is unknown: use one of {', '.join(COLORMAPS)} "
                f"(each also as <name>{OPAQUE}, without the fade of species maps), "
                "or 2 to 32 comma-separated hex colours (ffffcc,41ab5d,004529)"
            )
        if len(parts) > MAX_CUSTOM_COLORS:
            raise InvalidInputError(f"a custom colormap has at most {MAX_CUSTOM_COLORS} colours")
        colors = tuple(m.group(1).lower() for m in matches if m)
        label = "custom"
    vmin, vmax = default_range
    if rescale is not None:
        parts = rescale.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            vmin, vmax = float(parts[0]), float(parts[1])
        except ValueError:
            raise InvalidInputError(
                f"rescale {rescale[:60]!r} must be two numbers, min,max (for example 0,0.8)"
            ) from None
        if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
            raise InvalidInputError(f"rescale {rescale!r}: min must be less than max, both finite")
    vmin, vmax = _snap(float(vmin), float(vmax))
    return Style(colors, vmin, vmax, label, float(fade))


def _snap(vmin: float, vmax: float) -> tuple[float, float]:
    """The range rounded to a 1/1024 of its span (a power of ten at most that): four
    times finer than the 255 colours can show, so ``rescale=0,0.8`` and
    ``rescale=0,0.80001`` draw and cache as one style instead of two."""
    span = vmax - vmin
    step = 10.0 ** np.floor(np.log10(span / 1024)) if span > 0 else 0.0
    if not (np.isfinite(step) and step > 0):
        return vmin, vmax
    lo, hi = round(vmin / step) * step, round(vmax / step) * step
    lo, hi = float(f"{lo:.12g}"), float(f"{hi:.12g}")  # no 0.30000000000000004
    return (lo, hi) if lo < hi else (vmin, vmax)


def _rgb(hex6: str) -> tuple[int, int, int]:
    return int(hex6[0:2], 16), int(hex6[2:4], 16), int(hex6[4:6], 16)


@functools.lru_cache(maxsize=256)
def ramp(colors: tuple[str, ...]) -> npt.NDArray[np.uint8]:
    """255 RGB colours interpolated linearly through the control colours."""
    pts = np.array([_rgb(c) for c in colors], np.float64)
    x = np.linspace(0, 1, len(pts))
    t = np.linspace(0, 1, 255)
    return np.stack([np.interp(t, x, pts[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def fade_alpha(t: npt.NDArray[np.float64], fade: float) -> npt.NDArray[np.uint8]:
    """Alpha at positions ``t`` (0-1) of the colour range: 0 at 0, rising linearly to
    255 at ``fade``; 255 everywhere when ``fade`` is 0."""
    if fade <= 0:
        return np.full(t.shape, 255, np.uint8)
    return np.rint(np.clip(t / fade, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=1024)
def code_palette(style: Style) -> npt.NDArray[np.uint8]:
    """RGBA for each species code 0-254 (p = code / 254) under the style; 255 clear."""
    p = np.arange(255) * SCALE
    t = np.clip((p - style.vmin) / (style.vmax - style.vmin), 0, 1)
    pal = np.zeros((256, 4), np.uint8)
    pal[:255, :3] = ramp(style.colors)[np.rint(t * 254).astype(np.intp)]
    pal[:255, 3] = fade_alpha(t, style.fade)
    return pal


@functools.lru_cache(maxsize=1024)
def index_palette(style: Style) -> npt.NDArray[np.uint8]:
    """RGBA for quantised values 0-254 (already rescaled); 255 clear."""
    pal = np.zeros((256, 4), np.uint8)
    pal[:255, :3] = ramp(style.colors)
    pal[:255, 3] = fade_alpha(np.linspace(0, 1, 255), style.fade)
    return pal


def palette_indices(values: npt.NDArray[np.float32], style: Style) -> npt.NDArray[np.uint8]:
    """Float values to palette indices 0-254 over the style's range; NaN to 255."""
    with np.errstate(invalid="ignore"):
        t = (values - np.float32(style.vmin)) / np.float32(style.vmax - style.vmin)
        q = np.rint(np.clip(t, 0, 1) * 254)
    return np.where(np.isnan(values), NODATA, q).astype(np.uint8)


def encode_indexed(
    indices: npt.NDArray[np.uint8], palette: npt.NDArray[np.uint8], fmt: str
) -> bytes:
    """An image of palette indices as PNG (palette mode, tRNS alpha) or WebP."""
    if fmt == "png":
        # Pillow's chunks, written without Pillow and deflated with ISA-L (png.py: why)
        return png.palette_png(indices, palette)
    if fmt == "webp":
        buf = io.BytesIO()
        h, w = indices.shape
        Image.frombytes("RGBA", (w, h), palette[indices].tobytes()).save(
            buf, "WEBP", lossless=True, quality=0, method=0
        )
        return buf.getvalue()
    raise InvalidInputError(f"format {fmt!r} is not an image format")


def encode_array(values: npt.NDArray[np.generic]) -> bytes:
    """The raw values as a NumPy .npy file (uint8 codes or float32 with NaN)."""
    buf = io.BytesIO()
    np.save(buf, values, allow_pickle=False)
    return buf.getvalue()


def legend_png(style: Style, units: str, width: int = 256, height: int = 48) -> bytes:
    """A horizontal colour bar with the range's end and middle values. Where the style
    fades, the bar is drawn over a grey checkerboard, so the transparency ramp shows."""
    bar_h = max(8, height - 16)
    img = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    t = np.linspace(0, 1, width)
    colours = ramp(style.colors)[np.rint(t * 254).astype(np.intp)].astype(np.float64)
    alpha = fade_alpha(t, style.fade).astype(np.float64)[:, None] / 255
    yy, xx = np.mgrid[0:bar_h, 0:width]
    checker = np.where(((yy // 6) + (xx // 6)) % 2 == 0, 204.0, 255.0)[..., None]
    bar = np.rint(colours[None] * alpha[None] + checker * (1 - alpha[None])).astype(np.uint8)
    img.paste(Image.frombytes("RGB", (width, bar_h), bar.tobytes()), (0, 0))
    draw = ImageDraw.Draw(img)
    mid = (style.vmin + style.vmax) / 2
    labels = [(0, style.vmin), (width // 2, mid), (width - 1, style.vmax)]
    for x, v in labels:
        text = f"{v:.3g}"
        w = draw.textlength(text)
        xx = min(max(0, x - w / 2), width - w)
        draw.text((xx, bar_h + 2), text, fill=(0, 0, 0, 255))
    if units:
        # dark with a light outline: readable over the dark and the faded ends alike
        draw.text((3, 2), units, fill=(20, 20, 20, 255), stroke_width=2,
                  stroke_fill=(255, 255, 255, 255))  # fmt: skip
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


#: the one style of class layers: each class in its scheme's colour
CLASS_STYLE = "classes"


def class_style(colormap: str | None, rescale: str | None) -> Style:
    """The style of a class layer: its classes' own colours (``colormap`` absent or
    ``classes``); a colour ramp or a value range means nothing for classes (400)."""
    if (colormap is not None and colormap.strip().lower() != CLASS_STYLE) or rescale:
        raise InvalidInputError(
            "a class layer is drawn in its classes' colours (style 'classes'); colormap "
            "and rescale apply to species and indicator layers"
        )
    return Style((), 0.0, float(NODATA - 1), CLASS_STYLE)


@functools.lru_cache(maxsize=64)
def class_palette(scheme: ClassScheme) -> npt.NDArray[np.uint8]:
    """RGBA of each class value (:func:`sdmatlas.classes.palette`), made once a scheme."""
    return classes.palette(scheme)


def class_legend_png(scheme: ClassScheme, title: str, width: int = 256) -> bytes:
    """A categorical legend: one swatch and name a class, in the scheme's order."""
    row, top = 18, 18 if title else 2
    img = Image.new("RGBA", (width, top + row * len(scheme.classes) + 2), (255, 255, 255, 0))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((3, 2), title, fill=(20, 20, 20, 255), stroke_width=2,
                  stroke_fill=(255, 255, 255, 255))  # fmt: skip
    for i, c in enumerate(scheme.classes):
        y = top + i * row
        rgb = tuple(int(c.color[k : k + 2], 16) for k in (1, 3, 5))
        draw.rectangle((3, y + 2, 17, y + 14), fill=(*rgb, 255), outline=(60, 60, 60, 255))
        draw.text((23, y + 2), f"{c.code}  {c.name}", fill=(20, 20, 20, 255), stroke_width=2,
                  stroke_fill=(255, 255, 255, 255))  # fmt: skip
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=16)
@functools.cache
def empty_tile(fmt: str, dtype: str) -> bytes:
    """The one transparent (or all-nodata) tile served wherever there is no data: made
    once, and as small as the format allows (a 1-bit PNG of one clear colour)."""
    from sdmatlas.serve.tiles.tiling import TILE_SIZE

    if fmt == "npy":
        fill = np.full(
            (TILE_SIZE, TILE_SIZE), NODATA if dtype == "uint8" else np.nan, dtype=np.dtype(dtype)
        )
        return encode_array(fill)
    if fmt == "png":
        img = Image.new("P", (TILE_SIZE, TILE_SIZE), 0)
        img.putpalette([0, 0, 0], rawmode="RGB")
        buf = io.BytesIO()
        img.save(buf, "PNG", transparency=0, bits=1, optimize=True)
        return buf.getvalue()
    pal = np.zeros((256, 4), np.uint8)
    return encode_indexed(np.full((TILE_SIZE, TILE_SIZE), NODATA, np.uint8), pal, fmt)
