"""The profile schema: latencies a predictor is fitted on, and where they came from.

A profile is one JSON file per (target, runtime, precision). Its ``provenance`` is the
point of the whole format: ``"measured"`` (timed on the device by ``deploy calibrate``),
``"published"`` (each record cites the page it was copied from, and the runtime that
source actually used), or ``"roofline"`` (no timings at all, only datasheet figures
and a reference target). Predictions carry that word into every output, so a
profile that cannot say where its numbers come from is rejected here, at load time.

Validation is strict about what a predictor relies on (families, resolutions, finite
positive latencies, sources) and lenient about extra per-record keys, so a
calibration run may add cost features (params, MACs, ...) without a schema change.
Reading a profile never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.core.errors import DeployError, ProfileInvalid, ProfileMissing
from pipeline.core.scaling import PRESETS

SCHEMA_VERSION = 1
PROVENANCES = ("measured", "published", "roofline")
PRECISIONS = ("fp32", "fp16", "int8")
RECORD_KINDS = ("model", "op")
# Same names as pipeline.models.FAMILIES (a test keeps them equal); repeated here so that
# reading a profile, e.g. for `deploy targets`, does not pay for importing torch.
FAMILIES = ("efficientnet", "mobilenetv2", "resnet18", "resnet50")
PERCENTILES = ("p50", "p90", "p99")

REQUIRED_KEYS = ("schema_version", "target", "runtime", "precision", "provenance", "device", "created", "method",
                 "records")
OPTIONAL_KEYS = ("roofline", "notes")
ROOFLINE_KEYS = ("reference_target", "reference_precision", "hardware", "note")


def now_iso() -> str:
    """UTC time stamp for ``created`` (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Profile:
    """One validated profile. ``records`` are plain dicts (see :func:`validate_record`)."""

    target: str
    runtime: dict
    precision: str
    provenance: str
    device: dict
    created: str
    method: dict
    records: tuple[dict, ...]
    roofline: dict | None = None
    notes: str | None = None
    schema_version: int = SCHEMA_VERSION
    path: Path | None = field(default=None, compare=False)

    @property
    def model_records(self) -> tuple[dict, ...]:
        return tuple(r for r in self.records if r["kind"] == "model")

    @property
    def op_records(self) -> tuple[dict, ...]:
        return tuple(r for r in self.records if r["kind"] == "op")

    def to_dict(self) -> dict:
        """The JSON object, keys in schema order; ``roofline``/``notes`` only when set."""
        data: dict[str, Any] = {"schema_version": self.schema_version}
        for key in REQUIRED_KEYS[1:]:
            value = getattr(self, key)
            data[key] = [dict(r) for r in value] if key == "records" else value
        for key in OPTIONAL_KEYS:
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> Profile:
        """Validate ``data`` (raising :class:`ProfileInvalid`) and build a Profile."""
        clean = validate_profile(data, str(path) if path is not None else "<profile>")
        return cls(**clean, path=Path(path) if path is not None else None)


# --- validation ------------------------------------------------------------------------------------


def _fail(where: str, key: str, problem: str) -> ProfileInvalid:
    return ProfileInvalid(f"{where}: '{key}' {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(where: str, key: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, f"must be a non-empty string, got {value!r}.")
    return value


def _dict(where: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, key, f"must be a JSON object, got {type(value).__name__}.")
    return value


def _choice(where: str, key: str, value: Any, choices: tuple) -> str:
    if value not in choices:
        raise _fail(where, key, f"must be one of {', '.join(choices)}, got {value!r}.")
    return value


def _latency(where: str, key: str, value: Any) -> dict:
    lat = _dict(where, key, value)
    if "p50" not in lat:
        raise _fail(where, key, "has no 'p50'.")
    for name, v in lat.items():
        if not _is_number(v) or v < 0 or (name in PERCENTILES and v == 0):
            raise _fail(where, f"{key}.{name}", f"must be a finite positive number of milliseconds, got {v!r}.")
    given = [lat[p] for p in PERCENTILES if p in lat]
    if given != sorted(given):
        raise _fail(where, key, f"percentiles must not decrease (p50 <= p90 <= p99), got {lat}.")
    return dict(lat)


def validate_record(record: Any, where: str, provenance: str, precision: str) -> dict:
    """Check one record and fill its defaults; ``where`` names the file and index."""
    rec = dict(_dict(where, "record", record))
    kind = _choice(where, "kind", rec.get("kind"), RECORD_KINDS)
    if "latency_ms" not in rec:
        raise _fail(where, "latency_ms", "is missing.")
    rec["latency_ms"] = _latency(where, "latency_ms", rec["latency_ms"])
    mem = rec.setdefault("peak_memory_mb", None)
    if mem is not None and (not _is_number(mem) or mem < 0):
        raise _fail(where, "peak_memory_mb", f"must be null or a finite number >= 0, got {mem!r}.")
    if kind == "model":
        _validate_model_record(rec, where)
    elif "op" in rec:
        _dict(where, "op", rec["op"])
    if provenance == "published" and "source" not in rec:
        raise _fail(where, "source", "is missing: every published record must cite where its number comes from.")
    for key in ("source", "conditions", "runtime"):
        if key in rec:
            _str(where, key, rec[key])
    if "precision" in rec and _choice(where, "precision", rec["precision"], PRECISIONS) != precision:
        raise _fail(where, "precision", f"is {rec['precision']!r} in a {precision} profile.")
    return rec


def _validate_model_record(rec: dict, where: str) -> None:
    if "family" not in rec:
        raise _fail(where, "family", "is missing.")
    _choice(where, "family", rec["family"], FAMILIES)
    for key in ("phi", "phi_depth", "phi_width", "phi_resolution"):
        value = rec.setdefault(key, None)
        if value is not None and not _is_number(value):
            raise _fail(where, key, f"must be null or a finite number, got {value!r}.")
    preset = rec.setdefault("preset", None)
    if preset is not None and preset not in PRESETS:
        raise _fail(where, "preset", f"must be null or one of {', '.join(PRESETS)}, got {preset!r}.")
    per_dim = all(rec[k] is not None for k in ("phi_depth", "phi_width", "phi_resolution"))
    if preset is None and rec["phi"] is None and not per_dim:
        raise _fail(where, "phi", "is null, and neither 'preset' nor all of phi_depth/phi_width/phi_resolution "
                    "say which model was timed.")
    for key, default in (("resolution", None), ("num_classes", 1000)):
        value = rec.setdefault(key, default)
        if not _is_int(value) or value <= 0:
            raise _fail(where, key, f"must be a positive integer, got {value!r}.")


def _validate_roofline(value: Any, where: str) -> dict:
    roof = _dict(where, "roofline", value)
    for key in ROOFLINE_KEYS:
        if key not in roof:
            raise _fail(where, f"roofline.{key}", "is missing.")
    _str(where, "roofline.reference_target", roof["reference_target"])
    _choice(where, "roofline.reference_precision", roof["reference_precision"], PRECISIONS)
    _str(where, "roofline.note", roof["note"])
    for table in ("hardware", "reference_hardware"):
        for name, figure in _dict(where, f"roofline.{table}", roof.get(table, {})).items():
            _dict(where, f"roofline.{table}.{name}", figure)
            _str(where, f"roofline.{table}.{name}.source", figure.get("source"))
    return roof


def validate_profile(data: Any, where: str = "<profile>") -> dict:
    """Return the Profile constructor arguments for ``data`` or raise :class:`ProfileInvalid`."""
    data = _dict(where, "(top level)", data)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise _fail(where, missing[0], f"is missing (required: {', '.join(REQUIRED_KEYS)}).")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise _fail(where, unknown[0], f"is not a profile key (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}).")
    version = data["schema_version"]
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise _fail(where, "schema_version", f"is {version!r}; this edgefit reads schema version {SCHEMA_VERSION}.")
    runtime = _dict(where, "runtime", data["runtime"])
    _str(where, "runtime.name", runtime.get("name"))
    if "version" not in runtime:
        raise _fail(where, "runtime.version", "is missing (null when the source does not state it).")
    for key in ("version", "provider", "notes"):
        _str(where, f"runtime.{key}", runtime.get(key), optional=True)
    precision = _choice(where, "precision", data["precision"], PRECISIONS)
    provenance = _choice(where, "provenance", data["provenance"], PROVENANCES)
    created = _str(where, "created", data["created"])
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(where, "created", f"must be an ISO 8601 time stamp, got {created!r}.") from None
    if not isinstance(data["records"], list):
        raise _fail(where, "records", "must be a list.")
    records = tuple(validate_record(r, f"{where}: records[{i}]", provenance, precision)
                    for i, r in enumerate(data["records"]))
    roofline = data.get("roofline")
    if provenance == "roofline":
        roofline = _validate_roofline(roofline, where)
    elif roofline is not None:
        raise _fail(where, "roofline", f"is only allowed when provenance is 'roofline', not {provenance!r}.")
    elif not records:
        raise _fail(where, "records", f"is empty; a {provenance} profile needs at least one record.")
    return {
        "schema_version": version, "target": _str(where, "target", data["target"]), "runtime": runtime,
        "precision": precision, "provenance": provenance, "device": _dict(where, "device", data["device"]),
        "created": created, "method": _dict(where, "method", data["method"]), "records": records,
        "roofline": roofline, "notes": _str(where, "notes", data.get("notes"), optional=True),
    }


# --- files -----------------------------------------------------------------------------------------


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file.

    A missing file is :class:`ProfileMissing`; anything unreadable, truncated or off the
    schema is :class:`ProfileInvalid` naming the file and the offending key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileMissing(f"no profile at {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileInvalid(f"{path}: cannot read profile: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileInvalid(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    return Profile.from_dict(data, path)


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Validate and write ``profile`` atomically: temp file in the same folder, then ``os.replace``.

    A reader (or a crash) never sees half a file, and a failed save leaves any previous
    profile at ``path`` untouched.
    """
    path = Path(path)
    data = profile.to_dict()
    validate_profile(data, str(path))
    try:
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ProfileInvalid(f"{path}: profile cannot be written as JSON: {exc}") from None
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise DeployError(f"cannot write profile {path}: {exc}") from None
    return path


__all__ = ["FAMILIES", "PRECISIONS", "PROVENANCES", "SCHEMA_VERSION", "Profile", "load_profile", "now_iso",
           "save_profile", "validate_profile", "validate_record"]
