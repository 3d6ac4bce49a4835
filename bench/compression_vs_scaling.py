"""Compound scaling against pruning and deep compression, at equal *measured* latency on host.

For each latency budget (fractions of the φ=0 model's measured latency, so the large model does not
fit and something must give):

- **scaled**: the largest φ of a grid whose measured latency fits (the rule `deploy fit`'s closed loop
  applies), trained for E + F epochs;
- **pruned + fine-tuned**: the φ=0 model (trained E epochs) pruned with `deploy compress --method prune`'s
  library until its measured latency fits, then fine-tuned F epochs;
- **pruned arch from scratch**: the same pruned architecture re-initialised and trained E + F epochs
  (Liu et al. 2019's control);
- **INT8** (static QDQ, ONNX Runtime) of the scaled and the pruned model, measured and evaluated.

Every model gets the same number of epochs in total. Columns: top-1 (mean ± half-range over seeds),
measured p50 latency (slowest round, 1 thread, the `fit` timing settings), ONNX size and the
deep-compression size (90 % sparsity, 5 bits: storage only).

DIGITS-SPECIFIC and RESOLUTION-FIXED: builtin:digits (8x8, 10 classes, 359 validation images); every
model runs at 32 px, so scaling here is depth and width only (`deploy fit` would scale resolution too,
which on 8x8 digits only upsamples). Short schedules; the ranking on natural images may differ.

    python bench/compression_vs_scaling.py                       # ~20 min on 2 shared cores
    python bench/compression_vs_scaling.py --seeds 0 --epochs 1 --finetune 1 --budgets 0.6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, save_results  # noqa: E402
from pipeline.analysis.compress import state_numpy  # noqa: E402
from pipeline.analysis.deepcompress import compress_state  # noqa: E402
from pipeline.analysis.prune import PruneOptions, judged_ms, prune_run  # noqa: E402
from pipeline.core.scaling import resolve_scale  # noqa: E402
from pipeline.export.onnx import export_onnx  # noqa: E402
from pipeline.export.quantize import calibration_batches, quantize_onnx, validation_set  # noqa: E402
from pipeline.measure.device import LocalDevice  # noqa: E402
from pipeline.measure.settings import TIMING  # noqa: E402
from pipeline.models import build, initialize  # noqa: E402
from pipeline.predict.targets import load_target  # noqa: E402
from pipeline.runtimes.onnxruntime import OnnxRuntime  # noqa: E402
from pipeline.train.trainer import TrainOptions, load_checkpoint, train  # noqa: E402

NAME = "compression_vs_scaling"
DATA = "builtin:digits"
RES = 32
FAMILY = "efficientnet"


class Bench:
    def __init__(self, work: Path):
        self.device = LocalDevice(load_target("host"), threads=1)
        self.work = work
        self.val_x, self.val_y = None, None

    def latency(self, onnx_path: Path, precision: str = "fp32") -> dict:
        m = self.device.measure(onnx_path, TIMING["fit"], precision=precision, memory=False)
        return {"ms": round(judged_ms(m), 4), **m.provenance()}

    def onnx_accuracy(self, onnx_path: Path, preprocess) -> float:
        x, y = validation_set(DATA, preprocess)
        return float(np.mean(OnnxRuntime(1).load(onnx_path).predict(x).argmax(1) == y))

    def int8(self, onnx_path: Path, preprocess) -> dict:
        out = onnx_path.with_name(onnx_path.stem + ".int8.onnx")
        quantize_onnx(onnx_path, out, calibration_batches(DATA, preprocess, n=128), runtime="onnxruntime")
        return {"latency": self.latency(out, "int8"), "accuracy": self.onnx_accuracy(out, preprocess),
                "bytes": out.stat().st_size}


def dc_bytes(model) -> int:
    return compress_state(state_numpy(model), sparsity=0.9, bits=5).storage.to_dict()["compressed_bytes"]


def grid_latencies(b: Bench, phis: list[float], passes: int = 2) -> dict[float, float]:
    """Each φ timed in `passes` interleaved passes over the grid; the lower judged p50 is kept.

    On a shared machine a burst from another process can multiply one round's p50 (seen: 10x); taking
    the lower of two separate measurements keeps such a burst from deciding the scaled pick.
    """
    paths = {}
    for phi in phis:
        model = initialize(build(FAMILY, resolve_scale(phi=phi), num_classes=10), seed=0)
        paths[phi] = b.work / f"grid{phi:g}.onnx"
        export_onnx(model, paths[phi], resolution=RES, exporter="torchscript", opset=17)
    out: dict[float, float] = {}
    for _ in range(passes):
        for phi in phis:
            ms = b.latency(paths[phi])["ms"]
            out[phi] = min(out.get(phi, ms), ms)
    for phi in phis:
        print(f"  φ={phi:g}: {out[phi]:.3f} ms", flush=True)
    return out


def train_scale(phi: float, epochs: int, seed: int, out: Path) -> Path:
    opts = TrainOptions(epochs=epochs, seed=seed, resolution=RES)
    train(FAMILY, resolve_scale(phi=phi), DATA, out_dir=out, options=opts)
    return out


def summarise(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "spread": float((a.max() - a.min()) / 2), "values": [float(v) for v in a]}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.55,0.75", help="fractions of the φ=0 model's measured latency")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=3, help="E: training epochs of the large model")
    ap.add_argument("--finetune", type=int, default=1, help="F: fine-tuning epochs after pruning")
    ap.add_argument("--phis", default="-4,-3,-2.5,-2,-1.5,-1,-0.5,0")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md and .png from the saved .json")
    args = ap.parse_args()
    if args.render:
        data = json.loads((RESULTS / f"{NAME}.json").read_text())
        plot(data, RESULTS / f"{NAME}.png")
        (RESULTS / f"{NAME}.md").write_text(markdown(data) + "\n")
        return
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    phis = [float(p) for p in args.phis.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgefit-cvs-") as tmp:
        work = Path(tmp)
        b = Bench(work)
        print("measuring the φ grid at 32 px", flush=True)
        grid = grid_latencies(b, phis)
        budgets = [round(float(f) * grid[0.0], 4) for f in args.budgets.split(",")]
        big = {s: train_scale(0.0, args.epochs, s, work / f"big{s}") for s in seeds}
        results = []
        for budget in budgets:
            fitting = [p for p in phis if grid[p] <= budget * 0.98]
            if not fitting:
                print(f"budget {budget} ms: no φ of the grid fits; skipped", flush=True)
                continue
            phi = max(fitting)
            print(f"budget {budget:.3f} ms: scaled φ={phi:g}", flush=True)
            rows = {k: [] for k in ("scaled", "pruned", "scratch")}
            for s in seeds:
                run = train_scale(phi, args.epochs + args.finetune, s, work / f"s{budget}-{s}")
                ck = load_checkpoint(run)
                model = ck.model()
                onnx_path = run / "model.onnx"
                export_onnx(model, onnx_path, resolution=RES)
                rows["scaled"].append({"accuracy": ck.val_accuracy, "latency": b.latency(onnx_path),
                                       "bytes": onnx_path.stat().st_size, "dc_bytes": dc_bytes(model),
                                       "int8": b.int8(onnx_path, ck.preprocess), "phi": phi})
                r = prune_run(big[s], DATA, options=PruneOptions(latency=budget, threads=1, seed=s,
                                                                 finetune_epochs=args.finetune,
                                                                 scratch_epochs=args.epochs + args.finetune),
                              out_dir=work / f"p{budget}-{s}")
                pdir = work / f"p{budget}-{s}"
                pruned = torch.load(pdir / "pruned.pt", weights_only=False)
                scratch = torch.load(pdir / "scratch.pt", weights_only=False)
                p = r["pruned"]
                rows["pruned"].append({"accuracy": p["finetune"]["val_accuracy"], "latency": p["latency"],
                                       "bytes": p["onnx_bytes"], "dc_bytes": dc_bytes(pruned),
                                       "int8": b.int8(pdir / "model.onnx", ck.preprocess),
                                       "channel_ratio": p["channel_ratio"], "macs": p["macs"]})
                rows["scratch"].append({"accuracy": r["scratch"]["val_accuracy"], "latency": p["latency"],
                                        "bytes": p["onnx_bytes"], "dc_bytes": dc_bytes(scratch)})
                accs = ", ".join(f"{k} {v[-1]['accuracy']:.4f}" for k, v in rows.items())
                print(f"  seed {s}: {accs}", flush=True)
            results.append({"budget_ms": budget, "phi": phi, "rows": rows})
    data = {"grid_ms": {str(k): v for k, v in grid.items()}, "budgets_ms": budgets, "seeds": seeds,
            "epochs": args.epochs, "finetune": args.finetune, "results": results,
            "device": b.device.label, "timing": TIMING["fit"].describe()}
    for res in results:
        res["summary"] = {k: {"accuracy": summarise([x["accuracy"] for x in v]),
                              "latency_ms": summarise([x["latency"]["ms"] if "ms" in x["latency"]
                                                       else x["latency"]["judged_ms"] for x in v]),
                              "bytes": int(np.mean([x["bytes"] for x in v])),
                              "dc_bytes": int(np.mean([x["dc_bytes"] for x in v])),
                              "int8": None if "int8" not in v[0] else {
                                  "accuracy": summarise([x["int8"]["accuracy"] for x in v]),
                                  "latency_ms": summarise([x["int8"]["latency"]["ms"] for x in v])}}
                          for k, v in res["rows"].items()}
    plot(data, RESULTS / f"{NAME}.png")
    save_results(NAME, json.loads(json.dumps(data, default=str)), markdown(data))
    print(markdown(data))


LABELS = {"scaled": "scaled (smaller φ)", "pruned": "φ=0 pruned + fine-tuned", "scratch": "pruned arch, from scratch"}


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = {"scaled": "o", "pruned": "s", "scratch": "^"}
    for i, res in enumerate(d["results"]):
        for k, s in res["summary"].items():
            ax.errorbar(s["latency_ms"]["mean"], s["accuracy"]["mean"], yerr=s["accuracy"]["spread"],
                        xerr=s["latency_ms"]["spread"], fmt=markers[k], color=f"C{list(markers).index(k)}",
                        label=LABELS[k] if i == 0 else None, capsize=3)
            if s["int8"]:
                ax.errorbar(s["int8"]["latency_ms"]["mean"], s["int8"]["accuracy"]["mean"],
                            yerr=s["int8"]["accuracy"]["spread"], fmt=markers[k], mfc="none",
                            color=f"C{list(markers).index(k)}", label=f"{LABELS[k]}, INT8" if i == 0 else None,
                            capsize=3)
        ax.axvline(res["budget_ms"], color="k", ls="--", lw=0.8)
    ax.set_xlabel("measured p50 latency on host, 1 thread (ms)")
    ax.set_ylabel("validation top-1 (digits)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def over(row: dict, budget: float) -> str:
    """Every latency is reported; a mean over the budget is marked, not hidden."""
    return " (over budget)" if row["latency_ms"]["mean"] > budget else ""


def int8_size_ratio(d: dict) -> float:
    """Mean fp32 / INT8 ONNX size over the rows that have both."""
    r = [x["bytes"] / x["int8"]["bytes"] for res in d["results"] for rows in res["rows"].values()
         for x in rows if "int8" in x]
    return float(np.mean(r))


def int8_ratio(d: dict) -> float:
    """Mean INT8 / fp32 measured latency over the rows that have both."""
    r = [s["int8"]["latency_ms"]["mean"] / s["latency_ms"]["mean"] for res in d["results"]
         for s in res["summary"].values() if s["int8"]]
    return float(np.mean(r))


def fmt(s: dict, digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ± {s['spread']:.{digits}f}"


def markdown(d: dict) -> str:
    lines = ["# Compound scaling vs pruning vs deep compression at equal measured latency", "",
             "DIGITS-SPECIFIC, 32 px fixed: builtin:digits (8x8, 10 classes, 359 val images), so scaling is depth "
             "and width only. Short schedules. Not indicative of natural images.", "",
             f"Latency: measured on {d['device']}, ONNX Runtime, 1 thread, {d['timing']}, the slowest round's p50. "
             f"Seeds {d['seeds']}; the large model trained {d['epochs']} epochs, pruned then fine-tuned "
             f"{d['finetune']}; the scaled model and the from-scratch control trained {d['epochs'] + d['finetune']} "
             "epochs (equal epochs for all). ± is half the range over seeds. Deep-compression size: 90 % sparsity, "
             "5-bit sharing, Huffman, every bit counted (storage only; the dense latency is unchanged).", "",
             "φ grid at 32 px (measured ms): " + ", ".join(f"φ={k}: {v:.3f}" for k, v in d["grid_ms"].items()), "",
             "![accuracy vs measured latency](compression_vs_scaling.png)", ""]
    verdicts = []
    for res in d["results"]:
        lines += [f"## Budget {res['budget_ms']:.3f} ms (scaled pick φ={res['phi']:g})", "",
                  "| model | top-1 | measured ms | ONNX KB | deep-compressed KB | INT8 top-1 | INT8 measured ms |",
                  "|---|---|---|---|---|---|---|"]
        for k, s in res["summary"].items():
            i8 = s["int8"]
            lat = fmt(s["latency_ms"], 3) + over(s, res["budget_ms"])
            lines.append(f"| {LABELS[k]} | {fmt(s['accuracy'])} | {lat} | "
                         f"{s['bytes'] / 1024:.0f} | {s['dc_bytes'] / 1024:.0f} | "
                         f"{fmt(i8['accuracy']) if i8 else 'same arch as pruned'} | "
                         f"{(fmt(i8['latency_ms'], 3) + over(i8, res['budget_ms'])) if i8 else '—'} |")
        acc = {k: s["accuracy"]["mean"] for k, s in res["summary"].items()}
        best = max(acc, key=acc.get)
        verdicts.append((res["budget_ms"], best, acc))
        late = [LABELS[k] for k, s in res["summary"].items() if s["latency_ms"]["mean"] > res["budget_ms"]]
        if late:
            lines += ["", f"Over the budget when the shipped file was timed: {', '.join(late)} — the pick was made on "
                      "the grid's measurements (untrained weights, TorchScript export); the trained file (dynamo "
                      "export) measured slower on this shared machine. Read its row as *near* the budget."]
        lines.append("")
    lines += ["## Verdict", ""]
    for budget, best, acc in verdicts:
        detail = ", ".join(f"{LABELS[k]} {v:.4f}" for k, v in acc.items())
        close = [LABELS[k] for k, v in acc.items() if k != best and acc[best] - v < 0.01]
        word = (f"**{LABELS[best]}** is highest, tied within a point with {', '.join(close)}" if close
                else f"**{LABELS[best]}** wins")
        lines.append(f"- {budget:.3f} ms: {word} ({detail}).")
    lines.append("")
    liu = all(abs(a["scratch"] - a["pruned"]) <= 0.02 or a["scratch"] > a["pruned"] for _, _, a in verdicts)
    tessier = all(a["scaled"] >= a["pruned"] for _, _, a in verdicts)
    lines += [
        "- **Liu et al. 2019** (training the pruned architecture from scratch matches fine-tuning): "
        + ("agrees here — the from-scratch control is within 2 points of, or above, the fine-tuned pruned model at "
           "every budget." if liu else "does not hold here at every budget — fine-tuning the pruned weights beat the "
           "from-scratch control by more than 2 points somewhere; with schedules this short, inherited weights are "
           "a head start that equal-epoch training from scratch does not recover."),
        "- **Tessier et al. 2023** (width/compound-scaled networks beat structured pruning under modern training): "
        + ("agrees here — the scaled model is at least as accurate as the pruned one at every budget."
           if tessier else "disagrees here at some budget — the pruned φ=0 model was more accurate than the scaled "
           "pick at equal measured latency."),
        "- **The fine-tuning budget matters.** The pruned model gets only "
        f"{d['finetune']} epoch(s) of fine-tuning after losing a large share of its channels, against "
        f"{d['epochs'] + d['finetune']} epochs for the scaled model and the control; with schedules this short the "
        "comparison measures how fast each recovers as much as how good each architecture is. A longer "
        "fine-tune (`--finetune`) narrows the gap (the `deploy compress` example in docs/analysis.md, 30 % pruned "
        "and fine-tuned 2 epochs, kept 0.925 of 0.947).",
        "- Deep compression shrinks every file by roughly an order of magnitude (ONNX KB vs deep-compressed KB) "
        "but leaves dense latency where it was, so it answers a storage budget, not a latency one.",
        f"- INT8 (static QDQ) changed measured latency by a factor of {int8_ratio(d):.2f} on average here: models "
        "this small at 32 px are dominated by per-op overhead, not by multiply-adds, so INT8's gain is small or "
        f"negative; it made the file {int8_size_ratio(d):.1f}x smaller.",
        "", f"Spreads over {len(d['seeds'])} seed(s) and 359 validation images are wide (one image is 0.28 points): "
        "differences under about a point are not evidence either way."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
