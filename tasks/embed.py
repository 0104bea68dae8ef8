"""embed: one vector per sampled detection — jersey appearance for games, a face descriptor for episodes.

**Appearance** (``kind = "appearance"``, :data:`APPEARANCE_DIM` floats, layout in :data:`APPEARANCE_LAYOUT`).
Inside a player's box, four horizontal bands are read (:data:`BANDS`): the torso (the box's
upper-middle part, where the jersey is), the shorts, the thighs (skin) and the top of the head (hair).
Pixels of the pitch are masked out so the background never leaks into a colour: the frame's own grass
colour is measured first (:func:`pitch_colour`) and only pixels near it in hue and brightness are
dropped (:func:`grass_mask`), so a green goalkeeper shirt survives; each band's colour is
the per-channel median of what is left, in CIELAB (L in 0..100, a and b in -128..127: perceptual, so
Euclidean distances are ΔE76 colour differences). The torso also gets a coarse a*b* chroma histogram
(4 x 4 bins, sums to 1) that separates two-colour kits with the same median, and the share of its
pixels that were not pitch (a reliability weight: a box mostly of grass says little).

**Face** (``kind = "face"``, 128 floats): dlib's ResNet face descriptor (the ``face_recognition``
model, trained so that two photos of one person are < 0.6 apart in Euclidean distance), computed on
the face box after aligning it with dlib's 5-point landmark model; the network runs in onnxruntime,
built from dlib's own weight file (:func:`face_resnet`, same vectors, ~15x faster than dlib-bin's
BLAS-less build). Face boxes come from the tracks
(episodes are tracked by their faces, see :mod:`tasks.episode_track`) or, with
``detect_in_box=True``, from dlib's HOG detector run inside each person box.

Frames are read with PyAV in decode order, once per chunk, and only the sampled frames are
converted to pixels; a track is sampled at most every ``sample_every_s`` seconds. For games the
video is not decoded again: detect_track computes the appearance vector of every detection while
its frame is in memory (the ``appearance`` parts, :func:`appearance_vectors`), and embed picks the
samples' vectors from them by box (:func:`embed_from_appearance`). Neither converts a whole frame:
the vectors read the decoder's YUV planes and convert only the bands' pixels, all boxes of a frame
at once (~2 ms a 720p frame of 11 players, was ~10 ms; :class:`YuvPlanes`).
"""

from __future__ import annotations

import bisect
import importlib.util
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import av
import cv2
import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from storage.artifacts import ArtifactRef, ArtifactStore, RunRef
from storage.schemas import polars_schema, validate_table
from tasks.common import as_frame, retry_transient, store
from tasks.decoding import FrameGrid, decode_wanted
from tasks.ingest import Chunk

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
}
APPEARANCE_DIM: Final = 13 + HIST_BINS * HIST_BINS
FACE_DIM: Final = 128
APPEARANCE_MODEL: Final = (
    f"lab-bands-v1 ({APPEARANCE_DIM}-d: torso/shorts/skin/hair CIELAB medians + ab histogram)"
)
FACE_MODEL: Final = "dlib_face_recognition_resnet_model_v1 + shape_predictor_5_face_landmarks"

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


