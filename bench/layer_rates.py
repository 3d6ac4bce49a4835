"""Can per-layer MAC rates from single-layer timings predict convolutions the suite never timed?

An experiment for the foreign-architecture predictor (bench/predictor_accuracy.py), not a product
path. The profile's linear model gives each kind of convolution one MAC rate, and real layers vary
around it (61-88 GMAC/s for 3×3 layers with 16-64 output channels on the dev VM). This bench:

1. times a seeded random grid of single-convolution ONNX models (dense, depthwise, grouped; 1×1 to
   7×7; stride 1-2; dilation 1-2; 7-160 px; 3-512 channels) with ONNX Runtime's per-node profiler,
   keeping the convolution node's own kernel time;
2. profiles the full calibration suite and the foreign models of ``foreign_models.py`` the same way;
3. fits extra-trees on log(µs per MAC) from the layer's shape, on the grid alone and on the grid
   plus the suite's in-context layers;
4. reports, per model, the predicted convolution time plus the *measured* time of everything else,
   against the profiled node total: how well convolutions alone are predicted.

Run: ``python bench/layer_rates.py [--grid 600] [--runs 15]`` (about 5 minutes at one thread).
Results: bench/results/layer_rates.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_results  # noqa: E402
from foreign_models import FOREIGN, build_foreign  # noqa: E402

CHANNELS = [3, 8, 12, 16, 24, 32, 40, 48, 58, 64, 80, 96, 128, 160, 192, 256, 384, 512]
BLOCK = 16  # MLAS's NCHWc block with AVX-512 (the dev VM)


def profile_nodes(path: Path, runs: int, warmup: int = 10) -> list[dict]:
    """Median kernel time (µs) of every node ONNX Runtime ran, with its op and tensor shapes (1 thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgefit-layer-rates-"), "p")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
    for _ in range(warmup + runs):
        sess.run(None, {inp.name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    args: dict[str, dict] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times.setdefault(name, []).append(e["dur"])
            args[name] = e["args"]
    return [{"name": n, "op": args[n].get("op_name"), "us": statistics.median(t[-runs:]),
             "inputs": [next(iter(s.values())) for s in args[n].get("input_type_shape", [])],
             "outputs": [next(iter(s.values())) for s in args[n].get("output_type_shape", [])]}
            for n, t in times.items()]


def conv_layer(node: dict) -> dict | None:
    """A profiled convolution node's shape (None for anything else)."""
    if node["op"] not in ("Conv", "FusedConv") or len(node["inputs"]) < 2 or len(node["inputs"][0]) != 4:
        return None
    x, w, y = node["inputs"][0], node["inputs"][1], node["outputs"][0]
    cin, cout, k = x[1], w[0], w[2]
    return {"cin": cin, "cout": cout, "k": k, "g": cin // w[1], "hin": x[2], "ho": y[2], "wo": y[3],
            "s": max(1, round(x[2] / y[2])), "blocked": node["name"].endswith("_nchwc"),
            "depthwise": w[1] == 1 and cin > 1, "macs": cout * w[1] * k * w[3] * y[2] * y[3], "us": node["us"]}


def _edge(c: dict) -> float:
    """Share of outputs whose window reaches into the padding (MLAS computes those apart)."""
    k, s = c["k"], c["s"]
    if k <= 1 or s == k:
        return 0.0
    p = (k - 1) // 2
    border = sum(1 for i in range(c["ho"]) if i * s - p < 0 or i * s - p + k > c["hin"])
    return 1 - (c["ho"] - border) * (c["wo"] - border) / (c["ho"] * c["wo"])


def shape_features(c: dict) -> list[float]:
    padded = math.ceil(c["cout"] / BLOCK) * BLOCK
    return [c["blocked"], c["depthwise"], c["g"] > 1 and not c["depthwise"], math.log2(c["cin"] / c["g"]),
            math.log2(c["cout"]), c["k"], c["s"], math.log2(c["ho"]), math.log2(c["wo"]),
            min(padded // BLOCK, 4), _edge(c), padded / c["cout"], math.log2(c["cout"] / c["g"])]


def grid_model(rng: random.Random, path: Path) -> bool:
    """Write one random single-convolution (+ReLU) model to ``path``; False if the draw is out of range."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cin, k = rng.choice(CHANNELS), rng.choice([1, 1, 3, 3, 3, 5, 7])
    s, hw = rng.choice([1, 1, 1, 2]), rng.choice([7, 8, 12, 14, 20, 28, 40, 56, 80, 112, 160])
    kind = rng.choice(["dense", "dense", "dense", "depthwise", "grouped"])
    if kind == "depthwise":
        cout, g = cin, cin
    elif kind == "grouped":
        gw = rng.choice([2, 4, 8, 16, 32])
        if cin % gw:
            return False
        g = cin // gw
        cout = g * rng.choice([gw, 2 * gw])
    else:
        cout, g = rng.choice(CHANNELS[1:]), 1
    d = rng.choice([1, 1, 1, 1, 2]) if k == 3 else 1
    ho = (hw + 2 * (d * (k - 1) // 2) - d * (k - 1) - 1) // s + 1
    if not 2e5 <= cout * (cin // g) * k * k * ho * ho <= 3e8:
        return False
    w = numpy_helper.from_array(np.full((cout, cin // g, k, k), 0.01, np.float32), "w")
    b = numpy_helper.from_array(np.full(cout, 0.1, np.float32), "b")
    p = d * (k - 1) // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                              group=g, dilations=[d, d]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return True


def time_grid(n: int, runs: int, tmp: Path, seed: int = 1) -> list[dict]:
    rng, rows = random.Random(seed), []
    path = tmp / "layer.onnx"
    while len(rows) < n:
        if not grid_model(rng, path):
            continue
        conv = next((c for c in map(conv_layer, profile_nodes(path, runs)) if c), None)
        if conv:
            rows.append(conv)
    return rows


def profile_models(runs: int, tmp: Path) -> dict[str, dict]:
    """Per-node profiles of the full calibration suite and the foreign models (fast exporter, as fit uses)."""
    from pipeline.export.onnx import DEFAULT_OPSET, export_onnx, fast_exporter
    from pipeline.fit.calibrate import FULL_SUITE, export_entry

    out = {}
    exporter = fast_exporter(DEFAULT_OPSET)
    jobs = [("suite", e.label, e) for e in FULL_SUITE] + [("foreign", name, name) for name in FOREIGN]
    for i, (group, label, job) in enumerate(jobs):
        path = tmp / f"m{i}.onnx"
        if group == "suite":
            export_entry(job, path, opset=DEFAULT_OPSET)
        else:
            export_onnx(build_foreign(job), path, opset=DEFAULT_OPSET, exporter=exporter)
        out[label] = {"group": group, "nodes": profile_nodes(path, runs)}
        print(f"  profiled {i + 1}/{len(jobs)} {label}", file=sys.stderr, flush=True)
    return out


def fit_rates(rows: list[dict]):
    from sklearn.ensemble import ExtraTreesRegressor

    x = np.array([shape_features(c) for c in rows])
    y = np.array([math.log(c["us"] / (c["macs"] / 1e6)) for c in rows])
    return ExtraTreesRegressor(n_estimators=400, min_samples_leaf=2, random_state=0).fit(x, y)


def conv_error(model, nodes: list[dict]) -> tuple[float, float]:
    """(% error of predicted conv time + measured rest against the node total, convolutions' share of it)."""
    convs = [c for c in map(conv_layer, nodes) if c]
    rest = sum(n["us"] for n in nodes) - sum(c["us"] for c in convs)
    rates = np.exp(model.predict(np.array([shape_features(c) for c in convs]))) if convs else []
    predicted = sum(r * c["macs"] / 1e6 for r, c in zip(rates, convs))
    actual = sum(c["us"] for c in convs)
    return (predicted + rest) / (actual + rest) * 100 - 100, actual / (actual + rest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=600)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        grid = time_grid(args.grid, args.runs, Path(tmp))
        grid_s = time.perf_counter() - t0
        models = profile_models(args.runs, Path(tmp))
    suite_layers = [c for m in models.values() if m["group"] == "suite" for c in map(conv_layer, m["nodes"])
                    if c and c["us"] > 5]
    fits = {"grid": fit_rates(grid), "grid + suite layers": fit_rates(grid + suite_layers)}
    rows, summary = [], {"grid_layers": len(grid), "grid_seconds": round(grid_s, 1), "suite_layers": len(suite_layers)}
    for label, m in models.items():
        row = {"model": label, "group": m["group"]}
        for name, model in fits.items():
            err, share = conv_error(model, m["nodes"])
            row[name], row["conv_share"] = round(err, 1), round(share, 2)
        rows.append(row)
    for name in fits:
        for group in ("suite", "foreign"):
            errs = [abs(r[name]) for r in rows if r["group"] == group]
            summary[f"{name} / {group}: within ±10%"] = f"{sum(e <= 10 for e in errs)}/{len(errs)}"
    md = ["# Per-layer MAC rates from single-layer timings (host, 1 thread)", "",
          "An experiment for the foreign-architecture predictor; see the docstring of bench/layer_rates.py. Each "
          "error is (predicted convolution time + *measured* time of every other node) against the profiled node "
          "total, so it shows how well convolutions alone are predicted. *suite* rows are in the training data of "
          "the second fit.", "", *(f"- {k}: {v}" for k, v in summary.items()), "",
          "| model | group | conv share | grid only | grid + suite layers |", "|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['group']} | {r['conv_share']} | {r['grid']:+.1f}% | {r['grid + suite layers']:+.1f}% |"
           for r in rows]
    save_results("layer_rates", {"summary": summary, "rows": rows, "grid": grid}, "\n".join(md))
    print("\n".join(md[:12]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
