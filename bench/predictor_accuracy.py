"""Predicted vs measured latency and memory on host, for models *outside* the calibration suite.

Run: ``python bench/predictor_accuracy.py [--threads N] [--quick-profile]``. Uses the host
profile for this machine and thread count (calibrating it first if there is none), then
measures each held-out model with the same harness and thread count and reports the
fraction of predictions within ±10% (latency) and ±20% (memory).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_results  # noqa: E402

from pipeline.core.errors import ProfileMissing  # noqa: E402
from pipeline.cost.plan import scale_cost  # noqa: E402
from pipeline.fit.calibrate import FULL_TIMING, SuiteEntry, calibrate, measure_entry  # noqa: E402
from pipeline.measure.device import LocalDevice  # noqa: E402
from pipeline.predict.predictor import load_predictor  # noqa: E402
from pipeline.predict.targets import load_target  # noqa: E402

HELD_OUT = (
    SuiteEntry("efficientnet", -1.5), SuiteEntry("efficientnet", 0.7), SuiteEntry("efficientnet", 1.3),
    SuiteEntry("mobilenetv2", -0.5), SuiteEntry("mobilenetv2", 1.5),
    SuiteEntry("resnet18", -1.5), SuiteEntry("resnet18", 0.5),
    SuiteEntry("resnet50", -2.5), SuiteEntry("resnet50", -0.5),
    SuiteEntry("efficientnet", dims=(2, -1, 0)), SuiteEntry("resnet18", dims=(2, -1, 0)),
    SuiteEntry("mobilenetv2", dims=(-1, 1, 1)), SuiteEntry("efficientnet", dims=(1, -1, 1)),
    SuiteEntry("efficientnet", dims=(0, 0, 0.5)), SuiteEntry("resnet18", dims=(0, 0, -1.3)),
    SuiteEntry("resnet50", dims=(-1, -2, 0.7)),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick-profile", action="store_true", help="calibrate with the quick suite if needed")
    args = ap.parse_args()
    target = load_target("host")
    threads = args.threads or target.threads
    device = LocalDevice(target, threads)
    try:
        predictor = load_predictor(target, "fp32", threads)
    except ProfileMissing:
        print("no host profile: calibrating first", file=sys.stderr)
        calibrate(target, "fp32", threads, quick=args.quick_profile)
        predictor = load_predictor(target, "fp32", threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in HELD_OUT:
            rec = measure_entry(entry, device, FULL_TIMING, Path(tmp))
            pred = predictor.predict(scale_cost(entry.family, entry.scale()))
            lat_err = pred.latency_ms / rec["latency_ms"]["p50"] - 1
            mem_err = pred.memory_mb / rec["peak_memory_mb"] - 1 if rec["peak_memory_mb"] else None
            rows.append({"model": entry.label, "resolution": rec["resolution"], "macs": rec["macs"],
                         "measured_ms": rec["latency_ms"]["p50"], "measured_p90_ms": rec["latency_ms"]["p90"],
                         "predicted_ms": pred.latency_ms, "latency_err_pct": round(100 * lat_err, 2),
                         "measured_mb": rec["peak_memory_mb"], "predicted_mb": pred.memory_mb,
                         "memory_err_pct": None if mem_err is None else round(100 * mem_err, 2)})
            print(f"{entry.label:40s} measured {rec['latency_ms']['p50']:8.2f} ms  predicted {pred.latency_ms:8.2f} ms"
                  f"  ({100 * lat_err:+.1f}%)  mem {rec['peak_memory_mb']:.1f} vs {pred.memory_mb:.1f} MB", flush=True)
    within10 = sum(abs(r["latency_err_pct"]) <= 10 for r in rows) / len(rows)
    mem_ok = [r for r in rows if r["memory_err_pct"] is not None]
    within20 = sum(abs(r["memory_err_pct"]) <= 20 for r in mem_ok) / max(1, len(mem_ok))
    summary = {"threads": threads, "profile": str(predictor.profile.path), "method": predictor.method,
               "profile_heldout_error_pct": predictor.heldout_error_pct,
               "fraction_latency_within_10pct": round(within10, 3),
               "fraction_memory_within_20pct": round(within20, 3), "n": len(rows)}
    md = ["# Predictor accuracy on host (held-out models)", "",
          f"threads {threads}; profile `{summary['profile']}`; {predictor.method}", "",
          f"**{within10:.0%}** of latency predictions within ±10% of measured p50; "
          f"**{within20:.0%}** of memory predictions within ±20%.", "",
          "| model | res | measured ms | predicted ms | error | measured MB | predicted MB | error |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['resolution']} | {r['measured_ms']:.2f} | {r['predicted_ms']:.2f} | "
           f"{r['latency_err_pct']:+.1f}% | {r['measured_mb']} | {r['predicted_mb']} | {r['memory_err_pct']}% |"
           for r in rows]
    paths = save_results("predictor_accuracy", {"summary": summary, "rows": rows}, "\n".join(md))
    print("\n".join(md[4:5]))
    print(f"saved {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
