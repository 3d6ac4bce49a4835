"""Labelled image datasets, their fixed train/validation split, and THE preprocessing.

Datasets (:func:`load_dataset`)
    * ``builtin:digits``: scikit-learn's handwritten digits (1,797 grayscale 8x8 images,
      10 classes). Real data that ships inside scikit-learn, nothing is downloaded.
    * ``builtin:shapes`` (or ``builtin:shapes:size=96,samples=5000,seed=1``): textured shapes
      rendered from a seed (:mod:`pipeline.data.shapes`), 10 classes, 64 px by default; harder than
      digits, and resolution carries information. Rendered on load, nothing is downloaded.
    * ``path/to/file.npz``: arrays ``x`` (N×H×W×C, N×C×H×W or N×H×W; uint8 or float) and
      ``y`` (N integer labels); an optional ``classes`` array names the labels.
    * ``path/to/folder``: an ImageFolder, one sub-folder per class, images read with Pillow.

    A dataset holds its *source* images (arrays, or file paths that are decoded per batch),
    never a resized copy, so memory stays at the size of the source data whatever the
    model's resolution.

Split
    :meth:`LabelledData.split` is stratified and seeded: every class contributes
    ``round(n_c * val_fraction)`` samples to validation (at least one when the class has
    two or more). The same (``val_fraction``, ``seed``) gives the same split on every
    machine; train and verify record and reuse it.

Preprocessing (:class:`Preprocess`)
    One frozen dataclass is the whole transform from a source image to the model input,
    and it is stored with every checkpoint, so train, verify and a packaged app apply
    exactly the same steps (written out in the class docstring so they can be
    re-implemented outside Python).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataInvalid, DataNotFound
from pipeline.core.scaling import round_resolution

BUILTINS = ("digits", "shapes")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHODS = ("bilinear", "bicubic", "nearest")
COLOR_MODES = ("rgb", "gray")
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0

# A dataset whose source images are tiny may declare the resolution it is trained at by
# default (``LabelledData.default_resolution``). Only builtin:digits does: its images are
# 8x8, so upsampling them to a model's nominal 168-300 px adds no information but costs
# 30-100x the compute. ``--resolution`` overrides it, and the resolution used is recorded.
DIGITS_RESOLUTION = 32
# The resolution a model of nominal (ImageNet-scaled) resolution 224 is trained at when the dataset
# declares a native size instead (``PixelSpec.base_resolution``): builtin:shapes at 64 px trains φ=0
# at 64 px and φ=-3 (nominal 144) at 40 px, so resolution still scales with φ, at CPU-friendly sizes.
NOMINAL_BASE_RESOLUTION = 224


# --- preprocessing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """Source image -> model input, in this order (the contract for every consumer):

    1. Take the image as an H×W×C array (C = 1, 3 or 4; H×W means C = 1) of numbers in
       ``[0, input_max]`` (``input_max`` = 255 for 8-bit images) and divide by ``input_max``.
    2. Channels: ``color="rgb"`` keeps RGB, replicates a gray channel to three and drops
       alpha; ``color="gray"`` converts to luminance (0.299 R + 0.587 G + 0.114 B, or the
       single channel) and replicates it to three. The model always sees 3 channels.
    3. Resize to ``resolution`` × ``resolution`` (aspect ratio not kept) with ``resize``
       interpolation, half-pixel centres (``align_corners=False``), anti-aliased when
       shrinking (bilinear/bicubic), as ``torch.nn.functional.interpolate`` does.
    4. Normalise each channel: ``(x - mean[c]) / std[c]``; output C×H×W float32.
    """

    resolution: int
    color: str = "rgb"
    input_max: float = 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 1:
            raise DataInvalid(f"preprocess resolution must be a positive integer, got {self.resolution!r}.")
        if self.color not in COLOR_MODES:
            raise DataInvalid(f"preprocess color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}.")
        if self.resize not in RESIZE_METHODS:
            raise DataInvalid(f"preprocess resize must be one of {', '.join(RESIZE_METHODS)}, got {self.resize!r}.")
        if not (isinstance(self.input_max, (int, float)) and math.isfinite(self.input_max) and self.input_max > 0):
            raise DataInvalid(f"preprocess input_max must be a positive number, got {self.input_max!r}.")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise DataInvalid(f"preprocess {name} must be three finite numbers, got {value!r}.")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.std) <= 0:
            raise DataInvalid(f"preprocess std must be positive, got {self.std!r}.")
        object.__setattr__(self, "input_max", float(self.input_max))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        if not isinstance(data, dict) or "resolution" not in data:
            raise DataInvalid(f"preprocess must be an object with at least 'resolution', got {data!r}.")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataInvalid(f"preprocess has unknown keys: {', '.join(sorted(unknown))}.")
        kwargs = dict(data)
        for name in ("mean", "std"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def with_resolution(self, resolution: int) -> Preprocess:
        return replace(self, resolution=resolution)

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]):
        """Apply to N source images (an N×H×W[×C] array or a list of H×W[×C] arrays) -> N×3×R×R tensor."""
        import torch

        if not isinstance(images, np.ndarray):
            images = [np.asarray(im) for im in images]
            if len({im.shape for im in images}) == 1:
                images = np.stack(images)
        if isinstance(images, np.ndarray):
            groups = [images]  # one array: all images share a size, resize them in one call
        else:
            groups = [im[None] for im in images]
        out = [self._batch(torch, g) for g in groups]
        return out[0] if len(out) == 1 else torch.cat(out)

    def _batch(self, torch, arr: np.ndarray):
        import torch.nn.functional as F

        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
            raise DataInvalid(f"preprocess expects H×W×C images with C in (1, 3, 4), got shape {arr.shape[1:]}.")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) / self.input_max
        x = x.permute(0, 3, 1, 2)  # N, C, H, W
        if x.shape[1] == 4:
            x = x[:, :3]
        if self.color == "gray" and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.resolution, self.resolution):
            shrinking = min(x.shape[2:]) > self.resolution
            kw = {"align_corners": False, "antialias": shrinking} if self.resize != "nearest" else {}
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode=self.resize, **kw)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


# --- datasets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Indices into a dataset; ``val_fraction`` and ``seed`` reproduce it."""

    train: np.ndarray = field(repr=False)
    val: np.ndarray = field(repr=False)
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SPLIT_SEED

    def to_dict(self) -> dict:
        return {"val_fraction": self.val_fraction, "seed": self.seed, "train": len(self.train), "val": len(self.val)}


