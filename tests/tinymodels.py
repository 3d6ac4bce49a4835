"""Tiny real models and run directories shared by the runtime, build, quantize and trtexec tests."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch

from pipeline.core.scaling import CompoundScaling
from pipeline.export.onnx import export_onnx
from pipeline.models import build, initialize

PHI = -4.0
RES = 32  # what builtin:digits trains at: tiny inputs keep every test fast
CLASSES = 10


@cache
def tiny_model(family: str = "resnet18", res: int = RES) -> torch.nn.Module:
    """Cached (tests must not mutate it): built at φ=-4, input res×res, deterministic initialisation."""
    scale = CompoundScaling().compound(PHI).with_resolution(res)
    return initialize(build(family, scale, num_classes=CLASSES), seed=0)


@cache
def _exported(family: str, res: int, opset: int | None) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(tiny_model(family, res), path, opset=opset)
        return path.read_bytes()


def tiny_onnx(path: Path, family: str = "resnet18", res: int = RES, opset: int | None = None) -> Path:
    """The tiny model exported to ``path`` (each export is made once per session and copied)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_exported(family, res, opset))
    return path


def fit_record(target: str, family: str = "resnet18", precision: str = "fp32", latency_ms: float | None = 20.0,
               percentile: int = 50) -> dict:
    """A complete fit.json object (schema_version 1) as `deploy fit` writes it for a predicted-only run."""
    scale = CompoundScaling().compound(PHI)
    row = {"index": 0, "phi": PHI, "phi_max": -3.9, "resolution": scale.resolution,
           "depth_multiplier": round(scale.depth, 4), "width_multiplier": round(scale.width, 4), "params": 0,
           "macs": 0, "latency_ms": 1.0, "memory_mb": 10.0, "fits": True, "reason": None}
    return {
        "schema_version": 1, "target": target, "family": family, "precision": precision, "phi": PHI,
        "phi_max": -3.9, "depth_multiplier": round(scale.depth, 6), "width_multiplier": round(scale.width, 6),
        "resolution": scale.resolution, "params": 0, "macs": 0, "scale": scale.to_dict(), "num_classes": CLASSES,
        "budget": {"latency_ms": latency_ms, "memory_mb": None, "percentile": percentile, "noise_margin_pct": 2.0},
        "predicted": {"latency_ms": 1.0, "latency_ms_at_percentile": 1.0, "memory_mb": 10.0,
                      "provenance": "published", "heldout_error_pct": None, "profile": None, "method": None,
                      "note": None},
        "measured": None, "verified": {"latency": None, "memory": None, "accuracy": None},
        "accuracy": None, "int8": None, "precisions": [], "training": None,
        "artifacts": {"onnx": "model.onnx", "report": "report.md", "plot": "latency_vs_phi.png"},
        "frontier": [row], "measurements": [],
        "search": {"architectures": 1, "margin_pct": 10.0, "predictor_choice_phi": PHI,
                   "reason_next_rejected": "no larger architecture in the φ range", "seconds": 0.0},
        "parity": {},
        "weights": "deterministic initialisation (seed 0): the accuracy check covers export fidelity only",
        "host": {"python": "3.11", "machine": "x86_64"},
    }


def make_run(run_dir: Path, target: str, family: str = "resnet18", precision: str = "fp32", res: int = RES,
             latency_ms: float | None = 20.0, percentile: int = 50) -> Path:
    """A run directory as `deploy fit` leaves it (fit.json + model.onnx at the default opset 18), without fitting."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tiny_onnx(run_dir / "model.onnx", family, res)
    fit = fit_record(target, family, precision, latency_ms, percentile)
    (run_dir / "fit.json").write_text(json.dumps(fit, indent=2))
    return run_dir


def read_fit(run_dir: Path) -> dict:
    return json.loads((run_dir / "fit.json").read_text())


class _DigitsNet(torch.nn.Module):
    """Random conv features + a ridge-regression head: a real classifier of builtin:digits, fitted in a second."""

    resolution = 8

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten())
        self.head = torch.nn.Linear(512, 10)

    def forward(self, x):
        return self.head(self.features(x))


@cache
def digits_classifier() -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """``(onnx bytes, calibration inputs, validation inputs, validation labels)`` of a fitted digits model (~97%).

    Real data (scikit-learn's digits at their native 8x8, the data module's preprocessing
    and split), real labels; the head is solved in closed form, so no training loop.
    """
    import tempfile

    from pipeline.export.quantize import _dataset_arrays, calibration_batches, validation_set

    x_train, y_train = _dataset_arrays("builtin:digits", 8, None, seed=0, split="train")
    x_val, y_val = validation_set("builtin:digits", 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _DigitsNet().eval()
    with torch.no_grad():
        feats = model.features(torch.from_numpy(x_train)).numpy().astype(np.float64)
    a = np.c_[feats, np.ones(len(feats))]
    w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(10)[y_train])
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w[:-1].T.astype(np.float32)))
        model.head.bias.copy_(torch.from_numpy(w[-1].astype(np.float32)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        export_onnx(model, path, opset=17)
        data = path.read_bytes()
    return data, calibration_batches("builtin:digits", 8, 64), x_val, y_val


@cache
def rtx_importable() -> bool:
    """Whether tensorrt_rtx imports here (tests marked ``trt`` skip otherwise)."""
    try:
        import tensorrt_rtx  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or a broken install (missing shared library)
        return False
    return True


RTX_SKIP_REASON = "tensorrt_rtx is not importable: pip install tensorrt-rtx (the [tensorrt-rtx] extra)"
