"""The run record (fit.json): its checked-in JSON Schema, validation on write and read, and the verdicts.

Every fit.json written by `deploy fit`, `deploy build` and `deploy verify --trtexec-times`
is validated here with the `jsonschema` package against the checked-in
pipeline/record/fit.schema.json (not against the pydantic models that generated it), so
the file users get is the file the schema describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import RANGE
from test_trtexec import trace, write_trtexec_json
from tinymodels import fit_record, make_run

from pipeline.cli import cli
from pipeline.core.errors import RecordInvalid, VerificationFailed
from pipeline.fit.search import Budget
from pipeline.record import verdict
from pipeline.record.rundir import read_record, write_record
from pipeline.record.schema import SCHEMA_FILE, SCHEMA_VERSION, RunRecord, schema_text


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def check_against_schema(run: Path) -> dict:
    """fit.json validated by jsonschema against the checked-in schema file; returns the object."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    data = json.loads((run / "fit.json").read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert not errors, errors
    assert data["schema_version"] == SCHEMA_VERSION
    return data


# --- the checked-in schema ----------------------------------------------------------------------------------------


def test_checked_in_schema_is_the_one_the_models_generate():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "pipeline/record/fit.schema.json is stale: run `python -m pipeline.record.schema` and commit it")


def test_checked_in_schema_is_valid_json_schema_and_strict():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    good = fit_record("jetson-nano")
    assert v.is_valid(good)
    for bad in ({**good, "budgett": {}}, {**good, "phi": "small"},
                {**good, "budget": {**good["budget"], "percentile": 42}},
                {**good, "artifacts": {**good["artifacts"], "bogus": "x"}},
                {k: val for k, val in good.items() if k != "predicted"}):
        assert not v.is_valid(bad)
    assert v.is_valid({**good, "artifacts": {**good["artifacts"], "onnx_opset13": "model.opset13.onnx"}})


def test_record_round_trips_exactly_and_a_record_without_version_is_version_1():
    data = fit_record("jetson-nano")
    assert RunRecord.model_validate(data).to_json_dict() == data
    del data["schema_version"]
    assert RunRecord.model_validate(data).to_json_dict() == {"schema_version": 1, **data}


# --- every writer writes a valid record ---------------------------------------------------------------------------


def test_deploy_fit_on_host_writes_a_record_that_follows_the_schema(host_profile, tmp_path):
    out = tmp_path / "run"
    r = invoke("fit", "--target", "host", "--family", "mobilenetv2", "--latency", "30ms", "--threads", "1",
               "--out", out, *RANGE, "--json")
    assert r.exit_code == 0, r.output
    data = check_against_schema(out)
    assert data["measured"] is not None and data["measurements"]
    printed = json.loads(r.stdout)
    assert printed.pop("run_dir") == str(out) and printed == data  # --json prints the record it wrote
    record = read_record(out)
    assert record.verified == verdict.judge_record(record).verified
    assert record.verified.latency is (record.measured.latency_ms <= 30.0)


def test_deploy_build_and_verify_trtexec_times_write_records_that_follow_the_schema(tmp_path):
    out = tmp_path / "run"
    r = invoke("fit", "--target", "jetson-nano", "--family", "mobilenetv2", "--latency", "30ms", "--out", out,
               *RANGE, "--json")
    assert r.exit_code == 0, r.output
    assert check_against_schema(out)["measured"] is None
    r = invoke("build", out, "--json")
    assert r.exit_code == 0, r.output
    data = check_against_schema(out)
    assert (out / "build_on_device.sh").is_file() and data["engine"]["status"] == "script"
    assert data["artifacts"]["build_script"] == "build_on_device.sh"
    assert data["engine"]["onnx_opset"] <= 13  # fit exported at the Nano's opset (TensorRT 8.2)
    times = write_trtexec_json(out / "trtexec_times.json", trace(100, start_ms=600))
    # the log build_on_device.sh leaves beside the times: trtexec's banner names the ONNX it built from
    (out / "trtexec.log").write_text(f"&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec "
                                     f"--onnx={data['engine']['onnx']} --saveEngine=model.engine --fp16\n")
    r = invoke("verify", out, "--trtexec-times", times, "--device", "bench nano", "--json")
    assert r.exit_code == 0, r.output
    data = check_against_schema(out)
    assert data["measured"]["source"] == "trtexec --exportTimes" and data["verified"]["latency"] is True
    assert data["engine"]["status"] == "script"  # kept


# --- a corrupt record is one clear error ----------------------------------------------------------------------------


def _corrupt(tmp_path: Path, change) -> tuple[Path, Path]:
    run = make_run(tmp_path / "run", "jetson-nano", precision="fp16")
    data = json.loads((run / "fit.json").read_text())
    change(data)
    (run / "fit.json").write_text(json.dumps(data))
    return run, write_trtexec_json(run / "times.json", trace(20, start_ms=600))


@pytest.mark.parametrize("change, key, says", [
    (lambda d: d["budget"].update(percentile="fifty"), "'budget.percentile'", '(got "fifty")'),
    (lambda d: d["predicted"].pop("provenance"), "'predicted.provenance' is missing", ""),
    (lambda d: d.update(budgett=d.pop("budget")), "'budget' is missing", ""),
    (lambda d: d["frontier"][0].update(phi="small"), "'frontier[0].phi' must be a number", '(got "small")'),
    (lambda d: d.update(lattency=1), "unknown key 'lattency'", ""),
])
def test_corrupt_fit_json_read_by_verify_is_one_error_line_naming_the_key(tmp_path, change, key, says):
    run, times = _corrupt(tmp_path, change)
    before = (run / "fit.json").read_bytes()
    r = invoke("verify", run, "--trtexec-times", times)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].count("error:") == 1, r.stderr
    assert f"{run / 'fit.json'}: " in lines[0] and key in lines[0] and says in lines[0]
    assert (run / "fit.json").read_bytes() == before  # nothing written over it


