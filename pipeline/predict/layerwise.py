"""A layer-wise latency model for profiles with only a few published records.

A single roofline efficiency fitted on ResNets cannot see what dominates small and
depthwise models on GPUs and ARM CPUs: memory-bound layers, a per-layer launch cost, and
the fixed per-inference cost of the harness that produced the figure (a Python loop
with host↔device copies). This model keeps those apart::

    latency = Σ_layers [ max(FLOPs / (peak × eff[kind]), bytes / (bandwidth × eff_bw)) + launch ] + fixed

with ``kind`` one of dense convolution, depthwise convolution, matmul and elementwise.
Its seven parameters are fitted by maximum a posteriori in log space: each has a prior
(:data:`PRIORS`, per device kind, around the target file's datasheet peak and bandwidth)
and the records pull it away only as far as they can. With two records the fit is
mostly the priors, scaled; with ten it is mostly the data. That is what "as few
parameters as the records allow" means here, without a cliff between regimes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from pipeline.cost.ops import ACT_BYTES, BYTES_PER_ELEMENT, Cost

PARAMS = ("eff_dense", "eff_depthwise", "eff_matmul", "eff_elementwise", "eff_bandwidth", "launch_ms", "fixed_ms")
_KIND_CLASS = {"conv": 0, "pwconv": 0, "dwconv": 1, "linear": 2}  # anything else: elementwise (3)

# (centre, sigma of its natural log). Efficiencies are fractions of the datasheet peak; an
# elementwise op's "work" is one operation per output element. Centres are typical of
# TensorRT on Jetson/RTX and of ARM NEON runtimes (ncnn, XNNPACK, ONNX Runtime); the
# sigmas are wide (one e-fold) because a published figure's harness is rarely documented.
PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "gpu": {"eff_dense": (0.35, 1.0), "eff_depthwise": (0.05, 1.0), "eff_matmul": (0.2, 1.0),
            "eff_elementwise": (0.02, 1.0), "eff_bandwidth": (0.6, 0.5), "launch_ms": (0.01, 1.0),
            "fixed_ms": (0.3, 1.5)},
    "cpu": {"eff_dense": (0.5, 1.0), "eff_depthwise": (0.15, 1.0), "eff_matmul": (0.3, 1.0),
            "eff_elementwise": (0.1, 1.0), "eff_bandwidth": (0.5, 0.5), "launch_ms": (0.005, 1.0),
            "fixed_ms": (0.1, 1.5)},
}
# Without a datasheet peak or bandwidth, a nominal one with a prior so wide it does not bind.
NOMINAL = {"gpu": (1000.0, 50.0), "cpu": (20.0, 10.0)}  # (GFLOP/s, GB/s)
UNKNOWN_SIGMA = 3.0
# When the target states a peak only for fp32: what other precisions usually gain on that kind of device.
PRECISION_GAIN = {"gpu": {"fp32": 1.0, "fp16": 2.0, "int8": 4.0}, "cpu": {"fp32": 1.0, "fp16": 1.0, "int8": 2.0}}
# A Jetson Orin's headline is sparse INT8 TOPS on its tensor cores: dense INT8 is half that and dense
# FP16 a quarter (NVIDIA Ampere tensor-core ratios). Used only when no peak is stated for the precision.
TENSOR_FROM_SPARSE_INT8 = {"int8": 2.0, "fp16": 4.0}
OBSERVATION_SIGMA = 0.1  # log-space spread of one published record around the model (harness noise)


def hardware_figure(hardware: dict, key: str, precision: str) -> float | None:
    """A target's ``[hardware]`` figure at ``precision`` (else its ``value``); None when absent or not positive."""
    fig = hardware.get(key)
    if not isinstance(fig, dict):
        return None
    value = fig.get(precision, fig.get("value"))
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


@dataclass(frozen=True)
class Device:
    """The datasheet side of the model: peak compute and bandwidth at one precision, and the priors."""

    kind: str
    peak_gflops: float
    bandwidth_gbs: float
    precision: str
    centre: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_hardware(cls, hardware: dict, kind: str, precision: str) -> Device:
        kind = kind if kind in PRIORS else "cpu"
        priors = dict(PRIORS[kind])
        peak = hardware_figure(hardware, "peak_gflops", precision)
        tops = hardware_figure(hardware, "int8_tops_sparse", "")
        if peak is None and tops and precision in TENSOR_FROM_SPARSE_INT8:
            peak = tops * 1000 / TENSOR_FROM_SPARSE_INT8[precision]
        if peak is None and (fp32 := hardware_figure(hardware, "peak_gflops", "fp32")):
            peak = fp32 * PRECISION_GAIN[kind][precision]
        bandwidth = hardware_figure(hardware, "memory_bandwidth_gbs", precision)
        nominal_peak, nominal_bw = NOMINAL[kind]
        if peak is None:
            peak = nominal_peak
            priors.update({k: (c, UNKNOWN_SIGMA) for k, (c, _) in priors.items() if k.startswith("eff_")
                           and k != "eff_bandwidth"})
        if bandwidth is None:
            bandwidth = nominal_bw
            priors["eff_bandwidth"] = (priors["eff_bandwidth"][0], UNKNOWN_SIGMA)
        centre = np.log([priors[p][0] for p in PARAMS])
        sigma = np.array([priors[p][1] for p in PARAMS])
        return cls(kind, peak, bandwidth, precision, centre, sigma)


def layer_arrays(cost: Cost, precision: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind class, work in FLOPs or elements, bytes moved) per executed layer, at ``precision``."""
    b = BYTES_PER_ELEMENT[precision]
    kinds, work, moved = [], [], []
    for op in cost.ops:
        k = _KIND_CLASS.get(op.kind, 3)
        kinds.append(k)
        work.append(2.0 * op.macs if k < 3 else op.out_bytes / ACT_BYTES)
        moved.append((op.in_bytes + op.out_bytes) * b / ACT_BYTES + op.params * b)
    return np.array(kinds, dtype=int), np.array(work), np.array(moved)


def latency_ms(arrays: tuple[np.ndarray, np.ndarray, np.ndarray], theta: np.ndarray, device: Device) -> float:
    kinds, work, moved = arrays
    p = np.exp(theta)
    compute = work / (device.peak_gflops * 1e9 * p[kinds]) * 1e3
    memory = moved / (device.bandwidth_gbs * 1e9 * p[4]) * 1e3
    return float(np.maximum(compute, memory).sum() + len(kinds) * p[5] + p[6])


@dataclass(frozen=True)
class LayerwiseModel:
    """Fitted parameters (``theta``: natural logs, in :data:`PARAMS` order) for one device and precision."""

    device: Device
    theta: np.ndarray

    def __call__(self, cost: Cost) -> float:
        return latency_ms(layer_arrays(cost, self.device.precision), self.theta, self.device)

    def parameters(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(PARAMS, np.exp(self.theta))}


def fit_layerwise(costs: list[Cost], latencies: list[float], device: Device) -> LayerwiseModel:
    """MAP fit: log-errors of the records (σ = :data:`OBSERVATION_SIGMA`) plus the priors' pull."""
    arrays = [layer_arrays(c, device.precision) for c in costs]
    y = np.log(np.asarray(latencies, dtype=float))

    def residuals(theta: np.ndarray) -> np.ndarray:
        pred = np.log([latency_ms(a, theta, device) for a in arrays])
        return np.concatenate([(pred - y) / OBSERVATION_SIGMA, (theta - device.centre) / device.sigma])

    result = least_squares(residuals, device.centre.copy(), method="trf", x_scale=1.0, max_nfev=400)
    return LayerwiseModel(device, result.x)
