"""Helpers shared by the benchmark scripts: result files and the host profile."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "argv": sys.argv}
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps({"meta": meta, **data}, indent=2) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path
