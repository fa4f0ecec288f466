"""Turn a user's picture into an MNIST-style 28×28 image, for ``mnist-hpc predict``.

MNIST digits are white ink on black, their longest side scaled to 20 px (antialiased, aspect
ratio kept) and placed in a 28×28 frame so that the ink's centre of mass sits at the centre
(row 14, column 14 — the mean over the MNIST test set is 13.99, 14.01). :func:`to_mnist` does
the same to any picture:

1. grayscale, transparency flattened onto white (EXIF rotation applied by :func:`load_image`);
2. the background level is the median of the image border; the image is inverted when the ink
   is darker than the background (dark-on-light paper), left as it is otherwise;
3. the background level plus a noise margin (from the border's spread) is subtracted, so paper
   grey and sensor noise become 0 while the ink keeps its grey levels (no binarisation);
4. crop to the ink's bounding box (ignoring edge rows/columns that hold a negligible share of
   the ink: dust and specks), scale the longer side to 20 px, thickening strokes that would come
   out much thinner than MNIST's (a thin pen on a large photo), contrast stretched to 0..255;
5. paste into 28×28 with the centre of mass at (14, 14), shifted by whole pixels and clipped so
   that the digit stays in the frame.

numpy and Pillow only (no torch: the caller normalises and batches).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_hpc.config.yamlio import special_file
from mnist_hpc.errors import UserError

SIZE = 28  # output frame
BOX = 20  # the longer side of the digit inside the frame
CENTRE = 14.0  # where the centre of mass goes (index coordinates)
MIN_NOISE = 2.0  # grey levels above the background still counted as background
MIN_CONTRAST = 10.0  # less ink than this (grey levels above the noise) is a blank image
SPECK_FRACTION = 5e-4  # edge rows/columns holding less of the ink than this are trimmed
MAX_WORK_SIDE = 1024  # larger pictures are box-reduced first (speed; no visible loss at 20 px)
WORK_SCALE = 4  # intermediate resolution: BOX * WORK_SCALE px, where strokes are measured
MIN_STROKE = 1.4  # px at the 20-px scale; thinner strokes are thickened ...
TARGET_STROKE = 1.9  # ... to about this (MNIST: median 1.8, quartiles 1.6-2.2) ...
THICKEN_ABOVE = 2 * BOX  # ... when the digit is shrunk from more than this (not MNIST-sized input)

_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


def load_image(path) -> Image.Image:
    """Open and decode an image file; any failure is a one-line ``UserError`` naming the path."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise UserError(f"{name}: no such file")
    if p.is_dir():
        raise UserError(f"{name}: not an image (it is a directory)")
    kind = special_file(p)
    if kind:
        raise UserError(f"{name}: not an image file ({kind}); give a PNG or JPEG file")
    try:
        with Image.open(p) as im:
            im.load()
            img = ImageOps.exif_transpose(im)  # phone photos: honour the rotation tag (a copy)
    except UnidentifiedImageError:
        empty = p.stat().st_size == 0
        raise UserError(f"{name}: not an image ({'empty file' if empty else 'unknown format'})") from None
    except Image.DecompressionBombError:
        raise UserError(f"{name}: not an image (too many pixels to decode safely)") from None
    except PermissionError:
        raise UserError(f"{name}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{name}: not an image (truncated or corrupt: {reason})") from None
    if img.width == 0 or img.height == 0:
        raise UserError(f"{name}: not an image (zero size)")
    return img


def prepare(path) -> np.ndarray:
    """``to_mnist(load_image(path))`` with the path in any error message."""
    return to_mnist(load_image(path), name=str(path))


# --- steps ------------------------------------------------------------------------------------


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _to_gray(img: Image.Image) -> np.ndarray:
    """Float 0..255 luminance, alpha flattened onto white."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float64) / 257.0
    if mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 255.0:
            return a
        return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255.0
        lum = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float64)
        flat = lum * alpha + 255.0 * (1.0 - alpha)
        if np.ptp(flat) < MIN_CONTRAST and np.ptp(alpha) >= MIN_CONTRAST / 255.0:
            # Light ink on a transparent background vanishes on white: the alpha is the ink.
            flat = 255.0 * (1.0 - alpha)
        return flat
    return np.asarray(img.convert("L"), dtype=np.float64)


def _border(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    k = max(1, round(0.02 * min(h, w)))
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])


def ink_is_dark(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the background (so the image must be inverted).

    The background is the border's median; the ink is whatever departs from it, and it is dark
    when the pixels below the background outweigh those above it.
    """
    border = _border(gray)
    bg = float(np.median(border))
    noise = _noise(border, bg)
    darker = np.clip(bg - noise - gray, 0.0, None).sum()
    lighter = np.clip(gray - bg - noise, 0.0, None).sum()
    if darker == lighter:  # blank, or perfectly symmetric: fall back on the brightness
        return bg > 127.5
    return bool(darker > lighter)


