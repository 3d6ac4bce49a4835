"""Does INT8 pay on this machine? fp32 against INT8 per family and scale, and the evidence behind the tuning.

For every family (EfficientNet, EfficientNet-Lite, MobileNetV2, ResNet-18) at three compound scales:

* fp32 and INT8 (quantized with the family's row of ``pipeline.export.quantize.INT8_TUNING``) are timed
  **interleaved in one process** (``pipeline.measure.timing.compare_interleaved``, ONNX Runtime at 1 thread,
  the session settings every edgefit measurement uses), so the machine's drift hits both alike and the
  speed-up is a ratio of two p50s taken side by side;
* the accuracy drop is measured on a model *trained* on ``builtin:digits`` (3 epochs by default, at the
  dataset's 32 px: the same architecture as the timed one, at the input size the digits are trained at),
  quantized with the same tuning and calibrated on 256 training images, against the labels of the whole
  validation split.

Tuning evidence, at φ=0 per family: every alternative the table chooses between (QDQ or QOperator, all op types
or only Conv/Gemm, per-channel or per-tensor weights, how many leading convolutions stay float) timed
interleaved with fp32 in one comparison, and the accuracy drop of each calibration method (minmax, percentile,
entropy) on the trained model. The bench says whether the table's choice is the fastest variant within the
accuracy limit.

Run alone (timings on a shared machine are noisy; ratios from interleaving are what to trust):
``python bench/int8_speedup.py [--phis 0,1,2] [--families ...] [--epochs 3]``.
Results: bench/results/int8_speedup.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_results  # noqa: E402

FAMILIES = ("efficientnet", "efficientnet-lite", "mobilenetv2", "resnet18")
PHIS = (0.0, 1.0, 2.0)
TARGET_SPEEDUP = 2.0
MAX_DROP_PP = 1.0
CALIBRATION_SAMPLES = 256
# rounds × calls per round for each configuration of one interleaved comparison
ROUNDS, PER_ROUND = 20, 5


def variants() -> dict[str, dict]:
    """The alternatives the tuning table chooses between (QuantizeSettings fields), by name."""
    return {
        "QDQ, all ops, per-channel": {},
        "QOperator": {"quant_format": "qoperator"},
        "per-tensor weights": {"per_channel": False},
        "Conv/Gemm only": {"op_types": ("Conv", "Gemm")},
        "stem float": {"float_convs": 1},
        "stem + block 1 float": {"float_convs": 3},
        "stem + block 1 float, per-tensor": {"float_convs": 3, "per_channel": False},
    }


def _calibration(resolution: int, n: int = 16):
    import numpy as np

    return np.random.default_rng(0).standard_normal((n, 3, resolution, resolution)).astype(np.float32)


def _export(family: str, phi: float, path: Path) -> Path:
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.onnx import export_onnx
    from pipeline.models import build, initialize

    export_onnx(initialize(build(family, CompoundScaling().compound(phi), 1000), seed=0), path)
    return path


def _interleaved(paths: dict[str, Path]) -> dict[str, dict]:
    """p50/p90 of every file, timed round-robin in this process at 1 thread."""
    from pipeline.measure.timing import compare_interleaved
    from pipeline.runtimes.onnxruntime import OnnxRuntime

    sessions = {k: OnnxRuntime(1).load(p) for k, p in paths.items()}
    calls = {k: s.bind(s.example_input(0)) for k, s in sessions.items()}
    timings = compare_interleaved(calls, rounds=ROUNDS, per_round=PER_ROUND, warmup=5, threads=1)
    return {k: {"p50_ms": round(t.p50_ms, 3), "p90_ms": round(t.p90_ms, 3), "n": t.n} for k, t in timings.items()}


def _speed_row(family: str, phi: float, tmp: Path) -> dict:
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.quantize import quantize_onnx

    fp32 = _export(family, phi, tmp / f"{family}-{phi:g}.onnx")
    res = CompoundScaling().compound(phi).resolution
    q = quantize_onnx(fp32, tmp / f"{family}-{phi:g}-int8.onnx", _calibration(res), family=family)
    t = _interleaved({"fp32": fp32, "int8": Path(q.path)})
    return {"family": family, "phi": phi, "resolution": res, "fp32_ms": t["fp32"]["p50_ms"],
            "int8_ms": t["int8"]["p50_ms"], "speedup": round(t["fp32"]["p50_ms"] / t["int8"]["p50_ms"], 3),
            "fused_ops": q.fused_ops, "float_compute_left": q.float_compute_left, "float_convs": list(q.float_convs),
            "quantize_linear": q.quantize_linear, "dequantize_linear": q.dequantize_linear}


def _speed_evidence(family: str, tmp: Path) -> dict:
    """Every variant of the table at φ=0, interleaved with fp32 in one comparison."""
    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.quantize import QuantizeSettings, quantize_onnx

    fp32 = _export(family, 0.0, tmp / f"{family}-evidence.onnx")
    x = _calibration(CompoundScaling().compound(0.0).resolution)
    paths, ops = {"fp32": fp32}, {}
    for i, (name, kw) in enumerate(variants().items()):
        q = quantize_onnx(fp32, tmp / f"{family}-v{i}.onnx", x, QuantizeSettings(**kw))
        paths[name], ops[name] = Path(q.path), {"fused": q.fused_ops, "float_left": q.float_compute_left}
    t = _interleaved(paths)
    base = t["fp32"]["p50_ms"]
    return {"fp32_ms": base, "variants": {k: {**t[k], "speedup": round(base / t[k]["p50_ms"], 3), **ops[k]}
                                          for k in variants()}}


def _train(family: str, phi: float, epochs: int, tmp: Path):
    from pipeline.core.scaling import CompoundScaling
    from pipeline.train.trainer import TrainOptions, load_checkpoint, train

    out = tmp / f"train-{family}-{phi:g}"
    result = train(family, CompoundScaling().compound(phi), "builtin:digits", out_dir=out,
                   options=TrainOptions(epochs=epochs))
    return load_checkpoint(result.checkpoint), result


def _accuracy(family: str, ckpt, tmp: Path, settings: dict[str, object]) -> dict:
    """Accuracy drop of the trained model quantized with each of ``settings`` (name -> QuantizeSettings)."""
    from pipeline.export.onnx import export_onnx
    from pipeline.export.quantize import calibration_batches, int8_accuracy_gate, quantize_onnx
    from pipeline.export.quantize import validation_set as val_set

    pp = ckpt.preprocess
    fp32 = tmp / f"acc-{family}.onnx"
    export_onnx(ckpt.model(), fp32, resolution=pp.resolution)
    calib = calibration_batches("builtin:digits", pp, CALIBRATION_SAMPLES)
    x, y = val_set("builtin:digits", pp)
    out = {}
    for name, q_settings in settings.items():
        q = quantize_onnx(fp32, tmp / f"acc-{family}-int8.onnx", calib, q_settings)
        gate = int8_accuracy_gate(fp32, q.path, x, y, MAX_DROP_PP, raise_on_failure=False)
        out[name] = {"fp32_accuracy": round(gate.fp32_accuracy, 4), "int8_accuracy": round(gate.int8_accuracy, 4),
                     "drop_pp": round(gate.drop_pp, 2), "agreement": round(gate.agreement, 4), "n": gate.n}
    return out


def main() -> int:
    import torch

    from pipeline.export.quantize import INT8_TUNING, METHODS, QuantizeSettings, family_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--phis", default=",".join(f"{p:g}" for p in PHIS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-evidence", action="store_true", help="skip the tuning evidence")
    args = ap.parse_args()
    families = tuple(args.families.split(","))
    phis = tuple(float(p) for p in args.phis.split(","))
    # Training at 32 px is many tiny ops: torch's threads only wait on each other on a shared 2-core machine.
    torch.set_num_threads(1)
    started = time.time()
    rows, evidence = [], {}
    with tempfile.TemporaryDirectory(prefix="edgefit-int8bench-") as tmp:
        tmp = Path(tmp)
        for family in families:
            if not args.no_evidence:
                print(f"== {family}: tuning evidence at φ=0", file=sys.stderr, flush=True)
                evidence[family] = {"speed": _speed_evidence(family, tmp)}
            for phi in phis:
                print(f"== {family} φ={phi:g}: timing, then training", file=sys.stderr, flush=True)
                row = _speed_row(family, phi, tmp)
                ckpt, trained = _train(family, phi, args.epochs, tmp)
                settings = {"tuned": family_settings(family)}
                if phi == 0.0 and not args.no_evidence:
                    method = INT8_TUNING[family].method
                    settings |= {f"method {m}": family_settings(family, method=m) for m in METHODS}
                    settings |= {v: QuantizeSettings(**{"method": method, **kw}) for v, kw in variants().items()}
                acc = _accuracy(family, ckpt, tmp, settings)
                if len(settings) > 1:
                    evidence[family]["calibration_methods"] = {m: acc[f"method {m}"] for m in METHODS}
                    evidence[family]["variant_accuracy"] = {v: acc[v] for v in variants()}
                tuned = acc["tuned"]
                row.update(trained_resolution=ckpt.preprocess.resolution, train_epochs=args.epochs,
                           fp32_accuracy=tuned["fp32_accuracy"], int8_accuracy=tuned["int8_accuracy"],
                           drop_pp=tuned["drop_pp"], train_seconds=trained.seconds)
                row["meets_target"] = row["speedup"] >= TARGET_SPEEDUP and row["drop_pp"] <= MAX_DROP_PP
                rows.append(row)
                print(f"   {row['fp32_ms']:.2f} -> {row['int8_ms']:.2f} ms ({row['speedup']:.2f}x), "
                      f"drop {row['drop_pp']:+.2f} pp", file=sys.stderr, flush=True)
    tuning = {f: dataclasses.asdict(INT8_TUNING[f]) for f in families}
    checks = _check_tuning(evidence, tuning)
    meta = {"threads": 1, "rounds": ROUNDS, "per_round": PER_ROUND, "cpu": _cpu(),
            "load_average_after": os.getloadavg(), "seconds": round(time.time() - started)}
    md = _markdown(rows, evidence, tuning, checks, meta)
    save_results("int8_speedup", {"meta_bench": meta, "rows": rows, "evidence": evidence, "tuning": tuning,
                                  "tuning_checks": checks}, md)
    print(md)
    return 0


def _check_tuning(evidence: dict, tuning: dict) -> dict:
    """For each family: the fastest variant at φ=0 within the accuracy limit, and whether the table's choice is
    it (within 3%: closer than that is noise on this machine)."""
    out = {}
    for family, ev in evidence.items():
        v = ev["speed"]["variants"]
        acc = ev.get("variant_accuracy", {})
        ok = [k for k in v if k not in acc or acc[k]["drop_pp"] <= MAX_DROP_PP] or list(v)
        fastest = max(ok, key=lambda k: v[k]["speedup"])
        t = tuning[family]
        chosen = next((name for name, kw in variants().items()
                       if kw.get("float_convs", 0) == t["float_convs"] and kw.get("per_channel", True) == t[
                           "per_channel"] and kw.get("quant_format", "qdq") == t["quant_format"]
                       and kw.get("op_types") == t["op_types"]), None)
        out[family] = {"fastest": fastest, "table": chosen,
                       "table_within_3pct_of_fastest": chosen is not None and
                       v[chosen]["speedup"] >= 0.97 * v[fastest]["speedup"]}
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _markdown(rows: list[dict], evidence: dict, tuning: dict, checks: dict, meta: dict) -> str:
    md = ["# INT8 speed-up on host", "",
          f"ONNX Runtime on CPU ({meta['cpu']}), **1 thread**; fp32 and INT8 of each row timed interleaved in one "
          f"process ({meta['rounds']} rounds × {meta['per_round']} calls each), p50 per call. Accuracy: the same "
          f"architecture trained on builtin:digits (at 32 px), quantized with the same tuning, against the labels "
          f"of the validation split. Target: ≥ {TARGET_SPEEDUP:g}× at ≤ {MAX_DROP_PP:g} pp drop. Load average "
          f"after the run: {', '.join(f'{x:.1f}' for x in meta['load_average_after'])}; {meta['seconds']} s.", "",
          "| family | φ | res | fp32 ms | INT8 ms | speed-up | fp32 acc | INT8 acc | drop pp | float convs | "
          "float ops left | target |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['family']} | {r['phi']:g} | {r['resolution']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | "
                  f"**{r['speedup']:.2f}×** | {r['fp32_accuracy']:.3f} | {r['int8_accuracy']:.3f} | "
                  f"{r['drop_pp']:+.2f} | {len(r['float_convs'])} | "
                  f"{', '.join(f'{k}×{v}' for k, v in r['float_compute_left'].items()) or '-'} | "
                  f"{'met' if r['meets_target'] else 'not met'} |")
    md += ["", "## Why EfficientNet gains little", "",
           "EfficientNet's swish (Sigmoid·Mul) and squeeze-and-excitation (a global mean, two 1×1 convolutions, a "
           "sigmoid gate) run as QLinearSigmoid/QLinearMul and float ReduceMean behind DequantizeLinear/"
           "QuantizeLinear pairs in the INT8 graph; in fp32 ONNX Runtime fuses Sigmoid·Mul into one kernel. The "
           "convolutions gain as much as in the other families, but the elementwise traffic between them does "
           "not shrink, so the whole model gains little. EfficientNet-Lite (ReLU6, no SE) is the same network "
           "without those ops.", "",
           "## Tuning (pipeline/export/quantize.py INT8_TUNING)", "",
           "| family | float convs | per-channel | format | op types | calibration | why |",
           "|---|---|---|---|---|---|---|"]
    for f, t in tuning.items():
        md.append(f"| {f} | {t['float_convs']} | {t['per_channel']} | {t['quant_format']} | "
                  f"{', '.join(t['op_types']) if t['op_types'] else 'all'} | {t['method']} | {t['evidence']} |")
    if evidence:
        md += ["", "## Tuning evidence (φ=0)", "",
               "Speed-up of each variant over fp32, all timed interleaved in one comparison per family:", "",
               "| family | " + " | ".join(variants()) + " | fastest within the accuracy limit | table's choice "
               "within 3% |", "|---|" + "---|" * (len(variants()) + 2)]
        for f, ev in evidence.items():
            v, a = ev["speed"]["variants"], ev.get("variant_accuracy", {})
            md.append(f"| {f} | " + " | ".join(
                f"{v[k]['speedup']:.2f}×" + (f" ({a[k]['drop_pp']:+.1f} pp)" if k in a else "") for k in variants())
                + f" | {checks[f]['fastest']} | {checks[f]['table_within_3pct_of_fastest']} |")
        md += ["", "(in brackets: accuracy drop of the trained φ=0 model quantized that way)"]
        md += ["", "Accuracy drop (pp) of each calibration method on the trained φ=0 model (with the family's "
               "float convs):", "", "| family | minmax | percentile | entropy |", "|---|---|---|---|"]
        for f, ev in evidence.items():
            c = ev.get("calibration_methods", {})
            md.append(f"| {f} | " + " | ".join(f"{c[m]['drop_pp']:+.2f}" if m in c else "-"
                                             for m in ("minmax", "percentile", "entropy")) + " |")
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
