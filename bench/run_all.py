"""`make bench`: run every benchmark in turn; each writes bench/results/<name>.{json,md}."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["cost_speed.py", "predictor_accuracy.py", "predictor_published.py", "fit_quality.py", "accuracy_vs_scale.py",
           "deep_compression_mlp.py", "compression_vs_scaling.py", "int8_speedup.py", "scaling_study.py",
           "load_check.py"]

if __name__ == "__main__":
    failed = []
    for name in BENCHES:
        if not (HERE / name).exists():
            continue
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, str(HERE / name)]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    sys.exit(1 if failed else 0)
