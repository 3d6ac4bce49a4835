"""How well does the load check divide a busy machine out? (pipeline.measure.loop.load_check)

The scene of tests/test_busy_machine.py, repeated: a ~4 ms convolution net is measured on one CPU
(``earlier``), then again with three CPU-burning processes pinned to that CPU, next to the reference
model. The check's estimate of the quiet p50 is compared with the quiet p50 itself (1.0 is perfect;
the test's budget is 1.3×). It runs with 0, 1 and 2 *extra* busy processes floating over all CPUs,
which also disturb the earlier baseline: the load of a shared CI runner. Two estimators on the same
measurements:

* ``within rounds`` (what load_check does): earlier p50 × R(again) / R(earlier), R the median over
  rounds of model round mean / reference round mean;
* ``drift division`` (what it did before): median over rounds of model round p50 × the earlier
  reference / the reference round mean.

Run: ``python bench/load_check.py [--tries 5]``. Results: bench/results/load_check.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import save_results  # noqa: E402

from pipeline.core.budget import Budget  # noqa: E402
from pipeline.measure.device import LocalDevice  # noqa: E402
from pipeline.measure.loop import Measurement, load_check  # noqa: E402
from pipeline.measure.reference import conv_net_bytes  # noqa: E402
from pipeline.predict.targets import load_target  # noqa: E402
from tests.test_busy_machine import LAYERS, RECHECK, burners, measure, one_cpu  # noqa: E402

NAME = "load_check"


def drift_division(earlier: Measurement, again: Measurement) -> float:
    """The estimator load_check used before: the model's round p50 divided by the reference's drift."""
    return statistics.median(m * earlier.reference_ms / r for m, r in zip(again.round_ms, again.reference_round_ms))


def one_try(device, model: Path) -> dict:
    with one_cpu() as cpu:
        earlier = measure(device, model, Budget(latency_ms=1e3))
        with burners(cpu):
            again = measure(device, model, Budget(latency_ms=1e3), RECHECK)
    check = load_check(earlier, again, again, Budget(latency_ms=1e3))
    quiet = earlier.latency_ms
    return {"quiet_ms": quiet, "loaded_ms": again.latency_ms, "drift_pct": check.drift_pct,
            "within_rounds": round(check.corrected_ms / quiet, 3),
            "drift_division": round(drift_division(earlier, again) / quiet, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    device = LocalDevice(load_target("host"), 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        model.write_bytes(conv_net_bytes(128, LAYERS))
        for extra in (0, 1, 2):
            procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(extra)]
            try:
                for i in range(args.tries):
                    row = {"extra_busy": extra, "try": i, **one_try(device, model)}
                    rows.append(row)
                    print(row, flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    summary = []
    for extra in (0, 1, 2):
        mine = [r for r in rows if r["extra_busy"] == extra]
        summary.append({"extra_busy": extra, "tries": len(mine),
                        **{k: [min(r[k] for r in mine), max(r[k] for r in mine)]
                           for k in ("within_rounds", "drift_division")}})
    md = ["# load check: the quiet p50 estimated under load", "",
          "Estimate / quiet p50 (1.0 is perfect; the busy-machine test's budget is 1.3×). Three CPU burners share "
          "the measuring CPU during the re-measure; *extra busy* processes float over all CPUs throughout. "
          "See the module docstring for both estimators.", "",
          "| extra busy | tries | within rounds (load_check) | drift division (before) |", "|---|---|---|---|"]
    md += [f"| {s['extra_busy']} | {s['tries']} | {s['within_rounds'][0]:.2f}–{s['within_rounds'][1]:.2f} | "
           f"{s['drift_division'][0]:.2f}–{s['drift_division'][1]:.2f} |" for s in summary]
    md += ["", "| extra busy | quiet ms | loaded ms | reference drift % | within rounds | drift division |",
           "|---|---|---|---|---|---|"]
    md += [f"| {r['extra_busy']} | {r['quiet_ms']:.2f} | {r['loaded_ms']:.2f} | {r['drift_pct']:.0f} | "
           f"{r['within_rounds']:.2f} | {r['drift_division']:.2f} |" for r in rows]
    save_results(NAME, {"summary": summary, "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
