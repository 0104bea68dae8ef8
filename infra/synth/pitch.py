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
_BEYOND = (38, 36, 40)
_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Surface:
    texture: np.ndarray  # BGRA, alpha 255 inside the surface
    to_plane: np.ndarray  # texture pixel -> plane coordinates (3, 3)


@dataclass(frozen=True)
class Stadium:
    ground: Surface
    boards: Surface  # along the far touchline
    end_boards: Surface  # behind each goal line
    stands: Surface


@dataclass(frozen=True)
class _Plane:
    """World points origin + u * axis_u + v * axis_v, for (u, v) in a surface's plane coordinates."""

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray

    def homography(self, pose: CameraPose) -> np.ndarray:
        return pose.plane_homography(self.origin, self.axis_u, self.axis_v)

    def points(self, u: np.ndarray, v: float) -> np.ndarray:
        return np.asarray(self.origin + u[:, None] * self.axis_u + v * self.axis_v)


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
    cells = (h // 3 + 1, w // 3 + 1)
    shirts = np.array(
        [(40, 40, 170), (170, 110, 40), (200, 200, 200), (40, 40, 40), (60, 150, 200), (90, 90, 90)]
    )
    dots = shirts[rng.integers(len(shirts), size=cells)] * rng.uniform(0.5, 0.9, (*cells, 1))
    people = rng.random(cells) < 0.75
    base[people] = dots[people].astype(np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_NEAREST)
    rows = (np.arange(h) % max(2, int(0.8 * ppm))) == 0  # seat-row steps read as horizontal banding
    img[rows] = (img[rows] * 0.5).astype(np.uint8)
    return np.asarray(cv2.GaussianBlur(img, (3, 3), 0.8))


def _bgra(img: np.ndarray) -> np.ndarray:
    # Four channels warp faster than three, and alpha tells where a surface ends.
    return np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))


def build_stadium(seed: int, width: int) -> Stadium:
    """Textures for one match; texel density follows the output width to keep small renders fast."""
    rng = np.random.default_rng([seed, 5])
    ppm = float(np.clip(24.0 * width / 1280, 8.0, 32.0))
    grass = _grass(rng, ppm)
    _markings(grass, ppm)
    crowd_ppm = float(np.clip(10.0 * width / 1280, 4.0, 14.0))
    boards = _bgra(_boards(rng))
    end_width = int((GROUND_Y[1] - GROUND_Y[0]) * 40.0)
    return Stadium(
        ground=Surface(_bgra(grass), _grid(ppm, GROUND_X[0], GROUND_Y[0])),
        boards=Surface(boards, _grid(40.0, GROUND_X[0], 0.0)),
        end_boards=Surface(np.ascontiguousarray(boards[:, -end_width:]), _grid(40.0, GROUND_Y[0], 0.0)),
        stands=Surface(_bgra(_crowd(rng, crowd_ppm)), _grid(crowd_ppm, STANDS_X[0], 0.0)),
    )


def _far_side(pose: CameraPose) -> float:
    """+1 when the camera looks towards larger world y (stands behind y = W), else -1."""
    return 1.0 if pose.center[1] < W / 2 else -1.0


Box = tuple[int, int, int, int]  # image rows [r0, r1) and columns [c0, c1)


def _warp(surface: Surface, homography: np.ndarray, box: Box) -> np.ndarray:
    """BGRA warp of a surface into an image box; alpha 0 where it does not reach."""
    r0, r1, c0, c1 = box
    shift = np.array([[1.0, 0.0, -c0], [0.0, 1.0, -r0], [0.0, 0.0, 1.0]])
    m = shift @ homography @ surface.to_plane
    return np.asarray(cv2.warpPerspective(surface.texture, m, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR))


def _in_front(homography: np.ndarray, box: Box) -> np.ndarray | None:
    """Pixels of ``box`` whose ray meets the plane in front of the camera, or None when all do.

    A homography cannot tell in front from behind: without this, rays pointing away from a
    plane would show a mirrored copy of it.
    """
    r0, r1, c0, c1 = box
    inv = np.linalg.inv(homography)
    # The third row of the inverse gives 1 / camera depth (up to a positive factor) of the point
    # where a pixel's ray meets the plane: positive in front of the camera.
    u, v = np.meshgrid([c0, c1 - 1], [r0, r1 - 1])
    if np.all(inv[2, 0] * u + inv[2, 1] * v + inv[2, 2] > 0):
        return None
    uu, vv = np.meshgrid(np.arange(c0, c1, dtype=np.float32), np.arange(r0, r1, dtype=np.float32))
    return np.asarray(inv[2, 0] * uu + inv[2, 1] * vv + inv[2, 2] > 0)


