"""``builtin:shapes``: a procedurally rendered image set where a model's scale matters.

Why it exists
    ``builtin:digits`` is 8x8 pixels: every scale reaches about 98 %, so no scaling question
    can be answered on it. This set is rendered from a seed, at any size, with nothing
    downloaded, and is built so that all three scaling dimensions carry information:

    * **resolution**: each class is a *shape* (5 kinds) filled with a *fine texture* (parallel
      stripes or a checkerboard, 2 kinds). The texture period is 4-6 % of the image side
      (2.6-4 px at 64 px), so it survives at the native resolution and is blurred away by the
      anti-aliased resize to a much smaller input: both textures have the same mean colour,
      and at low resolution only the shape is left to tell classes apart.
    * **capacity (depth, width)**: position, size, a small tilt, colours, texture orientation and
      phase are random, the background has a colour gradient, noise and small distractor blobs
      (themselves textured), so the classes are not separable by a few pixel statistics.

The 10 classes are ``<shape>-<texture>`` for shapes circle, square, triangle, cross and ring,
and textures ``stripes`` and ``checks``, balanced and interleaved (sample i has class
i mod 10, so any prefix is balanced).

Spec: ``builtin:shapes`` (64 px, 3,000 images, seed 0), or with options
``builtin:shapes:size=96,samples=5000,seed=1``. The same spec renders the same pixels on every
machine (numpy's PCG64 generator and float64 arithmetic); the dataset's name is the canonical
spec, so a checkpoint names exactly the data it was trained on.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import DataNotFound

SHAPES = ("circle", "square", "triangle", "cross", "ring")
TEXTURES = ("stripes", "checks")
CLASSES = tuple(f"{s}-{t}" for s in SHAPES for t in TEXTURES)
DEFAULT_SIZE = 64
DEFAULT_SAMPLES = 3000
MIN_SIZE, MAX_SIZE = 16, 512
MAX_SAMPLES = 200_000
PERIOD = (0.035, 0.05)  # texture period as a fraction of the image side (2.2-3.2 px at 64 px)
SUPERSAMPLE = 2  # rendered at 2x and box-filtered: anti-aliased edges and textures
NOISE = 0.04  # Gaussian pixel noise (fraction of full scale)


@dataclass(frozen=True)
class ShapesSpec:
    """What ``builtin:shapes`` renders: image side, number of images, seed."""

    size: int = DEFAULT_SIZE
    samples: int = DEFAULT_SAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise DataNotFound(f"builtin:shapes size must be {MIN_SIZE}..{MAX_SIZE} px, got {self.size}.")
        if not len(CLASSES) * 2 <= self.samples <= MAX_SAMPLES:
            raise DataNotFound(f"builtin:shapes samples must be {len(CLASSES) * 2}..{MAX_SAMPLES}, got {self.samples}.")
        if self.seed < 0:
            raise DataNotFound(f"builtin:shapes seed must be >= 0, got {self.seed}.")

    @property
    def name(self) -> str:
        """The canonical spec: defaults left out, options sorted (``builtin:shapes`` when all are default)."""
        opts = [f"{k}={v}" for k, v, d in (("samples", self.samples, DEFAULT_SAMPLES), ("seed", self.seed, 0),
                                           ("size", self.size, DEFAULT_SIZE)) if v != d]
        return "builtin:shapes" + (":" + ",".join(opts) if opts else "")

    @classmethod
    def parse(cls, options: str) -> ShapesSpec:
        """``"size=96,samples=5000,seed=1"`` (any subset, any order; empty: the defaults)."""
        values: dict[str, int] = {}
        for item in filter(None, (s.strip() for s in options.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in ("size", "samples", "seed"):
                raise DataNotFound(f"builtin:shapes option '{item}' is not one of size=N, samples=N, seed=N "
                                   "(e.g. builtin:shapes:size=96,samples=5000,seed=1).")
            try:
                values[key] = int(value)
            except ValueError:
                raise DataNotFound(f"builtin:shapes option {key} must be an integer, got '{value}'.") from None
        return cls(**values)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Inside-test of ``kind`` in rotated coordinates (u, v) centred on the shape, radius ``r``."""
    if kind == "circle":
        return u * u + v * v <= r * r
    if kind == "square":
        h = r * 0.8
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    if kind == "triangle":  # equilateral, circumradius r, pointing along -v
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= r / 2
        return inside
    if kind == "cross":
        arm = r * 0.36
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    if kind == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(kind)


