"""One research point — train, evaluate, measure — and the per-point cache that lets a grid resume.

A *point* is one model trained once: a family, the scaling constants α, β, γ, a φ per
dimension (equal for a compound point), a seed, the data, the schedule and the target it is
measured on. :func:`run_point` turns a :class:`PointSpec` into a row (a plain JSON object) and
depends on nothing else: no global state, no open files, no shared model. That is what lets
``deploy grid`` and ``deploy study`` share points, lets a killed grid resume without retraining
the points it finished, and lets a scheduler (one process per point, Ray tasks, several machines
sharing a folder) run the same function with results landing in the same cache.

Cache
    ``DIR/points/<key>.json``, one file per point, written atomically (a write either lands
    whole or not at all, so concurrent workers and a kill at any moment are safe). ``key`` is the
    sha256 of everything that changes the result (:meth:`PointSpec.cache_inputs`), so a point
    with other settings never reuses a stale row; the label a point is shown under is not part of it.

Latency
    Measured on the target's :class:`~pipeline.measure.device.Device` (the ``fit`` timing row:
    3 rounds, the slowest round's p50 kept) when the target is measurable; otherwise predicted from
    the target's profile and labelled ``predicted`` with its held-out error. Never both, never unlabelled.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline import __version__
from pipeline.core.errors import UsageError
from pipeline.core.io import write_json
from pipeline.core.scaling import DEFAULTS, CompoundScaling, Scale, flops_factor

ROW_VERSION = 1
POINTS_DIR = "points"


@dataclass(frozen=True)
class PointSpec:
    """Everything that decides one point's result (plus ``label``, how reports name it).

    ``phi_depth == phi_width == phi_resolution`` is a compound point (its scale carries ``phi``).
    ``base_resolution`` is the resolution of φ=0: 224 for ImageNet-sized inputs, a dataset's native
    size for small images (builtin:shapes: 64), so resolution scales with φ at affordable sizes.
    ``train_threads`` is torch's intra-op thread count while training (None: torch's default).
    ``opset`` is the ONNX opset of the timed file (None: the highest the target's runtime parses,
    as ``deploy fit`` would ship it; 17 exports several times faster, which tests use).
    """

    family: str
    alpha: float
    beta: float
    gamma: float
    phi_depth: float
    phi_width: float
    phi_resolution: float
    seed: int
    data: str
    epochs: int
    target: str = "host"
    threads: int | None = None
    base_resolution: int = DEFAULTS["base_resolution"]
    batch_size: int = 64
    lr: float = 1e-2
    train_threads: int | None = 1
    opset: int | None = None  # of the timed ONNX file; None: what fit would ship for the target (its highest)
    label: str = field(default="", compare=False)

    @classmethod
    def compound(cls, family: str, alpha: float, beta: float, gamma: float, phi: float, **kw) -> PointSpec:
        return cls(family, alpha, beta, gamma, phi, phi, phi, **kw)

    @property
    def is_compound(self) -> bool:
        return self.phi_depth == self.phi_width == self.phi_resolution

    def scaling(self) -> CompoundScaling:
        return CompoundScaling(self.alpha, self.beta, self.gamma, self.base_resolution)

    def scale(self) -> Scale:
        s = self.scaling()
        if self.is_compound:
            return s.compound(self.phi_depth)
        return s.per_dimension(self.phi_depth, self.phi_width, self.phi_resolution)

    def cache_inputs(self, data_fingerprint: str) -> dict:
        """What the cache key hashes: every input but the label, with floats rounded so equal points match."""
        d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "label"}
        return {**d, "data_fingerprint": data_fingerprint, "row_version": ROW_VERSION}

    def key(self, data_fingerprint: str) -> str:
        text = json.dumps(self.cache_inputs(data_fingerprint), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """``efficientnet 1.2/1.1/1.15 φ=1 seed 0`` (per-dimension: ``φ=(d, w, r)``), for progress lines."""
        phi = (f"{self.phi_depth:g}" if self.is_compound
               else f"({self.phi_depth:g}, {self.phi_width:g}, {self.phi_resolution:g})")
        return f"{self.family} {self.alpha:.4g}/{self.beta:.4g}/{self.gamma:.4g} φ={phi} seed {self.seed}"


class PointCache:
    """``DIR/points/<key>.json``: finished points, read back instead of retrained."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / POINTS_DIR

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            row = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a foreign or damaged file: the point is simply run again
        return row if isinstance(row, dict) and row.get("key") == key else None

    def put(self, row: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return write_json(self.path(row["key"]), row)


def _latency(spec: PointSpec, onnx: Path, cost, family: str, device, log) -> dict:
    """Measured on the target when it can be measured here (or ``device`` is given), else predicted, labelled."""
    from pipeline.measure.device import LocalDevice
    from pipeline.measure.settings import timing
    from pipeline.predict.targets import load_target

    tgt = load_target(spec.target)
    threads = spec.threads or tgt.threads
    if device is None and tgt.measurable:
        device = LocalDevice(tgt, threads)
    if device is not None:
        m = device.measure(onnx, timing("fit"), precision="fp32")
        t = m.latency
        return {"latency_ms": round(t.p50_ms, 4), "latency_ms_p90": round(t.p90_ms, 4),
                "latency_ms_worst_round": round(t.worst_round_p50_ms, 4),
                "memory_mb": None if m.memory_mb is None else round(m.memory_mb, 2), "provenance": "measured",
                "device": m.device, "threads": m.threads, "method": m.method, "when": m.when}
    from pipeline.predict.predictor import load_predictor

    p = load_predictor(tgt, None, threads).predict(cost, family)
    log(f"{spec.target} cannot be measured here: latency predicted from its {p.provenance} profile")
    return {"latency_ms": round(p.latency_ms, 4), "latency_ms_p90": p.latency_ms_p90, "latency_ms_worst_round": None,
            "memory_mb": None if p.memory_mb is None else round(p.memory_mb, 2),
            "provenance": f"predicted ({p.provenance} profile, held-out error "
                          f"{'unknown' if p.heldout_error_pct is None else f'{p.heldout_error_pct:g}%'})",
            "device": spec.target, "threads": threads, "method": p.method, "when": None}


def run_point(spec: PointSpec, cache: PointCache | None = None, *, data=None, device=None,
              log: Callable[[str], None] = lambda _: None) -> dict:
    """Train ``spec`` on its data, evaluate it on the validation split, measure it on its target: one row.

    With ``cache`` a finished point is returned from it (``row["cached"]`` is then true) and a new
    one is stored in it. ``data`` may pass the already loaded dataset (it must be ``spec.data``);
    ``device`` overrides the target's measuring device (e.g. an agent).
    """
    import torch

    from pipeline.cost.plan import scale_cost
    from pipeline.data.datasets import load_dataset
    from pipeline.export.onnx import DEFAULT_OPSET, export_onnx
    from pipeline.predict.targets import load_target
    from pipeline.train.trainer import TrainOptions, load_checkpoint, train

    dataset = data if data is not None else load_dataset(spec.data)
    key = spec.key(dataset.fingerprint())
    if cache is not None and (row := cache.get(key)) is not None:
        return {**row, "label": spec.label or row.get("label", ""), "cached": True}
    scale = spec.scale()
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="edgefit-point-") as work:
        try:
            if spec.train_threads:
                torch.set_num_threads(spec.train_threads)
            # a dataset with a fixed input size (digits) keeps it; otherwise the scale's own resolution
            res = None if dataset.default_resolution else scale.resolution
            result = train(spec.family, scale, dataset, out_dir=work, log=lambda m: log(f"{spec.describe()}: {m}"),
                           options=TrainOptions(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                                                seed=spec.seed, resolution=res,
                                                scaling={"alpha": spec.alpha, "beta": spec.beta, "gamma": spec.gamma}))
        finally:
            torch.set_num_threads(threads_before)
        ck = load_checkpoint(result.checkpoint)
        onnx = Path(work) / "model.onnx"
        opset = spec.opset or min(DEFAULT_OPSET, load_target(spec.target).max_onnx_opset)
        export_onnx(ck.model(), onnx, resolution=ck.preprocess.resolution, opset=opset)
        cost = scale_cost(spec.family, ck.scale, ck.num_classes)
        latency = _latency(spec, onnx, cost, spec.family, device, log)
    s = ck.scale
    row = {
        "key": key, "row_version": ROW_VERSION, "label": spec.label, "spec": spec.to_dict(),
        "family": spec.family, "alpha": spec.alpha, "beta": spec.beta, "gamma": spec.gamma,
        "flops_factor": round(flops_factor(spec.alpha, spec.beta, spec.gamma), 6),
        "phi_depth": spec.phi_depth, "phi_width": spec.phi_width, "phi_resolution": spec.phi_resolution,
        "depth_multiplier": round(s.depth, 6), "width_multiplier": round(s.width, 6), "resolution": s.resolution,
        "seed": spec.seed, "epochs": spec.epochs,
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "samples": len(dataset),
                 "classes": len(dataset.classes), "split": result.dataset["split"]},
        "val_accuracy": result.val_accuracy, "best_epoch": result.best_epoch,
        "final_val_accuracy": result.history[-1]["val_accuracy"] if result.history else None,
        "params": cost.params, "macs": cost.macs, "activation_mb": round(cost.activation_bytes / 2**20, 3),
        **latency,
        "train_seconds": result.seconds, "seconds": round(time.perf_counter() - started, 2),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"), "edgefit": __version__,
    }
    if not all(math.isfinite(v) for v in (row["val_accuracy"], row["latency_ms"])):
        raise UsageError(f"point {key} produced a non-finite accuracy or latency: {row['val_accuracy']}, "
                         f"{row['latency_ms']}.")
    if cache is not None:
        cache.put(row)
    return {**row, "cached": False}


__all__ = ["POINTS_DIR", "PointCache", "PointSpec", "run_point"]