def _noise(border: np.ndarray, bg: float) -> float:
    mad = float(np.median(np.abs(border - bg)))
    return max(MIN_NOISE, 3.0 * 1.4826 * mad)


def _ink(gray: np.ndarray) -> np.ndarray:
    """White ink on 0: inverted if needed, background level and noise margin subtracted."""
    if ink_is_dark(gray):
        gray = 255.0 - gray
    border = _border(gray)
    bg = float(np.median(border))
    return np.clip(gray - bg - _noise(border, bg), 0.0, None)


def _bbox(ink: np.ndarray):
    """(top, bottom, left, right), inclusive, of the ink, specks at the edges trimmed."""
    total = float(ink.sum())
    limit = SPECK_FRACTION * total

    def span(profile):
        keep = np.nonzero(profile > limit)[0]
        if keep.size == 0:
            keep = np.nonzero(profile > 0)[0]
        return int(keep[0]), int(keep[-1])

    top, bottom = span(ink.sum(axis=1))
    left, right = span(ink.sum(axis=0))
    return top, bottom, left, right


def _crop(ink: np.ndarray) -> np.ndarray:
    top, bottom, left, right = _bbox(ink)
    return ink[top : bottom + 1, left : right + 1]


def _resize_long_side(a: np.ndarray, long_side: int) -> np.ndarray:
    h, w = a.shape
    s = long_side / max(h, w)
    new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
    if (new_h, new_w) == (h, w):
        return a.copy()
    src = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # mode "F"
    out = src.resize((new_w, new_h), _LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, None)  # Lanczos rings below 0


def stroke_width(a: np.ndarray) -> float:
    """Mean stroke width in px: 2 × area / perimeter of the half-intensity mask (0 if empty)."""
    if a.size == 0 or a.max() <= 0:
        return 0.0
    mask = np.pad(a > 0.5 * a.max(), 1)
    area = int(mask.sum())
    perimeter = int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
    return 2.0 * area / perimeter if perimeter else 0.0


def _dilate(a: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a disc (max over shifted copies), the frame grown to fit."""
    r = int(radius)
    src = np.pad(a, r)
    out = src.copy()
    h, w = a.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r or (dy == 0 and dx == 0):
                continue
            np.maximum(
                out[r + dy : r + dy + h, r + dx : r + dx + w],
                a,
                out=out[r + dy : r + dy + h, r + dx : r + dx + w],
            )
    return out


def _reduce(img: Image.Image) -> Image.Image:
    factor = math.ceil(max(img.size) / MAX_WORK_SIDE)
    return img.reduce(factor) if factor > 1 else img


def to_mnist(img: Image.Image, name: str | None = None) -> np.ndarray:
    """A 28×28 uint8 array, white ink on black, centred the MNIST way (see the module doc).

    Raises ``UserError("<name>: the image is blank")`` when there is no ink to find.
    """
    name = name or getattr(img, "filename", None) or "image"
    if img.mode.startswith("I;16"):  # 16-bit grayscale: to float 0..255
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).astype(np.float32))
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") or "transparency" in img.info:
        # P, 1, CMYK, YCbCr, ..., and a transparent colour key: to RGB(A) before reducing
        img = img.convert("RGBA" if _has_alpha(img) else "RGB")
    gray = _to_gray(_reduce(img))

    ink = _ink(gray)
    if ink.size == 0 or float(ink.max()) < MIN_CONTRAST:
        raise UserError(f"{name}: the image is blank")

    work = _crop(ink)
    big = max(work.shape) > THICKEN_ABOVE
    if max(work.shape) > BOX * WORK_SCALE:  # measure strokes on a smoothed, smaller copy
        work = _resize_long_side(work, BOX * WORK_SCALE)
    scale = BOX / max(work.shape)
    width = stroke_width(work) * scale
    if big and 0.0 < width < MIN_STROKE:
        if scale < 1.0 / WORK_SCALE or scale > 1.0:
            work = _resize_long_side(work, BOX * WORK_SCALE)
            scale = 1.0 / WORK_SCALE
        work = _crop(_dilate(work, round((TARGET_STROKE - width) / scale / 2.0)))
    digit = _resize_long_side(work, BOX)
    peak = float(digit.max())
    if peak <= 0.0:
        raise UserError(f"{name}: the image is blank")
    digit = digit * (255.0 / peak)

    h, w = digit.shape
    mass = digit.sum()
    cy = float(digit.sum(axis=1) @ np.arange(h)) / mass
    cx = float(digit.sum(axis=0) @ np.arange(w)) / mass
    top = min(max(math.floor(CENTRE - cy + 0.5), 0), SIZE - h)
    left = min(max(math.floor(CENTRE - cx + 0.5), 0), SIZE - w)
    out = np.zeros((SIZE, SIZE), dtype=np.float64)
    out[top : top + h, left : left + w] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
