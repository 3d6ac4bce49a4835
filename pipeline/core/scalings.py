"""Named scalings: α, β, γ under a name, so a grid's winner can be used by ``fit``, ``train`` and ``describe``.

``--scaling NAME`` looks NAME up, in this order:

1. a reference scaling shipped with edgefit (:data:`pipeline.core.scaling.REFERENCE_SCALINGS`:
   ``efficientnet``, ``dollar-fast``);
2. the user config, ``$EDGEFIT_HOME/scalings.json`` (``deploy grid --save-scaling NAME`` and
   ``deploy scaling save NAME`` write it);
3. a path: a run directory or JSON file whose top-level ``scaling`` object holds ``alpha``,
   ``beta`` and ``gamma`` (``grid.json``'s winner, or the constants a ``fit.json`` was fitted with).

The user config is one JSON object ``{"schema_version": 1, "scalings": {NAME: {"alpha", "beta",
"gamma", "source", "saved"}}}``, written atomically; a name is lowercase letters, digits and dashes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import DeployError, UnknownName, UsageError
from pipeline.core.paths import edgefit_home
from pipeline.core.scaling import DEFAULTS, REFERENCE_SCALINGS, CompoundScaling, reference_constants

CONFIG_NAME = "scalings.json"
CONFIG_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RUN_FILES = ("grid.json", "fit.json")  # what a directory given as --scaling may hold


@dataclass(frozen=True)
class NamedScaling:
    """α, β, γ with where they come from: ``kind`` is ``reference``, ``user``, ``run`` or ``flags``."""

    name: str | None
    alpha: float
    beta: float
    gamma: float
    kind: str
    source: str

    def scaling(self, base_resolution: int = DEFAULTS["base_resolution"]) -> CompoundScaling:
        return CompoundScaling(self.alpha, self.beta, self.gamma, base_resolution)

    def to_dict(self) -> dict:
        return asdict(self)


def config_path() -> Path:
    return edgefit_home() / CONFIG_NAME


def _check_constants(alpha, beta, gamma, where: str) -> tuple[float, float, float]:
    out = []
    for key, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise DeployError(f"{where}: {key} must be a positive number, got {value!r}.")
        out.append(float(value))
    return out[0], out[1], out[2]


def read_config(path: Path | None = None) -> dict[str, dict]:
    """The saved scalings by name ({} when there is no config yet)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path} is not readable JSON ({exc}); fix or delete it.") from None
    if not isinstance(data, dict) or not isinstance(data.get("scalings"), dict):
        raise DeployError(f"{path} has no 'scalings' object; fix or delete it.")
    if data.get("schema_version", CONFIG_VERSION) > CONFIG_VERSION:
        raise DeployError(f"{path} has schema_version {data['schema_version']}; this edgefit reads up to "
                          f"{CONFIG_VERSION}. Upgrade edgefit.")
    return data["scalings"]


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise UsageError(f"scaling name '{name}' must be lowercase letters, digits and dashes (e.g. shapes-host).")
    if name in REFERENCE_SCALINGS:
        raise UsageError(f"'{name}' is a reference scaling shipped with edgefit; choose another name.")
    return name


def save_scaling(name: str, alpha: float, beta: float, gamma: float, source: str, *, force: bool = False) -> Path:
    """Add ``name`` to the user config (refused when it exists with other constants, unless ``force``)."""
    from pipeline.core.io import file_lock, write_json

    check_name(name)
    alpha, beta, gamma = _check_constants(alpha, beta, gamma, f"scaling {name}")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        current = read_config(path)
        old = current.get(name)
        if old and not force and (old.get("alpha"), old.get("beta"), old.get("gamma")) != (alpha, beta, gamma):
            raise DeployError(f"scaling '{name}' already exists in {path} (α={old.get('alpha')}, β={old.get('beta')}, "
                              f"γ={old.get('gamma')}); pass --force to replace it or choose another name.")
        current[name] = {"alpha": alpha, "beta": beta, "gamma": gamma, "source": source,
                         "saved": datetime.now().astimezone().isoformat(timespec="seconds")}
        write_json(path, {"schema_version": CONFIG_VERSION, "scalings": dict(sorted(current.items()))})
    return path