class EmbedParams(BaseModel):
    """Everything that changes embed's output (:meth:`for_faces` gives the episode defaults)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["appearance", "face"] = "appearance"
    sample_every_s: float = Field(default=0.4, ge=0, description="Minimum time between samples of a track.")
    dense_below: int = Field(default=10, ge=0, description="Tracks with fewer rows keep every row.")
    max_per_track: int = Field(default=0, ge=0, description="Most samples per track (0 = no limit).")
    min_box_height_px: float = Field(default=24.0, ge=0, description="Smaller boxes are not embedded.")
    fast_decode: bool = Field(
        default=False,
        description="Skip H.264 deblocking: decoding ~30 % faster, but the blockier skin and hair colours "
        "of small players cost fragment merges (measured); off by default.",
    )
    detect_in_box: bool = Field(
        default=False, description="Faces: run HOG inside each box (else box = face)."
    )
    face_upsample: int = Field(default=1, ge=0, le=2, description="HOG upsampling (faces are small).")
    face_jitter: int = Field(default=0, ge=0, description="dlib num_jitters (0 = one pass; more is slower).")

    @classmethod
    def for_faces(cls, **changes: Any) -> EmbedParams:
        """Episodes: a track's first face, then one every 5 s of it.

        A track lives within one shot and its faces agree within ~0.2 (clustering cuts at 0.5), so
        more samples of a short track buy nothing but time; a long track still gets one per 5 s in
        case a face is poor. The first face is the cheap one to decode: a track mostly starts at
        its shot's cut, where the video has a keyframe, so :func:`iter_frames` seeks straight to it,
        and the shot's other tracks start on the same frame. On four generated 60 s episodes this
        gives the same purity (1.000) and screen-time errors as two samples spread over each track,
        for ~2.5x less time (decoding a sample in mid-shot costs more than describing it).
        """
        base = {
            "kind": "face",
            "sample_every_s": 5.0,
            "dense_below": 0,
            "max_per_track": 0,
            "min_box_height_px": 40,
        }
        return cls(**{**base, **changes})


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


def appearance_vector(crop_bgr: np.ndarray, pitch: PitchColour | None = None) -> np.ndarray:
    """The appearance vector of one person crop (BGR, the whole box); see :data:`APPEARANCE_LAYOUT`."""
    if crop_bgr.size == 0:
        return np.zeros(APPEARANCE_DIM, np.float32)
    h, w = crop_bgr.shape[:2]
    return _box_vectors(crop_bgr, [(0, 0, w, h)], pitch)[0]


# --- faces ---------------------------------------------------------------------------------------


def face_models_dir() -> Path:
    """Where ``face_recognition_models`` keeps its weights (found without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@lru_cache(maxsize=1)
def face_models() -> tuple[Any, Any, Any]:
    """(HOG detector, 5-point shape predictor, 128-d embedder), loaded once per process."""
    import dlib

    folder = face_models_dir()
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def detect_faces(
    image_rgb: np.ndarray, upsample: int = 1, threshold: float = 0.0
) -> list[tuple[float, float, float, float, float]]:
    """HOG face boxes ``(x1, y1, x2, y2, score)`` in the image's pixels (SVM margin ≥ ``threshold``)."""
    detector, _, _ = face_models()
    image_rgb = np.ascontiguousarray(image_rgb)  # dlib ignores row padding (PyAV pads rows)
    rects, scores, _ = detector.run(image_rgb, upsample, threshold)
    h, w = image_rgb.shape[:2]
    return [
        (max(0.0, r.left()), max(0.0, r.top()), min(float(w), r.right()), min(float(h), r.bottom()), float(s))
        for r, s in zip(rects, scores, strict=True)
    ]


def face_descriptors(
    image_rgb: np.ndarray,
    boxes: Iterable[tuple[float, float, float, float]],
    jitter: int = 0,
    *,
    engine: Literal["onnx", "dlib"] = "onnx",
) -> np.ndarray:
    """(n, 128) dlib descriptors of the faces in ``boxes`` (aligned with the 5-point landmarks).

    The ResNet runs in onnxruntime (:func:`face_resnet`: dlib's own weights, same vectors within
    1e-6, ~15x faster here than dlib's BLAS-less build); ``engine="dlib"`` or ``jitter`` run dlib's.
    """
    import dlib

    _, predictor, embedder = face_models()
    image_rgb = np.ascontiguousarray(image_rgb)  # dlib ignores row padding (PyAV pads rows)
    rects = [dlib.rectangle(int(x1), int(y1), int(x2), int(y2)) for x1, y1, x2, y2 in boxes]
    if not rects:
        return np.empty((0, FACE_DIM), np.float32)
    shapes = dlib.full_object_detections()
    for rect in rects:
        shapes.append(predictor(image_rgb, rect))
    chips = dlib.get_face_chips(image_rgb, shapes, size=FACE_CHIP_PX, padding=0.25)
    if engine == "onnx" and not jitter:
        return describe_chips(chips)
    vectors = (
        embedder.compute_face_descriptor(chips, jitter) if jitter else embedder.compute_face_descriptor(chips)
    )
    return np.asarray([np.asarray(v) for v in vectors], np.float32)


# dlib's face ResNet in onnxruntime. dlib-bin is built without BLAS, so its convolutions cost ~80 ms a
# face on one core here; the same network, read from the same .dat file and run by onnxruntime on one
# thread, costs ~6-14 ms and gives the same descriptor (max difference ~1e-6). The .dat file is dlib's
# serialisation: layers from the input up, each a name string then its fields; integers are a
# length byte (| 0x80 when negative) + little-endian bytes, parameter tensors a version (2), four
# dims and raw little-endian float32s. Only con / affine / pooling / fc layers carry numbers; the
# relu, add_prev and tag layers are fixed by the architecture (dlib's dnn_face_recognition_ex.cpp):
#   con 32 7x7/2 · affine · relu · max_pool 3x3/2 · 14 residual blocks of
#   [con 3x3/s · affine · relu · con 3x3/1 · affine] + (input, avg_pool 2x2/2'd when s = 2) · relu
#   · global average · fc 256 → 128 (no bias).
# dlib adds tensors of different sizes by zero-padding the smaller (channels, and 3x3 + 4x4 at 256).

FACE_CHIP_PX: Final = 150
_CHIP_MEAN: Final = np.asarray([122.782, 117.001, 104.298], np.float32)  # input_rgb_image_sized<150>
_DLIB_LAYER = re.compile(rb"\x01[\x04-\x10](con_4|affine_|max_pool_2|avg_pool_2|fc_2)")


def _dlib_int(data: bytes, at: int) -> tuple[int, int]:
    head = data[at]
    value = int.from_bytes(data[at + 1 : at + 1 + (head & 0x0F)], "little")
    return (-value if head & 0x80 else value), at + 1 + (head & 0x0F)


def _dlib_ints(data: bytes, at: int, count: int) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        value, at = _dlib_int(data, at)
        out.append(value)
    return out, at


def _dlib_tensor(data: bytes, at: int) -> tuple[np.ndarray, int]:
    (version, *dims), at = _dlib_ints(data, at, 5)
    if version != 2:
        raise ValueError(f"unsupported dlib tensor version {version}")
    count = int(np.prod(dims))
    return np.frombuffer(data, "<f4", count, at).astype(np.float32), at + 4 * count


def _dlib_layers(data: bytes) -> list[tuple[str, Any]]:
    """The numbered layers of a dlib network file, input first: (kind, parameters)."""
    layers: list[tuple[str, Any]] = []
    at = 0
    while (match := _DLIB_LAYER.search(data, at)) is not None:
        name = match.group(1)
        at = match.end()
        if data[match.start() + 1] != len(name):
            at = match.start() + 1
            continue
        if name == b"con_4":
            params, at = _dlib_tensor(data, at)
            shape, at = _dlib_ints(data, at, 7)  # filters, rows, cols, stride y/x, padding y/x
            layers.append(("con", (params, shape)))
        elif name == b"affine_":
            params, at = _dlib_tensor(data, at)
            layers.append(("affine", params))
        elif name == b"fc_2":
            (outputs, inputs), at = _dlib_ints(data, at, 2)
            params, at = _dlib_tensor(data, at)
            layers.append(("fc", params.reshape(inputs, outputs)))
        else:
            window, at = _dlib_ints(data, at, 6)  # rows, cols, stride y/x, padding y/x
            layers.append((name.decode()[:3] + "pool", window))
    return layers


def _resnet_graph(layers: list[tuple[str, Any]]) -> Any:
    """The ONNX model of dlib's face ResNet, batch of (3, 150, 150) inputs → (128,) descriptors."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    weights: list[Any] = []

    def add(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(array: np.ndarray, prefix: str) -> str:
        name = f"{prefix}{len(weights)}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def size(dims: list[int], window: list[int]) -> list[int]:
        rows, cols, sy, sx, py, px = window
        return [dims[0], 1 + (dims[1] + 2 * py - rows) // sy, 1 + (dims[2] + 2 * px - cols) // sx]

    def conv(x: str, dims: list[int], con: Any, affine: Any) -> tuple[str, list[int]]:
        params, (filters, rows, cols, sy, sx, py, px) = con
        inputs = (params.size - filters) // (filters * rows * cols)
        kernel = params[: filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
        gamma, beta = affine[:filters], affine[filters:]  # affine folded into the convolution
        bias = params[-filters:] * gamma + beta
        out = add(
            "Conv",
            [x, const(kernel * gamma[:, None, None, None], "w"), const(bias, "b")],
            kernel_shape=[rows, cols],
            strides=[sy, sx],
            pads=[py, px, py, px],
        )
        return out, [filters, *size(dims, [rows, cols, sy, sx, py, px])[1:]]

    def pad(x: str, dims: list[int], to: list[int]) -> str:
        if dims == to:
            return x
        pads = np.asarray([0, 0, 0, 0, 0, *(t - d for t, d in zip(to, dims, strict=True))], np.int64)
        return add("Pad", [x, const(pads, "pads")])

    def pool(op: str, x: str, window: list[int]) -> str:
        rows, cols, sy, sx, py, px = window
        return add(op, [x], kernel_shape=[rows, cols], strides=[sy, sx], pads=[py, px, py, px])

    kinds = [kind for kind, _ in layers]
    if kinds[:3] != ["con", "affine", "maxpool"] or kinds[-2:] != ["avgpool", "fc"]:
        raise ValueError(f"not dlib's face ResNet: {kinds}")
    x, dims = conv("input", [3, FACE_CHIP_PX, FACE_CHIP_PX], layers[0][1], layers[1][1])
    x = pool("MaxPool", add("Relu", [x]), layers[2][1])
    dims = size(dims, layers[2][1])
    at = 3
    while kinds[at] == "con":
        y, ydims = conv(x, dims, layers[at][1], layers[at + 1][1])
        y, ydims = conv(add("Relu", [y]), ydims, layers[at + 2][1], layers[at + 3][1])
        at += 4
        skip, sdims = x, dims
        if kinds[at] == "avgpool" and layers[at][1][0] > 0:  # a downsampling block's shortcut
            skip, sdims = pool("AveragePool", x, layers[at][1]), size(dims, layers[at][1])
            at += 1
        dims = [max(a, b) for a, b in zip(ydims, sdims, strict=True)]
        x = add("Relu", [add("Add", [pad(y, ydims, dims), pad(skip, sdims, dims)])])
    if at != len(layers) - 2:
        raise ValueError(f"not dlib's face ResNet: {kinds}")
    x = add("Flatten", [add("GlobalAveragePool", [x])])
    nodes.append(helper.make_node("MatMul", [x, const(layers[-1][1], "fc")], ["descriptor"]))
    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, FACE_CHIP_PX, FACE_CHIP_PX])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["n", FACE_DIM])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@lru_cache(maxsize=1)
def face_resnet() -> Any:
    """An onnxruntime session (one thread) of dlib's face ResNet, built once per process from its .dat."""
    import onnxruntime as ort

    data = (face_models_dir() / "dlib_face_recognition_resnet_model_v1.dat").read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = _resnet_graph(_dlib_layers(data)).SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def describe_chips(chips: Iterable[np.ndarray]) -> np.ndarray:
    """(n, 128) descriptors of aligned 150x150 RGB face chips (dlib's ``get_face_chips``)."""
    batch = np.asarray(list(chips), np.float32).reshape(-1, FACE_CHIP_PX, FACE_CHIP_PX, 3)
    if not len(batch):
        return np.empty((0, FACE_DIM), np.float32)
    tensor = np.ascontiguousarray(((batch - _CHIP_MEAN) / 256.0).transpose(0, 3, 1, 2))
    return np.asarray(face_resnet().run(None, {"input": tensor})[0], np.float32)


# --- sampling and frames -------------------------------------------------------------------------


def select_samples(tracks: pl.DataFrame, params: EmbedParams) -> pl.DataFrame:
    """The track rows to embed: per track, a sample at most every ``sample_every_s`` seconds.

    Greedy in time order on each track, so a track's first row is always kept; tracks with fewer
    than ``dense_below`` rows keep every row (a short track needs all the evidence it has); boxes
    smaller than ``min_box_height_px`` are skipped (too few pixels for a colour or a face).
    """
    rows = tracks.filter((pl.col("y2") - pl.col("y1")) >= params.min_box_height_px).sort(
        "angle", "track_id", "frame"
    )
    if rows.is_empty() or params.sample_every_s <= 0:
        return rows
    keep = np.zeros(rows.height, bool)
    tid, ang, t = rows["track_id"].to_numpy(), rows["angle"].to_list(), rows["time_s"].to_numpy()
    dense = rows.select(pl.len().over("angle", "track_id") < params.dense_below).to_series().to_numpy()
    last_key: tuple[str, int] | None = None
    last_t = -np.inf
    for i in range(rows.height):
        key = (ang[i], int(tid[i]))
        if dense[i] or key != last_key or t[i] - last_t >= params.sample_every_s - 1e-6:
            keep[i] = True
            last_key, last_t = key, t[i]
    chosen = rows.filter(pl.Series(keep))
    if params.max_per_track <= 0:
        return chosen
    # evenly spread the allowed samples over each track: the first row of each of m equal buckets
    rank = pl.int_range(pl.len()).over("angle", "track_id")
    bucket = (rank * params.max_per_track) // pl.len().over("angle", "track_id")
    first = bucket != bucket.shift(1).over("angle", "track_id")
    return chosen.with_columns(_first=first.fill_null(True)).filter(pl.col("_first")).drop("_first")


def iter_frames(
    path: str,
    frames: Iterable[int],
    *,
    start_s: float = 0.0,
    rgb: bool = False,
    fast: bool = False,
    seek: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` once, in order, and yield ``(frame index, BGR/RGB array)`` for the wanted frames
    (:func:`decoded_frames`)."""
    for index, frame in decoded_frames(path, frames, start_s=start_s, fast=fast, seek=seek):
        yield index, frame.to_ndarray(format="rgb24" if rgb else "bgr24")


def iter_appearance_images(
    path: str, frames: Iterable[int], *, start_s: float = 0.0, fast: bool = False
) -> Iterator[tuple[int, YuvPlanes | np.ndarray]]:
    """:func:`iter_frames` for appearance vectors: each wanted frame's :func:`appearance_image`."""
    for index, frame in decoded_frames(path, frames, start_s=start_s, fast=fast):
        yield index, appearance_image(frame)


def decoded_frames(
    path: str,
    frames: Iterable[int],
    *,
    start_s: float = 0.0,
    fast: bool = False,
    seek: bool = False,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode ``path`` once, in order, and yield ``(frame index, PyAV frame)`` for the wanted frames.

    Frame indices follow detect_track's convention: ``round((pts_time - stream start) * fps)``.
    Decoding seeks to the keyframe before ``start_s``, stops after the last wanted frame, and skips
    the unwanted frames no other frame refers to (:mod:`tasks.decoding`). With ``seek``, it also
    jumps over every GOP that holds no wanted frame: to the keyframe before the next wanted frame
    when that keyframe is ahead of the decoder (sparse samples in a clip with a keyframe at each
    cut, as episodes are, decode a few frames per shot instead of every reference frame).
    """
    wanted = sorted(set(frames))
    if not wanted:
        return
    wanted_set = set(wanted)
    keyframes = _keyframes(path, start_s, wanted[-1]) if seek else []
    key_index = [index for index, _ in keyframes]
    with av.open(path) as container:
        stream = container.streams.video[0]
        if fast:
            # Skipping H.264's deblocking filter cuts decoding by ~30 %, at the price of blockier
            # colours in small boxes (see EmbedParams.fast_decode).
            stream.codec_context.options = {"skip_loop_filter": "all"}
        grid = FrameGrid.of(stream)
        if start_s > 0 and grid.time_base:
            container.seek(int((start_s + grid.origin) / grid.time_base), stream=stream, backward=True)
        decoded = decode_wanted(container, stream, wanted_set.__contains__, grid)
        position, frame = -1, None  # the last frame the decoder produced, and its index
        for target in wanted:
            key = bisect.bisect_right(key_index, target) - 1
            jumped = key >= 0 and key_index[key] > position + 1
            if jumped:
                # the decoder reads on from the keyframe (PyAV flushes its buffers on a seek)
                container.seek(keyframes[key][1], stream=stream, backward=True)
            while position < target:
                produced = next(decoded, None)
                if produced is None:
                    return
                position, frame = grid.index(produced[0]), produced[1]
                if jumped and position > target:  # the seek overshot: decode from the start, no seeking
                    container.seek(keyframes[0][1], stream=stream, backward=True)
                    key_index, position, jumped = [], -1, False
            if position == target and frame is not None:
                yield target, frame


def _keyframes(path: str, start_s: float, last: int) -> list[tuple[int, int]]:
    """(frame index, pts) of the keyframes from ``start_s`` to frame ``last`` (packets only: no decoding)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        grid = FrameGrid.of(stream)
        if start_s > 0 and grid.time_base:
            container.seek(int((start_s + grid.origin) / grid.time_base), stream=stream, backward=True)
        out: list[tuple[int, int]] = []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            if grid.index(packet.pts) > last and packet.is_keyframe:
                break
            if packet.is_keyframe:
                out.append((grid.index(packet.pts), packet.pts))
        return sorted(out)


def _clip_box(row: dict[str, Any], w: int, h: int) -> tuple[int, int, int, int]:
    return _clip(row["x1"], row["y1"], row["x2"], row["y2"], w, h)


def _clip(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> tuple[int, int, int, int]:
    return max(0, int(x1)), max(0, int(y1)), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))


def appearance_vectors(
    image: YuvPlanes | np.ndarray, boxes: Iterable[tuple[float, float, float, float]]
) -> list[np.ndarray | None]:
    """The appearance vector of each box of one full-resolution frame (None: too small to embed).

    The one place both embed (decoding) and detect_track (while its frame is in memory) compute them,
    both from :func:`appearance_image` of the decoded frame (its :class:`YuvPlanes`, or for unusual
    footage its BGR array), so the two give the same bits; the planes' pixels are converted exactly
    as swscale converts the whole frame to BGR, so either gives the vectors of the BGR frame. Boxes
    are clipped to the frame; a box under 4 x 8 pixels gets None.
    """
    boxes = list(boxes)
    if not boxes:
        return []
    h, w = image.y.shape if isinstance(image, YuvPlanes) else image.shape[:2]
    clipped = [_clip(*box, w, h) for box in boxes]
    usable = [x2 - x1 >= 4 and y2 - y1 >= 8 for x1, y1, x2, y2 in clipped]
    if not any(usable):
        return [None] * len(boxes)
    pitch = pitch_colour(image)
    vectors = iter(_box_vectors(image, [box for box, ok in zip(clipped, usable, strict=True) if ok], pitch))
    return [next(vectors) if ok else None for ok in usable]


def embed_frames(
    frames: Iterable[tuple[int, Any]],
    samples: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    engine: Literal["onnx", "dlib"] = "onnx",
) -> pl.DataFrame:
    """Embeddings of ``samples`` (track rows of one angle) from decoded ``frames`` (pure but for models).

    Frames must be :func:`appearance_image`'s for appearance (:func:`iter_appearance_images`, as
    detect_track reads them) and RGB arrays for faces (:func:`iter_frames`' ``rgb``); ``engine``
    runs the face ResNet (:func:`face_descriptors`).
    """
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for row in samples.filter(pl.col("angle") == angle).iter_rows(named=True):
        by_frame.setdefault(int(row["frame"]), []).append(row)
    out: list[dict[str, Any]] = []
    for index, image in frames:
        rows = by_frame.get(index)
        if not rows:
            continue
        if params.kind == "appearance":
            boxes = [(row["x1"], row["y1"], row["x2"], row["y2"]) for row in rows]
            for row, vector in zip(rows, appearance_vectors(image, boxes), strict=True):
                if vector is not None:
                    out.append(_row(angle, row, index, "appearance", vector, None))
        else:
            out.extend(_face_rows(image, rows, params, angle, index, engine))
    return pl.DataFrame(out, schema=polars_schema("embeddings"))


def _face_rows(
    image: np.ndarray,
    rows: list[dict[str, Any]],
    params: EmbedParams,
    angle: str,
    index: int,
    engine: Literal["onnx", "dlib"],
) -> list[dict[str, Any]]:
    h, w = image.shape[:2]
    faces: list[tuple[dict[str, Any], tuple[float, float, float, float]]] = []
    for row in rows:
        x1, y1, x2, y2 = _clip_box(row, w, h)
        if x2 - x1 < 8 or y2 - y1 < 8:
            continue
        if not params.detect_in_box:
            faces.append((row, (x1, y1, x2, y2)))
            continue
        found = detect_faces(np.ascontiguousarray(image[y1:y2, x1:x2]), params.face_upsample)
        if found:
            fx1, fy1, fx2, fy2, _ = max(found, key=lambda f: f[4])
            faces.append((row, (x1 + fx1, y1 + fy1, x1 + fx2, y1 + fy2)))
    vectors = face_descriptors(image, [box for _, box in faces], params.face_jitter, engine=engine)
    return [
        _row(angle, row, index, "face", vector, box)
        for (row, box), vector in zip(faces, vectors, strict=True)
    ]


def _row(
    angle: str,
    row: dict[str, Any],
    frame: int,
    kind: str,
    vector: np.ndarray,
    face: tuple[float, float, float, float] | None,
) -> dict[str, Any]:
    fx1, fy1, fx2, fy2 = face if face is not None else (None, None, None, None)
    return {
        "angle": angle,
        "track_id": int(row["track_id"]),
        "frame": frame,
        "kind": kind,
        "vector": vector.astype(np.float32).tolist(),
        "face_x1": fx1,
        "face_y1": fy1,
        "face_x2": fx2,
        "face_y2": fy2,
    }


def embed_video(
    path: str,
    tracks: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    start_s: float = 0.0,
    end_s: float = float("inf"),
    engine: Literal["onnx", "dlib"] = "onnx",
) -> pl.DataFrame:
    """Embeddings of one angle's tracks in ``[start_s, end_s)`` (one chunk): decode once, embed samples.

    Faces are a few samples per shot and episodes have a keyframe at each cut, so their decoding
    seeks over the GOPs that hold no sample (:func:`iter_frames`' ``seek``; the same frames).
    """
    samples = select_samples(_chunk_rows(tracks, angle, start_s, end_s), params)
    faces = params.kind == "face"
    wanted = samples["frame"].to_list()
    frames = (
        iter_frames(path, wanted, start_s=start_s, rgb=True, fast=params.fast_decode, seek=True)
        if faces
        else iter_appearance_images(path, wanted, start_s=start_s, fast=params.fast_decode)
    )
    table = embed_frames(frames, samples, params, angle=angle, engine=engine)
    validate_table("embeddings", table)
    return table


def _chunk_rows(tracks: pl.DataFrame, angle: str, start_s: float, end_s: float) -> pl.DataFrame:
    return tracks.filter(
        (pl.col("angle") == angle) & (pl.col("time_s") >= start_s - 1e-6) & (pl.col("time_s") < end_s - 1e-6)
    )


APPEARANCE_KEY: Final = ("angle", "frame", "x1", "y1", "x2", "y2")
"""A track row finds its detection's vector by its exact box: stitch copies detect_track's boxes unchanged."""


def embed_from_appearance(
    path: str,
    tracks: pl.DataFrame,
    appearance: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    start_s: float = 0.0,
    end_s: float = float("inf"),
) -> tuple[pl.DataFrame, int]:
    """Games: :func:`embed_video`'s table, read from detect_track's appearance parts instead of decoding.

    Returns the table and how many samples had no row in ``appearance`` (a part missing or written by
    older code): only those are decoded, so the table is the same either way.
    """
    samples = select_samples(_chunk_rows(tracks, angle, start_s, end_s), params)
    key = list(APPEARANCE_KEY)
    vectors = appearance.select(*key, "vector").unique(subset=key, keep="first")
    joined = samples.join(vectors, on=key, how="left")
    missing = joined.filter(pl.col("vector").is_null()).drop("vector")
    found = joined.filter(pl.col("vector").list.len() > 0).select(
        "angle",
        "track_id",
        "frame",
        kind=pl.lit("appearance"),
        vector="vector",
        face_x1=pl.lit(None),
        face_y1=pl.lit(None),
        face_x2=pl.lit(None),
        face_y2=pl.lit(None),
    )
    table = found.cast(polars_schema("embeddings"))
    if not missing.is_empty():
        frames = iter_appearance_images(
            path, missing["frame"].to_list(), start_s=start_s, fast=params.fast_decode
        )
        table = pl.concat([table, embed_frames(frames, missing, params, angle=angle)])
    table = table.sort("frame", "track_id")  # embed_video's order: decode order, then samples' order
    validate_table("embeddings", table)
    return table, missing.height


# --- the stage -------------------------------------------------------------------------------------


@task(
    name="embed",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_transient,
    task_run_name="embed-{chunk.angle}-{chunk.index}",
)
def embed_task(ref: RunRef, chunk: Chunk, params: EmbedParams) -> ArtifactRef:
    """One chunk's tracks → its embeddings part (skipped when a previous attempt wrote it)."""
    artifacts = store()
    if artifacts.has_part(ref, "embeddings", chunk.index):
        return artifacts.part_ref(ref, "embeddings", chunk.index)
    tracks = pl.from_arrow(artifacts.read_table(ref, "tracks"))
    assert isinstance(tracks, pl.DataFrame)
    angle, start_s, end_s = chunk.angle, chunk.start_s, chunk.end_s
    if params.kind == "face":  # faces need pixels
        table = embed_video(chunk.path, tracks, params, angle=angle, start_s=start_s, end_s=end_s)
    else:
        appearance = read_appearance(artifacts, ref, chunk)
        table, _ = embed_from_appearance(
            chunk.path, tracks, appearance, params, angle=angle, start_s=start_s, end_s=end_s
        )
    return artifacts.write_part(ref, "embeddings", chunk.index, table)


def read_appearance(artifacts: ArtifactStore, ref: RunRef, chunk: Chunk) -> pl.DataFrame:
    """detect_track's appearance rows that can hold this chunk's track boxes: stitch gives the frames of the
    overlap to the chunk before, so that chunk's part is read too (chunk indices are consecutive
    within an angle)."""
    frames = [
        as_frame(artifacts.read_part(ref, "appearance", index))
        for index in (chunk.index - 1, chunk.index)
        if index >= 0 and artifacts.has_part(ref, "appearance", index)
    ]
    empty = pl.DataFrame(schema=polars_schema("appearance"))
    return pl.concat([empty, *frames]).filter(pl.col("angle") == chunk.angle)


@task(name="embed-collect", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def collect_embeddings_task(ref: RunRef, chunks: list[Chunk]) -> ArtifactRef:
    """Every chunk's embeddings part → the run's embeddings.parquet."""
    artifacts = store()
    parts = (artifacts.read_part(ref, "embeddings", c.index) for c in chunks)
    return artifacts.write_table(ref, "embeddings", parts)