@dataclass(frozen=True)
class PixelSpec:
    """How a dataset's source pixels are encoded: value range, colour mode, natural size and statistics.

    ``mean``/``std`` (per model channel, on the [0, 1] scale) default to ImageNet's.
    ``default_resolution`` fixes the training resolution whatever the scale (digits: its 8x8 images
    carry nothing more at 200 px); ``base_resolution`` instead maps a scale's nominal resolution
    proportionally, ``nominal × base / 224``, so resolution keeps scaling with φ (builtin:shapes).
    """

    input_max: float = 255.0
    color: str = "rgb"
    default_resolution: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    base_resolution: int | None = None


class LabelledData:
    """A labelled image set: ``labels`` (int64 class indices), ``classes`` (names), source images.

    ``images(indices)`` returns source images: one N×H×W×C array for array datasets, a
    list of H×W×C uint8 arrays for image folders (decoded on demand, never all at once).
    """

    def __init__(self, name: str, kind: str, classes: Sequence[str], labels: np.ndarray, *,
                 arrays: np.ndarray | None = None, files: Sequence[Path] | None = None,
                 pixels: PixelSpec | None = None):
        pixels = pixels or PixelSpec()
        self.name, self.kind = name, kind
        self.classes = tuple(str(c) for c in classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._arrays, self._files = arrays, list(files) if files is not None else None
        self.input_max, self.color, self.default_resolution = float(pixels.input_max), pixels.color, \
            pixels.default_resolution
        self.base_resolution = pixels.base_resolution
        self._mean, self._std = pixels.mean, pixels.std

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def images(self, indices: Sequence[int] | np.ndarray):
        idx = np.asarray(indices, dtype=np.int64)
        if self._arrays is not None:
            return self._arrays[idx]
        return [_decode(self._files[i]) for i in idx]

    def fingerprint(self) -> str:
        """Short hash of the labels and class names: tells whether two loads are the same data."""
        h = hashlib.sha256(",".join(self.classes).encode())
        h.update(self.labels.tobytes())
        if self._arrays is not None:
            h.update(str(self._arrays.shape).encode())
        else:
            h.update("\n".join(p.name for p in self._files).encode())
        return h.hexdigest()[:16]

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "samples": len(self), "classes": list(self.classes),
                "fingerprint": self.fingerprint()}

    def resolution_for(self, nominal: int) -> int:
        """The input size a scale of ``nominal`` resolution trains at on this dataset by default.

        ``default_resolution`` when the dataset fixes one (digits: 32), ``nominal × base / 224``
        (rounded like every resolution: multiple of 8, at least 32) when it declares a base
        resolution (shapes: 64), else ``nominal``.
        """
        if self.default_resolution:
            return int(self.default_resolution)
        if self.base_resolution:
            return round_resolution(nominal * self.base_resolution / NOMINAL_BASE_RESOLUTION)
        return int(nominal)

    def default_preprocess(self, resolution: int) -> Preprocess:
        """The preprocessing for this dataset at ``resolution``: its value range, color mode and statistics."""
        return Preprocess(resolution=int(resolution), color=self.color, input_max=self.input_max,
                          mean=self._mean or IMAGENET_MEAN, std=self._std or IMAGENET_STD)

    def split(self, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED) -> Split:
        """Stratified, seeded train/validation split (the same for the same arguments, everywhere)."""
        if not 0.0 < val_fraction < 1.0:
            raise DataInvalid(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
        rng = np.random.default_rng(seed)
        train, val = [], []
        for c in range(self.num_classes):
            members = np.flatnonzero(self.labels == c)
            members = members[rng.permutation(len(members))]
            n_val = int(round(len(members) * val_fraction))
            n_val = min(max(n_val, 1 if len(members) >= 2 else 0), len(members) - 1)
            val.append(members[:n_val])
            train.append(members[n_val:])
        train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
        if len(val_idx) == 0:
            raise DataInvalid(f"dataset {self.name} is too small for a validation split ({len(self)} samples).")
        return Split(train=train_idx, val=val_idx, val_fraction=float(val_fraction), seed=int(seed))


def batches(data: LabelledData, indices: np.ndarray, preprocess: Preprocess, batch_size: int, *,
            shuffle: bool = False, seed: int = 0, epoch: int = 0) -> Iterator[tuple[np.ndarray, object, object]]:
    """Yield ``(indices, x, y)`` batches; ``x`` is preprocessed per batch (lazy resize, modest memory).

    With ``shuffle`` the order is a permutation drawn from ``(seed, epoch)``: deterministic,
    and different every epoch.
    """
    import torch

    order = np.asarray(indices, dtype=np.int64)
    if shuffle:
        order = order[np.random.default_rng([seed, epoch]).permutation(len(order))]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, preprocess(data.images(idx)), torch.from_numpy(data.labels[idx])


# --- loaders ----------------------------------------------------------------------------------


def load_dataset(spec: str | Path) -> LabelledData:
    """``builtin:digits``, ``builtin:shapes[:options]``, an ``.npz`` file, or an ImageFolder directory."""
    text = str(spec)
    if text.startswith("builtin:"):
        name, _, options = text[len("builtin:"):].partition(":")
        if name == "digits" and not options:
            return load_digits()
        if name == "shapes":
            return load_shapes(options)
        known = ", ".join("builtin:" + b for b in BUILTINS)
        raise DataNotFound(f"unknown built-in dataset '{text}'. Known: {known} (builtin:shapes takes options, "
                           "e.g. builtin:shapes:size=96,samples=5000,seed=1).")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataNotFound(
            f"dataset {path} does not exist. Give an image folder (one sub-folder per class), an .npz file "
            f"with arrays x and y, builtin:digits or builtin:shapes."
        )
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    raise DataInvalid(f"{path} is neither a directory (ImageFolder) nor an .npz file.")


def load_digits() -> LabelledData:
    """scikit-learn's digits: 1,797 8x8 grayscale images with values 0..16, 10 classes."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataNotFound("builtin:digits needs scikit-learn: pip install scikit-learn.") from None
    bunch = sk_load_digits()
    x = bunch.images.astype(np.float32)[..., None]  # N, 8, 8, 1 in 0..16
    y = bunch.target.astype(np.int64)
    return _array_dataset("builtin:digits", "builtin", x, y, [str(c) for c in bunch.target_names],
                          PixelSpec(input_max=16.0, color="gray", default_resolution=DIGITS_RESOLUTION))


def load_shapes(options: str = "") -> LabelledData:
    """``builtin:shapes``: textured shapes rendered from a seed (:mod:`pipeline.data.shapes`), 10 classes.

    ``options`` is ``"size=96,samples=5000,seed=1"`` or any subset (empty: 64 px, 3,000 images, seed 0).
    The dataset's name is the canonical spec, so a checkpoint names exactly what it was trained on.
    """
    from pipeline.data.shapes import CLASSES, ShapesSpec, render

    spec = ShapesSpec.parse(options)
    x, y = render(spec)
    return LabelledData(spec.name, "builtin", CLASSES, y, arrays=x,
                        pixels=PixelSpec(input_max=255.0, color="rgb", base_resolution=spec.size))


def load_npz(path: str | Path) -> LabelledData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataInvalid(f"{path} is not a readable .npz file: {type(exc).__name__}: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataInvalid(f"{path} has no array '{key}' (found: {', '.join(sorted(arrays)) or 'none'}); "
                              f"it needs x (images) and y (labels).")
    x, y = arrays["x"], arrays["y"]
    if y.ndim != 1:
        raise DataInvalid(f"{path}: array 'y' must be one label per image (1-D), got shape {y.shape}.")
    if x.ndim not in (3, 4):
        raise DataInvalid(f"{path}: array 'x' must be N×H×W×C, N×C×H×W or N×H×W, got shape {x.shape}.")
    if len(x) != len(y):
        raise DataInvalid(f"{path}: array 'x' has {len(x)} images but array 'y' has {len(y)} labels.")
    if len(x) == 0:
        raise DataInvalid(f"{path}: arrays 'x' and 'y' are empty.")
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
        if x.shape[1] in (1, 3, 4):
            x = np.moveaxis(x, 1, -1)  # NCHW -> NHWC
        else:
            raise DataInvalid(f"{path}: array 'x' has shape {x.shape}; neither axis 1 nor axis 3 is a channel "
                              "axis of size 1, 3 or 4.")
    if x.dtype == np.uint8:
        input_max = 255.0
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataInvalid(f"{path}: array 'x' contains NaN or infinite values.")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0:
            raise DataInvalid(f"{path}: array 'x' has negative values (min {lo:g}); give raw pixels "
                              "(uint8 0..255, or floats in 0..1 or 0..max), not normalised ones.")
        input_max = 1.0 if hi <= 1.0 else hi
    else:
        raise DataInvalid(f"{path}: array 'x' has dtype {x.dtype}; use uint8 or float.")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                   and np.all(np.isfinite(y)) and np.all(y == np.round(y)))):
        raise DataInvalid(f"{path}: array 'y' must hold integer class labels, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    names = None
    if "classes" in arrays:
        names = [str(c) for c in arrays["classes"].tolist()]
        if y.min() < 0 or y.max() >= len(names):
            raise DataInvalid(f"{path}: array 'y' has labels outside 0..{len(names) - 1} named by array 'classes'.")
        counts = np.bincount(y, minlength=len(names))
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise DataInvalid(f"{path}: class(es) {', '.join(empty)} named in array 'classes' have no images in 'y'.")
    else:
        values = np.unique(y)
        names = [str(v) for v in values]
        y = np.searchsorted(values, y)
    channels = 1 if x.ndim == 3 else x.shape[-1]
    mean, std = _stats(x, input_max) if channels == 1 else (None, None)
    return _array_dataset(f"{path}", "npz", x, y, names,
                          PixelSpec(input_max=input_max, color="gray" if channels == 1 else "rgb", mean=mean, std=std))


def _stats(x: np.ndarray, input_max: float) -> tuple[tuple, tuple]:
    """Mean/std of a gray array on the [0, 1] scale, repeated for the 3 model channels."""
    v = x.astype(np.float64) / input_max
    m, s = float(v.mean()), float(v.std()) or 1.0
    return (round(m, 6),) * 3, (round(s, 6),) * 3


def _array_dataset(name: str, kind: str, x: np.ndarray, y: np.ndarray, classes: list[str],
                   pixels: PixelSpec) -> LabelledData:
    if len(classes) < 2 or len(np.unique(y)) < 2:
        raise DataInvalid(f"{name}: array 'y' has a single class ({classes[0] if classes else '?'}); "
                          "classification needs at least two.")
    if pixels.mean is None and pixels.color == "gray":
        mean, std = _stats(x, pixels.input_max)
        pixels = replace(pixels, mean=mean, std=std)
    return LabelledData(name, kind, classes, y, arrays=x, pixels=pixels)


def load_image_folder(root: str | Path) -> LabelledData:
    """One sub-folder per class (sorted by name); files with image extensions, hidden files ignored.

    Every image's header is read here (``Image.verify``), so an unreadable file fails at
    load time, naming it, not in the middle of training.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataInvalid(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>).")
    if len(class_dirs) < 2:
        raise DataInvalid(f"image folder {root} has a single class ({class_dirs[0].name}); "
                          "classification needs at least two.")
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataInvalid(f"class folder {d} is empty (no {', '.join(IMAGE_EXTENSIONS[:3])}, ... images).")
        for p in found:
            try:
                with Image.open(p) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise DataInvalid(f"image {p} is corrupt or not an image: {exc}") from None
        files += found
        labels += [label] * len(found)
    return LabelledData(str(root), "imagefolder", [d.name for d in class_dirs], np.asarray(labels),
                        files=files, pixels=PixelSpec(input_max=255.0, color="rgb"))


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise DataInvalid(f"image {path} cannot be decoded: {type(exc).__name__}: {exc}") from None
    return arr[..., None] if arr.ndim == 2 else arr


__all__ = [
    "DIGITS_RESOLUTION",
    "LabelledData",
    "Preprocess",
    "Split",
    "batches",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_npz",
    "load_shapes",
]
