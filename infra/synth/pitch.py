"""The stadium: a grass pitch with markings, advertising boards and a crowd, drawn by homography.

Each surface is a flat texture in its own plane coordinates, warped into the frame with
the exact camera homography, so markings stay geometrically consistent with the players.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infra.synth.camera import CameraPose
from infra.synth.world import PITCH_LENGTH, PITCH_WIDTH

L, W = PITCH_LENGTH, PITCH_WIDTH
GROUND_X = (-10.0, L + 10.0)
GROUND_Y = (-5.0, W + 5.0)  # the boards stand on the far edges of the ground texture
BOARD_HEIGHT = 0.9
STANDS_X = (-70.0, L + 70.0)
STANDS_DEPTH = 45.0
STANDS_SLOPE = np.deg2rad(32.0)
LINE_WIDTH = 0.12
_LINE = (225, 232, 228)
_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Surface:
    texture: np.ndarray  # BGR
    to_plane: np.ndarray  # texture pixel -> plane coordinates (3, 3)


@dataclass(frozen=True)
class Stadium:
    ground: Surface
    boards: Surface
    stands: Surface


def _grid(ppm: float, x0: float, y0: float) -> np.ndarray:
    return np.array([[1 / ppm, 0.0, x0], [0.0, 1 / ppm, y0], [0.0, 0.0, 1.0]])


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, cells).astype(np.float32)
    return np.asarray(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC))


def _grass(rng: np.random.Generator, ppm: float) -> np.ndarray:
    w = int((GROUND_X[1] - GROUND_X[0]) * ppm)
    h = int((GROUND_Y[1] - GROUND_Y[0]) * ppm)
    x_world = GROUND_X[0] + (np.arange(w) + 0.5) / ppm
    stripe = np.where((np.floor(x_world / (L / 18)) % 2) == 0, 1.0, 0.9).astype(np.float32)
    shade = stripe[None, :] * (1.0 + 0.05 * _noise(rng, (h, w), (12, 18)))
    shade += 0.025 * rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    base = np.array([48, 128, 58], dtype=np.float32)
    return np.clip(shade[:, :, None] * base, 0, 255).astype(np.uint8)


def _markings(img: np.ndarray, ppm: float) -> None:
    def pt(x: float, y: float) -> tuple[int, int]:
        return (round((x - GROUND_X[0]) * ppm * _ONE), round((y - GROUND_Y[0]) * ppm * _ONE))

    thick = max(1, round(LINE_WIDTH * ppm))

    def line(a: tuple[float, float], b: tuple[float, float]) -> None:
        cv2.line(img, pt(*a), pt(*b), _LINE, thick, cv2.LINE_AA, _SHIFT)

    def arc(c: tuple[float, float], r: float, a0: float, a1: float) -> None:
        axes = (round(r * ppm * _ONE), round(r * ppm * _ONE))
        cv2.ellipse(img, pt(*c), axes, 0, a0, a1, _LINE, thick, cv2.LINE_AA, _SHIFT)

    for a, b in (
        ((0, 0), (L, 0)),
        ((0, W), (L, W)),
        ((0, 0), (0, W)),
        ((L, 0), (L, W)),
        ((L / 2, 0), (L / 2, W)),
    ):
        line(a, b)
    arc((L / 2, W / 2), 9.15, 0, 360)
    for side in (0.0, L):
        s = 1.0 if side == 0 else -1.0
        for depth, half in ((16.5, 20.16), (5.5, 9.16)):
            line((side, W / 2 - half), (side + s * depth, W / 2 - half))
            line((side, W / 2 + half), (side + s * depth, W / 2 + half))
            line((side + s * depth, W / 2 - half), (side + s * depth, W / 2 + half))
        spot = (side + s * 11.0, W / 2)
        cv2.circle(img, pt(*spot), round(0.22 * ppm * _ONE), _LINE, -1, cv2.LINE_AA, _SHIFT)
        arc(spot, 9.15, -53.13 if s > 0 else 126.87, 53.13 if s > 0 else 233.13)
        for y, start in ((0.0, 0 if s > 0 else 90), (W, 270 if s > 0 else 180)):
            arc((side, y), 1.0, start, start + 90)
    cv2.circle(img, pt(L / 2, W / 2), round(0.22 * ppm * _ONE), _LINE, -1, cv2.LINE_AA, _SHIFT)


def _boards(rng: np.random.Generator) -> np.ndarray:
    ppm = 40.0
    w = int((GROUND_X[1] - GROUND_X[0]) * ppm)
    h = int(BOARD_HEIGHT * ppm)
    img = np.zeros((h, w, 3), np.uint8)
    palette = [(160, 40, 20), (20, 20, 180), (240, 240, 240), (20, 120, 240), (30, 30, 30), (40, 160, 40)]
    words = ["FILMROOM", "SYNTH FC", "GOAL", "MATCHDAY", "PLAY ON"]
    panel = int(6 * ppm)
    for k, x in enumerate(range(0, w, panel)):
        bg = palette[int(rng.integers(len(palette)))]
        fg = (255, 255, 255) if sum(bg) < 400 else (30, 30, 30)
        cv2.rectangle(img, (x, 0), (x + panel - 2, h - 1), bg, -1)
        cv2.putText(
            img, words[k % len(words)], (x + 12, int(h * 0.75)), cv2.FONT_HERSHEY_DUPLEX, h / 40, fg, 2
        )
    return img


def _crowd(rng: np.random.Generator, ppm: float) -> np.ndarray:
    w = int((STANDS_X[1] - STANDS_X[0]) * ppm)
    h = int(STANDS_DEPTH * ppm)
    base = rng.integers(25, 70, (h // 3 + 1, w // 3 + 1, 1)).astype(np.uint8).repeat(3, axis=2)
    dots = rng.integers(0, 255, (h // 3 + 1, w // 3 + 1, 3)).astype(np.uint8)
    people = rng.random((h // 3 + 1, w // 3 + 1)) < 0.7
    base[people] = (0.55 * dots[people] + 0.25 * 90).astype(np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_NEAREST)
    rows = (np.arange(h) % max(2, int(0.8 * ppm))) == 0  # seat-row steps read as horizontal banding
    img[rows] = (img[rows] * 0.5).astype(np.uint8)
    return np.asarray(cv2.GaussianBlur(img, (3, 3), 0.8))


def build_stadium(seed: int, width: int) -> Stadium:
    """Textures for one match; texel density follows the output width to keep small renders fast."""
    rng = np.random.default_rng([seed, 5])
    ppm = float(np.clip(24.0 * width / 1280, 8.0, 32.0))
    grass = _grass(rng, ppm)
    _markings(grass, ppm)
    crowd_ppm = float(np.clip(10.0 * width / 1280, 4.0, 14.0))
    return Stadium(
        ground=Surface(grass, _grid(ppm, GROUND_X[0], GROUND_Y[0])),
        boards=Surface(_boards(rng), _grid(40.0, GROUND_X[0], 0.0)),
        stands=Surface(_crowd(rng, crowd_ppm), _grid(crowd_ppm, STANDS_X[0], 0.0)),
    )


def _far_side(pose: CameraPose) -> float:
    """+1 when the camera looks towards larger world y (stands behind y = W), else -1."""
    return 1.0 if pose.center[1] < W / 2 else -1.0


def _warp(surface: Surface, homography: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    m = homography @ surface.to_plane
    img = cv2.warpPerspective(
        surface.texture, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    ones = np.full(surface.texture.shape[:2], 255, np.uint8)
    mask = cv2.warpPerspective(ones, m, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return img, mask


def _in_front(homography: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """Pixels whose ray meets the plane in front of the camera, or None when all of them do."""
    inv = np.linalg.inv(homography)
    w, h = size
    u, v = np.meshgrid([0, w - 1], [0, h - 1])
    ref = inv[2] @ np.array([w / 2, h - 1, 1.0])
    corners = inv[2, 0] * u + inv[2, 1] * v + inv[2, 2]
    if np.all(np.sign(corners) == np.sign(ref)):
        return None
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.asarray((inv[2, 0] * uu + inv[2, 1] * vv + inv[2, 2]) * np.sign(ref) > 0)


def _paste(frame: np.ndarray, surface: Surface, homography: np.ndarray) -> None:
    size = (frame.shape[1], frame.shape[0])
    img, mask = _warp(surface, homography, size)
    keep = mask > 0
    front = _in_front(homography, size)
    if front is not None:
        keep &= front
    frame[keep] = img[keep]


def render_background(stadium: Stadium, pose: CameraPose) -> np.ndarray:
    """Crowd, then grass, then boards, each hiding what is behind it."""
    side = _far_side(pose)
    frame = np.zeros((pose.height, pose.width, 3), np.uint8)
    edge = W + 5.0 if side > 0 else -5.0
    stands_origin = np.array([0.0, edge + side * 1.0, BOARD_HEIGHT + 0.3])
    rise = np.array([0.0, side * np.cos(STANDS_SLOPE), np.sin(STANDS_SLOPE)])
    _paste(frame, stadium.stands, pose.plane_homography(stands_origin, np.array([1.0, 0, 0]), rise))
    _paste(
        frame,
        stadium.ground,
        pose.plane_homography(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
    )
    board_origin = np.array([0.0, edge, BOARD_HEIGHT])
    _paste(
        frame,
        stadium.boards,
        pose.plane_homography(board_origin, np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
    )
    return frame


def draw_goals(frame: np.ndarray, pose: CameraPose) -> None:
    """Posts and crossbar in white, the net frame in grey."""
    for x, back in ((0.0, -2.0), (L, L + 2.0)):
        y0, y1, top = W / 2 - 3.66, W / 2 + 3.66, 2.44
        front = np.array([[x, y0, 0], [x, y0, top], [x, y1, top], [x, y1, 0]])
        rear = np.array([[back, y0, 0], [back, y0, top * 0.8], [back, y1, top * 0.8], [back, y1, 0]])
        for pts, color, width_m in ((rear, (200, 200, 200), 0.04), (front, (245, 245, 245), 0.12)):
            uv, depth = pose.project(pts)
            if np.any(depth <= 0.5):
                continue
            thick = max(1, round(width_m * pose.focal_px / float(depth.mean())))
            cv2.polylines(
                frame, [np.round(uv * _ONE).astype(np.int32)], False, color, thick, cv2.LINE_AA, _SHIFT
            )
