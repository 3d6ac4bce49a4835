"""The profile schema: latencies a predictor is fitted on, and where they came from.

A profile is one JSON file per (target, runtime, precision). Its ``provenance`` is the
point of the whole format: ``"measured"`` (timed on the device by ``deploy calibrate``),
``"published"`` (each record cites the page it was copied from, and the runtime that
source actually used), or ``"roofline"`` (no timings at all, only datasheet figures
and a reference target). Predictions carry that word into every output, so a
profile that cannot say where its numbers come from is rejected here, at load time.

The format is declared in :mod:`pipeline.predict.schemas` (``ProfileModel``; its JSON
Schema is ``docs/schema/profile.schema.json``). Validation is strict about what a
predictor relies on (families, resolutions, finite positive latencies, sources) and
lenient about extra per-record keys, so a calibration run may add cost features
(params, MACs, ...) without a schema change. Reading a profile never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.core.errors import DeployError, ProfileInvalid, ProfileMissing
from pipeline.predict.schemas import (
    FAMILIES,
    PRECISIONS,
    PROVENANCES,
    RECORD_ADAPTER,
    SCHEMA_VERSION,
    ProfileModel,
    Record,
    error_line,
    record_rule,
    validate,
)

REQUIRED_KEYS = tuple(k for k, f in ProfileModel.model_fields.items() if f.is_required())
OPTIONAL_KEYS = tuple(k for k, f in ProfileModel.model_fields.items() if not f.is_required())


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


def validate_record(record: Any, where: str, provenance: str, precision: str) -> dict:
    """Check one record and fill its defaults; ``where`` names the file and index (``file: records[3]``)."""
    try:
        rec = RECORD_ADAPTER.validate_python(record)
    except ValidationError as exc:
        raise ProfileInvalid(error_line(exc, where, Record)) from None
    broken = record_rule(rec, provenance, precision)
    if broken is not None:
        raise ProfileInvalid(f"{where}: '{broken[0]}' {broken[1]}.")
    return rec.as_dict()


def validate_profile(data: Any, where: str = "<profile>") -> dict:
    """Return the Profile constructor arguments for ``data`` or raise :class:`ProfileInvalid`."""
    model = validate(ProfileModel, data, where, ProfileInvalid)
    return {
        "schema_version": model.schema_version, "target": model.target,
        "runtime": model.runtime.model_dump(exclude_unset=True), "precision": model.precision,
        "provenance": model.provenance, "device": model.device, "created": model.created, "method": model.method,
        "records": tuple(r.as_dict() for r in model.records),
        "roofline": model.roofline.model_dump(exclude_unset=True) if model.roofline is not None else None,
        "notes": model.notes,
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
    """Validate and write ``profile`` atomically, under the file's lock.

    A reader (or a crash) never sees half a file, a failed save leaves any previous
    profile at ``path`` untouched, and two processes saving the same host profile under
    ``$EDGEFIT_HOME`` take turns instead of interleaving.
    """
    from pipeline.core.io import atomic_write, file_lock

    path = Path(path)
    data = profile.to_dict()
    validate_profile(data, str(path))
    try:
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ProfileInvalid(f"{path}: profile cannot be written as JSON: {exc}") from None
    try:
        with file_lock(path):
            atomic_write(path, text)
    except OSError as exc:
        raise DeployError(f"cannot write profile {path}: {exc}") from None
    return path


__all__ = ["FAMILIES", "PRECISIONS", "PROVENANCES", "SCHEMA_VERSION", "Profile", "load_profile", "now_iso",
           "save_profile", "validate_profile", "validate_record"]
