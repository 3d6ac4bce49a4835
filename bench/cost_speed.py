"""How long the static cost model takes (the issue asks < 1 s for B7): median of repeats."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_results  # noqa: E402

from pipeline.core.scaling import preset  # noqa: E402
from pipeline.cost.trace import scale_cost  # noqa: E402

if __name__ == "__main__":
    rows = []
    scale_cost("efficientnet", preset("b0"))  # first call pays torch's one-off meta-kernel set-up
    for name in ("b0", "b3", "b7"):
        times = []
        for _ in range(7):
            t = time.perf_counter()
            cost = scale_cost("efficientnet", preset(name))
            times.append(time.perf_counter() - t)
        rows.append({"preset": name, "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4),
                     "ops": len(cost.ops), "macs": cost.macs})
    md = ["# Static cost speed", "", "| preset | ops | median s | max s |", "|---|---|---|---|"]
    md += [f"| {r['preset']} | {r['ops']} | {r['median_s']} | {r['max_s']} |" for r in rows]
    save_results("cost_speed", {"rows": rows}, "\n".join(md))
    print("\n".join(md))
