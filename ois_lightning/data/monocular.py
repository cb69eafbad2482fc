"""Monocular depth cues for the layered scenes: what a network can read depth from in one image, as from a photo.

The occlusion-only scenes (:mod:`.layered`, ``cues=()``) put look-alike objects at random depth levels, so
occlusion is the only depth cue in the image. Each cue here is a named setting that adds one of the cues real
images carry (the ones monocular depth networks such as Depth Anything learn from):

- ``ground``: a ground plane seen by a pinhole camera (disparity linear in the image row below the horizon) that
  meets a fronto-parallel back wall; every object stands on the ground, so an object whose base is lower in the
  frame is nearer, and its disparity is the ground's at its base (ground contact).
- ``perspective``: apparent size and texture period proportional to disparity (objects, wall, and the ground
  texture laid out in ground coordinates, so its stripes converge and shrink towards the horizon).
- ``haze``: colour fades towards a haze colour with distance (aerial perspective: less contrast far away).
- ``shading``: each object is a lit dome (Lambertian shading from the upper left, disparity bulging with it) and,
  on the ground, casts a soft contact shadow at its base.

Look-alikes stay look-alikes: one shape family, one texture family and one hue for all objects of a scene.

Scenes with cues have fewer, larger objects than the occlusion-only ones (CUE_OBJECTS, CUE_RADIUS, CUE_LEVELS): at
the miniature's 112 px, an object of radius 15 px reaches 90% IoU only with sub-pixel boundaries, so the click
budget measured the pixel grid, not the model (docs/mini_paper.md). These sizes were chosen from Full's per-object
IoU by object size alone, before any ablation row was trained on these scenes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

CUES = ("ground", "perspective", "haze", "shading")
PRESETS = {"occlusion": (), "monocular": CUES}  # scene kinds by name: occlusion only, every cue
CUE_OBJECTS = (2, 4)  # objects per scene
CUE_LEVELS = (0.55, 1.0)  # object disparity levels (the lower half of the frame on the ground plane)
CUE_RADIUS = (0.2, 0.25)  # mean object radius as a fraction of the size, at disparity MID_DISPARITY
MID_DISPARITY = 0.775  # the middle of CUE_LEVELS: perspective scales size and period by d / MID_DISPARITY
WALL_ROW = (0.22, 0.38)  # where the ground meets the back wall, fraction of the height
WALL_DISPARITY = (0.15, 0.25)
HAZE = (0.35, 0.6)  # haze weight at disparity 0 (it falls linearly to 0 at disparity 1)
HAZE_RGB = np.array([0.78, 0.82, 0.86], np.float32)
LIGHT = np.array([-0.45, -0.6, 0.66], np.float32) / np.linalg.norm([-0.45, -0.6, 0.66])  # x, y (down), z
BULGE = 0.04  # a dome's disparity rises by this fraction of its level at its centre


@dataclass(frozen=True)
class Look:
    """A scene's shared appearance: stripe period and angle, hue, saturation, brightness, noise weight."""

    period: float
    angle: float
    hue: float
    saturation: float
    value: float
    noise: float


class Painter(Protocol):
    """What the cues take from the scene generator (:class:`.layered.LayeredScenes`): its settings, pixel grid and
    the shape, texture and layout drawing it shares with the occlusion-only scenes."""

    size: int
    cues: tuple[str, ...]
    yy: np.ndarray
    xx: np.ndarray
    hue_jitter: float
    background_hue_offset: tuple[float, float]

    def _levels(self, rng: np.random.Generator, n: int, span: tuple[float, float]) -> np.ndarray: ...
    def _centers(self, rng: np.random.Generator, n: int) -> list[tuple[float, float]]: ...
    def _shape(self, rng: np.random.Generator, center: tuple[float, float], r: float) -> np.ndarray: ...
    def _plane(self, rng: np.random.Generator, level: float, center: tuple[float, float]) -> np.ndarray: ...
    def _background_plane(self, rng: np.random.Generator) -> np.ndarray: ...
    def _paint(self, rng: np.random.Generator, look: Look, hue: float, period: float, angle: float,
               center: tuple[float, float]) -> np.ndarray: ...


