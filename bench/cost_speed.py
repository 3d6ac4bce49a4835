"""How long the static cost model takes: from the plan (what the search uses) against tracing the torch model.

Median of repeats per preset, caches bypassed (``scale_cost.__wrapped__``; a fresh meta model for every trace), and
the cold search: ``deploy fit --target jetson-nano --latency 20ms``'s search step in a fresh process with an
empty ``$EDGEFIT_HOME``. Results: bench/results/cost_speed.{json,md}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_results  # noqa: E402

from pipeline.core.scaling import preset  # noqa: E402
from pipeline.cost.plan import scale_cost  # noqa: E402

COLD_SEARCH = """
import json, time
t = time.perf_counter()
from pipeline.core.budget import Budget
from pipeline.fit.auto import search_family
from pipeline.fit.flow import fit_predictor
from pipeline.fit.options import SearchOptions
from pipeline.predict.targets import load_target
tgt = load_target("jetson-nano")
imported = time.perf_counter()
pick = search_family("efficientnet", fit_predictor(tgt, "fp16", None), Budget(latency_ms=20), SearchOptions(),
                     tgt.memory_mb, 1000)
done = time.perf_counter()
import sys
print(json.dumps({"import_s": imported - t, "search_s": done - imported, "phi": pick.phi,
                  "torch_imported": "torch" in sys.modules}))
"""


def _median(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    from pipeline.cost.trace import model_cost
    from pipeline.models import build

    plan = scale_cost.__wrapped__
    model_cost(build("efficientnet", preset("b0"), 1000, device="meta"))  # torch's one-off meta-kernel set-up
    rows = []
    for name in ("b0", "b3", "b7", "lite0", "lite4"):
        family = "efficientnet-lite" if name.startswith("lite") else "efficientnet"
        planned = _median(lambda: plan(family, preset(name)))  # noqa: B023
        traced = _median(lambda: model_cost(build(family, preset(name), 1000, device="meta")), 3)  # noqa: B023
        cost = plan(family, preset(name))
        rows.append({"preset": name, "ops": len(cost.ops), "macs": cost.macs, "plan_s": round(planned, 4),
                     "trace_s": round(traced, 4), "speedup": round(traced / planned, 1)})
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run([sys.executable, "-c", COLD_SEARCH], capture_output=True, text=True, check=True,
                             env={**os.environ, "EDGEFIT_HOME": home})
    cold = json.loads(out.stdout.strip().splitlines()[-1])
    md = ["# Static cost speed", "",
          "Per preset: the fused op list from the plan (`pipeline.cost.plan`, what the search uses) against tracing "
          "the torch model on the meta device (`pipeline.cost.trace`, the oracle), caches bypassed, median.", "",
          "| preset | ops | plan s | trace s | plan is faster by |", "|---|---|---|---|---|"]
    md += [f"| {r['preset']} | {r['ops']} | {r['plan_s']} | {r['trace_s']} | {r['speedup']}× |" for r in rows]
    md += ["", "Cold search (fresh process, empty `$EDGEFIT_HOME`): `deploy fit --target jetson-nano --latency "
           f"20ms`'s search step (published profile fitted, φ={cold['phi']:g} chosen) took "
           f"**{cold['search_s']:.2f} s** after {cold['import_s']:.2f} s of imports; torch imported: "
           f"{cold['torch_imported']}."]
    save_results("cost_speed", {"rows": rows, "cold_search": cold}, "\n".join(md))
    print("\n".join(md))