def test_corrupt_fit_json_read_by_build_is_one_error_line(tmp_path):
    run, _ = _corrupt(tmp_path, lambda d: d["budget"].update(latency_ms="20ms"))
    r = invoke("build", run)
    assert r.exit_code == 1 and not (run / "build_on_device.sh").exists()
    assert r.stderr.strip().splitlines() == [
        f"error: {run / 'fit.json'}: 'budget.latency_ms' must be a number (got \"20ms\"); it does not follow the "
        "fit.json schema (pipeline/record/fit.schema.json): re-run `deploy fit`, or fix the key."]


def test_fit_json_that_is_not_json_or_from_a_newer_edgefit(tmp_path):
    run = make_run(tmp_path / "run", "jetson-nano")
    (run / "fit.json").write_text('{"target": "jetson-nano", ')
    r = invoke("build", run)
    assert r.exit_code == 1 and "fit.json is unreadable or not JSON" in r.stderr and len(r.stderr.splitlines()) == 1
    (run / "fit.json").write_text(json.dumps({**fit_record("jetson-nano"), "schema_version": 2}))
    with pytest.raises(RecordInvalid, match="schema_version 2, newer than the 1"):
        read_record(run)


def test_write_record_refuses_an_invalid_record_and_keeps_the_old_file(tmp_path):
    run = make_run(tmp_path / "run", "jetson-nano")
    before = (run / "fit.json").read_bytes()
    bad = {**fit_record("jetson-nano"), "verified": {"latency": "yes", "memory": None, "accuracy": None}}
    with pytest.raises(RecordInvalid, match=r"'verified.latency' must be true or false \(got \"yes\"\)"):
        write_record(run, bad)
    assert (run / "fit.json").read_bytes() == before
    record = read_record(run)
    with pytest.raises(Exception, match="percentile"):  # typed fields refuse bad assignments too
        record.budget.percentile = 70


# --- the verdicts ---------------------------------------------------------------------------------------------------


MEASURED = {"latency_ms": 10.0, "latency_ms_p90": 12.0, "latency_ms_p99": 15.0, "memory_mb": 50.0,
            "device": "host: test cpu", "latency_ms_worst_round": 11.0}


def test_latency_verdict_judges_the_measured_statistic_at_the_budget_percentile_without_margin():
    assert verdict.latency_verdict(MEASURED, Budget(10.0)) == (True, None)  # exactly the budget fits
    # the slowest round (11 ms) and the noise margin are for choosing, not for verifying
    assert verdict.latency_verdict(MEASURED, Budget(10.0, noise_margin_pct=20)).ok is True
    ok, why = verdict.latency_verdict(MEASURED, Budget(11.0, percentile=90))
    assert ok is False and why == "measured p90 latency 12.000 ms on host: test cpu is over the budget of 11 ms"
    assert verdict.latency_verdict(MEASURED, Budget(15.0, percentile=99)).ok is True
    assert verdict.latency_verdict(None, Budget(10.0)) == (None, None)  # nothing measured
    assert verdict.latency_verdict(MEASURED, Budget(None, 100.0)) == (None, None)  # no latency budget


def test_memory_verdict():
    assert verdict.memory_verdict(MEASURED, Budget(None, 50.0)).ok is True
    ok, why = verdict.memory_verdict(MEASURED, Budget(None, 40.0))
    assert ok is False and "peak memory 50 MiB" in why and "40 MiB" in why
    assert verdict.memory_verdict({**MEASURED, "memory_mb": None}, Budget(None, 40.0)).ok is None  # trtexec
    assert verdict.memory_verdict(MEASURED, Budget(10.0)).ok is None


def test_accuracy_verdict():
    acc = {"onnx": 0.9, "dataset": "builtin:digits", "failures": []}
    assert verdict.accuracy_verdict(None, None) == (None, None)
    untrained = {"gated": False, "gate": {"passed": False, "drop_pp": 9.0, "max_drop_pp": 1.0}}
    assert verdict.accuracy_verdict(None, untrained).ok is None  # an untrained int8 comparison says nothing
    assert verdict.accuracy_verdict(acc, None, 0.85) == (True, None)
    ok, why = verdict.accuracy_verdict(acc, {**untrained, "gated": True}, 0.95)
    assert ok is False and "below --min-accuracy 0.95" in why and "int8 drop 9.00 pp > 1 pp" in why
    assert verdict.accuracy_verdict({**acc, "failures": ["top-1 agreement 0.9 < 0.995"]}, None).ok is False


def test_judgement_fills_verified_and_failures_exit_4():
    j = verdict.judge(MEASURED, Budget(9.0, 100.0), {"onnx": 0.5, "dataset": "d", "failures": []}, None, 0.6)
    assert j.verified.model_dump() == {"latency": False, "memory": True, "accuracy": False}
    with pytest.raises(VerificationFailed, match=r"p50 latency 10\.000 ms .* 9 ms; accuracy 0\.5000 .*; see r\.md\.") \
            as err:
        j.raise_if_failed(see="r.md")
    assert err.value.exit_code == 4
    verdict.judge(None, Budget(9.0)).raise_if_failed()  # nothing checked, nothing raised
