"""Where the device runner is: the one stdlib-only file that measures on a device (``edgefit_device.py``).

``deploy device-script`` writes it, calibration bundles carry it and the agent is its ``serve``
command; all of them take it from here, so there is one copy.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import BackendUnavailable

RUNNER_FILE = "edgefit_device.py"


def runner_path() -> Path:
    """The runner's file inside the installed package."""
    path = Path(__file__).resolve().with_name(RUNNER_FILE)
    if not path.is_file():
        raise BackendUnavailable(f"the device runner {path} is missing from this edgefit install; reinstall edgefit.")
    return path


def runner_source() -> str:
    return runner_path().read_text(encoding="utf-8")


__all__ = ["RUNNER_FILE", "runner_path", "runner_source"]
