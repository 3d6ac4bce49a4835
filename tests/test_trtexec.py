"""trtexec --exportTimes files: parsing, percentiles, warm-up records, damaged files, recording into fit.json.

The files are written here byte for byte the way trtexec writes them
(TensorRT samples/common/sampleReporting.cpp, exportJSONTrace: C++ ostream numbers with
6 significant digits, "  { ... }" then ", { ... }" lines). TensorRT >= 8.4 leaves the
warm-up queries out; TensorRT 8.2 (JetPack 4) writes them too and adds endToEndMs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tinymodels import fit_record, read_fit

from pipeline.core.errors import TimesInvalid, UsageError, VerificationFailed
from pipeline.engine.trtexec import (
    parse_trtexec_log,
    parse_trtexec_records,
    parse_trtexec_times,
    record_trtexec_times,
    summarize_trtexec_times,
)

NEW_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs",
            "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs")


def trace(n: int, *, start_ms: float = 500.0, seed: int = 0) -> list[dict]:
    """n consecutive queries beginning at start_ms (the end of a --warmUp=start_ms warm-up)."""
    rng = np.random.default_rng(seed)
    out, t = [], start_ms
    for _ in range(n):
        h2d, compute, d2h = 0.031, float(rng.uniform(1.0, 2.0)), 0.024
        rec = {"startEnqMs": t, "endEnqMs": t + 0.09, "startH2dMs": t + 0.01, "endH2dMs": t + 0.01 + h2d}
        rec["startComputeMs"] = rec["endH2dMs"]
        rec["endComputeMs"] = rec["startComputeMs"] + compute
        rec["startD2hMs"], rec["endD2hMs"] = rec["endComputeMs"], rec["endComputeMs"] + d2h
        rec.update(h2dMs=h2d, computeMs=compute, d2hMs=d2h, latencyMs=h2d + compute + d2h,
                   endToEndMs=rec["endD2hMs"] - rec["startH2dMs"])
        out.append(rec)
        t = rec["endD2hMs"] + 0.005
    return out


def write_trtexec_json(path: Path, records: list[dict], keys=NEW_KEYS) -> Path:
    """Exactly exportJSONTrace's layout and number format (ostream default: %g, 6 significant digits)."""
    lines, sep = ["["], "  "
    for rec in records:
        body = ", ".join(f'"{k}" : {rec[k]:g}' for k in keys)
        lines.append(f"{sep}{{ {body} }}")
        sep = ", "
    path.write_text("\n".join(lines) + "\n]\n")
    return path


def test_parses_trtexec_format_and_computes_percentiles(tmp_path):
    recs = trace(200)
    path = write_trtexec_json(tmp_path / "times.json", recs)
    assert path.read_text().splitlines()[1].startswith('  { "startEnqMs" : 500, "endEnqMs" : 500.09')
    values = parse_trtexec_times(path)
    expected = [float(f"{r['latencyMs']:g}") for r in recs]
    np.testing.assert_allclose(values, expected)
    s = summarize_trtexec_times(path)
    assert s["field"] == "latencyMs" and s["n"] == 200 and s["warmup_dropped"] == 0
    np.testing.assert_allclose([s["p50_ms"], s["p90_ms"], s["p99_ms"]], np.percentile(expected, [50, 90, 99]))
    assert "H2D copy + GPU compute + D2H copy (latencyMs)" in s["statement"]
    assert s["gpu_compute"]["p50_ms"] < s["p50_ms"]  # GPU time alone is reported beside it
    compute = parse_trtexec_times(path, field="computeMs")
    assert max(compute) < min(values) + 1.0 and len(compute) == 200


def test_old_trtexec_warmup_records_are_dropped_by_trtexecs_own_rule(tmp_path):
    # TensorRT 8.2: warm-up queries (computing before --warmUp ms) are in the file, plus endToEndMs.
    recs = trace(30, start_ms=0.0) + trace(100, start_ms=520.0, seed=1)
    path = write_trtexec_json(tmp_path / "times.json", recs, keys=(*NEW_KEYS, "endToEndMs"))
    assert len(parse_trtexec_times(path)) == 130
    values, dropped = parse_trtexec_records(path, warmup_ms=500)
    assert dropped == 30 and len(values) == 100
    assert summarize_trtexec_times(path, warmup_ms=500)["warmup_dropped"] == 30
    with pytest.raises(TimesInvalid, match="all 130 records are warm-up"):
        parse_trtexec_times(path, warmup_ms=1e9)


