"""appearance: the colour vector of a player's box (``kind = "appearance"`` embeddings).

**Appearance** (``kind = "appearance"``, :data:`APPEARANCE_DIM` floats, layout in :data:`APPEARANCE_LAYOUT`).
Inside a player's box, four horizontal bands are read (:data:`BANDS`): the torso (the box's
upper-middle part, where the jersey is), the shorts, the thighs (skin) and the top of the head (hair).
Pixels of the pitch are masked out so the background never leaks into a colour: the frame's own grass
colour is measured first (:func:`pitch_colour`) and only pixels near it in hue and brightness are
dropped (:func:`grass_mask`), so a green goalkeeper shirt survives; each band's colour is
the per-channel median of what is left, in CIELAB (L in 0..100, a and b in -128..127: perceptual, so
Euclidean distances are ΔE76 colour differences). The torso also gets a coarse a*b* chroma histogram
(4 x 4 bins, sums to 1) that separates two-colour kits with the same median, and the share of its
pixels that were not pitch (a reliability weight: a box mostly of grass says little). The last two
slots are the jersey number :mod:`tasks.numbers` reads on the torso (0: none readable, or a box under
its minimum height) and the reader's confidence in it: colour tells the teams apart, the number the
team-mates.

The vectors read the decoder's YUV planes and convert only the bands' pixels, all boxes of a frame at
once (~2 ms a 720p frame of 11 players, was ~10 ms; :class:`YuvPlanes`); detect_track computes them
while its frame is in memory (:func:`appearance_vectors`), embed reads them from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final, NamedTuple

import av
import cv2
import numpy as np

from tasks.numbers import NUMBER_MODEL, read_numbers

# --- appearance vector layout --------------------------------------------------------------------

HIST_BINS: Final = 4
_BANDS: Final = ("torso", "shorts", "skin", "hair")
APPEARANCE_LAYOUT: Final[dict[str, slice]] = {
    "torso_lab": slice(0, 3),
    "shorts_lab": slice(3, 6),
    "skin_lab": slice(6, 9),
    "hair_lab": slice(9, 12),
    "torso_hist": slice(12, 12 + HIST_BINS * HIST_BINS),
    "torso_coverage": slice(12 + HIST_BINS * HIST_BINS, 13 + HIST_BINS * HIST_BINS),
    "number": slice(13 + HIST_BINS * HIST_BINS, 14 + HIST_BINS * HIST_BINS),
    "number_conf": slice(14 + HIST_BINS * HIST_BINS, 15 + HIST_BINS * HIST_BINS),
}
APPEARANCE_DIM: Final = 15 + HIST_BINS * HIST_BINS
APPEARANCE_MODEL: Final = (
    f"lab-bands-v2 ({APPEARANCE_DIM}-d: torso/shorts/skin/hair CIELAB medians + ab histogram"
    f" + jersey number read by {NUMBER_MODEL})"
)


def number_read(vector: Sequence[float] | np.ndarray | None, min_conf: float) -> int | None:
    """The jersey number an appearance vector carries when the reader was ``min_conf`` sure of it
    (None: no vector, one without the number slots, nothing readable, or a doubtful read)."""
    where, conf = APPEARANCE_LAYOUT["number"].start, APPEARANCE_LAYOUT["number_conf"].start
    if vector is None or len(vector) <= conf:
        return None
    number, confidence = float(vector[where]), float(vector[conf])
    return round(number) if number >= 0.5 and confidence >= min_conf else None


# Bands as fractions of the box height (top = 0), for an upright person whose box runs from the top of
# the head to the feet: hair 0-5 %, shoulders at ~17 % and hips at ~48 %, so the jersey fills 20-45 %;
# shorts 49-58 %; bare thighs (or the shorts' hem and socks, for long kits) 61-70 %. The middle of the
# width avoids swinging arms and legs.
BANDS: Final[dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    "torso": ((0.20, 0.45), (0.25, 0.75)),
    "shorts": ((0.49, 0.58), (0.25, 0.75)),
    "skin": ((0.61, 0.70), (0.20, 0.80)),
    "hair": ((0.00, 0.05), (0.30, 0.70)),
}


# --- colour --------------------------------------------------------------------------------------


class YuvPlanes(NamedTuple):
    """A decoded frame as its 4:2:0 planes: luma ``(h, w)``, chroma ``(h/2, w/2)``, BT.601 limited range.

    This is the frame type of the appearance vectors (:func:`appearance_image` reads it from a PyAV
    frame without copying): converting a whole 720p frame to BGR costs ~5 ms, and the vectors read only a
    few percent of its pixels, so only those are converted (:func:`_planes_bgr`, to the very values
    swscale's conversion of the whole frame gives).
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


# AVColorSpace tags swscale converts with BT.601: unspecified (its default), BT470BG, SMPTE170M
_BT601_TAGS: Final = frozenset({2, 5, 6})


def appearance_image(frame: av.VideoFrame) -> YuvPlanes | np.ndarray:
    """What :func:`appearance_vectors` reads of a decoded frame: its :class:`YuvPlanes` (views of its
    buffers, no copy) when it is BT.601 limited-range yuv420p of even size, as H.264 footage comes;
    any other frame converted to BGR by swscale (which reads the frame's colour tags)."""
    h, w = frame.height, frame.width
    if (
        frame.format.name == "yuv420p"
        and frame.colorspace in _BT601_TAGS
        and frame.color_range != 2
        and h % 2 == w % 2 == 0
    ):
        luma, cb, cr = (np.frombuffer(memoryview(plane), np.uint8) for plane in frame.planes)
        half_h, half_w = h // 2, w // 2
        return YuvPlanes(
            luma.reshape(h, -1)[:, :w], cb.reshape(half_h, -1)[:, :half_w], cr.reshape(half_h, -1)[:, :half_w]
        )
    return frame.to_ndarray(format="bgr24")


def _planes_bgr(planes: YuvPlanes, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(n, 3)`` BGR of the pixels at ``(rows, cols)`` (:func:`_yuv_bgr`; 2 x 2 blocks share a chroma)."""
    half_rows, half_cols = rows >> 1, cols >> 1
    return _yuv_bgr(planes.y[rows, cols], planes.u[half_rows, half_cols], planes.v[half_rows, half_cols])


def _yuv_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BGR (shape + (3,)) of pixels given by their Y, U, V bytes: exactly what swscale's conversion of
    the whole frame (``frame.to_ndarray(format="bgr24")``) gives there, read from :func:`_swscale_bgr`."""
    at = u.astype(np.uint32) << 16 | v.astype(np.uint32) << 8 | y
    return np.ascontiguousarray(_swscale_bgr().take(at).view(np.uint8).reshape(*at.shape, 4)[..., :3])


def warm_appearance() -> None:
    """Build the colour table the appearance vectors read (:func:`_swscale_bgr`) now, not in a chunk."""
    _swscale_bgr()


@lru_cache(maxsize=1)
def _swscale_bgr() -> np.ndarray:
    """swscale's BGR of every ``(Y, U, V)``, packed in a uint32 at ``U << 16 | V << 8 | Y`` (64 MiB, built
    in ~0.3 s once per process).

    swscale converts BT.601 yuv420p to BGR pixel by pixel (nearest chroma; fixed-point arithmetic that
    runs ~1 unit darker than the exact matrix, so OpenCV's conversion would shift the vectors), hence
    one 4096 x 4096 frame that holds every triple, converted once, gives its output for any frame.
    The frame's 2 x 2 chroma blocks are laid out ``(U, q_hi, dy, V, q_lo, dx)`` with luma
    ``Y = 32 q_hi + 4 q_lo + 2 dy + dx``.
    """
    q, d = np.arange(8), np.arange(2)
    luma = (32 * q[:, None, None, None, None] + 2 * d[None, :, None, None, None]) + (
        4 * q[None, None, None, :, None] + d[None, None, None, None, :]
    )  # (q_hi, dy, V, q_lo, dx)
    y_plane = np.broadcast_to(luma.astype(np.uint8), (256, 8, 2, 256, 8, 2)).reshape(4096, 4096)
    chroma = np.repeat(np.arange(256, dtype=np.uint8), 8)
    u_plane = np.broadcast_to(chroma[:, None], (2048, 2048))
    v_plane = np.broadcast_to(chroma[None, :], (2048, 2048))
    i420 = np.concatenate([y_plane.ravel(), u_plane.ravel(), v_plane.ravel()]).reshape(-1, 4096)
    bgr = av.VideoFrame.from_ndarray(i420, format="yuv420p").to_ndarray(format="bgr24")
    packed = np.zeros((256, 256, 8, 8, 2, 2, 4), np.uint8)  # (U, V, q_hi, q_lo, dy, dx): Y in order
    packed[..., :3] = bgr.reshape(256, 8, 2, 256, 8, 2, 3).transpose(0, 3, 1, 4, 2, 5, 6)
    return packed.view(np.uint32).reshape(-1)


def grass_mask(image_bgr: np.ndarray, pitch: PitchColour | None = None) -> np.ndarray:
    """True where a pixel looks like pitch grass.

    Without ``pitch``: hue 28-95 (OpenCV's 0-180 scale), saturation ≥ 50, value ≥ 30 — grass is a
    yellowish green on screen; the saturation floor keeps grey, white and black kits out. With the
    frame's :class:`PitchColour`, only pixels within ±10 of its hue and 0.55-1.45 x its brightness
    count, so a green goalkeeper shirt (a different hue or much brighter) is not taken for grass.
    """
    return _grass(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV), pitch)


def _grass(hsv: np.ndarray, pitch: PitchColour | None) -> np.ndarray:
    h, s, v = hsv[..., 0].astype(np.int16), hsv[..., 1], hsv[..., 2]
    if pitch is None:
        return np.asarray((h >= 28) & (h <= 95) & (s >= 50) & (v >= 30))
    return np.asarray(
        (np.abs(h - pitch.hue) <= 10) & (s >= 50) & (v >= 0.55 * pitch.value) & (v <= 1.45 * pitch.value)
    )


class PitchColour(NamedTuple):
    """The frame's dominant grass colour (OpenCV HSV)."""

    hue: float
    value: float


def pitch_colour(image: np.ndarray | YuvPlanes) -> PitchColour | None:
    """Median hue and brightness of the grass-like pixels of a frame (BGR or planes; every 8th pixel of
    every 8th row); None if none."""
    if isinstance(image, YuvPlanes):  # pixel (8 i, 8 j) has chroma (4 i, 4 j)
        small = _yuv_bgr(image.y[::8, ::8], image.u[::4, ::4], image.v[::4, ::4])
    else:
        small = np.ascontiguousarray(image[::8, ::8])
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    mask = _grass(hsv, None)
    if mask.mean() < 0.05:
        return None
    return PitchColour(_byte_median(hsv[..., 0][mask]), _byte_median(hsv[..., 2][mask]))


def _byte_median(values: np.ndarray) -> float:
    """``np.median`` of uint8 values, from their counts (the mean of the two middle values if even)."""
    cumulative = np.bincount(values, minlength=256).cumsum()
    n = int(cumulative[-1])
    return float((cumulative <= (n - 1) // 2).sum() + (cumulative <= n // 2).sum()) / 2


def _band_rects(boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """``(4 n, 4)`` ``[y0, y1, x0, x1]`` of every box's :data:`BANDS` (frame pixels, :data:`_BANDS` order)."""
    rects = []
    for x1, y1, x2, y2 in boxes:
        h, w = y2 - y1, x2 - x1
        for name in _BANDS:
            (top, bottom), (left, right) = BANDS[name]
            ya, xa = int(h * top), int(w * left)
            yb, xb = max(ya + 1, round(h * bottom)), max(xa + 1, round(w * right))
            rects.append((y1 + ya, y1 + yb, x1 + xa, x1 + xb))
    return np.asarray(rects, np.intp).reshape(-1, 4)


def rect_pixels(rects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, rectangle index) of every pixel of ``rects`` (``[y0, y1, x0, x1]``), row-major in each."""
    widths = np.maximum(rects[:, 3] - rects[:, 2], 0)
    heights = np.where(widths > 0, np.maximum(rects[:, 1] - rects[:, 0], 0), 0)
    line_rect = np.repeat(np.arange(len(rects)), heights)  # one entry per pixel row of a rectangle
    first_line = np.repeat(np.cumsum(heights) - heights, heights)
    line_y = rects[line_rect, 0] + np.arange(len(line_rect)) - first_line
    line_width = widths[line_rect]
    line_start = np.cumsum(line_width) - line_width  # where each row's pixels start in the output
    cols = np.arange(int(line_width.sum())) - np.repeat(line_start - rects[line_rect, 2], line_width)
    return np.repeat(line_y, line_width), cols, np.repeat(line_rect, line_width)


_AB_EDGES: Final = np.linspace(-64.0, 64.0, HIST_BINS + 1)
# the a* / b* histogram bin of each stored byte (OpenCV stores a* + 128)
_AB_BIN: Final = np.clip(np.digitize(np.arange(256) - 128.0, _AB_EDGES[1:-1]), 0, HIST_BINS - 1)


def _band_vectors(bgr: np.ndarray, band: np.ndarray, n: int, pitch: PitchColour | None) -> np.ndarray:
    """``(n, APPEARANCE_DIM)`` vectors from the BGR pixels of every band of ``n`` boxes (``band``: box x 4 +
    the band's place in :data:`_BANDS`); all boxes at once, one colour conversion each.

    Medians are read from per-band counts of the 256 byte values of each LAB channel (the scaling to
    L 0..100, a/b -128..127 is affine, so it commutes with the median of two middle values).
    """
    out = np.zeros((n, APPEARANCE_DIM), np.float32)
    if not len(band):
        return out
    k = 4 * n
    keep = ~grass_mask(bgr[None], pitch)[0]
    lab = cv2.cvtColor(bgr[None], cv2.COLOR_BGR2LAB)[0][keep].astype(np.intp)
    kept_band = band[keep]
    total, kept = np.bincount(band, minlength=k), np.bincount(kept_band, minlength=k)
    key = (kept_band[:, None] * 3 + np.arange(3)) * 256 + lab
    cumulative = np.bincount(key.ravel(), minlength=k * 3 * 256).reshape(k * 3, 256).cumsum(axis=1)
    count = np.repeat(kept, 3)[:, None]
    low = (cumulative <= (count - 1) // 2).sum(axis=1)  # the two middle values (the same one if odd)
    high = (cumulative <= count // 2).sum(axis=1)
    median = ((low + high) / 2).reshape(n, 4, 3) * (100.0 / 255.0, 1.0, 1.0) - (0.0, 128.0, 128.0)
    median[kept.reshape(n, 4) == 0] = 0.0
    for place, name in enumerate(_BANDS):
        out[:, APPEARANCE_LAYOUT[f"{name}_lab"]] = median[:, place]
    torso = _BANDS.index("torso")
    out[:, APPEARANCE_LAYOUT["torso_coverage"]] = (kept[torso::4] / total[torso::4])[:, None]
    in_torso = kept_band % 4 == torso
    cell = _AB_BIN[lab[in_torso, 1]] * HIST_BINS + _AB_BIN[lab[in_torso, 2]]
    hist = np.bincount(kept_band[in_torso] // 4 * HIST_BINS**2 + cell, minlength=n * HIST_BINS**2)
    hist = hist.reshape(n, HIST_BINS**2).astype(np.float32)
    sums = hist.sum(axis=1, keepdims=True)
    out[:, APPEARANCE_LAYOUT["torso_hist"]] = hist / np.maximum(sums, 1.0)
    return out


def _box_vectors(
    image: np.ndarray | YuvPlanes, boxes: list[tuple[int, int, int, int]], pitch: PitchColour | None
) -> np.ndarray:
    """The vectors of clipped integer ``boxes`` of one image (BGR or planes)."""
    rows, cols, band = rect_pixels(_band_rects(boxes))
    bgr = _planes_bgr(image, rows, cols) if isinstance(image, YuvPlanes) else image[rows, cols]
    return _band_vectors(bgr, band, len(boxes), pitch)


def _read_numbers(image: YuvPlanes | np.ndarray, boxes: np.ndarray, vectors: np.ndarray) -> None:
    """Fill the number slots of ``vectors`` with :func:`tasks.numbers.read_numbers` of ``boxes``. The
    reader reads the luma plane; a BGR frame's is made as the decoder's (BT.601, limited range)."""
    if isinstance(image, YuvPlanes):
        luma = image.y
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        luma = np.rint(16.0 + gray * (219.0 / 255.0)).astype(np.uint8)
    numbers, confidence = read_numbers(luma, boxes)
    vectors[:, APPEARANCE_LAYOUT["number"].start] = numbers
    vectors[:, APPEARANCE_LAYOUT["number_conf"].start] = confidence


def appearance_vector(crop_bgr: np.ndarray, pitch: PitchColour | None = None) -> np.ndarray:
    """The colours of one person crop (BGR, the whole box); see :data:`APPEARANCE_LAYOUT`. The number
    slots stay 0 (none read): the reader's torso square is wider than a box, and a crop has nothing
    around it (:func:`appearance_vectors` reads the number in the frame)."""
    if crop_bgr.size == 0:
        return np.zeros(APPEARANCE_DIM, np.float32)
    h, w = crop_bgr.shape[:2]
    return _box_vectors(crop_bgr, [(0, 0, w, h)], pitch)[0]


def clip_box(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> tuple[int, int, int, int]:
    return max(0, int(x1)), max(0, int(y1)), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))


def appearance_vectors(
    image: YuvPlanes | np.ndarray, boxes: Iterable[tuple[float, float, float, float]]
) -> list[np.ndarray | None]:
    """The appearance vector of each box of one full-resolution frame (None: too small to embed).

    The one place both embed (decoding) and detect_track (while its frame is in memory) compute them,
    both from :func:`appearance_image` of the decoded frame (its :class:`YuvPlanes`, or for unusual
    footage its BGR array), so the two give the same bits; the planes' pixels are converted exactly
    as swscale converts the whole frame to BGR, so either gives the colours of the BGR frame (the
    number's confidence from a BGR frame differs by up to ~0.04: its luma is re-derived). Boxes are
    clipped to the frame for the colours; a box under 4 x 8 pixels gets None.
    """
    boxes = list(boxes)
    if not boxes:
        return []
    h, w = image.y.shape if isinstance(image, YuvPlanes) else image.shape[:2]
    clipped = [clip_box(*box, w, h) for box in boxes]
    usable = [x2 - x1 >= 4 and y2 - y1 >= 8 for x1, y1, x2, y2 in clipped]
    if not any(usable):
        return [None] * len(boxes)
    pitch = pitch_colour(image)
    vectors = _box_vectors(image, [box for box, ok in zip(clipped, usable, strict=True) if ok], pitch)
    kept = [box for box, ok in zip(boxes, usable, strict=True) if ok]
    _read_numbers(image, np.asarray(kept, np.float64), vectors)  # the whole box, not the clipped one
    rows = iter(vectors)
    return [next(rows) if ok else None for ok in usable]
