"""Timings measured on the device by ``trtexec --exportTimes``, read back into a run.

The file format (TensorRT's ``samples/common/sampleReporting.cpp``, ``exportJSONTrace``)
is a JSON array with one object per inference, all times in milliseconds::

    [
      { "startEnqMs" : 0.51, "endEnqMs" : 0.62, "startH2dMs" : 0.52, "endH2dMs" : 0.55,
        "startComputeMs" : 0.55, "endComputeMs" : 1.71, "startD2hMs" : 1.71, "endD2hMs" : 1.73,
        "h2dMs" : 0.03, "computeMs" : 1.16, "d2hMs" : 0.02, "latencyMs" : 1.21 }
    , { ... }
    ]

``start*``/``end*`` are timestamps from the start of the inference loop; ``h2dMs``,
``computeMs`` and ``d2hMs`` the host-to-device copy, GPU compute and device-to-host copy
of that one query; ``latencyMs`` = h2d + compute + d2h, which is what trtexec itself
reports as "Latency" (TensorRT <= 8.4 also wrote ``endToEndMs``, which includes waiting
for the previous query and is not a per-query latency).

The latency edgefit records is ``latencyMs`` (:data:`DEFAULT_FIELD`): the time one
inference takes including its input and output copies, the closest to what an
application waits for. ``computeMs`` (GPU time only) is reported beside it.

Warm-up: TensorRT >= 8.4 leaves warm-up queries out of the file; older trtexec (JetPack 4:
TensorRT 8.2) writes them too. Given ``warmup_ms`` (the ``--warmUp`` the run used),
records whose ``startComputeMs`` is below it are dropped: trtexec's own rule for what is
warm-up. Percentiles are computed like every other edgefit latency
(:meth:`pipeline.measure.timing.Timing.from_samples`: linear interpolation).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import TimesInvalid, UsageError

DEFAULT_FIELD = "latencyMs"
FIELDS = ("latencyMs", "computeMs", "h2dMs", "d2hMs", "endToEndMs")
FIELD_MEANING = {
    "latencyMs": "trtexec 'Latency' per inference = H2D copy + GPU compute + D2H copy (latencyMs)",
    "computeMs": "trtexec 'GPU Compute Time' per inference (computeMs), without copies",
    "h2dMs": "host-to-device copy time per inference (h2dMs)",
    "d2hMs": "device-to-host copy time per inference (d2hMs)",
    "endToEndMs": "trtexec <= 8.4 'End-to-End Host Latency' (endToEndMs), includes waiting for the previous query",
}
SOURCE = "trtexec --exportTimes"


def _load(path: Path) -> list:
    if not path.is_file():
        raise TimesInvalid(f"trtexec times file {path} does not exist (it is written by trtexec --exportTimes=FILE).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TimesInvalid(f"cannot read trtexec times file {path}: {exc}") from None
    if not text.strip():
        raise TimesInvalid(f"trtexec times file {path} is empty (did trtexec stop before the timing run ended?).")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TimesInvalid(f"trtexec times file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                           f"{exc.colno}): truncated, or trtexec was interrupted while writing it. Re-run the "
                           "timing on the device.") from None
    if not isinstance(data, list):
        raise TimesInvalid(f"trtexec times file {path} holds a JSON {type(data).__name__}, not the list of per-"
                           "inference records --exportTimes writes.")
    if not data:
        raise TimesInvalid(f"trtexec times file {path} holds no inference records.")
    if isinstance(data[0], dict) and "count" in data[0] and "startComputeMs" not in data[0]:
        raise TimesInvalid(f"{path} looks like a per-layer profile (--exportProfile), not --exportTimes output.")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def parse_trtexec_records(path: str | Path, field: str = DEFAULT_FIELD, warmup_ms: float | None = None
                          ) -> tuple[list[float], int]:
    """``(values in ms of field, number of warm-up records dropped)``; see :func:`parse_trtexec_times`."""
    if field not in FIELDS:
        raise UsageError(f"trtexec times field must be one of {', '.join(FIELDS)}, not {field!r}.")
    path = Path(path)
    records = _load(path)
    values, dropped = [], 0
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise TimesInvalid(f"{path}: record {i} is a {type(rec).__name__}, not an object with "
                               f"'{field}'.")
        if warmup_ms is not None:
            start = _number(rec.get("startComputeMs"))
            if start is not None and start < warmup_ms:
                dropped += 1
                continue
        value = _number(rec.get(field))
        if value is None and field == "latencyMs" and all(k in rec for k in ("h2dMs", "computeMs", "d2hMs")):
            parts = [_number(rec[k]) for k in ("h2dMs", "computeMs", "d2hMs")]
            value = None if None in parts else sum(parts)  # the definition of latencyMs
        if value is None:
            got = rec.get(field, "missing")
            raise TimesInvalid(f"{path}: record {i} has no valid '{field}' (got {got!r}); not trtexec "
                               "--exportTimes output, or a damaged file.")
        values.append(value)
    if not values:
        raise TimesInvalid(f"{path}: all {len(records)} records are warm-up (startComputeMs < {warmup_ms} ms); "
                           "time for longer (--duration/--iterations).")
    return values, dropped


def parse_trtexec_times(path: str | Path, field: str = DEFAULT_FIELD, warmup_ms: float | None = None) -> list[float]:
    """Per-inference times in ms from a ``trtexec --exportTimes`` file; ``field`` defaults to ``latencyMs``.

    Records that started computing before ``warmup_ms`` are dropped (older trtexec writes
    warm-up queries too). A missing, empty, truncated or foreign file raises
    :class:`TimesInvalid` naming the file.
    """
    return parse_trtexec_records(path, field, warmup_ms)[0]


def summarize_trtexec_times(path: str | Path, field: str = DEFAULT_FIELD, warmup_ms: float | None = None) -> dict:
    """p50/p90/p99 (and mean, min, max, n) of ``field``, with a sentence saying what was measured and how."""
    from pipeline.measure.timing import Timing

    values, dropped = parse_trtexec_records(path, field, warmup_ms)
    t = Timing.from_samples([v * 1e6 for v in values], warmup=dropped)
    compute = None
    if field != "computeMs":
        try:
            c = Timing.from_samples([v * 1e6 for v in parse_trtexec_records(path, "computeMs", warmup_ms)[0]],
                                    warmup=dropped)
            compute = {"p50_ms": c.p50_ms, "p90_ms": c.p90_ms, "p99_ms": c.p99_ms}
        except TimesInvalid:
            compute = None
    statement = (f"{FIELD_MEANING[field]}; p50/p90/p99 over {t.n} inference records by linear interpolation"
                 + (f", {dropped} warm-up records (startComputeMs < {warmup_ms:g} ms) dropped" if dropped else ""))
    return {"field": field, "p50_ms": t.p50_ms, "p90_ms": t.p90_ms, "p99_ms": t.p99_ms, "mean_ms": t.mean_ms,
            "min_ms": t.min_ms, "max_ms": t.max_ms, "n": t.n, "warmup_dropped": dropped, "statement": statement,
            "gpu_compute": compute}


_LOG_PATTERNS = {
    "device": re.compile(r"Selected Device:\s*(.+?)\s*$"),
    "compute_capability": re.compile(r"Compute Capability:\s*([0-9.]+)"),
    "tensorrt_version": re.compile(r"TensorRT version:\s*([0-9.]+)"),
}
# trtexec's first line echoes its command: "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=m.onnx ..."
# (samples/common/logging.h's test banner; TensorRT 10 prints v100300 for 10.3.0)
_RUNNING = re.compile(r"&&&& RUNNING TensorRT\.trtexec \[TensorRT v(\d+)\] # (.*)$")
_MODEL_ARGS = {"onnx": re.compile(r"(?:^|\s)--onnx=(\S+)"), "engine": re.compile(r"(?:^|\s)--loadEngine=(\S+)")}


def parse_trtexec_log(path: str | Path) -> dict:
    """Device name, compute capability and TensorRT version from a trtexec log (what it prints at start)."""
    from pipeline.runtimes.tensorrt import normalize_version

    found: dict = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        for key, pattern in _LOG_PATTERNS.items():
            if key not in found and (m := pattern.search(line)):
                found[key] = m.group(1).strip()
        running = _RUNNING.search(line)
        if running and "command" not in found:
            found["command"] = running.group(2).strip()
            found.setdefault("tensorrt_version", running.group(1))
            for key, pattern in _MODEL_ARGS.items():
                if m := pattern.search(running.group(2)):
                    found[key] = m.group(1).strip("'\"")
    if "tensorrt_version" in found:
        found["tensorrt_version"] = normalize_version(found["tensorrt_version"])
    return found


def run_models(run_dir: Path, record) -> dict[str, str]:
    """``{file name: sha256}`` of the ONNX files of a run that an engine could have been built from."""
    from pipeline.core.io import sha256_file

    names = {v for k, v in record.artifacts.model_dump().items() if isinstance(v, str) and v.endswith(".onnx")}
    names |= {n for n in ((record.engine or {}).get("onnx"),) if isinstance(n, str)}
    return {n: sha256_file(run_dir / n) for n in sorted(names) if (run_dir / n).is_file()}


def check_times_belong(run_dir: Path, record, log_info: dict, model_sha256: str | None = None,
                       sidecar: Path | None = None) -> str:
    """How we know the timings are of this run's model, or :class:`TimesInvalid` (exit 1) when we do not.

    Evidence, strongest first: a ``model_sha256`` the user gives (``--model-sha256``); the engine the
    log loaded (``--loadEngine``), through its sidecar's ONNX sha256; the ONNX the log built from
    (``--onnx``), by name. A times file with none of these could be any model's, and is refused.
    """
    models = run_models(run_dir, record)
    listed = ", ".join(f"{n} ({s[:12]}…)" for n, s in models.items()) or "none"
    if model_sha256:
        match = [n for n, s in models.items() if s == model_sha256.strip().lower()]
        if not match:
            raise TimesInvalid(f"--model-sha256 {model_sha256[:12]}… matches none of this run's models ({listed}): "
                               "these timings are of another model.")
        return f"model sha256 given, matches {match[0]}"
    if log_info.get("engine"):
        engine_name = Path(log_info["engine"]).name
        side = sidecar if sidecar is not None else run_dir / f"{engine_name}.json"
        if not side.is_file():
            raise TimesInvalid(f"the trtexec log loaded engine {engine_name}, but {side} (its sidecar, which names the "
                               "ONNX it was built from) is missing: copy it back from the device, or pass "
                               "--model-sha256.")
        built_from = json.loads(side.read_text(encoding="utf-8")).get("onnx_sha256")
        if built_from not in models.values():
            raise TimesInvalid(f"engine {engine_name} was built from an ONNX with sha256 {str(built_from)[:12]}…, "
                               f"which is none of this run's models ({listed}).")
        return f"engine {engine_name} (sidecar: built from this run's ONNX)"
    if log_info.get("onnx"):
        onnx_name = Path(log_info["onnx"]).name
        if onnx_name not in models:
            raise TimesInvalid(f"the trtexec log timed {log_info['onnx']}, which is not one of this run's models "
                               f"({listed}): these timings are of another model.")
        return f"trtexec log: --onnx={onnx_name}"
    raise TimesInvalid("cannot tell which model these timings are of: give trtexec's log (--trtexec-log; "
                       "build_on_device.sh writes trtexec.log), whose first line names the --onnx or --loadEngine it "
                       "ran, or --model-sha256 with the sha256 of the ONNX that was timed.")


def record_trtexec_times(run_dir: str | Path, times_file: str | Path, device: str | None = None, *,
                         field: str = DEFAULT_FIELD, warmup_ms: float | None = None, log_file: str | Path | None = None,
                         model_sha256: str | None = None, raise_on_failure: bool = False) -> dict:
    """Write the device-measured latency from ``times_file`` into ``RUN_DIR/fit.json`` and return ``measured``.

    ``measured`` gets p50/p90/p99 of ``field`` with provenance ``{"source": "trtexec
    --exportTimes", "device": ..., "file": ...}``; ``verified.latency`` becomes whether the
    budget's percentile fits the latency budget (``None`` without a latency budget).
    ``device`` defaults to what the trtexec log next to the file says (``trtexec.log``,
    as written by ``build_on_device.sh``), else "unknown device". ``warmup_ms`` defaults to
    the ``--warmUp`` recorded in fit.json's ``engine`` entry. Memory is not measured by
    trtexec: ``measured.memory_mb`` is None and ``verified.memory`` is left as it was.
    ``raise_on_failure`` raises :class:`VerificationFailed` (exit 4) when over budget. The
    verdict is :func:`pipeline.record.verdict.latency_verdict`'s; fit.json is read and written
    as a validated :class:`~pipeline.record.schema.RunRecord`.
    """
    from pipeline.record.rundir import read_record, write_record
    from pipeline.record.schema import TrtexecMeasured
    from pipeline.record.verdict import latency_verdict, raise_if_failed

    run_dir, times_file = Path(run_dir), Path(times_file)
    record = read_record(run_dir)
    engine = record.engine or {}
    if warmup_ms is None:
        warmup_ms = (engine.get("trtexec") or {}).get("warmup_ms")
    summary = summarize_trtexec_times(times_file, field, warmup_ms)
    candidates = [Path(log_file)] if log_file else [times_file.with_name("trtexec.log"),
                                                     times_file.with_name("trtexec_build.log")]
    log_info, log_used = {}, None
    for cand in candidates:
        if cand.is_file():
            log_info, log_used = parse_trtexec_log(cand), cand
            break
    evidence = check_times_belong(run_dir, record, log_info, model_sha256)
    if device is None:
        name = log_info.get("device")
        if not name:
            raise TimesInvalid("name the device these timings came from: --device NAME (no trtexec log naming its "
                               "'Selected Device' was found next to the times file).")
        cc = log_info.get("compute_capability")
        device = f"{record.target}: {name}" + (f" (compute capability {cc})" if cc else "")
    measured = TrtexecMeasured(
        latency_ms=round(summary["p50_ms"], 4), latency_ms_p90=round(summary["p90_ms"], 4),
        latency_ms_p99=round(summary["p99_ms"], 4), memory_mb=None,
        device=device, source=SOURCE, file=str(times_file), field=field,
        statistic=summary["statement"], repeats=summary["n"], warmup_dropped=summary["warmup_dropped"],
        gpu_compute_ms=summary["gpu_compute"],
        tensorrt_version=log_info.get("tensorrt_version"), log=str(log_used) if log_used else None,
        precision=engine.get("precision", record.precision),
        provenance={"source": SOURCE, "device": device, "file": str(times_file), "model": evidence},
        when=datetime.fromtimestamp(times_file.stat().st_mtime).astimezone().isoformat(timespec="seconds"),
        recorded=datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    verdict = latency_verdict(measured, record.budget)
    record.measured = measured
    # trtexec measures no memory and no accuracy: those verdicts stay what they were
    record.verified = record.verified.model_copy(update={"latency": verdict.ok})
    write_record(run_dir, record)
    if raise_on_failure:
        raise_if_failed(verdict)
    return measured.model_dump(mode="json") | {"verified_latency": verdict.ok,
                                               "budget_percentile": record.budget.percentile}


__all__ = ["DEFAULT_FIELD", "FIELDS", "parse_trtexec_log", "parse_trtexec_records", "parse_trtexec_times",
           "record_trtexec_times", "summarize_trtexec_times"]
