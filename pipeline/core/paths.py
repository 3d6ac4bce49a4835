"""Where edgefit's data lives.

Two places, kept apart on purpose:

* the *project root* holds the shipped data folders ``targets/`` and ``calibration/``
  (read-only as far as a user is concerned: they are versioned with the code), and
* the *edgefit home* holds what is measured on this machine (host profiles). A host
  profile describes one user's CPU, so it must never land in the repository.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path


def _installed_roots() -> list[Path]:
    """Where a non-editable install puts ``share/edgefit`` (pyproject's data-files)."""
    roots = [Path(sysconfig.get_path("data")), Path(sys.prefix)]
    user_base = getattr(site, "USER_BASE", None)
    if user_base:
        roots.append(Path(user_base))
    return [r / "share" / "edgefit" for r in roots]


def project_root() -> Path:
    """The folder holding ``targets/`` and ``calibration/``.

    For a source checkout or an editable install this is the parent of the
    ``pipeline`` package. A wheel install has no such folder next to the package, so
    we fall back to ``<prefix>/share/edgefit``, where pyproject's data-files put them.
    When neither has ``targets/`` the source location is returned, so error messages
    name a path a developer recognises.
    """
    source = Path(__file__).resolve().parents[2]
    for root in (source, *_installed_roots()):
        if (root / "targets").is_dir():
            return root
    return source


def edgefit_home() -> Path:
    """``$EDGEFIT_HOME`` if set, else ``~/.cache/edgefit``: per-machine, never in the repo."""
    env = os.environ.get("EDGEFIT_HOME", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgefit"


__all__ = ["edgefit_home", "project_root"]