def list_scalings(flops_ratio: float = 2.0) -> list[NamedScaling]:
    """Every name ``--scaling`` knows: the reference scalings, then the user's."""
    out = [NamedScaling(n, *reference_constants(n, flops_ratio), "reference", REFERENCE_SCALINGS[n])
           for n in REFERENCE_SCALINGS]
    for name, entry in read_config().items():
        out.append(NamedScaling(name, *_check_constants(entry.get("alpha"), entry.get("beta"), entry.get("gamma"),
                                                        f"{config_path()} scaling {name}"),
                                "user", str(entry.get("source") or config_path())))
    return out


def _from_run(path: Path) -> NamedScaling:
    file = path
    if path.is_dir():
        file = next((path / f for f in RUN_FILES if (path / f).is_file()), None)
        if file is None:
            raise DeployError(f"{path} holds neither {' nor '.join(RUN_FILES)}; give a grid or fit run directory.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(f"{file} is not readable JSON ({exc}).") from None
    sc = data.get("scaling") if isinstance(data, dict) else None
    if not isinstance(sc, dict):
        raise DeployError(f"{file} has no 'scaling' object (alpha, beta, gamma): nothing to take the constants from.")
    a, b, g = _check_constants(sc.get("alpha"), sc.get("beta"), sc.get("gamma"), f"{file} scaling")
    unfinished = " (an unfinished grid: its winner so far)" if data.get("complete") is False else ""
    return NamedScaling(sc.get("name"), a, b, g, "run", f"{file}{unfinished}")


def lookup(name: str) -> NamedScaling:
    """``name`` as a reference scaling, a saved one, or a run directory / JSON file with a ``scaling`` object."""
    if name in REFERENCE_SCALINGS:
        return NamedScaling(name, *reference_constants(name), "reference", REFERENCE_SCALINGS[name])
    saved = read_config()
    if name in saved:
        e = saved[name]
        return NamedScaling(name, *_check_constants(e.get("alpha"), e.get("beta"), e.get("gamma"),
                                                    f"{config_path()} scaling {name}"),
                            "user", str(e.get("source") or config_path()))
    path = Path(name).expanduser()
    if path.exists():
        return _from_run(path)
    if "/" in name or name.endswith(".json"):
        raise DeployError(f"scaling {name}: no such file or directory (give a saved name, a reference scaling, or a "
                          "grid or fit run directory).")
    raise UnknownName("scaling", name, [*REFERENCE_SCALINGS, *saved])


def resolve(alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
            name: str | None = None, base_resolution: int = DEFAULTS["base_resolution"]) -> NamedScaling:
    """What ``--scaling`` / ``--alpha --beta --gamma`` mean together: one or the other, never both.

    Without either, EfficientNet's constants. A constant not given defaults to EfficientNet's.
    """
    flags = [v is not None for v in (alpha, beta, gamma)]
    if name is not None and any(flags):
        raise UsageError("give --scaling NAME or --alpha/--beta/--gamma, not both.")
    if name is not None:
        return lookup(name)
    if not any(flags):
        return NamedScaling("efficientnet", *reference_constants("efficientnet"), "reference",
                            REFERENCE_SCALINGS["efficientnet"])
    a, b, g = (d if v is None else v for v, d in zip((alpha, beta, gamma), reference_constants("efficientnet")))
    a, b, g = _check_constants(a, b, g, "--alpha/--beta/--gamma")
    return NamedScaling(None, a, b, g, "flags", "--alpha/--beta/--gamma")


__all__ = ["CONFIG_NAME", "NamedScaling", "check_name", "config_path", "list_scalings", "lookup", "read_config",
           "resolve", "save_scaling"]
