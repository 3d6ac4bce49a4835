"""Reading and updating a run directory's ``fit.json`` (the record ``deploy fit`` writes).

Every reader and writer goes through :class:`pipeline.record.schema.RunRecord`:
:func:`read_record` refuses a record that is not JSON or does not follow the schema, with
one line naming the file and the key (``runs/x/fit.json: 'budget.percentile' must be 50,
90 or 99 (got "fifty")``), and :func:`write_record` writes only a valid record. Commands
that add to a finished run (``deploy build``, ``deploy verify --trtexec-times``) read the
record, change their own fields and write it back atomically (:func:`pipeline.core.io.write_json`:
a temporary file in the same directory, fsync, rename), so a crash leaves either
the old or the new record, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import DeployError, RecordInvalid

FIT_JSON = "fit.json"
_GOT_MAX = 60  # characters of a bad value quoted in the error


def fit_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FIT_JSON


def _load(run_dir: Path) -> tuple[Path, Any]:
    if not run_dir.is_dir():
        raise DeployError(f"run directory {run_dir} does not exist (make one with `deploy fit --out {run_dir}`).")
    path = fit_path(run_dir)
    if not path.is_file():
        raise DeployError(f"{run_dir} is not a run directory: it has no {FIT_JSON} (made by `deploy fit`).")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordInvalid(f"{path} is unreadable or not JSON ({exc}); re-run `deploy fit`.") from None


def _key(loc: tuple) -> str:
    """'budget.percentile', 'frontier[3].phi': pydantic's location without its union tags."""
    from pipeline.record.schema import MEASURED_TAGS

    parts: list[str] = []
    prev = None
    for item in loc:
        if prev == "measured" and item in MEASURED_TAGS:
            prev = item
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
        prev = item
    return "".join(parts)


def _problem(err: dict) -> str:
    """One pydantic error as ``'key' must be …``, with the offending value."""
    key, kind = _key(tuple(err["loc"])), err["type"]
    if kind == "missing":
        return f"'{key}' is missing"
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    msg = str(err["msg"])
    msg = {"int_type": "must be an integer", "float_type": "must be a number", "string_type": "must be a string",
           "bool_type": "must be true or false", "model_type": "must be an object", "dict_type": "must be an object",
           "list_type": "must be a list"}.get(kind) or msg.replace("Input should be", "must be").replace(
        "Value error, ", "")
    got = json.dumps(err.get("input"), ensure_ascii=False, default=str)
    if len(got) > _GOT_MAX:
        got = got[:_GOT_MAX] + "…"
    return f"'{key}' {msg} (got {got})"


def record_error(path: str | Path, exc: Exception) -> RecordInvalid:
    """A pydantic ValidationError as one line naming the file and the first bad key."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return RecordInvalid(f"{path}: {exc}")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return RecordInvalid(f"{path}: {_problem(errors[0])}{more}; it does not follow the fit.json schema "
                         f"(pipeline/record/fit.schema.json): re-run `deploy fit`, or fix the key.")


def parse_record(data: Any, where: str | Path = FIT_JSON):
    """A RunRecord from a JSON object, or :class:`RecordInvalid` naming ``where`` and the key."""
    from pydantic import ValidationError

    from pipeline.record.schema import SCHEMA_VERSION, RunRecord

    if not isinstance(data, dict):
        raise RecordInvalid(f"{where} does not hold a JSON object; re-run `deploy fit`.")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RecordInvalid(f"{where} has schema_version {version}, newer than the {SCHEMA_VERSION} this edgefit "
                            "reads; upgrade edgefit.")
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        raise record_error(where, exc) from None


def read_record(run_dir: str | Path):
    """``RUN_DIR/fit.json`` as a validated :class:`~pipeline.record.schema.RunRecord`."""
    path, data = _load(Path(run_dir))
    return parse_record(data, path)


def write_record(run_dir: str | Path, record) -> Path:
    """Validate ``record`` (a RunRecord, or its JSON object) and write ``fit.json`` atomically."""
    from pipeline.core.io import write_json
    from pipeline.record.schema import RunRecord

    path = fit_path(run_dir)
    if not isinstance(record, RunRecord):
        record = parse_record(record, path)
    else:  # assignments were validated field by field; validate the whole once more before it is the record
        record = parse_record(record.to_json_dict(), path)
    return write_json(path, record.to_json_dict())


def read_fit(run_dir: str | Path) -> dict:
    """``RUN_DIR/fit.json`` as a plain dict, validated like :func:`read_record` (for callers that want JSON)."""
    return read_record(run_dir).to_json_dict()


def write_fit(run_dir: str | Path, data: dict) -> Path:
    """Validate and write a fit.json object (:func:`write_record`)."""
    return write_record(run_dir, data)


__all__ = ["FIT_JSON", "fit_path", "parse_record", "read_fit", "read_record", "record_error", "write_fit",
           "write_record"]
