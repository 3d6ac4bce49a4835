"""Accuracy vs scale on builtin:digits: the first real accuracy curve of the compound-scaling family.

For each φ (negative ones included) the same recipe and number of epochs: validation
accuracy, params, MACs (static, at the trained resolution) and host latency (ONNX Runtime,
2 threads, batch 1), then the same φ values again distilled from the largest one.
Writes bench/results/accuracy_vs_scale.{json,md,png}.

DIGITS-SPECIFIC: 8x8 grayscale handwritten digits, 10 classes, 360 validation images. By
default every φ trains at the dataset's resolution (32 px, see pipeline/data.py), so only
depth and width vary; ``--resolution nominal`` trains each φ at its own compound-scaled
resolution (168+ px, far slower on a CPU). None of this predicts accuracy on natural images.

    python bench/accuracy_vs_scale.py                      # full: φ -4..0, 10 epochs (~20+ min on 2 cores)
    python bench/accuracy_vs_scale.py --phis -4,-3 --epochs 2 --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, save_results  # noqa: E402
from pipeline.core.scaling import resolve_scale  # noqa: E402
from pipeline.cost.plan import scale_cost  # noqa: E402
from pipeline.data.datasets import load_dataset  # noqa: E402
from pipeline.export.onnx import export_onnx  # noqa: E402
from pipeline.measure.timing import compare_interleaved
from pipeline.runtimes.onnxruntime import ort_session, random_inputs  # noqa: E402
from pipeline.train.trainer import TrainOptions, load_checkpoint, train  # noqa: E402

NAME = "accuracy_vs_scale"
SCOPE = ("DIGITS-SPECIFIC: scikit-learn handwritten digits (8x8 grayscale, 10 classes); "
         "not indicative of accuracy on natural images.")


def run_one(family: str, phi: float, data, args, out: Path, teacher: str | None = None) -> dict:
    scale = resolve_scale(phi=phi)
    resolution = scale.resolution if args.resolution == "nominal" else (
        None if args.resolution == "dataset" else int(args.resolution))
    tag = f"phi{phi:g}" + ("-kd" if teacher else "")
    opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, resolution=resolution,
                        teacher=teacher, temperature=args.temperature, alpha_kd=args.alpha_kd)
    result = train(family, scale, data, out_dir=out / tag, options=opts,
                   log=lambda m: print(f"  [{tag}] {m}", flush=True))
    ck = load_checkpoint(result.checkpoint)
    onnx_path = out / tag / "model.onnx"
    export_onnx(ck.model(), onnx_path, resolution=ck.preprocess.resolution)
    cost = scale_cost(family, ck.scale, ck.num_classes)
    return {"phi": phi, "distilled": teacher is not None, "val_accuracy": result.val_accuracy,
            "best_epoch": result.best_epoch, "params": result.params, "macs": cost.macs,
            "resolution": ck.preprocess.resolution, "nominal_resolution": result.nominal_resolution,
            "depth_multiplier": scale.depth, "width_multiplier": scale.width,
            "train_seconds": result.seconds, "checkpoint": result.checkpoint, "onnx": str(onnx_path)}


def time_models(rows: list[dict], threads: int, rounds: int) -> None:
    """Host latency of every distinct architecture, timed round-robin (drift hits all equally).

    A distilled model has the same architecture as the undistilled one at its φ, so it
    gets that row's latency.
    """
    sessions = {}
    for r in rows:
        if not r["distilled"]:
            sess = ort_session(r["onnx"], threads)
            feeds = random_inputs(sess)
            sessions[r["phi"]] = (lambda s=sess, f=feeds: s.run(None, f))
    timings = compare_interleaved(sessions, rounds=rounds, per_round=5, warmup=5, threads=threads)
    for r in rows:
        t = timings[r["phi"]]
        r.update(latency_ms_p50=t.p50_ms, latency_ms_p90=t.p90_ms, latency_threads=threads)


def mark_frontier(rows: list[dict]) -> None:
    """``pareto``: no other model is at least as fast and strictly more accurate (or faster and as accurate)."""
    for r in rows:
        r["pareto"] = not any(
            o is not r and o["latency_ms_p50"] <= r["latency_ms_p50"] and o["val_accuracy"] >= r["val_accuracy"]
            and (o["latency_ms_p50"] < r["latency_ms_p50"] or o["val_accuracy"] > r["val_accuracy"])
            for o in rows)


def plot(rows: list[dict], path: Path, family: str, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for distilled, style, label in ((False, "o-", "trained from scratch"), (True, "s--", "distilled from largest φ")):
        pts = sorted((r for r in rows if r["distilled"] == distilled), key=lambda r: r["latency_ms_p50"])
        if not pts:
            continue
        ax.plot([r["latency_ms_p50"] for r in pts], [100 * r["val_accuracy"] for r in pts], style, label=label)
        for r in pts:
            ax.annotate(f"φ={r['phi']:g}", (r["latency_ms_p50"], 100 * r["val_accuracy"]), fontsize=8,
                        xytext=(4, -10 if distilled else 4), textcoords="offset points")
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["latency_ms_p50"])
    if front:
        ax.step([r["latency_ms_p50"] for r in front], [100 * r["val_accuracy"] for r in front], where="post",
                color="gray", alpha=0.5, linewidth=4, zorder=0, label="frontier")
    ax.set_xlabel("host latency p50, ms (ONNX Runtime, batch 1)")
    ax.set_ylabel("validation top-1, %")
    ax.set_title(f"{family} on builtin:digits, {epochs} epochs (DIGITS-SPECIFIC)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(data: dict) -> str:
    lines = [f"# Accuracy vs scale: {data['family']} on builtin:digits", "", f"**{SCOPE}**", "",
             f"{data['epochs']} epochs per model, same recipe and seed; resolution mode `{data['resolution_mode']}`; "
             f"latency: ONNX Runtime on this host, {data['threads']} threads, batch 1, all models timed round-robin "
             f"(a distilled model shares the latency of its φ: same architecture). The host may have been "
             f"shared while this ran: compare latencies with each other, not with other runs.", "",
             "| φ | distilled | res | params | MACs | val top-1 | p50 ms | frontier | train s |",
             "|---:|:---:|---:|---:|---:|---:|---:|:---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['phi']:g} | {'yes' if r['distilled'] else 'no'} | {r['resolution']} | {r['params']:,} | "
                     f"{r['macs'] / 1e6:.1f} M | {100 * r['val_accuracy']:.2f}% | {r['latency_ms_p50']:.2f} | "
                     f"{'yes' if r.get('pareto') else ''} | {r['train_seconds']:.0f} |")
    n_val = data.get("val_images")
    if n_val:
        lines += ["", f"One seed, {n_val} validation images: one image is {100 / n_val:.2f} pp, so differences of "
                      "about a point are within noise."]
    if data.get("teacher_phi") is not None:
        lines += ["", f"Teacher for the distilled rows: φ={data['teacher_phi']:g} "
                      f"(T={data['temperature']:g}, a={data['alpha_kd']:g})."]
    lines += ["", f"Plot: `{NAME}.png`. Total time {data['seconds']:.0f} s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="efficientnet")
    ap.add_argument("--phis", default="-4,-3,-2,-1,0", help="comma-separated φ values")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", default="dataset", help="dataset (32 px for digits), nominal, or an integer")
    ap.add_argument("--no-distill", action="store_true", help="skip the distilled runs")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha-kd", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20, help="latency: round-robin rounds of 5 calls per model")
    ap.add_argument("--quick", action="store_true", help="short latency timing (for a smoke run)")
    ap.add_argument("--runs-dir", default="runs/bench-accuracy")
    ap.add_argument("--name", default=NAME, help="result file stem in bench/results/")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    phis = sorted(float(p) for p in args.phis.split(","))
    data = load_dataset("builtin:digits")
    out = Path(args.runs_dir)
    rows = []
    for phi in phis:
        print(f"φ={phi:g}", flush=True)
        rows.append(run_one(args.family, phi, data, args, out))
    teacher_phi = None
    if not args.no_distill and len(phis) > 1:
        teacher_phi = phis[-1]
        teacher = next(r["checkpoint"] for r in rows if r["phi"] == teacher_phi)
        for phi in phis[:-1]:
            print(f"φ={phi:g} distilled from φ={teacher_phi:g}", flush=True)
            rows.append(run_one(args.family, phi, data, args, out, teacher=teacher))
    print("timing (ONNX Runtime, interleaved)", flush=True)
    time_models(rows, args.threads, rounds=4 if args.quick else args.rounds)
    mark_frontier(rows)
    result = {"scope": SCOPE, "dataset": "builtin:digits", "val_images": int(len(data.split().val)),
              "family": args.family, "epochs": args.epochs,
              "resolution_mode": args.resolution, "threads": args.threads, "teacher_phi": teacher_phi,
              "temperature": args.temperature, "alpha_kd": args.alpha_kd, "rows": rows,
              "seconds": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS / f"{args.name}.png", args.family, args.epochs)
    json_path, md_path = save_results(args.name, result, markdown(result))
    print(markdown(result))
    print(f"wrote {json_path}, {md_path}, {RESULTS / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
