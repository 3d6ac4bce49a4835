"""Per-node kernel times from ONNX Runtime's profiler, and a seeded grid of single-convolution models.

Why: the whole-model records of a profile say how long each suite model took, not where the
time went. A predictor for models edgefit did not build (:mod:`pipeline.predict.nodes`) learns
per node instead: every node ORT executed, with its shapes, and its kernel time. The suite's
nodes cover our families in context; the grid covers convolution shapes they never use (dilated,
grouped, 5×5 and 7×7, odd channel counts, tiny and huge maps).

The graph and the times come from one session, so the profiler's node names are the names in the
saved optimized graph (ORT numbers the layout copies it inserts per session).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cost.ort_graph import Node, graph_from_saved

GRID_CHANNELS = (3, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
# Channel counts ORT cannot block (not a multiple of 4: ShuffleNet's 58/116/232 and the like): these
# convolutions run im2col + GEMM in the plain layout, a different kernel with its own per-MAC rate.
ODD_CHANNELS = (6, 30, 58, 90, 116, 232)
GRID_SIZES = (7, 8, 12, 14, 20, 28, 40, 56, 80, 112, 160)
GRID_OPS = ("Conv", "FusedConv", "ConvTranspose")  # the node a grid layer times
GRID_MACS = (2e5, 3e8)  # a layer outside this range is redrawn: too small to time, or too slow to be worth it


@dataclass(frozen=True)
class GraphProfile:
    """One model's node times, and its latency timed the same way without the profiler.

    The profiler adds a little to every node; ``unprofiled_ms`` (same process, same session
    options, timed in turns with the profiled runs) is what lets the per-node model take that back out.
    """

    nodes: list[tuple[Node, float]]
    unprofiled_ms: float | None
    shape_mismatches: tuple[str, ...] = ()  # nodes whose derived output shape differs from the profiler's


def profile_graph(path: str | Path, threads: int = 1, runs: int = 10, warmup: int = 5,
                  unprofiled: bool = True) -> GraphProfile:
    """Every node ORT ran for ``path``, in execution order, with its kernel time in µs.

    Runs come in two halves of ``runs`` each, profiled and (with ``unprofiled``) unprofiled in turn;
    each time is the lower of the halves' medians (:func:`_calm`), the same statistic on both sides.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgefit-nodes-") as tmp:
        path = _named_copy(path, Path(tmp) / "named.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        plain = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]) if unprofiled else None
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in i.shape],
                                                         dtype=np.float32) for i in sess.get_inputs()}
        walls: list[list[float]] = [[], []]
        for _ in range(warmup):
            sess.run(None, feeds)
            if plain is not None:
                plain.run(None, feeds)
        for half in (0, 1):  # two halves: a short burst of a busy neighbour's load spoils at most one
            for _ in range(runs):
                sess.run(None, feeds)
            for _ in range(runs if plain is not None else 0):
                start = time.perf_counter()
                plain.run(None, feeds)
                walls[half].append(time.perf_counter() - start)
        events = json.loads(Path(sess.end_profiling()).read_text())
        nodes = graph_from_saved(Path(tmp) / "optimized.onnx")
    times: dict[str, list[float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times.setdefault(name, []).append(float(e["dur"]))
            outs = e.get("args", {}).get("output_type_shape") or [{}]
            shapes[name] = tuple(next(iter(outs[0].values()), ()))
    mismatches = tuple(n.name for n in nodes if n.name in shapes and shapes[n.name] != n.output)
    return GraphProfile([(n, _calm(times[n.name][warmup:], runs)) for n in nodes if n.name in times],
                        _calm(walls[0] + walls[1], runs) * 1e3 if plain is not None else None, mismatches)


def _calm(samples: list[float], runs: int) -> float:
    """The lower of the two halves' medians: the machine's speed when nothing else took the CPU."""
    return min(statistics.median(samples[:runs]), statistics.median(samples[runs:2 * runs]))


def _named_copy(path: str | Path, out: Path) -> Path:
    """``path`` itself when every node has a name; else a copy where each unnamed node gets one.

    The profiler and the saved graph name an unnamed node differently, so their times could not be paired.
    """
    import onnx

    model = onnx.load(str(path))
    unnamed = [n for n in model.graph.node if not n.name]
    if not unnamed:
        return Path(path)
    for i, node in enumerate(unnamed):
        node.name = f"edgefit_node_{i}"
    onnx.save(model, str(out))
    return out


def grid_layer(rng: random.Random, path: Path) -> bool:
    """Write one random single-convolution (+ReLU) model to ``path``; False when the draw is out of range."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = rng.random()
    if shape < 0.06:
        return _transposed_layer(rng, path)
    cin = rng.choice(ODD_CHANNELS) if rng.random() < 0.2 else rng.choice(GRID_CHANNELS)
    k = rng.choice([1, 1, 3, 3, 3, 5, 7])
    s, hw = rng.choice([1, 1, 1, 2]), rng.choice(GRID_SIZES)
    kind = rng.choice(["dense", "dense", "dense", "depthwise", "grouped"])
    if shape < 0.12:  # a patchify stem (ViT, ConvNeXt: kernel = stride, no padding), or AlexNet's 11×11 stride 4
        k = s = rng.choice([2, 4, 8, 16, 11])
        s = 4 if k == 11 else s
        kind, hw = "dense", rng.choice(GRID_SIZES) * rng.choice([1, 2])
    if kind == "depthwise":
        cout, g = cin, cin
    elif kind == "grouped":  # a few wide groups (AlexNet, ShuffleNet) or many narrow ones (ResNeXt, RegNet)
        g = rng.choice([2, 3, 4, 8]) if rng.random() < 0.5 else cin // rng.choice([2, 4, 8, 16, 32])
        if g < 2 or cin % g:
            return False
        cout = g * rng.choice([1, 2]) * (cin // g)
    else:
        cout, g = rng.choice(GRID_CHANNELS[1:]), 1
    d = rng.choice([1, 1, 1, 2, 4, 8]) if k == 3 else 1
    p = 0 if k == s else d * (k - 1) // 2
    ho = (hw + 2 * p - d * (k - 1) - 1) // s + 1
    if ho < 1 or not GRID_MACS[0] <= cout * (cin // g) * k * k * ho * ho <= GRID_MACS[1]:
        return False
    w = numpy_helper.from_array(np.full((cout, cin // g, k, k), 0.01, np.float32), "w")
    b = numpy_helper.from_array(np.full(cout, 0.1, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                              group=g, dilations=[d, d]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return True


def _transposed_layer(rng: random.Random, path: Path) -> bool:
    """One ConvTranspose (+ReLU) upsampling by 2, as decoders use it (k 2 no padding, k 3 or 4 padding 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cin, cout, hw = rng.choice(GRID_CHANNELS[1:]), rng.choice(GRID_CHANNELS[1:]), rng.choice(GRID_SIZES[:-1])
    k = rng.choice([2, 2, 3, 4])
    if not GRID_MACS[0] <= cin * cout * k * k * hw * hw <= GRID_MACS[1]:
        return False
    extra = {"pads": [0] * 4} if k == 2 else {"pads": [1] * 4, "output_padding": [1, 1] if k == 3 else [0, 0]}
    w = numpy_helper.from_array(np.full((cin, cout, k, k), 0.01, np.float32), "w")
    b = numpy_helper.from_array(np.full(cout, 0.1, np.float32), "b")
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[2, 2], **extra),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return True


def conv_grid(count: int, seed: int = 1, threads: int = 1, runs: int = 3,
              progress: Callable[[int, int], None] | None = None) -> list[tuple[Node, float]]:
    """``count`` seeded random convolution layers, each timed alone: (its convolution node, µs).

    The grid is timed twice, the second pass regenerating the same layers from the seed, and each
    layer keeps the lower time: a neighbour's burst of load lasts seconds, so it rarely hits a layer in both.
    """
    passes = [_grid_pass(count, seed, threads, runs, progress) for _ in range(2)]
    return [(n, min(a, b)) for (n, a), (_, b) in zip(*passes) if n is not None]


def _grid_pass(count: int, seed: int, threads: int, runs: int, progress) -> list[tuple[Node, float]]:
    rng, rows = random.Random(seed), []
    with tempfile.TemporaryDirectory(prefix="edgefit-grid-") as tmp:
        path = Path(tmp) / "layer.onnx"
        while len(rows) < count:
            if not grid_layer(rng, path):
                continue
            run = profile_graph(path, threads, runs, warmup=2, unprofiled=False)
            rows.append(next(((n, us) for n, us in run.nodes if n.op in GRID_OPS), (None, math.nan)))
            if progress and len(rows) % 50 == 0:
                progress(len(rows), count)
    return rows
