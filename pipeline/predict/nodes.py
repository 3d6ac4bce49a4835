"""A per-node latency model for ONNX Runtime on a CPU: how ``deploy predict --onnx`` costs a foreign model.

Why: the profile's linear model weighs a dozen whole-model features fitted on some fifty suite
models. That is enough for our own families at new scales, but a model users bring puts its
time in places the suite barely samples (dilated, grouped and 7×7 convolutions, big
fully-connected heads, transposes), and a linear model misses those by 10-30%. ORT's time is a
sum over the nodes it executes, so this model predicts each node and sums:

* **convolutions** (most of the time): extra-trees on the layer's shape (kernel, stride,
  dilation, groups, channels, map size, the share of window taps that fall into the padding,
  a fused residual add, and how many bytes of weights the whole model has: whether they stay
  cached between inferences) predict log(µs per MAC). They learn from the suite's
  convolutions in context and from a seeded grid of single-layer models
  (:func:`pipeline.measure.node_profile.conv_grid`) that covers shapes our families never use;
* **everything else**: per op type, µs = a + b·(elements in) + c·(elements out · window), or
  for GEMMs a + b·MACs (many rows) or a + c·weights (one row), fitted on the suite's nodes;
  an op type the suite never ran takes its group's fit (copies, pools, GEMMs, element-wise);
* **the total**: per-node profiling adds a little per node, so the unprofiled latency is
  a·Σ(node µs) − b·nodes + c, fitted on each suite model's unprofiled latency timed in the
  same process right after its profile.

On this machine (bench/results/predictor_accuracy.md) it predicts models built outside
edgefit within a few per cent where the per-op-kind linear model missed them by up to 30%.

It needs the executed graph (:func:`pipeline.cost.ort_graph.executed_graph`), so it applies
only to profiles calibrated on this machine with ONNX Runtime's CPU provider at fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from pipeline.cost.ort_graph import Node

CONVS = ("Conv", "FusedConv")
GEMMS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
COPIES = ("ReorderInput", "ReorderOutput", "Transpose", "Concat", "Split", "Slice", "Pad", "Reshape",
          "Flatten", "Squeeze", "Unsqueeze", "Identity", "Expand", "Tile", "Resize", "Upsample",
          "DepthToSpace", "SpaceToDepth", "Gather")
MIN_OP_SAMPLES = 4  # fewer suite nodes of an op type than this: it takes its group's fit
TREES = 200


def _prod(shape: Iterable[int]) -> int:
    return math.prod(shape) if shape else 1


def weight_bytes(nodes: Iterable[Node]) -> float:
    """Bytes of every weight the nodes read (fp32): whether they stay in cache from one inference to the next."""
    return float(sum(_prod(n.weight) * 4 for n in nodes if n.weight)) or 1.0


def conv_macs(n: Node) -> int:
    """MACs as the kernel computes them: padded channels (blocked layout) and every tap, padding included."""
    w = n.weight
    return int(w[0] * w[1] * w[2] * w[3] * _prod(n.output[2:]))


def _taps(size: int, out: int, k: int, s: int, d: int, pad: int) -> tuple[float, float]:
    """Along one axis: (share of (output, tap) pairs inside the input, share of outputs whose window leaves it)."""
    inside, border = 0, 0
    for o in range(out):
        start = o * s - pad
        hits = sum(1 for t in range(k) if 0 <= start + t * d < size)
        inside += hits
        border += hits < k
    return inside / (out * k), border / out


def conv_features(n: Node, model_weights: float) -> list[float]:
    """What a convolution's µs per MAC depends on, as a flat feature row for the trees."""
    x, w, y = n.inputs[0], n.weight, n.output
    group = int(n.attrs.get("group", 1))
    k, strides = w[2], n.attrs.get("strides") or [1, 1]
    dil = (n.attrs.get("dilations") or [1, 1])[0]
    pads = n.attrs.get("pads") or [0, 0, 0, 0]
    depthwise = group > 1 and w[1] == 1
    inside_h, border_h = _taps(x[2], y[2], k, strides[0], dil, pads[0])
    inside_w, border_w = _taps(x[3], y[3], w[3], strides[-1], dil, pads[1])
    return [float(n.blocked), float(depthwise), float(group > 1 and not depthwise), math.log2(w[1]),
            math.log2(w[0]), float(k), float(strides[0]), float(dil), math.log2(y[2]), math.log2(y[3]),
            float(min(w[0] // 16, 4)), inside_h * inside_w, 1 - (1 - border_h) * (1 - border_w),
            float(len(n.inputs) > 1), math.log2(max(w[0] // group, 1)), math.log2(_prod(w) * 4)] + [
               math.log2(model_weights)]


def op_group(op: str) -> str:
    if op in GEMMS:
        return "gemm"
    if op in POOLS:
        return "pool"
    if op in COPIES:
        return "copy"
    return "elementwise"


def other_features(n: Node) -> list[float]:
    """[1, a, b] for a non-convolution node: GEMMs by MACs and weights, pools by window work, others by elements."""
    out = _prod(n.output)
    if op_group(n.op) == "gemm":
        k = n.inputs[0][-1] if n.inputs and n.inputs[0] else 1
        if n.attrs.get("transA") and len(n.inputs[0]) == 2:
            k = n.inputs[0][0]
        weight = _prod(n.weight) if n.weight else (_prod(n.inputs[1]) if len(n.inputs) > 1 else 0)
        rows = out // max(n.output[-1], 1) if n.output else 1
        # one row (a classifier on a pooled vector) reads each weight once: its time is the weights'. Many rows
        # reuse them: compute. Kept apart so the suite's classifier heads never set the rate of a token MLP.
        return [1.0, 0.0, weight / 1e3] if rows <= 1 else [1.0, out * k / 1e3, 0.0]
    ins = sum(_prod(s) for s in n.inputs)
    window = _prod(n.attrs.get("kernel_shape") or [1])
    return [1.0, ins / 1e3, out * window / 1e3]


@dataclass(frozen=True)
class ProfiledModel:
    """One suite model as calibration saw it: its nodes' µs, the device's p50, and the in-process unprofiled p50."""

    label: str
    nodes: list[tuple[Node, float]]
    latency_ms: float
    unprofiled_ms: float


def _weighted_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of Σ (pred − y)² / y: big nodes count more, small ones are not ignored."""
    w = 1 / np.sqrt(np.maximum(y, 1e-3))
    coef, _ = nnls(x * w[:, None], y * w)
    return coef


@dataclass
class NodeModel:
    """A fitted per-node model: conv trees, per-op and per-group linear fits, and the node-sum → latency map."""

    trees: object
    op_fits: dict[str, np.ndarray]
    group_fits: dict[str, np.ndarray]
    total: np.ndarray  # (a, b, c): latency µs = a·Σ − b·nodes + c

    @classmethod
    def fit(cls, models: Sequence[ProfiledModel], grid: Sequence[tuple[Node, float]], seed: int = 0) -> NodeModel:
        """Fit on the suite's profiled models and the grid's single convolutions.

        The node-sum → latency map is fitted on each model's in-process unprofiled latency, timed next to
        its profile: both sides then share the machine's state, and the map is the profiler's own overhead.
        """
        from sklearn.ensemble import ExtraTreesRegressor

        convs, rows = [], []
        for m in models:
            total = weight_bytes(n for n, _ in m.nodes)
            for n, us in m.nodes:
                if n.op in CONVS and n.weight:
                    convs.append((n, us))
                    rows.append(conv_features(n, total))
        for n, us in grid:
            convs.append((n, us))
            rows.append(conv_features(n, weight_bytes([n])))
        x = np.array(rows)
        y = np.array([math.log(us / (conv_macs(n) / 1e6)) for n, us in convs])
        trees = ExtraTreesRegressor(n_estimators=TREES, min_samples_leaf=1, random_state=seed, n_jobs=1).fit(x, y)
        others: dict[str, list[tuple[Node, float]]] = {}
        for m in models:
            for n, us in m.nodes:
                if not (n.op in CONVS and n.weight):
                    others.setdefault(n.op, []).append((n, us))
        op_fits = {op: _fit_rows(rows) for op, rows in others.items()
                   if len(rows) >= MIN_OP_SAMPLES and len({_prod(n.output) for n, _ in rows}) > 1}
        groups: dict[str, list[tuple[Node, float]]] = {}
        for op, rows in others.items():
            groups.setdefault(op_group(op), []).extend(rows)
        group_fits = {g: _fit_rows(rows) for g, rows in groups.items()}
        group_fits["*"] = _fit_rows([r for rows in others.values() for r in rows])
        sums = np.array([[sum(us for _, us in m.nodes), -len(m.nodes), 1.0] for m in models])
        ms = np.array([m.unprofiled_ms for m in models]) * 1e3
        total, _ = nnls(sums / ms[:, None], np.ones(len(ms)))
        return cls(trees, op_fits, group_fits, total)

    def node_us(self, nodes: Sequence[Node]) -> np.ndarray:
        """Predicted kernel µs of each node."""
        out = np.zeros(len(nodes))
        conv_idx = [i for i, n in enumerate(nodes) if n.op in CONVS and n.weight]
        is_conv = set(conv_idx)
        total = weight_bytes(nodes)
        if conv_idx:
            rates = np.exp(self.trees.predict(np.array([conv_features(nodes[i], total) for i in conv_idx])))
            for i, r in zip(conv_idx, rates):
                out[i] = r * conv_macs(nodes[i]) / 1e6
        for i, n in enumerate(nodes):
            if i not in is_conv:
                coef = self.op_fits.get(n.op, self.group_fits.get(op_group(n.op), self.group_fits["*"]))
                out[i] = float(np.dot(coef, other_features(n)))
        return out

    def latency_ms(self, nodes: Sequence[Node]) -> float:
        a, b, c = self.total
        return float(a * self.node_us(nodes).sum() - b * len(nodes) + c) / 1e3


def _fit_rows(rows: list[tuple[Node, float]]) -> np.ndarray:
    x = np.array([other_features(n) for n, _ in rows])
    y = np.array([us for _, us in rows])
    return _weighted_nnls(x, y)


# --- held-out error ---------------------------------------------------------------------------------

def suite_group(label: str) -> str:
    """A suite model's group for leave-one-group-out: its family (``resnet18 φ=0`` → resnet18), or ``probe``."""
    return label.split(" ", 1)[0]


def heldout_errors(models: Sequence[ProfiledModel], grid: Sequence[tuple[Node, float]]) -> dict[str, float]:
    """Leave-one-group-out: each suite group predicted by a model fitted without it, % error per model.

    The grid stays in every fit (it is what stands for unseen architectures), so this is what a
    model whose layers the suite never ran in context gets: the case of a foreign ONNX file.
    """
    errors: dict[str, float] = {}
    for group in sorted({suite_group(m.label) for m in models}):
        train = [m for m in models if suite_group(m.label) != group]
        if len(train) < 3:
            continue
        fitted = NodeModel.fit(train, grid)
        for m in models:
            if suite_group(m.label) == group:  # against the device's p50: what a user's measurement will say
                errors[m.label] = round(100 * (fitted.latency_ms([n for n, _ in m.nodes]) / m.latency_ms - 1), 2)
    return errors


def stated_error_pct(errors: dict[str, float]) -> float | None:
    """p90 of the held-out |errors|: what a per-node prediction states (None with fewer than 5)."""
    values = sorted(abs(v) for v in errors.values())
    if len(values) < 5:
        return None
    return round(float(np.percentile(values, 90)), 2)


# --- the node-times file ------------------------------------------------------------------------------

NODE_TIMES_VERSION = 1


def node_times_path(profile_path: str | Path) -> Path:
    """Where a profile's per-node times live: beside it, ``<profile stem>.nodes.json``."""
    profile_path = Path(profile_path)
    return profile_path.with_name(f"{profile_path.stem}.nodes.json")


def save_node_times(path: str | Path, profile_created: str, models: Sequence[ProfiledModel],
                    grid: Sequence[tuple[Node, float]], grid_seed: int, seconds: float) -> Path:
    """Write the node times of one calibration (atomically), with the held-out error they give."""
    import json

    from pipeline.core.io import atomic_write

    errors = heldout_errors(models, grid)
    data = {"schema_version": NODE_TIMES_VERSION, "profile_created": profile_created,
            "grid_seed": grid_seed, "seconds": round(seconds, 1),
            "heldout": {"case": "leave-one-group-out", "errors_pct": errors,
                        "stated_error_pct": stated_error_pct(errors)},
            "models": [{"label": m.label, "latency_ms": m.latency_ms, "unprofiled_ms": round(m.unprofiled_ms, 4),
                        "nodes": [[n.to_record(), round(us, 2)] for n, us in m.nodes]} for m in models],
            "grid": [[n.to_record(), round(us, 2)] for n, us in grid]}
    return atomic_write(path, json.dumps(data, separators=(",", ":")) + "\n")


@dataclass
class NodeTimes:
    """A loaded node-times file: the fitted model and the error it states."""

    path: Path
    model: NodeModel
    stated_error_pct: float | None
    models: int
    grid: int


def load_node_times(path: str | Path, profile_created: str) -> NodeTimes:
    """Read, check and fit a node-times file; a broken or stale one is :class:`ProfileInvalid`, never ignored."""
    import json

    from pipeline.core.errors import ProfileInvalid

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != NODE_TIMES_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {NODE_TIMES_VERSION}")
        models = [ProfiledModel(str(m["label"]), [(Node.from_record(r), float(us)) for r, us in m["nodes"]],
                                float(m["latency_ms"]), float(m["unprofiled_ms"])) for m in data["models"]]
        grid = [(Node.from_record(r), float(us)) for r, us in data["grid"]]
        stated = data["heldout"]["stated_error_pct"]
        created = data["profile_created"]
    except FileNotFoundError:
        raise ProfileInvalid(f"{path}: the profile names this node-times file but it is missing: recalibrate with "
                             "`deploy calibrate --target host`.") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProfileInvalid(f"{path}: not a valid node-times file ({exc.__class__.__name__}: {exc}): recalibrate "
                             "with `deploy calibrate --target host`.") from None
    if created != profile_created:
        raise ProfileInvalid(f"{path}: node times from the calibration of {created}, but the profile is from "
                             f"{profile_created}: recalibrate with `deploy calibrate --target host`.")
    if len(models) < 3:
        raise ProfileInvalid(f"{path}: {len(models)} profiled models; the per-node model needs at least 3.")
    return NodeTimes(path, NodeModel.fit(models, grid), stated, len(models), len(grid))