def _board(at: np.ndarray, outward: np.ndarray, u_range: tuple[float, float]) -> _Plane:
    """A vertical board facing the pitch, its text reading left to right from the pitch."""
    right = np.array([outward[1], -outward[0], 0.0])
    # u runs along `right`; shift the origin so u_range still spans the same stretch of the line.
    flip = float(right.sum()) < 0
    origin = at + (right * -(u_range[0] + u_range[1]) if flip else np.zeros(3))
    return _Plane(origin + np.array([0.0, 0.0, BOARD_HEIGHT]), right, np.array([0.0, 0.0, -1.0]))


def _planes(pose: CameraPose) -> tuple[list[_Plane], list[tuple[_Plane, bool]]]:
    """Stands (far side, then both ends) and boards (far side, then ends; True = end boards)."""
    side = _far_side(pose)
    edge = W + 5.0 if side > 0 else -5.0
    c, s = np.cos(STANDS_SLOPE), np.sin(STANDS_SLOPE)
    stands = [_Plane(np.array([0.0, edge, BOARD_HEIGHT]), np.eye(3)[0], np.array([0.0, side * c, s]))]
    boards = [(_board(np.array([0.0, edge, 0.0]), np.array([0.0, side]), GROUND_X), False)]
    for end, out in ((GROUND_X[1], 1.0), (GROUND_X[0], -1.0)):
        stands.append(_Plane(np.array([end, 0.0, BOARD_HEIGHT]), np.eye(3)[1], np.array([out * c, 0.0, s])))
        boards.append((_board(np.array([end, 0.0, 0.0]), np.array([out, 0.0]), GROUND_Y), True))
    return stands, boards


def _extent(
    pose: CameraPose, plane: _Plane, u_range: tuple[float, float], v_range: tuple[float, float]
) -> Box | None:
    """The image box a finite plane can cover, or None when it is out of shot."""
    u = np.linspace(*u_range, 24)
    pts = np.concatenate([plane.points(u, v) for v in np.linspace(*v_range, 4)])
    uv, depth = pose.project(pts)
    uv = uv[depth > 0.5]
    if not len(uv):
        return None
    r0, c0 = (
        int(np.clip(np.floor(x) - 2, 0, n))
        for x, n in ((uv[:, 1].min(), pose.height), (uv[:, 0].min(), pose.width))
    )
    r1, c1 = (
        int(np.clip(np.ceil(x) + 3, 0, n))
        for x, n in ((uv[:, 1].max(), pose.height), (uv[:, 0].max(), pose.width))
    )
    return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


def _overlay(
    frame: np.ndarray, surface: Surface, h: np.ndarray, box: Box, free: np.ndarray | None
) -> np.ndarray:
    """Paint a surface into ``box`` where it reaches (and where ``free``); return what was painted."""
    warped = _warp(surface, h, box)
    painted = warped[:, :, 3] >= 128
    front = _in_front(h, box)
    if front is not None:
        painted &= front
    if free is not None:
        painted &= free
    r0, r1, c0, c1 = box
    np.copyto(frame[r0:r1, c0:c1], warped[:, :, :3], where=painted[:, :, None])
    return painted


def render_background(stadium: Stadium, pose: CameraPose) -> np.ndarray:
    """Grass first, then crowds wherever the grass does not reach, then the boards on top."""
    full: Box = (0, pose.height, 0, pose.width)
    ground_h = pose.plane_homography(np.zeros(3), np.eye(3)[0], np.eye(3)[1])
    ground = _warp(stadium.ground, ground_h, full)
    frame = np.asarray(cv2.cvtColor(ground, cv2.COLOR_BGRA2BGR))
    cover = ground[:, :, 3] >= 128
    front = _in_front(ground_h, full)
    if front is not None:
        cover &= front
    stands, boards = _planes(pose)
    for plane, u_range in zip(stands, (STANDS_X, STANDS_X, STANDS_X), strict=True):
        open_rows = np.flatnonzero(~cover.all(axis=1))
        extent = _extent(pose, plane, u_range, (0.0, STANDS_DEPTH))
        if not open_rows.size or extent is None:
            continue
        box = (
            max(extent[0], int(open_rows[0])),
            min(extent[1], int(open_rows[-1]) + 1),
            extent[2],
            extent[3],
        )
        if box[1] <= box[0]:
            continue
        free = ~cover[box[0] : box[1], box[2] : box[3]]
        cover[box[0] : box[1], box[2] : box[3]] |= _overlay(
            frame, stadium.stands, plane.homography(pose), box, free
        )
    frame[~cover] = _BEYOND  # above the top of a stand, or anything else no surface reaches
    for plane, end in boards:
        band = _extent(pose, plane, GROUND_Y if end else GROUND_X, (0.0, BOARD_HEIGHT))
        if band is not None:
            _overlay(frame, stadium.end_boards if end else stadium.boards, plane.homography(pose), band, None)
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
