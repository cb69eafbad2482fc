"""Layered scenes: generated images in which depth is what separates an object from its look-alikes.

Scene ``i`` is a pure function of ``(seed, i)``. A few objects of similar size (ellipses, rounded polygons,
blobs) share one procedural texture family (stripes of one period plus smooth noise) and one colour (hue
within a few degrees), so colour and texture cannot tell them apart. Each object lies on its own gently
sloped depth plane, at clearly separated depth levels, in front of a textured background plane that is
farthest. Objects are painted far to near (painter's algorithm), so they occlude each other; the depth map
is exact per pixel and the instance masks are the visible parts. The depth is a disparity (larger = closer),
min-max normalised to 0..1 over the image.

In these scenes occlusion is the only depth cue the image carries. ``cues`` adds monocular cues (ground plane,
perspective, haze, shading; :mod:`.monocular`) so that depth can be learned from the image, as from a photo.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .base import DataError, Sample, SegDataset
from .monocular import CUE_OBJECTS, Look, resolve_cues, scene_with_cues

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # disjoint scene streams per split unless a seed is given

OBJECT_DISPARITY = (0.3, 1.0)  # object depth levels are spread evenly over this range
BACKGROUND_DISPARITY = 0.15  # the background plane rises from 0 to this value (farther than every object)
LEVEL_JITTER = 0.2  # fraction of the gap between neighbouring levels
SLOPE = 0.08  # largest disparity change of an object plane per image width


class LayeredScenes(SegDataset):
    """``length`` generated scenes of ``size`` x ``size``; Sample depth_kind is "disparity".

    Masks are the visible parts of the objects, far to near; objects with fewer than ``min_visible`` x
    size^2 visible pixels are dropped.
    """

    name = "layered"
    has_depth = True

    def __init__(
        self,
        length: int,
        size: int = 224,
        seed: int = 0,
        num_objects: tuple[int, int] = (3, 5),
        radius: tuple[float, float] = (0.14, 0.2),
        hue_jitter: float = 4.0,
        background_hue_offset: tuple[float, float] = (20.0, 60.0),
        min_visible: float = 0.01,
        cues: str | tuple[str, ...] | list[str] = (),
    ):
        """``radius`` is the range of the scene's mean object radius as a fraction of ``size`` (objects vary
        +-10% around it); hues are in degrees. ``cues``: the monocular depth cues added to the scenes, a preset
        name (``occlusion``: none, the occlusion-only scenes of this module; ``monocular``: all) or a list of names (:mod:`.monocular`)."""
        if length < 0 or size < 16 or seed < 0 or not 1 <= num_objects[0] <= num_objects[1]:
            raise DataError(
                f"layered scenes: bad arguments length={length}, size={size}, seed={seed}, "
                f"num_objects={num_objects} (expected length >= 0, size >= 16, seed >= 0, 1 <= min <= max)"
            )
        self.length, self.size, self.seed = length, size, seed
        self.num_objects, self.radius = num_objects, radius
        self.hue_jitter, self.background_hue_offset = hue_jitter, background_hue_offset
        self.min_visible = min_visible
        try:
            self.cues = resolve_cues(cues)
        except ValueError as e:
            raise DataError(f"layered scenes: {e}") from None
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float32)

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: ``root`` is unused; the split picks the seed (see SPLIT_SEEDS) unless given."""
        if "seed" not in kw and split not in SPLIT_SEEDS:
            raise DataError(f"layered scenes: unknown split {split!r} (expected one of {sorted(SPLIT_SEEDS)})")
        kw.setdefault("seed", SPLIT_SEEDS.get(split))
        return cls(**kw)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Sample:
        if not -self.length <= i < self.length:
            raise IndexError(f"scene {i} out of range for {self.length} scenes")
        return self.scene(i % self.length)

    def scene(self, i: int) -> Sample:
        """Generate scene ``i`` (any non-negative index)."""
        rng = np.random.default_rng((self.seed, i))
        s = self.size
        count = CUE_OBJECTS if self.cues else self.num_objects
        n = int(rng.integers(count[0], count[1] + 1))
        look = Look(
            period=rng.uniform(6.0, 14.0) * s / 224,
            angle=rng.uniform(0.0, np.pi),
            hue=rng.uniform(0.0, 360.0),
            saturation=rng.uniform(0.45, 0.8),
            value=rng.uniform(0.55, 0.85),
            noise=rng.uniform(0.2, 0.5),
        )
        if self.cues:
            image, label, disparity = scene_with_cues(self, rng, look, n)
            return self._sample(i, image, label, disparity, n)
        disparity = self._background_plane(rng)
        hue_offset = rng.uniform(*self.background_hue_offset) * rng.choice((-1.0, 1.0))
        hsv = self._paint(rng, look, hue=look.hue + hue_offset, period=look.period * rng.uniform(1.5, 2.5),
                          angle=rng.uniform(0.0, np.pi), center=(s / 2, s / 2))
        label = np.full((s, s), -1, np.int16)
        for j, (level, center, r) in enumerate(zip(self._levels(rng, n), self._centers(rng, n), self._radii(rng, n))):
            shape = self._shape(rng, center, r)
            disparity[shape] = self._plane(rng, level, center)[shape]
            hue = look.hue + rng.uniform(-self.hue_jitter, self.hue_jitter)
            obj = self._paint(rng, look, hue=hue, period=look.period, angle=look.angle + rng.uniform(-0.25, 0.25),
                              center=center)
            hsv[shape] = obj[shape]
            label[shape] = j
        image = (cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        lo, hi = disparity.min(), disparity.max()
        return self._sample(i, image, label, ((disparity - lo) / max(hi - lo, 1e-6)).astype(np.float32), n)

    def _sample(self, i: int, image: np.ndarray, label: np.ndarray, depth: np.ndarray, n: int) -> Sample:
        """The Sample of scene ``i``: the visible parts of objects ``0..n-1`` of ``label`` as masks."""
        s = self.size
        visible = [label == j for j in range(n)]
        masks = [m for m in visible if m.sum() >= self.min_visible * s * s]
        return Sample(
            image=image,
            masks=np.stack(masks).astype(np.int8) if masks else np.zeros((0, s, s), np.int8),
            depth=depth,
            id=f"{self.name}/{self.seed}-{i}",
            depth_kind="disparity",
        )

    def _levels(self, rng: np.random.Generator, n: int, span: tuple[float, float] = OBJECT_DISPARITY) -> np.ndarray:
        """Separated disparity levels in ``span``, in far-to-near order (the painting order)."""
        lo, hi = span
        gap = (hi - lo) / max(n - 1, 1)
        levels = np.linspace(lo, hi, n) if n > 1 else np.array([rng.uniform(lo, hi)])
        return np.clip(levels + rng.uniform(-LEVEL_JITTER, LEVEL_JITTER, n) * gap, lo, hi)

    def _centers(self, rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
        """Centres in the middle 60% of the image, kept apart so that objects overlap without hiding each other."""
        s, min_dist = self.size, 0.8 * np.mean(self.radius) * self.size
        centers: list[tuple[float, float]] = []
        for _ in range(n):
            for _ in range(20):
                c = (rng.uniform(0.2 * s, 0.8 * s), rng.uniform(0.2 * s, 0.8 * s))
                if all(np.hypot(c[0] - d[0], c[1] - d[1]) >= min_dist for d in centers):
                    break
            centers.append(c)
        return centers

    def _radii(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(*self.radius) * self.size * rng.uniform(0.9, 1.1, n)

    def _shape(self, rng: np.random.Generator, center: tuple[float, float], r: float) -> np.ndarray:
        """A random ellipse, rounded polygon or blob of radius about ``r`` as an H,W bool mask."""
        dy, dx = self.yy - center[0], self.xx - center[1]
        kind = rng.integers(3)
        if kind == 0:  # ellipse
            theta, elong = rng.uniform(0.0, np.pi), 1.0 + rng.uniform(0.0, 0.35)
            u = dx * np.cos(theta) + dy * np.sin(theta)
            v = -dx * np.sin(theta) + dy * np.cos(theta)
            return (u / (r * elong)) ** 2 + (v * elong / r) ** 2 <= 1.0
        if kind == 1:  # polygon with corners rounded by blurring and re-thresholding
            k = int(rng.integers(5, 9))
            angles = rng.uniform(0.0, 2 * np.pi) + 2 * np.pi * (np.arange(k) + rng.uniform(-0.2, 0.2, k)) / k
            radii = r * rng.uniform(0.85, 1.1, k)
            points = np.stack([center[1] + radii * np.cos(angles), center[0] + radii * np.sin(angles)], 1)
            canvas = np.zeros((self.size, self.size), np.float32)
            cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1.0)
            return cv2.GaussianBlur(canvas, (0, 0), 0.15 * r) > 0.5
        harmonics = np.arange(2, 5)  # blob: radius modulated by a few low harmonics of the angle
        amps, phases = rng.uniform(0.0, 0.12, 3), rng.uniform(0.0, 2 * np.pi, 3)
        phi = np.arctan2(dy, dx)[..., None]
        boundary = r * (1.0 + (amps * np.cos(harmonics * phi + phases)).sum(-1))
        return np.hypot(dx, dy) <= boundary

    def _plane(self, rng: np.random.Generator, level: float, center: tuple[float, float]) -> np.ndarray:
        """Disparity ``level`` at ``center``, gently sloped in a random direction."""
        gy, gx = rng.uniform(-SLOPE, SLOPE, 2) / self.size
        return level + gy * (self.yy - center[0]) + gx * (self.xx - center[1])

    def _background_plane(self, rng: np.random.Generator) -> np.ndarray:
        """A ground-like plane: disparity 0 far away rising to BACKGROUND_DISPARITY, mostly towards the bottom."""
        a = rng.uniform(-0.5, 0.5)
        t = self.yy * np.cos(a) + self.xx * np.sin(a)
        return (BACKGROUND_DISPARITY * (t - t.min()) / (t.max() - t.min())).astype(np.float32)

    def _paint(
        self, rng: np.random.Generator, look: Look, hue: float, period: float, angle: float,
        center: tuple[float, float],
    ) -> np.ndarray:
        """H,W,3 float32 HSV (hue in degrees) of stripes along ``angle`` plus smooth noise, anchored at ``center``."""
        s = self.size
        u = (self.xx - center[1]) * np.cos(angle) + (self.yy - center[0]) * np.sin(angle)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0.0, 2 * np.pi))
        coarse = rng.random((s // 16 + 2, s // 16 + 2)).astype(np.float32)
        noise = cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)
        texture = (1.0 - look.noise) * stripes + look.noise * noise
        hsv = np.empty((s, s, 3), np.float32)
        hsv[..., 0] = hue % 360.0
        hsv[..., 1] = look.saturation
        hsv[..., 2] = look.value * (0.6 + 0.4 * texture)
        return hsv
