"""How good is `deploy fit` on host? Budget utilisation, violations, device measurements and wall
time per fit, compared with exhaustively measuring every architecture on the frontier.

Run: ``python bench/fit_quality.py [--budgets 5,8,10,15,20,30,45,60] [--family efficientnet]
[--no-exhaustive]``. Needs the host profile (calibrates with the quick suite if missing).
Results: bench/results/fit_quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, save_results  # noqa: E402

from pipeline.core.paths import edgefit_home  # noqa: E402
from pipeline.export.onnx import export_onnx  # noqa: E402
from pipeline.fit.flow import TIMING, fit  # noqa: E402
from pipeline.fit.options import DeviceOptions, RunOptions, SearchOptions  # noqa: E402
from pipeline.fit.search import (
    Budget,  # noqa: E402
    enumerate_architectures,  # noqa: E402
)
from pipeline.measure.timing import time_onnx  # noqa: E402
from pipeline.models import build, initialize  # noqa: E402
from pipeline.predict.targets import load_target  # noqa: E402

# one architecture's representative φ depends on the range it was enumerated over (fit's [-4, 4], the exhaustive
# run's narrower one) by up to ~1e-4; distinct architectures lie at least ~0.01 apart
PHI_TOL = 1e-3


def exhaustive(family: str, lo: float, hi: float, threads: int, tmp: Path) -> list[dict]:
    """Measure every distinct architecture in [lo, hi] with the same harness as fit."""
    rows = []
    archs = enumerate_architectures(family, lo, hi)
    for i, a in enumerate(archs):
        path = tmp / "exhaustive.onnx"
        export_onnx(initialize(build(family, a.scale, 1000), seed=0), path)
        t = time_onnx(path, threads=threads, warmup=TIMING.warmup, min_repeats=TIMING.min_repeats,
                      min_time_s=TIMING.min_time_s, rounds=TIMING.rounds)
        rows.append({"index": i, "phi": a.phi, "resolution": a.scale.resolution, "p50_ms": round(t.p50_ms, 3)})
        print(f"  exhaustive {i + 1}/{len(archs)} φ={a.phi:g}: {t.p50_ms:.2f} ms", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budgets", default="5,8,10,15,20,30,45,60")
    ap.add_argument("--family", default="efficientnet")
    ap.add_argument("--no-exhaustive", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the report (md, png) from bench/results/fit_quality.json; measure nothing")
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the export cache between fits (default: emptied before each fit, so every wall time "
                         "is a first fit's)")
    args = ap.parse_args()
    threads = load_target("host").threads
    if args.render:
        import json

        saved = json.loads((RESULTS / "fit_quality.json").read_text())
        _compare([r for r in saved["rows"] if "phi" in r], saved["exhaustive"])
        return _report(saved["rows"], saved["exhaustive"], saved["summary"]["family"], threads,
                       saved["summary"]["export_cache"] == "warm")
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in budgets:
            if not args.warm_cache:
                shutil.rmtree(edgefit_home() / "cache" / "onnx", ignore_errors=True)
            t0 = time.perf_counter()
            try:
                d = fit("host", Budget(latency_ms=b), search_options=SearchOptions(args.family),
                        run=RunOptions(out=Path(tmp) / f"fit-{b}"), device=DeviceOptions(threads=threads),
                        log=lambda m: print("  " + m, file=sys.stderr))
            except Exception as exc:  # noqa: BLE001 - a bench reports every outcome
                rows.append({"budget_ms": b, "error": f"{type(exc).__name__}: {exc}"})
                continue
            wall = time.perf_counter() - t0
            # independently, as a user would: fresh sessions with the harness defaults, not fit's rounds. Twice,
            # a few seconds apart, keeping the lower p50 (calibration's statistic): a slow spell of this shared VM
            # moves one timing by up to ±5%, which is the machine, not the pick
            retimes = []
            for _ in range(2):
                retimes.append(time_onnx(Path(d["run_dir"]) / "model.onnx", threads=threads).p50_ms)
                time.sleep(2.0)
            retime = min(retimes)
            rows.append({"budget_ms": b, "phi": d["phi"],
                         "measured_ms": d["measured"]["latency_ms"], "retimed_ms": round(retime, 3),
                         "retimes_ms": [round(x, 3) for x in retimes],
                         "noise_margin_pct": d["budget"]["noise_margin_pct"],
                         "utilisation": round(retime / b, 3), "violation": retime > b,
                         "measurements": len(d["measurements"]), "wall_s": round(wall, 1),
                         "search_s": d["search"].get("step_seconds"),
                         "predictor_phi": d["search"]["predictor_choice_phi"]})
            print(f"budget {b:g} ms: φ={d['phi']:g} re-timed {retime:.2f} ms ({retime / b:.0%}), "
                  f"{len(d['measurements'])} measurements, {wall:.1f} s", flush=True)
        ex = []
        if not args.no_exhaustive:
            ok = [r for r in rows if "phi" in r]
            lo = min(r["phi"] for r in ok) - 0.6 if ok else -4.0
            hi = max(r["phi"] for r in ok) + 0.6 if ok else 2.0
            ex = exhaustive(args.family, max(-4.0, lo), min(4.0, hi), threads, Path(tmp))
            _compare(ok, ex)
    return _report(rows, ex, args.family, threads, args.warm_cache)


def _compare(ok: list[dict], ex: list[dict]) -> None:
    """Each pick against the exhaustive timings: the largest that fits, and the next larger than the pick."""
    for r in ok:  # the fit's own rule: a measurement must fit the budget less the noise margin
        limit = r["budget_ms"] * (1 - r["noise_margin_pct"] / 100)
        fitting = [e for e in ex if e["p50_ms"] <= limit]
        best = max(fitting, key=lambda e: e["index"]) if fitting else None
        r["exhaustive_phi"] = best and best["phi"]
        r["same_as_exhaustive"] = best is not None and abs(best["phi"] - r["phi"]) < PHI_TOL
        mine = next((e for e in ex if abs(e["phi"] - r["phi"]) < PHI_TOL), None)
        nxt = mine and next((e for e in ex if e["index"] == mine["index"] + 1), None)
        r["next_larger_ms"] = nxt and nxt["p50_ms"]
        r["next_larger_fits"] = None if not nxt else nxt["p50_ms"] <= limit


def _report(rows: list[dict], ex: list[dict] | None, family: str, threads: int, warm_cache: bool) -> int:
    """The summary, the Markdown table and the plot, from the rows (fresh or re-read with --render)."""
    ok = [r for r in rows if "phi" in r]
    summary = {
        "threads": threads, "family": family, "fits": len(ok), "errors": len(rows) - len(ok),
        "violations": sum(r["violation"] for r in ok),
        "median_utilisation": sorted(r["utilisation"] for r in ok)[len(ok) // 2] if ok else None,
        "mean_measurements": round(sum(r["measurements"] for r in ok) / max(1, len(ok)), 2),
        "mean_wall_s": round(sum(r["wall_s"] for r in ok) / max(1, len(ok)), 1),
        "median_wall_s": _median([r["wall_s"] for r in ok]),
        "median_wall_s_budgets_le_30ms": _median([r["wall_s"] for r in ok if r["budget_ms"] <= 30]),
        "median_search_s": _median([r["search_s"] for r in ok if r.get("search_s") is not None], digits=3),
        "same_as_exhaustive": None if not ex else f"{sum(r.get('same_as_exhaustive', False) for r in ok)}/{len(ok)}",
    }
    summary["export_cache"] = "warm" if warm_cache else "emptied before each fit"
    md = ["# fit quality on host", "", f"family {family}, {threads} threads. " + ", ".join(
        f"{k}: {v}" for k, v in summary.items()), "",
        "*wall s* is the whole `fit` call in one process: predictor, search, exporting and timing candidates, "
        "parity, memory, report. Each fit starts with an empty export cache, so it is a first fit's time. "
        "*re-timed ms* is the shipped `model.onnx` timed again in a fresh session with the harness defaults, twice "
        "a few seconds apart, the lower p50 (a *violation* is that over the budget). "
        "*exhaustive φ* is the largest architecture whose own measurement fits the budget less fit's noise margin "
        "(*next fits* likewise), from timing every "
        "architecture on the frontier with fit's settings (the plot); within one architecture of it, a pick is "
        "inside this machine's run-to-run noise.", "",
        "| budget ms | φ | re-timed ms | utilisation | violation | measurements | wall s | exhaustive φ | same | "
        "next larger ms | next fits |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['budget_ms']:g} | {r.get('phi')} | {r.get('retimed_ms')} | {r.get('utilisation')} | "
           f"{r.get('violation')} | {r.get('measurements')} | {r.get('wall_s')} | {r.get('exhaustive_phi')} | "
           f"{r.get('same_as_exhaustive')} | {r.get('next_larger_ms')} | {r.get('next_larger_fits')} |"
           if "phi" in r else f"| {r['budget_ms']:g} | error: {r['error']} |" for r in rows]
    if ex:
        _plot(ex, ok, RESULTS / "fit_quality.png")
        md += ["", "![measured latency of every architecture](fit_quality.png)"]
    save_results("fit_quality", {"summary": summary, "rows": rows, "exhaustive": ex}, "\n".join(md))
    print("\n".join(md))
    return 0


def _median(values: list[float], digits: int = 1) -> float | None:
    import statistics

    return round(statistics.median(values), digits) if values else None


def _plot(ex: list[dict], ok: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([e["phi"] for e in ex], [e["p50_ms"] for e in ex], ".-", label="measured p50, every architecture")
    for r in ok:
        ax.axhline(r["budget_ms"], color="0.8", lw=0.8)
        ax.plot([r["phi"]], [r["retimed_ms"]], "*", color="C3", ms=10)
    ax.set_xlabel("φ")
    ax.set_ylabel("ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
