"""Profiles: the shipped published/roofline files, schema validation, the JSON Schema file, and atomic save."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.core.errors import DeployError, ProfileInvalid, ProfileMissing
from pipeline.core.io import file_lock
from pipeline.core.paths import project_root
from pipeline.predict.profile import FAMILIES, Profile, load_profile, now_iso, save_profile, validate_record
from pipeline.predict.schemas import render_schemas
from pipeline.predict.targets import load_target

CALIBRATION = project_root() / "calibration"
SHIPPED = sorted(CALIBRATION.glob("*/*.json"))

# (target, precision) -> {family: p50 ms}, exactly the rows of published-latencies.md.
PT4, NCNN4 = "PyTorch, 4 threads", "ncnn (CPU, 4 threads)"
PUBLISHED = {
    ("jetson-nano", "fp16"): {"resnet18": 11.4, "resnet50": 29.8, "resnet34": 20.2, "mobilenetv2": 17.65},
    ("jetson-nano", "fp32"): {"mobilenetv2": 19.53},
    ("jetson-orin-nano", "fp32"): {"resnet50": 12.5, "mobilenetv2": 5.8, "resnet18": 5.9, "resnet34": 9.7},
    ("jetson-orin-nano", "fp16"): {"resnet50": 6.9, "mobilenetv2": 3.7, "resnet18": 3.6, "resnet34": 5.8},
    ("jetson-orin-nano", "int8"): {"resnet50": 5.1, "mobilenetv2": 2.9, "resnet18": 2.4, "resnet34": 3.7},
    ("jetson-agx-orin", "fp32"): {"resnet50": 11.2, "mobilenetv2": 5.0, "resnet18": 5.7, "resnet34": 9.0},
    ("jetson-agx-orin", "fp16"): {"resnet50": 6.4, "mobilenetv2": 3.4, "resnet18": 3.1, "resnet34": 5.1},
    ("jetson-agx-orin", "int8"): {"resnet50": 4.7, "mobilenetv2": 2.8, "resnet18": 2.2, "resnet34": 3.6},
    ("rtx-3060", "fp32"): {"resnet50": 2.2, "mobilenetv2": 0.8, "resnet18": 1.3, "resnet34": 2.0},
    ("rtx-3060", "fp16"): {"resnet50": 1.1, "mobilenetv2": 0.7, "resnet18": 0.7, "resnet34": 0.9},
    ("rtx-3060", "int8"): {"resnet50": 0.8, "mobilenetv2": 0.6, "resnet18": 0.6, "resnet34": 0.7},
    # (family, runtime) where one family has records from two runtimes
    ("raspberry-pi-4", "fp32"): {("resnet18", PT4): 100.3, ("resnet50", PT4): 225.2,
                                 ("mobilenetv2", NCNN4): 61.88, ("efficientnet", NCNN4): 74.19,
                                 ("resnet18", NCNN4): 123.12, ("resnet50", NCNN4): 262.83},
    ("raspberry-pi-4", "int8"): {"mobilenetv2": 26.4, "resnet18": 83.92, "resnet50": 196.65},
    ("raspberry-pi-5", "fp32"): {"mobilenetv2": 10.52, "efficientnet": 12.33, "resnet18": 19.96, "resnet50": 46.21},
    ("raspberry-pi-5", "int8"): {"resnet50": 20.64, "resnet18": 8.75},
}
ROOFLINES = {("rtx-4090", "fp16"), ("rtx-4090", "int8")}


def record(**over) -> dict:
    rec = {"kind": "model", "family": "efficientnet", "phi": 0.5, "phi_depth": 0.5, "phi_width": 0.5,
           "phi_resolution": 0.5, "preset": None, "resolution": 256, "num_classes": 1000,
           "latency_ms": {"p50": 12.0, "p90": 12.5, "p99": 13.0}, "peak_memory_mb": 40.0}
    return {**rec, **over}


def measured(**over) -> dict:
    data = {"schema_version": 1, "target": "host", "runtime": {"name": "onnxruntime", "version": "1.20.0",
                                                               "provider": "CPUExecutionProvider"},
            "precision": "fp32", "provenance": "measured",
            "device": {"cpu_model": "Test CPU", "cores": 8, "threads": 4, "machine": "x86_64"},
            "created": "2026-01-02T03:04:05+00:00",
            "method": {"warmup": 10, "min_repeats": 50, "min_time_s": 1.0, "statistic": "percentiles"},
            "records": [record(), {"kind": "op", "op": {"kind": "dwconv", "kernel": 3}, "latency_ms": {"p50": 0.2}}]}
    return {**data, **over}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- the shipped profiles -------------------------------------------------------------------------------


def test_shipped_profiles_are_exactly_the_published_rows_and_rooflines():
    found = {(p.parent.name, p.stem.split("-", 1)[1]) for p in SHIPPED}
    assert found == set(PUBLISHED) | ROOFLINES


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_profile_loads_and_matches_its_target(path):
    profile = load_profile(path)
    target = load_target(profile.target)
    assert profile.target == path.parent.name and profile.precision in target.precisions
    assert path.name == f"{target.runtime}-{profile.precision}.json" and profile.runtime["name"] == target.runtime
    assert target.profile_path(profile.precision) == path
    assert profile.provenance in {"published", "roofline"}  # nothing in the repository was measured
    for rec in profile.records:
        assert rec["source"] and rec["conditions"] and rec["runtime"] and rec["precision"] == profile.precision
        assert rec["peak_memory_mb"] is None and rec["resolution"] == 224 and rec["num_classes"] == 1000
        assert rec["phi"] == rec["phi_depth"] == rec["phi_width"] == rec["phi_resolution"] == 0.0


@pytest.mark.parametrize("key", sorted(PUBLISHED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_published_values_are_the_sourced_figures(key):
    target, precision = key
    profile = load_profile(load_target(target).profile_path(precision))
    assert profile.provenance == "published"
    keyed = isinstance(next(iter(PUBLISHED[key])), tuple)  # keyed by (family, runtime) when a family appears twice
    got = [((r["family"], r["runtime"]) if keyed else r["family"], r["latency_ms"]["p50"]) for r in profile.records]
    assert len(got) == len(PUBLISHED[key]) and dict(got) == PUBLISHED[key]


def test_records_say_which_runtime_really_ran():
    pi4 = load_profile(CALIBRATION / "raspberry-pi-4/onnxruntime-fp32.json")
    assert all(r["runtime"].startswith(("PyTorch", "ncnn")) for r in pi4.records)
    assert "NOT ONNX Runtime" in pi4.runtime["notes"]
    pi5 = load_profile(CALIBRATION / "raspberry-pi-5/onnxruntime-int8.json")
    assert all("ExecuTorch" in r["runtime"] for r in pi5.records)
    assert all("p50" in r["conditions"] for r in pi5.records)
    assert "MobileNetV3" in load_profile(CALIBRATION / "raspberry-pi-4/onnxruntime-int8.json").notes


def test_rtx_4090_is_a_labelled_roofline():
    profile = load_profile(CALIBRATION / "rtx-4090/tensorrt-fp16.json")
    assert profile.provenance == "roofline" and profile.records == ()
    roof = profile.roofline
    assert roof["reference_target"] == "rtx-3060" and roof["reference_precision"] == "fp16"
    assert roof["hardware"]["peak_gflops"]["fp32"] == 82600
    assert roof["hardware"]["memory_bandwidth_gbs"]["value"] == 1008
    assert "roofline" in roof["note"].lower() and "not measured" in roof["note"].lower()


def test_profile_families_match_the_model_registry():
    from pipeline.models import FAMILIES as BUILT

    assert set(FAMILIES) == set(BUILT)


# --- validation -----------------------------------------------------------------------------------------


def test_valid_measured_profile_loads_with_defaults(tmp_path):
    data = measured(records=[{k: v for k, v in record().items() if k not in ("num_classes", "preset")}])
    profile = load_profile(write_json(tmp_path / "p.json", data))
    assert profile.records[0]["num_classes"] == 1000 and profile.records[0]["preset"] is None
    assert profile.path == tmp_path / "p.json" and profile.model_records == profile.records


def _truncated(tmp_path):
    text = json.dumps(measured())
    path = tmp_path / "bad.json"
    path.write_text(text[: len(text) // 2])
    return path


BAD = [
    ("truncated", None, "not valid JSON"),
    ("missing key", lambda d: {k: v for k, v in d.items() if k != "method"}, "'method'"),
    ("unknown key", lambda d: {**d, "colour": "red"}, "'colour'"),
    ("schema_version", lambda d: {**d, "schema_version": 2}, "'schema_version'"),
    ("schema_version string", lambda d: {**d, "schema_version": "1"}, "'schema_version'"),
    ("provenance", lambda d: {**d, "provenance": "guessed"}, "'provenance'"),
    ("precision", lambda d: {**d, "precision": "fp8"}, "'precision'"),
    ("created", lambda d: {**d, "created": "yesterday"}, "'created'"),
    ("runtime version", lambda d: {**d, "runtime": {"name": "onnxruntime"}}, "'runtime.version'"),
    ("no records", lambda d: {**d, "records": []}, "'records'"),
    ("negative latency", lambda d: {**d, "records": [record(latency_ms={"p50": -1.0})]}, "records[0]"),
    ("zero latency", lambda d: {**d, "records": [record(latency_ms={"p50": 0})]}, "'records[0].latency_ms.p50'"),
    ("nan latency", lambda d: {**d, "records": [record(latency_ms={"p50": math.nan})]}, "'records[0].latency_ms.p50'"),
    ("inf latency", lambda d: {**d, "records": [record(latency_ms={"p50": math.inf})]}, "'records[0].latency_ms.p50'"),
    ("no p50", lambda d: {**d, "records": [record(latency_ms={"p90": 3.0})]}, "'records[0].latency_ms.p50'"),
    ("p90 below p50", lambda d: {**d, "records": [record(latency_ms={"p50": 3.0, "p90": 2.0})]},
     "'records[0].latency_ms'"),
    ("negative memory", lambda d: {**d, "records": [record(peak_memory_mb=-5)]}, "'records[0].peak_memory_mb'"),
    ("unknown family", lambda d: {**d, "records": [record(), record(family="vgg16")]}, "'records[1].family'"),
    ("bad preset", lambda d: {**d, "records": [record(preset="b9")]}, "'records[0].preset'"),
    ("no scale", lambda d: {**d, "records": [record(phi=None, phi_depth=None)]}, "'records[0].phi'"),
    ("bad resolution", lambda d: {**d, "records": [record(resolution=224.0)]}, "'records[0].resolution'"),
    ("bad kind", lambda d: {**d, "records": [record(kind="layer")]}, "'records[0].kind'"),
    ("published without source",
     lambda d: {**d, "provenance": "published", "records": [record(source="x"), record()]}, "'records[1].source'"),
    ("record precision", lambda d: {**d, "records": [record(precision="int8")]}, "'records[0].precision'"),
    ("roofline without roofline", lambda d: {**d, "provenance": "roofline", "records": []}, "'roofline'"),
    ("roofline figure without source",
     lambda d: {**d, "provenance": "roofline", "records": [],
                "roofline": {"reference_target": "rtx-3060", "reference_precision": "fp16", "note": "roofline",
                             "hardware": {"peak_gflops": {"fp32": 1.0}}}}, "'roofline.hardware.peak_gflops.source'"),
    ("not an object", lambda d: [d], "top level"),
]


@pytest.mark.parametrize("name, change, key", BAD, ids=[b[0] for b in BAD])
def test_bad_profiles_name_file_and_key(tmp_path, name, change, key):
    path = _truncated(tmp_path) if change is None else write_json(tmp_path / "bad.json", change(measured()))
    with pytest.raises(ProfileInvalid) as info:
        load_profile(path)
    assert str(path) in str(info.value) and key in str(info.value)


MORE_BAD = [
    ("unknown runtime key", lambda d: {**d, "runtime": {**d["runtime"], "flavour": "x"}}, "'runtime.flavour' is not"),
    ("unknown roofline key",
     lambda d: {**d, "provenance": "roofline", "records": [],
                "roofline": {"reference_target": "rtx-3060", "reference_precision": "fp16", "note": "roofline",
                             "hardware": {}, "scale": 2}}, "'roofline.scale' is not a known key"),
    ("device not an object", lambda d: {**d, "device": ["cpu"]}, "'device' must be a JSON object"),
    ("p90 is a string", lambda d: {**d, "records": [record(latency_ms={"p50": 1.0, "p90": "fast"})]},
     "'records[0].latency_ms.p90' must be a valid number"),
    ("null p99", lambda d: {**d, "records": [record(latency_ms={"p50": 1.0, "p99": None})]},
     "'records[0].latency_ms.p99'"),
    ("bad extra statistic", lambda d: {**d, "records": [record(latency_ms={"p50": 1.0, "mean": -1})]},
     "'records[0].latency_ms.mean'"),
    ("missing resolution", lambda d: {**d, "records": [{k: v for k, v in record().items() if k != "resolution"}]},
     "'records[0].resolution' is missing"),
    ("missing family", lambda d: {**d, "records": [{k: v for k, v in record().items() if k != "family"}]},
     "'records[0].family' is missing"),
    ("missing kind", lambda d: {**d, "records": [{k: v for k, v in record().items() if k != "kind"}]},
     "'records[0].kind' is missing"),
    ("record not an object", lambda d: {**d, "records": [record(), 3]}, "'records[1]' must be a JSON object"),
    ("schema_version true", lambda d: {**d, "schema_version": True}, "'schema_version'"),
    ("empty target", lambda d: {**d, "target": " "}, "'target' must be a non-empty string"),
    ("figure value",
     lambda d: {**d, "provenance": "roofline", "records": [],
                "roofline": {"reference_target": "rtx-3060", "reference_precision": "fp16", "note": "roofline",
                             "hardware": {"peak_gflops": {"fp32": -1, "source": "x"}}}},
     "'roofline.hardware.peak_gflops.fp32' must be a positive number"),
    ("roofline on a measured profile",
     lambda d: {**d, "roofline": {"reference_target": "rtx-3060", "reference_precision": "fp16", "note": "n",
                                  "hardware": {}}}, "'roofline' is only allowed when provenance is 'roofline'"),
]


@pytest.mark.parametrize("name, change, message", MORE_BAD, ids=[b[0] for b in MORE_BAD])
def test_schema_errors_name_the_dotted_key_path(tmp_path, name, change, message):
    path = write_json(tmp_path / "bad.json", change(measured()))
    with pytest.raises(ProfileInvalid) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_several_errors_are_one_line_with_a_count(tmp_path):
    data = measured(precision="fp8", provenance="guessed", colour="red", records=[record(resolution=-1)])
    with pytest.raises(ProfileInvalid) as info:
        load_profile(write_json(tmp_path / "bad.json", data))
    message = str(info.value)
    assert "\n" not in message and "pydantic" not in message.lower() and "validation error" not in message
    assert "'precision' must be one of 'fp32', 'fp16' or 'int8', got 'fp8'" in message
    assert message.endswith("(and 3 more).")


def test_records_keep_extra_keys_and_get_their_defaults():
    rec = {k: v for k, v in record(macs=1234, params=56).items() if k not in ("preset", "peak_memory_mb")}
    clean = validate_record(rec, "f.json: records[0]", "measured", "fp32")
    assert clean["macs"] == 1234 and clean["params"] == 56
    assert clean["preset"] is None and clean["peak_memory_mb"] is None
    op = validate_record({"kind": "op", "latency_ms": {"p50": 1}}, "f.json: records[1]", "measured", "fp32")
    assert op == {"kind": "op", "latency_ms": {"p50": 1.0}, "peak_memory_mb": None}  # no model keys on an op


def test_validate_record_applies_the_profile_rules():
    with pytest.raises(ProfileInvalid, match=r"^f\.json: records\[2\]: 'source' is missing"):
        validate_record(record(), "f.json: records[2]", "published", "fp32")
    with pytest.raises(ProfileInvalid, match=r"^f\.json: records\[0\]: 'precision' is 'int8' in a fp32 profile"):
        validate_record(record(precision="int8"), "f.json: records[0]", "measured", "fp32")
    with pytest.raises(ProfileInvalid, match=r"^f\.json: records\[0\]: 'latency_ms\.p50' must be greater than 0"):
        validate_record(record(latency_ms={"p50": 0}), "f.json: records[0]", "measured", "fp32")


def test_schema_file_matches_the_models():
    checked_in = json.loads((project_root() / "docs/schema/profile.schema.json").read_text(encoding="utf-8"))
    assert checked_in == json.loads(render_schemas()["profile.schema.json"]), "run: python -m pipeline.predict.schemas"


def test_shipped_profiles_follow_the_checked_in_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((project_root() / "docs/schema/profile.schema.json").read_text(encoding="utf-8"))
    for path in SHIPPED:
        jsonschema.validate(json.loads(path.read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError, match="colour"):
        jsonschema.validate({**json.loads(SHIPPED[0].read_text(encoding="utf-8")), "colour": 1}, schema)


def test_reading_a_profile_does_not_import_torch():
    code = ("import sys; from pipeline.predict.profile import load_profile; "
            f"load_profile({str(SHIPPED[0])!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=project_root())
    assert out.stdout.strip() == "False"


def test_missing_profile_is_profile_missing(tmp_path):
    with pytest.raises(ProfileMissing, match="no profile"):
        load_profile(tmp_path / "nope.json")


def test_directory_is_profile_invalid(tmp_path):
    with pytest.raises(ProfileInvalid):
        load_profile(tmp_path)


# --- round trip and atomic save -------------------------------------------------------------------------


def test_round_trip(tmp_path):
    profile = Profile.from_dict(measured())
    assert Profile.from_dict(profile.to_dict()) == profile
    path = save_profile(profile, tmp_path / "deep" / "er" / "p.json")  # parents are created
    loaded = load_profile(path)
    assert loaded == profile and loaded.to_dict() == profile.to_dict() and loaded.path == path
    shipped = load_profile(CALIBRATION / "rtx-4090/tensorrt-fp16.json")
    assert load_profile(save_profile(shipped, tmp_path / "roof.json")) == shipped


def test_failed_save_leaves_old_file_intact(tmp_path):
    path = save_profile(Profile.from_dict(measured()), tmp_path / "p.json")
    before = path.read_bytes()
    unserialisable = Profile.from_dict(measured(device={"cpu_model": object()}))
    with pytest.raises(ProfileInvalid):
        save_profile(unserialisable, path)
    invalid = Profile.from_dict(measured())
    object.__setattr__(invalid, "records", (record(latency_ms={"p50": -1.0}),))
    with pytest.raises(ProfileInvalid):
        save_profile(invalid, path)
    # no temporary file left behind; p.json.lock is save_profile's file_lock (kept, as flock locks are)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.json.lock"]


def test_failed_replace_leaves_no_temp_file(tmp_path):
    target = tmp_path / "p.json"
    target.mkdir()  # os.replace onto a directory fails after the temp file was written
    with pytest.raises(DeployError, match="cannot write profile"):
        save_profile(Profile.from_dict(measured()), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.json.lock"] and target.is_dir()


def test_save_waits_for_the_file_lock(tmp_path):
    path = tmp_path / "p.json"
    saver = threading.Thread(target=save_profile, args=(Profile.from_dict(measured()), path))
    with file_lock(path):  # another process (here: this thread) is writing the same host profile
        saver.start()
        time.sleep(0.3)
        assert saver.is_alive() and not path.exists()
    saver.join(timeout=10)
    assert not saver.is_alive() and load_profile(path) == Profile.from_dict(measured())


def test_now_iso_is_accepted():
    assert Profile.from_dict(measured(created=now_iso())).created.endswith("+00:00")
