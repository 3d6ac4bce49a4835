"""Reading and updating a run directory's ``fit.json`` (the record ``deploy fit`` writes).

Commands that add to a finished run (``deploy build``, ``deploy verify --trtexec-times``)
read ``fit.json``, change their own keys and write it back atomically: a temporary file
in the same directory, fsync, ``os.replace``. A crash therefore leaves either the old or
the new record, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import DeployError

FIT_JSON = "fit.json"


def fit_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FIT_JSON


def read_fit(run_dir: str | Path) -> dict:
    """``RUN_DIR/fit.json`` as a dict; a missing or corrupt file is a DeployError naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DeployError(f"run directory {run_dir} does not exist (make one with `deploy fit --out {run_dir}`).")
    path = fit_path(run_dir)
    if not path.is_file():
        raise DeployError(f"{run_dir} is not a run directory: it has no {FIT_JSON} (made by `deploy fit`).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path} is unreadable or not JSON ({exc}); re-run `deploy fit`.") from None
    if not isinstance(data, dict):
        raise DeployError(f"{path} does not hold a JSON object; re-run `deploy fit`.")
    for key in ("target", "family", "precision"):
        if key not in data:
            raise DeployError(f"{path} has no '{key}'; it was not written by `deploy fit`.")
    return data


def write_fit(run_dir: str | Path, data: dict) -> Path:
    """Write ``fit.json`` atomically (temp file in the same directory + ``os.replace``)."""
    from pipeline.core.io import write_json

    return write_json(fit_path(run_dir), data)


__all__ = ["FIT_JSON", "fit_path", "read_fit", "write_fit"]
