"""Drawing people: human-shaped figures projected through the camera, with exact per-person masks.

Each figure is built from 3D joints (feet on the ground, head at the person's height) that the
pinhole camera projects, so perspective, zoom and pan shape people exactly as they shape the pitch.
Limbs swing with the running phase. Every figure is drawn into its own small canvas with a mask;
figures are composited far-to-near, and an owner map records which person each pixel shows, which
makes ``visible_fraction`` exact (visible pixels / drawn pixels, including pixels outside the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infra.synth.camera import CameraPose
from infra.synth.people import Person, Team
from infra.synth.spec import BGR

REFEREE_KIT: BGR = (25, 25, 25)
REFEREE_TRIM: BGR = (40, 215, 240)
# Referees' change shirts, tried in this order when black clashes: yellow, red, cyan. They are
# 92+ CIE76 units apart, so one team shirt can rule out at most one of them.
REFEREE_ALTERNATIVES: tuple[BGR, ...] = ((40, 215, 240), (40, 30, 210), (230, 200, 60))
# Two shirts closer than this (CIE76 delta E) count as a clash. Black players (30,30,30) sit 2 from
# the black referee; navy (35), the nearest other named colour, is told apart from him by the teams
# step (q-sparse-static), so it keeps the black referee.
REFEREE_CLASH_DELTA_E = 30.0
KEEPER_KITS: tuple[BGR, ...] = ((60, 200, 120), (200, 90, 200))
SOCKS_DARK: BGR = (35, 35, 35)
BOOTS: BGR = (20, 20, 20)


@dataclass(frozen=True)
class Kit:
    shirt: BGR
    shorts: BGR
    socks: BGR
    number: BGR


def _lab(color: BGR) -> np.ndarray:
    """CIE L*a*b* of one BGR colour (L in 0..100, a and b centred on 0)."""
    pixel = np.array([[color]], dtype=np.uint8)
    lab = cv2.cvtColor(pixel, cv2.COLOR_BGR2LAB)[0, 0].astype(float)
    return np.asarray(lab * [100 / 255, 1, 1] - [0, 128, 128])


def referee_shirt(home: BGR, away: BGR) -> BGR:
    """The referee's shirt: black, unless it clashes with a shirt on the pitch (as the laws require).

    A clash is a team's or a goalkeeper's shirt within ``REFEREE_CLASH_DELTA_E`` of it; the referee
    then wears the first of ``REFEREE_ALTERNATIVES`` that clashes with none (the farthest one if all
    did, which two teams cannot cause). Default kits keep the black referee, so those clips render
    as they always did.
    """
    shirts = [_lab(c) for c in (home, away, *KEEPER_KITS)]

    def nearest(candidate: BGR) -> float:
        lab = _lab(candidate)
        return min(float(np.linalg.norm(lab - s)) for s in shirts)

    candidates = (REFEREE_KIT, *REFEREE_ALTERNATIVES)
    for candidate in candidates:
        if nearest(candidate) >= REFEREE_CLASH_DELTA_E:
            return candidate
    return max(candidates, key=nearest)


def kit_for(person: Person, home: BGR, away: BGR) -> Kit:
    if person.team is Team.REFEREE:
        shirt = referee_shirt(home, away)
        if shirt == REFEREE_KIT:
            return Kit(REFEREE_KIT, REFEREE_KIT, REFEREE_KIT, REFEREE_TRIM)
        # A change shirt with the referee's black shorts and socks, and a black number.
        return Kit(shirt, REFEREE_KIT, REFEREE_KIT, REFEREE_KIT)
    shirt = home if person.team is Team.HOME else away
    if person.goalkeeper:
        shirt = KEEPER_KITS[0] if person.team is Team.HOME else KEEPER_KITS[1]
    light = sum(shirt) / 3 > 140
    number: BGR = (20, 20, 20) if light else (245, 245, 245)
    shorts: BGR = (240, 240, 240) if not light and person.team is Team.HOME else (30, 30, 30)
    return Kit(shirt, shorts, shirt, number)


@dataclass(frozen=True)
class DrawnFigure:
    person_index: int
    depth: float
    x0: int  # canvas origin in frame pixels (may be negative)
    y0: int
    image: np.ndarray  # (h, w, 3) BGR
    mask: np.ndarray  # (h, w) bool
    pixels: int  # drawn pixels, inside and outside the frame


def _joints(
    person: Person, pos: np.ndarray, vel: np.ndarray, phase: float, side: np.ndarray
) -> dict[str, np.ndarray]:
    """3D joint positions (metres) of a running person at ground position ``pos``."""
    h = person.height_m
    speed = float(np.linalg.norm(vel))
    forward = vel / speed if speed > 0.2 else np.array([0.0, 1.0])
    fwd = np.array([forward[0], forward[1], 0.0])
    swing = np.sin(2 * np.pi * phase) * min(1.0, speed / 6.0) * 0.38 * h / 1.8
    lift = max(0.0, np.cos(2 * np.pi * phase)) * min(1.0, speed / 6.0) * 0.12
    base = np.array([pos[0], pos[1], 0.0])
    half_hip = 0.11 * person.build
    half_sh = 0.21 * person.build

    def at(z: float, lateral: float = 0.0, ahead: float = 0.0) -> np.ndarray:
        return np.asarray(base + side * lateral + fwd * ahead + np.array([0.0, 0.0, z]))

    return {
        "head": at(h - 0.11),
        "neck": at(h - 0.24),
        "sh_l": at(h - 0.31, -half_sh),
        "sh_r": at(h - 0.31, half_sh),
        "hip_l": at(0.52 * h, -half_hip),
        "hip_r": at(0.52 * h, half_hip),
        "knee_l": at(0.28 * h + lift * (swing > 0), -half_hip, swing * 0.5),
        "knee_r": at(0.28 * h + lift * (swing < 0), half_hip, -swing * 0.5),
        "foot_l": at(0.03 + lift * (swing > 0), -half_hip * 0.9, swing),
        "foot_r": at(0.03 + lift * (swing < 0), half_hip * 0.9, -swing),
        "hand_l": at(0.5 * h, -half_sh - 0.05, -swing * 0.6),
        "hand_r": at(0.5 * h, half_sh + 0.05, swing * 0.6),
        "elbow_l": at(0.66 * h, -half_sh - 0.05, -swing * 0.3),
        "elbow_r": at(0.66 * h, half_sh + 0.05, swing * 0.3),
    }


def draw_figure(
    person: Person, index: int, pos: np.ndarray, vel: np.ndarray, phase: float, kit: Kit, pose: CameraPose
) -> DrawnFigure | None:
    """One person drawn into a canvas around its projection; None when behind the camera or tiny."""
    side = pose.right.copy()
    side[2] = 0.0
    side /= max(1e-9, float(np.linalg.norm(side)))
    joints = _joints(person, pos, vel, phase, side)
    names = list(joints)
    uv, depth = pose.project(np.stack([joints[n] for n in names]))
    if np.any(depth <= 0.5):
        return None
    px = {n: uv[i] for i, n in enumerate(names)}
    scale = pose.focal_px / float(depth.mean())  # pixels per metre at the person
    if scale * person.height_m < 8:
        return None
    pad = int(np.ceil(0.25 * scale)) + 2
    x0 = int(np.floor(uv[:, 0].min())) - pad
    y0 = int(np.floor(uv[:, 1].min())) - pad
    x1 = int(np.ceil(uv[:, 0].max())) + pad
    y1 = int(np.ceil(uv[:, 1].max())) + pad
    if x1 <= 0 or y1 <= 0 or x0 >= pose.width or y0 >= pose.height:
        return None  # wholly out of shot: it could not contribute a visible pixel
    image = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shift = 4  # sub-pixel drawing precision for cv2

    def p(name: str) -> tuple[int, int]:
        x, y = px[name]
        return (round((x - x0) * (1 << shift)), round((y - y0) * (1 << shift)))

    def limb(a: str, b: str, color: BGR, width_m: float) -> None:
        t = max(1, round(width_m * scale))
        for canvas, c in ((image, color), (mask, 255)):
            cv2.line(canvas, p(a), p(b), c, t, cv2.LINE_AA, shift)

    def poly(points: list[str], color: BGR) -> None:
        pts = np.array([p(n) for n in points], np.int32)
        for canvas, c in ((image, color), (mask, 255)):
            cv2.fillPoly(canvas, [pts], c, cv2.LINE_AA, shift)

    skin = person.skin
    # Far leg first, then torso, then near limbs: a crude but consistent self-occlusion.
    for leg in ("l", "r"):
        limb(f"hip_{leg}", f"knee_{leg}", skin, 0.15)
        limb(f"knee_{leg}", f"foot_{leg}", kit.socks, 0.12)
        limb(f"foot_{leg}", f"foot_{leg}", BOOTS, 0.14)
    hip_mid = ["hip_l", "hip_r"]
    poly(["sh_l", "sh_r", *reversed(hip_mid)], kit.shirt)
    shorts_l = (joints["hip_l"] + joints["knee_l"]) / 2
    shorts_r = (joints["hip_r"] + joints["knee_r"]) / 2
    (sl, sr), _ = pose.project(np.stack([shorts_l, shorts_r]))
    px["shorts_l"], px["shorts_r"] = sl, sr
    poly(["hip_l", "hip_r", "shorts_r", "shorts_l"], kit.shorts)
    for arm in ("l", "r"):
        limb(f"sh_{arm}", f"elbow_{arm}", kit.shirt, 0.11)
        limb(f"elbow_{arm}", f"hand_{arm}", skin, 0.08)
    limb("neck", "head", skin, 0.1)
    head = px["head"]
    radius = max(1, round(0.12 * scale * (1 << shift)))
    centre = (round((head[0] - x0) * (1 << shift)), round((head[1] - y0) * (1 << shift)))
    for canvas, c in ((image, skin), (mask, 255)):
        cv2.circle(canvas, centre, radius, c, -1, cv2.LINE_AA, shift)
    hair_centre = (centre[0], centre[1] - radius // 3)
    cv2.ellipse(
        image, hair_centre, (radius, radius * 2 // 3), 0, 180, 360, person.hair, -1, cv2.LINE_AA, shift
    )
    _number(image, person, kit, px, x0, y0, scale)
    solid = mask > 127
    return DrawnFigure(index, float(depth.mean()), x0, y0, image, solid, int(solid.sum()))


def _number(
    image: np.ndarray, person: Person, kit: Kit, px: dict[str, np.ndarray], x0: int, y0: int, scale: float
) -> None:
    if person.jersey_number <= 0 or scale < 25:
        return
    centre = (px["sh_l"] + px["sh_r"] + px["hip_l"] + px["hip_r"]) / 4
    text = str(person.jersey_number)
    font_scale = 0.011 * scale
    thickness = max(1, round(0.0025 * scale))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    org = (round(centre[0] - x0 - tw / 2), round(centre[1] - y0 + th / 2))
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, kit.number, thickness, cv2.LINE_AA)


def draw_shadow(frame: np.ndarray, pose: CameraPose, pos: np.ndarray) -> None:
    """A soft dark ellipse on the grass under a person's feet."""
    ring = np.array(
        [[pos[0] + 0.45 * np.cos(a), pos[1] + 0.25 * np.sin(a), 0.0] for a in np.linspace(0, 2 * np.pi, 12)]
    )
    uv, depth = pose.project(ring)
    if np.any(depth <= 0.5):
        return
    pts = np.round(uv).astype(np.int32)
    # Blend only the shadow's bounding box: a full-frame blend per person dominated render time.
    x0, y0 = max(0, int(pts[:, 0].min()) - 1), max(0, int(pts[:, 1].min()) - 1)
    x1, y1 = min(frame.shape[1], int(pts[:, 0].max()) + 2), min(frame.shape[0], int(pts[:, 1].max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    region = frame[y0:y1, x0:x1]
    overlay = region.copy()
    cv2.fillPoly(overlay, [pts - [x0, y0]], (20, 50, 20), cv2.LINE_AA)
    cv2.addWeighted(overlay, 0.35, region, 0.65, 0, dst=region)


def composite(frame: np.ndarray, figures: list[DrawnFigure]) -> np.ndarray:
    """Paint figures far-to-near; return the owner map (-1 where no person is visible)."""
    h, w = frame.shape[:2]
    owner = np.full((h, w), -1, np.int32)
    for fig in sorted(figures, key=lambda f: -f.depth):
        fh, fw = fig.mask.shape
        fx0, fy0 = max(0, fig.x0), max(0, fig.y0)
        fx1, fy1 = min(w, fig.x0 + fw), min(h, fig.y0 + fh)
        if fx0 >= fx1 or fy0 >= fy1:
            continue
        sub_mask = fig.mask[fy0 - fig.y0 : fy1 - fig.y0, fx0 - fig.x0 : fx1 - fig.x0]
        sub_img = fig.image[fy0 - fig.y0 : fy1 - fig.y0, fx0 - fig.x0 : fx1 - fig.x0]
        region = frame[fy0:fy1, fx0:fx1]
        region[sub_mask] = sub_img[sub_mask]
        owner[fy0:fy1, fx0:fx1][sub_mask] = fig.person_index
    return owner


def tight_box(fig: DrawnFigure, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The figure's drawn pixels' bounding box, clipped to the frame (None when fully outside)."""
    ys, xs = np.nonzero(fig.mask)
    if xs.size == 0:
        return None
    x1 = max(0.0, float(xs.min() + fig.x0))
    y1 = max(0.0, float(ys.min() + fig.y0))
    x2 = min(float(width), float(xs.max() + 1 + fig.x0))
    y2 = min(float(height), float(ys.max() + 1 + fig.y0))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def draw_ball(frame: np.ndarray, pose: CameraPose, ball: np.ndarray) -> None:
    uv, depth = pose.project(np.array([ball, [ball[0], ball[1], 0.0]]))
    if depth[0] <= 0.5:
        return
    radius = max(1, round(0.11 * pose.focal_px / depth[0]))
    cv2.circle(frame, tuple(np.round(uv[1]).astype(int)), radius, (20, 50, 20), -1, cv2.LINE_AA)
    cv2.circle(frame, tuple(np.round(uv[0]).astype(int)), radius, (245, 245, 245), -1, cv2.LINE_AA)