def resolve_cues(cues: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A preset name (``occlusion``, ``monocular``) or a list of cue names -> the cue names in canonical order;
    an unknown name raises ValueError naming it and the known ones."""
    if isinstance(cues, str):
        if cues not in PRESETS:
            raise ValueError(f"unknown scene preset {cues!r} (expected one of {sorted(PRESETS)} or a list of {CUES})")
        return PRESETS[cues]
    unknown = [c for c in cues if c not in CUES]
    if unknown:
        raise ValueError(f"unknown depth cue(s) {unknown} (expected some of {list(CUES)})")
    return tuple(c for c in CUES if c in cues)


def scene_with_cues(
    ds: Painter, rng: np.random.Generator, look: Look, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene with ``ds.cues`` -> (image H,W,3 uint8, label H,W int16 with -1 background, disparity H,W in
    (0, 1], 1 = nearest pixel)."""
    s, cues = ds.size, ds.cues
    yy, xx = ds.yy, ds.xx
    hue_offset = rng.uniform(*ds.background_hue_offset) * rng.choice((-1.0, 1.0))
    if "ground" in cues:
        wall_row, wall_d = rng.uniform(*WALL_ROW) * s, rng.uniform(*WALL_DISPARITY)
        slope = (1.0 - wall_d) / (s - 1 - wall_row)  # disparity per row below the horizon (pinhole, flat ground)
        horizon = wall_row - wall_d / slope
        disparity = np.where(yy < wall_row, wall_d, slope * (yy - horizon)).astype(np.float32)
        hsv = _ground_and_wall(ds, rng, look, hue_offset, wall_row, wall_d, horizon, "perspective" in cues)
    else:
        slope = horizon = 0.0  # no ground
        disparity = ds._background_plane(rng) + 0.05  # the occlusion-only scenes' background plane, off zero
        hsv = ds._paint(rng, look, hue=look.hue + hue_offset, period=look.period * rng.uniform(1.5, 2.5),
                        angle=rng.uniform(0.0, np.pi), center=(s / 2, s / 2))
    levels = ds._levels(rng, n, CUE_LEVELS)
    r0 = rng.uniform(*CUE_RADIUS) * s
    scale = levels / MID_DISPARITY if "perspective" in cues else rng.uniform(0.9, 1.1, n)
    radii = r0 * scale
    centers = _standing(rng, s, levels, radii, slope, horizon) if "ground" in cues else ds._centers(rng, n)
    label = np.full((s, s), -1, np.int16)
    for j, (level, center, r) in enumerate(zip(levels, centers, radii)):
        shape = ds._shape(rng, center, r)
        if "shading" in cues and "ground" in cues:
            _contact_shadow(hsv, yy, xx, center, r)
        period = look.period * (level / MID_DISPARITY if "perspective" in cues else 1.0)
        obj = ds._paint(rng, look, hue=look.hue + rng.uniform(-ds.hue_jitter, ds.hue_jitter), period=period,
                        angle=look.angle + rng.uniform(-0.25, 0.25), center=center)
        plane = np.full((s, s), level, np.float32) if "ground" in cues else ds._plane(rng, level, center)
        if "shading" in cues:
            light, height = _dome(yy, xx, center, r)
            obj[..., 2] *= light
            plane = plane + BULGE * level * height
        disparity[shape] = plane[shape]
        hsv[shape] = obj[shape]
        label[shape] = j
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    disparity = (disparity / disparity.max()).astype(np.float32)
    if "haze" in cues:
        weight = (rng.uniform(*HAZE) * (1.0 - disparity))[..., None]  # H,W,1
        rgb = (1.0 - weight) * rgb + weight * HAZE_RGB
    image = (rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return image, label, disparity


def _ground_and_wall(
    ds: Painter, rng: np.random.Generator, look: Look, hue_offset: float, wall_row: float, wall_d: float,
    horizon: float, perspective: bool,
) -> np.ndarray:
    """H,W,3 HSV of the back wall (above ``wall_row``) and the ground (below), in another hue than the objects."""
    s, yy, xx = ds.size, ds.yy, ds.xx
    period = look.period * rng.uniform(1.5, 2.5)
    wall = ds._paint(rng, look, hue=look.hue + hue_offset, period=period * (wall_d / MID_DISPARITY if perspective
                     else 1.0), angle=rng.uniform(0.0, np.pi), center=(s / 2, s / 2))
    if perspective:  # stripes on the ground plane: ground coordinates (X across, Z away) from the image row
        z = 1.0 / np.maximum(yy - horizon, 1e-3)  # proportional to the distance of the ground point
        ground_x, ground_z = (xx - s / 2) * z, z * s
        angle = rng.uniform(0.0, np.pi)
        u = ground_x * np.cos(angle) + ground_z * np.sin(angle)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * u / (period / MID_DISPARITY) + rng.uniform(0.0, 2 * np.pi))
        ground = wall.copy()
        ground[..., 0] = (look.hue - hue_offset) % 360.0
        ground[..., 2] = look.value * (0.6 + 0.4 * stripes)
    else:
        ground = ds._paint(rng, look, hue=look.hue - hue_offset, period=period, angle=rng.uniform(0.0, np.pi),
                           center=(s / 2, s / 2))
    return np.where((yy < wall_row)[..., None], wall, ground).astype(np.float32)


def _standing(
    rng: np.random.Generator, s: int, levels: np.ndarray, radii: np.ndarray, slope: float, horizon: float
) -> list[tuple[float, float]]:
    """Centres of objects standing on the ground: the base row is where the ground has the object's disparity;
    columns drawn so that neighbours overlap without hiding each other."""
    centers: list[tuple[float, float]] = []
    for level, r in zip(levels, radii):
        base = min(horizon + level / slope, s - 1.0)
        for _ in range(20):
            c = (base - 0.9 * r, rng.uniform(0.15 * s, 0.85 * s))
            if all(np.hypot(c[0] - d[0], c[1] - d[1]) >= 0.55 * (r + q) for d, q in zip(centers, radii)):
                break
        centers.append(c)
    return centers


def _dome(yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], r: float) -> tuple[np.ndarray, np.ndarray]:
    """A hemisphere of radius ``r`` at ``center`` lit from LIGHT: (brightness factor, height 0..1), both H,W."""
    nx, ny = (xx - center[1]) / r, (yy - center[0]) / r
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    lambert = np.clip(nx * LIGHT[0] + ny * LIGHT[1] + nz * LIGHT[2], 0.0, 1.0)
    return 0.55 + 0.45 * lambert, nz


def _contact_shadow(hsv: np.ndarray, yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], r: float) -> None:
    """Darken (in place) a soft flat ellipse on the ground under an object standing at ``center``."""
    base = center[0] + 0.9 * r
    q = ((xx - center[1]) / (1.1 * r)) ** 2 + ((yy - base) / (0.18 * r)) ** 2
    hsv[..., 2] *= 1.0 - 0.45 * np.exp(-2.0 * q)
