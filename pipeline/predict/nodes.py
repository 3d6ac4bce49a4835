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
from scipy.optimize import lsq_linear, nnls

from pipeline.cost.ort_graph import Node

CONVS = ("Conv", "FusedConv")
TRANSPOSED = ("ConvTranspose",)
GEMMS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
COPIES = ("ReorderInput", "ReorderOutput", "Transpose", "Concat", "Split", "Slice", "Pad", "Reshape",
          "Flatten", "Squeeze", "Unsqueeze", "Identity", "Expand", "Tile", "Resize", "Upsample",
          "DepthToSpace", "SpaceToDepth", "Gather")
# The trees' feature columns (conv_features) whose range decides coverage: channels in per group, channels
# out, map height and width (log2: slack half an octave), kernel, stride and dilation (exact).
COVERED_COLUMNS = [3, 4, 8, 9, 5, 6, 7, 17]
COVERED_NAMES = ("input channels", "output channels", "map height", "map width", "kernel", "stride", "dilation",
                 "transposed")
COVERED_SLACK = (0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0)
SIZE_SLACK = 1.5  # an op's input or weights up to this many times the largest timed still counts as covered
# Over this share of the predicted time outside the calibration, a prediction states no error: the held-out
# error says how wrong the model is on what it was fitted for, not on what it extrapolates to.
OUTSIDE_LIMIT_PCT = 5.0
RUN_US_MAX = 50.0  # the most a session run costs besides its nodes, µs (ORT's own: ~10-20 µs on this machine)
MIN_OP_SAMPLES = 4  # fewer suite nodes of an op type than this: it takes its group's fit
TREES = 200


def _prod(shape: Iterable[int]) -> int:
    return math.prod(shape) if shape else 1


def weight_bytes(nodes: Iterable[Node]) -> float:
    """Bytes of every weight the nodes read (fp32): whether they stay in cache from one inference to the next."""
    return float(sum(_prod(n.weight) * 4 for n in nodes if n.weight)) or 1.0


def conv_macs(n: Node) -> int:
    """MACs as the kernel computes them: padded channels (blocked layout), every tap (padding included), every image."""
    v = conv_view(n)
    return int(_prod(v.w) * _prod(v.y[2:]) * v.y[0])


@dataclass(frozen=True)
class ConvView:
    """A convolution seen as 2-D: what the features read. A 1-D one is a 2-D one of height 1."""

    x: tuple[int, ...]
    w: tuple[int, ...]
    y: tuple[int, ...]
    strides: tuple[int, int]
    dilation: int
    pads: tuple[int, int]  # begin pads (height, width)
    transposed: bool = False  # ConvTranspose: w is (out, in per group, kh, kw), y the input map it computes over