def test_truncated_and_foreign_files_are_clear_errors_naming_the_file(tmp_path):
    path = write_trtexec_json(tmp_path / "times.json", trace(50))
    text = path.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])  # trtexec killed mid-write
    with pytest.raises(TimesInvalid, match=r"cut\.json is not valid JSON .*truncated"):
        parse_trtexec_times(cut)
    for name, content, message in [
        ("empty.json", "", "is empty"),
        ("none.json", "[\n]\n", "no inference records"),
        ("obj.json", '{"latencyMs": 1}', "not the list"),
        ("profile.json", '[{ "count" : 200 }, { "name" : "conv1", "timeMs" : 1.0 }]', "per-layer profile"),
        ("bad.json", '[{ "latencyMs" : "fast" }]', "record 0 has no valid 'latencyMs'"),
        ("neg.json", '[{ "latencyMs" : -1 }]', "record 0 has no valid"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(TimesInvalid, match=message) as err:
            parse_trtexec_times(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(TimesInvalid, match="does not exist"):
        parse_trtexec_times(tmp_path / "missing.json")
    with pytest.raises(UsageError):
        parse_trtexec_times(path, field="bogus")


RUNNING = ("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # /usr/src/tensorrt/bin/trtexec --onnx=model.onnx "
           "--saveEngine=model.engine --fp16 --exportTimes=trtexec_times.json\n")
LOG = RUNNING + """[11/22/2026-10:00:00] [I] === Device Information ===
[11/22/2026-10:00:00] [I] Selected Device: NVIDIA Tegra X1
[11/22/2026-10:00:00] [I] Compute Capability: 5.3
[11/22/2026-10:00:00] [I] SMs: 1
[11/22/2026-10:00:00] [I] TensorRT version: 8201
"""


def _run(tmp_path: Path, latency_ms: float | None, percentile: int = 50) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    fit = fit_record("jetson-nano", "mobilenetv2", "fp16", latency_ms, percentile)
    fit["engine"] = {"status": "script", "precision": "fp16", "trtexec": {"warmup_ms": 500}}
    (run / "fit.json").write_text(json.dumps(fit))
    (run / "model.onnx").write_bytes(b"the run's model")  # only its sha256 matters here
    return run


def test_record_writes_measured_with_device_provenance_and_verifies_the_budget(tmp_path):
    run = _run(tmp_path, latency_ms=1.8, percentile=90)
    times = write_trtexec_json(run / "trtexec_times.json", trace(10, start_ms=0) + trace(200, start_ms=510, seed=2),
                               keys=(*NEW_KEYS, "endToEndMs"))
    (run / "trtexec.log").write_text(LOG)
    info = parse_trtexec_log(run / "trtexec.log")
    assert info["device"] == "NVIDIA Tegra X1" and info["compute_capability"] == "5.3"
    assert info["tensorrt_version"] == "8.2.1" and info["onnx"] == "model.onnx" and "engine" not in info
    m = record_trtexec_times(run, times)
    fit = read_fit(run)
    assert fit["measured"]["latency_ms"] == m["latency_ms"] and m["repeats"] == 200 and m["warmup_dropped"] == 10
    assert fit["measured"]["provenance"] == {"source": "trtexec --exportTimes", "device": m["device"],
                                             "file": str(times), "model": "trtexec log: --onnx=model.onnx"}
    assert m["device"] == "jetson-nano: NVIDIA Tegra X1 (compute capability 5.3)" and m["tensorrt_version"] == "8.2.1"
    assert m["latency_ms"] <= m["latency_ms_p90"] <= m["latency_ms_p99"] and m["memory_mb"] is None
    assert fit["verified"]["latency"] is (m["latency_ms_p90"] <= 1.8) and m["budget_percentile"] == 90
    assert not list(run.glob(".fit.json.tmp*"))  # written atomically, nothing left behind


def test_record_over_budget_is_false_and_can_raise_exit_4(tmp_path):
    run = _run(tmp_path, latency_ms=0.5)
    times = write_trtexec_json(run / "times.json", trace(50))
    sha = hashlib.sha256((run / "model.onnx").read_bytes()).hexdigest()
    m = record_trtexec_times(run, times, device="my nano", model_sha256=sha)
    assert m["verified_latency"] is False and read_fit(run)["verified"]["latency"] is False
    assert m["device"] == "my nano"
    with pytest.raises(VerificationFailed, match="over the budget") as err:
        record_trtexec_times(run, times, device="my nano", model_sha256=sha, raise_on_failure=True)
    assert err.value.exit_code == 4


def test_record_without_latency_budget_leaves_verified_latency_null(tmp_path):
    run = _run(tmp_path, latency_ms=None)
    (run / "trtexec.log").write_text(LOG)
    m = record_trtexec_times(run, write_trtexec_json(run / "times.json", trace(20)))
    assert m["verified_latency"] is None and read_fit(run)["verified"]["latency"] is None


def test_timings_must_be_of_this_runs_model_and_from_a_named_device(tmp_path):
    run = _run(tmp_path, latency_ms=10.0)
    times = write_trtexec_json(run / "times.json", trace(20))
    with pytest.raises(TimesInvalid, match="cannot tell which model"):
        record_trtexec_times(run, times, device="nano")  # no log, no sidecar, no sha256
    (run / "trtexec.log").write_text(LOG.replace("--onnx=model.onnx", "--onnx=/home/me/resnet50.onnx"))
    with pytest.raises(TimesInvalid, match="resnet50.onnx, which is not one of this run's models"):
        record_trtexec_times(run, times)
    with pytest.raises(TimesInvalid, match="matches none of this run's models"):
        record_trtexec_times(run, times, device="nano", model_sha256="0" * 64)
    (run / "trtexec.log").write_text(RUNNING)  # the right model, but no "Selected Device" line
    with pytest.raises(TimesInvalid, match="--device NAME"):
        record_trtexec_times(run, times)
    assert read_fit(run)["measured"] is None  # nothing refused was recorded


def test_a_loaded_engine_is_traced_to_its_onnx_through_the_sidecar(tmp_path):
    run = _run(tmp_path, latency_ms=10.0)
    times = write_trtexec_json(run / "times.json", trace(20))
    loaded = LOG.replace("--onnx=model.onnx --saveEngine=model.engine", "--loadEngine=model.engine")
    (run / "trtexec.log").write_text(loaded)
    with pytest.raises(TimesInvalid, match="sidecar"):
        record_trtexec_times(run, times)
    sha = hashlib.sha256((run / "model.onnx").read_bytes()).hexdigest()
    (run / "model.engine.json").write_text(json.dumps({"onnx_sha256": "f" * 64}))
    with pytest.raises(TimesInvalid, match="none of this run's models"):
        record_trtexec_times(run, times)
    (run / "model.engine.json").write_text(json.dumps({"onnx_sha256": sha}))
    m = record_trtexec_times(run, times)
    assert m["provenance"]["model"].startswith("engine model.engine")


def test_cli_verify_trtexec_times(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    run = _run(tmp_path, latency_ms=1000.0)
    times = write_trtexec_json(run / "times.json", trace(50, start_ms=600))
    (run / "trtexec.log").write_text(RUNNING)
    r = CliRunner().invoke(cli, ["verify", str(run), "--trtexec-times", str(times), "--device", "bench nano",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["latency_ms"] > 0
    fit = read_fit(run)
    assert fit["measured"]["provenance"]["source"] == "trtexec --exportTimes" and fit["verified"]["latency"] is True
    (tmp_path / "b").mkdir()
    run2 = _run(tmp_path / "b", latency_ms=0.0001)
    times2 = write_trtexec_json(run2 / "times.json", trace(50, start_ms=600))
    (run2 / "trtexec.log").write_text(LOG)
    r = CliRunner().invoke(cli, ["verify", str(run2), "--trtexec-times", str(times2)])
    assert r.exit_code == 4