def _texture(kind: str, x: np.ndarray, y: np.ndarray, period: float, angle: float, phase: float) -> np.ndarray:
    """0/1 texture: stripes or a checkerboard of ``period`` pixels, rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    a = 2 * math.pi * (x * c + y * s) / period + phase
    if kind == "stripes":
        return (np.sin(a) > 0).astype(np.float64)
    b = 2 * math.pi * (-x * s + y * c) / period + phase
    return (np.sin(a) * np.sin(b) > 0).astype(np.float64)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of a texture, distinct enough to see at full resolution (same mean either way)."""
    base = rng.uniform(0.3, 0.7, 3)
    delta = rng.uniform(0.22, 0.3) * np.sign(rng.uniform(-1, 1, 3))
    return np.clip(base + delta, 0, 1), np.clip(base - delta, 0, 1)


def _box(cx: float, cy: float, rad: float, n: int) -> tuple[slice, slice]:
    """Rows and columns of the supersampled canvas (side ``n``) that a disc of radius ``rad`` can touch."""
    k = SUPERSAMPLE
    lo_y, hi_y = max(0, int((cy - rad) * k) - 1), min(n, int(math.ceil((cy + rad) * k)) + 1)
    lo_x, hi_x = max(0, int((cx - rad) * k) - 1), min(n, int(math.ceil((cx + rad) * k)) + 1)
    return slice(lo_y, hi_y), slice(lo_x, hi_x)


def _paint(img: np.ndarray, coords: tuple[np.ndarray, np.ndarray], box: tuple[slice, slice], mask: np.ndarray,
           texture: str, rng: np.random.Generator, size: int) -> None:
    """Fill ``mask`` (within ``box``) with ``texture`` in a random colour pair, period, angle and phase."""
    xs, ys = coords[0][box], coords[1][box]
    tex = _texture(texture, xs, ys, rng.uniform(*PERIOD) * size, rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi))
    a, b = _colour_pair(rng)
    region = img[box]
    region[mask] = (b + (a - b) * tex[..., None])[mask]


@functools.lru_cache(maxsize=8)
def _canvas(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y pixel coordinates (at the native size) of the supersampled canvas's pixel centres."""
    n = size * SUPERSAMPLE
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float64)
    xs, ys = (xs + 0.5) / SUPERSAMPLE, (ys + 0.5) / SUPERSAMPLE
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def render_one(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One H×W×3 uint8 image of class ``label``, drawn from ``rng``."""
    n = size * SUPERSAMPLE
    xs, ys = _canvas(size)
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    # background: a gentle colour gradient
    c0 = rng.uniform(0.15, 0.85, 3)
    c1 = np.clip(c0 + rng.uniform(-0.2, 0.2, 3), 0, 1)
    g_angle = rng.uniform(0, 2 * math.pi)
    t = ((xs * math.cos(g_angle) + ys * math.sin(g_angle)) / size + 1) / 2
    img = c0 + (c1 - c0) * t[..., None]
    # distractors: small flat-coloured blobs behind the shape
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, rad = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.04, 0.09) * size
        box = _box(cx, cy, rad, n)
        blob = (xs[box] - cx) ** 2 + (ys[box] - cy) ** 2 <= rad * rad
        img[box][blob] = rng.uniform(0, 1, 3)
    # the shape, textured
    r = rng.uniform(0.26, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    rot = rng.uniform(-0.35, 0.35)  # a little tilt; shapes are told apart by outline, not by learning all rotations
    box = _box(cx, cy, r * 1.1, n)
    dx, dy = xs[box] - cx, ys[box] - cy
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    _paint(img, (xs, ys), box, _shape_mask(shape, u, v, r), texture, rng, size)
    k = SUPERSAMPLE  # box filter to the native size (strided sums: far cheaper than mean over axes)
    img = sum(img[i::k, j::k] for i in range(k) for j in range(k)) / (k * k)
    img += rng.normal(0, NOISE, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def render(spec: ShapesSpec) -> tuple[np.ndarray, np.ndarray]:
    """(N×S×S×3 uint8 images, N int64 labels), read-only; sample i has class i mod 10 and its own child seed.

    Kept for the process (the two most recent specs): train, verify and INT8 calibration of one
    run load the same set several times.
    """
    labels = np.arange(spec.samples, dtype=np.int64) % len(CLASSES)
    seeds = np.random.SeedSequence(spec.seed).spawn(spec.samples)
    x = np.empty((spec.samples, spec.size, spec.size, 3), dtype=np.uint8)
    for i, (label, s) in enumerate(zip(labels, seeds)):
        x[i] = render_one(int(label), spec.size, np.random.Generator(np.random.PCG64(s)))
    x.flags.writeable = labels.flags.writeable = False
    return x, labels


__all__ = ["CLASSES", "DEFAULT_SAMPLES", "DEFAULT_SIZE", "SHAPES", "TEXTURES", "ShapesSpec", "render", "render_one"]