def conv_view(n: Node) -> ConvView | None:
    """The 2-D view of a 1-D or 2-D convolution; None for anything else (3-D: no calibration covers it).

    A 2-D ConvTranspose is seen as the GEMM it runs over its input map (every input pixel times every weight,
    then scattered): a convolution of its input map to out·k² columns, flagged so the trees keep it apart.
    """
    x, w, y = n.inputs[0], n.weight, n.output
    spatial = len(w) - 2
    if n.op in TRANSPOSED:
        g = int(n.attrs.get("group", 1))
        if spatial != 2 or len(x) != 4 or len(y) != 4:
            return None
        strides = n.attrs.get("strides") or [1, 1]
        return ConvView(tuple(x), (w[1] * g, w[0] // g, w[2], w[3]), (x[0], w[1] * g, x[2], x[3]),
                        (strides[0], strides[-1]), 1, (0, 0), True)
    strides = list(n.attrs.get("strides") or [1] * spatial)
    dil = list(n.attrs.get("dilations") or [1] * spatial)
    pads = list(n.attrs.get("pads") or [0] * 2 * spatial)
    if spatial == 1 and len(x) == 3 and len(y) == 3:
        return ConvView((x[0], x[1], 1, x[2]), (w[0], w[1], 1, w[2]), (y[0], y[1], 1, y[2]), (1, strides[0]),
                        dil[0], (0, pads[0]))
    if spatial == 2 and len(x) == 4 and len(y) == 4:
        return ConvView(tuple(x), tuple(w), tuple(y), (strides[0], strides[-1]), dil[0], (pads[0], pads[1]))
    return None


def is_conv(n: Node) -> bool:
    """A convolution the trees predict: Conv, FusedConv or ConvTranspose with a weight, 1-D or 2-D."""
    return (n.op in CONVS or n.op in TRANSPOSED) and bool(n.weight) and conv_view(n) is not None


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
    v = conv_view(n)
    x, w, y, strides, dil, pads = v.x, v.w, v.y, v.strides, v.dilation, v.pads
    group = int(n.attrs.get("group", 1))
    k = max(w[2], w[3])
    depthwise = group > 1 and w[1] == 1
    if v.transposed:  # it computes every input pixel with every tap: none fall outside
        inside_h = inside_w = 1.0
        border_h = border_w = 0.0
    else:
        inside_h, border_h = _taps(x[2], y[2], w[2], strides[0], dil, pads[0])
        inside_w, border_w = _taps(x[3], y[3], w[3], strides[1], dil, pads[1])
    return [float(n.blocked), float(depthwise), float(group > 1 and not depthwise), math.log2(w[1]),
            math.log2(w[0]), float(k), float(max(strides)), float(dil), math.log2(y[2]), math.log2(y[3]),
            float(min(w[0] // 16, 4)), inside_h * inside_w, 1 - (1 - border_h) * (1 - border_w),
            float(len(n.inputs) > 1), math.log2(max(w[0] // group, 1)), math.log2(_prod(w) * 4)] + [
               math.log2(model_weights), float(v.transposed)]


def fit_key(op: str) -> str:
    """The op whose fit a node takes: ORT's fused GEMMs run the plain kernel with the activation applied in place."""
    return _SAME_KERNEL.get(op, op)


_SAME_KERNEL = {"FusedGemm": "Gemm", "FusedMatMul": "MatMul"}


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
    conv_range: tuple[np.ndarray, np.ndarray]  # min and max of the trees' COVERED_COLUMNS over what they learnt from
    op_sizes: dict[str, tuple[int, int]]  # per op with its own fit: the most input elements and weights it saw

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
                if is_conv(n):
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
                if not is_conv(n):
                    others.setdefault(fit_key(n.op), []).append((n, us))
        op_fits = {op: _fit_rows(rows) for op, rows in others.items()
                   if len(rows) >= MIN_OP_SAMPLES and len({tuple(other_features(n)) for n, _ in rows}) > 1}
        groups: dict[str, list[tuple[Node, float]]] = {}
        for op, rows in others.items():
            groups.setdefault(op_group(op), []).extend(rows)
        group_fits = {g: _fit_rows(rows) for g, rows in groups.items()}
        group_fits["*"] = _fit_rows([r for rows in others.values() for r in rows])
        sums = np.array([[sum(us for _, us in m.nodes), -len(m.nodes), 1.0] for m in models])
        ms = np.array([m.unprofiled_ms for m in models]) * 1e3
        # The constant is the session's own per-run cost (tens of µs): bounded, so that a suite of big models
        # alone (a held-out fit without the small probes) cannot trade it against the per-node terms.
        total = lsq_linear(sums / ms[:, None], np.ones(len(ms)), bounds=([0, 0, 0], [np.inf, np.inf, RUN_US_MAX])).x
        sizes = {op: (max(_elements(n) for n, _ in rows), max(_weights(n) for n, _ in rows))
                 for op, rows in others.items() if op in op_fits}
        return cls(trees, op_fits, group_fits, total, (x[:, COVERED_COLUMNS].min(0), x[:, COVERED_COLUMNS].max(0)),
                   sizes)

    def node_us(self, nodes: Sequence[Node]) -> np.ndarray:
        """Predicted kernel µs of each node."""
        out = np.zeros(len(nodes))
        conv_idx = [i for i, n in enumerate(nodes) if is_conv(n)]
        convs = set(conv_idx)
        total = weight_bytes(nodes)
        if conv_idx:
            rates = np.exp(self.trees.predict(np.array([conv_features(nodes[i], total) for i in conv_idx])))
            for i, r in zip(conv_idx, rates):
                out[i] = r * conv_macs(nodes[i]) / 1e6
        for i, n in enumerate(nodes):
            if i not in convs:
                coef = self.op_fits.get(fit_key(n.op), self.group_fits.get(op_group(n.op), self.group_fits["*"]))
                out[i] = float(np.dot(coef, other_features(n)))
        return out

    def outside(self, n: Node) -> str | None:
        """Why the calibration does not cover node ``n`` (its prediction is an extrapolation), or None if it does.

        The trees cannot extrapolate and a linear fit on small tensors misses cache effects on big ones, so a
        node is covered only when something like it was timed: a 1-D or 2-D convolution whose channels, map,
        kernel, stride and dilation lie in the range the trees learnt from, or an op type with its own fit
        and no more than 1.5× the largest input and weights timed for it.
        """
        if (n.op in CONVS or n.op in TRANSPOSED) and n.weight:
            if not is_conv(n):
                return f"{len(n.weight) - 2}-D convolution"
            row = np.array(conv_features(n, 1.0))[COVERED_COLUMNS]
            lo, hi = self.conv_range
            if n.op in TRANSPOSED and hi[-1] < 1:
                return f"{n.op} (never timed by the calibration)"
            slack = np.array(COVERED_SLACK)
            bad = [name for name, v, a, b, e in zip(COVERED_NAMES, row, lo, hi, slack) if v < a - e or v > b + e]
            return f"{n.op} ({', '.join(bad)} beyond the calibrated range)" if bad else None
        key = fit_key(n.op)
        if key not in self.op_fits:
            return f"{n.op} (never timed by the calibration)"
        most_in, most_w = self.op_sizes[key]
        if _elements(n) > SIZE_SLACK * most_in or _weights(n) > SIZE_SLACK * max(most_w, 1):
            return f"{n.op} (larger than any the calibration timed)"
        return None

    def coverage(self, nodes: Sequence[Node]) -> Coverage:
        """The share of the predicted time in nodes the calibration does not cover, and which they are."""
        return self.predict(nodes)[1]

    def predict(self, nodes: Sequence[Node]) -> tuple[float, Coverage]:
        """Latency in ms of the whole graph, and its :class:`Coverage` (the nodes predicted once for both)."""
        us = self.node_us(nodes)
        why: dict[str, list[float]] = {}
        for n, t in zip(nodes, us):
            reason = self.outside(n)
            if reason is not None:
                why.setdefault(reason, []).append(float(t))
        total = float(us.sum()) or 1.0
        parts = tuple(sorted(((r, len(v), 100 * sum(v) / total) for r, v in why.items()), key=lambda p: -p[2]))
        return self._latency_ms(us), Coverage(round(sum(p[2] for p in parts), 2), parts)

    def latency_ms(self, nodes: Sequence[Node]) -> float:
        return self._latency_ms(self.node_us(nodes))

    def _latency_ms(self, us: np.ndarray) -> float:
        a, b, c = self.total
        return float(a * us.sum() - b * len(us) + c) / 1e3


@dataclass(frozen=True)
class Coverage:
    """How much of a prediction rests on nodes no calibration timed anything like (:meth:`NodeModel.outside`)."""

    outside_pct: float  # share of the predicted time
    parts: tuple[tuple[str, int, float], ...]  # (why, nodes, % of the predicted time), largest first

    def describe(self, limit: int = 4) -> str:
        text = "; ".join(f"{why}: {k} node{'s' * (k > 1)}, {pct:.1f}%" for why, k, pct in self.parts[:limit])
        more = len(self.parts) - limit
        return text + (f"; and {more} more" if more > 0 else "")


def _elements(n: Node) -> int:
    return sum(_prod(s) for s in n.inputs)


def _weights(n: Node) -> int:
    return _prod(n.weight) if n.weight else 0


def _fit_rows(rows: list[tuple[Node, float]]) -> np.ndarray:
    x = np.array([other_features(n) for n, _ in rows])
    y = np.array([us for _, us in rows])
    return _weighted_nnls(x, y)


# --- held-out error ---------------------------------------------------------------------------------

def suite_group(label: str) -> str:
    """A suite model's group for leave-one-group-out: its family (``resnet18 φ=0`` → resnet18), or ``probe``."""
    return label.split(" ", 1)[0]


def heldout_errors(models: Sequence[ProfiledModel], grid: Sequence[tuple[Node, float]]
                   ) -> tuple[dict[str, float], dict[str, float]]:
    """Leave-one-group-out: each suite group predicted by a model fitted without it.

    The grid stays in every fit (it is what stands for unseen architectures), so this is what a
    model whose layers the suite never ran in context gets: the case of a foreign ONNX file.
    Returns (% error of each held-out model the fitted model covers, % of the predicted time outside
    the calibration for those it does not): a prediction states an error only when no more than
    OUTSIDE_LIMIT_PCT of it is outside (:meth:`NodeModel.coverage`), so the error is measured on those.
    """
    errors: dict[str, float] = {}
    outside: dict[str, float] = {}
    for group in sorted({suite_group(m.label) for m in models}):
        train = [m for m in models if suite_group(m.label) != group]
        if len(train) < 3:
            continue
        fitted = NodeModel.fit(train, grid)
        for m in models:
            if suite_group(m.label) != group:
                continue
            latency, cov = fitted.predict([n for n, _ in m.nodes])
            if cov.outside_pct > OUTSIDE_LIMIT_PCT:
                outside[m.label] = cov.outside_pct
            else:  # against the device's p50: what a user's measurement will say
                errors[m.label] = round(100 * (latency / m.latency_ms - 1), 2)
    return errors, outside


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

    errors, outside = heldout_errors(models, grid)
    data = {"schema_version": NODE_TIMES_VERSION, "profile_created": profile_created,
            "grid_seed": grid_seed, "seconds": round(seconds, 1),
            "heldout": {"case": "leave-one-group-out", "errors_pct": errors,
                        "outside_calibration_pct": outside, "outside_limit_pct": OUTSIDE_LIMIT_PCT,
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
