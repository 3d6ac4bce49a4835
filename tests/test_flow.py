"""End-to-end fit on host with tiny models: real export, real ONNX Runtime timing."""

import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import RANGE, tiny_suite, tiny_timing

from pipeline.cli import cli
from pipeline.fit.calibrate import calibrate
from pipeline.measure.timing import time_onnx
from pipeline.predict.targets import host_profile_path, load_target

TINY_TIMING = tiny_timing()


def run(*args):
    # catch_exceptions=False: a crash must fail the test, not pass as "exit 1"
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def smallest_in_range() -> tuple[float, float]:
    """(p50 ms, peak MiB) of the smallest architecture of RANGE, timed here the way fit times it."""
    import tempfile

    from pipeline.core.scaling import CompoundScaling
    from pipeline.export.onnx import export_onnx
    from pipeline.measure.memory import peak_memory_onnx
    from pipeline.models import build, initialize

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(initialize(build("efficientnet", CompoundScaling().compound(-4), 1000), seed=0),
                           f"{tmp}/smallest.onnx").path
        t = time_onnx(path, threads=1, warmup=3, min_repeats=20, min_time_s=0.3, rounds=3)
        return max(t.round_p50_ms), peak_memory_onnx(path, threads=1).peak_mb


def test_fit_on_host_end_to_end(host_profile, tmp_path):
    out = tmp_path / "run"
    # pick a budget between the smallest and the largest model of the range, from a real measurement
    r = run("fit", "--target", "host", "--latency", "1000ms", "--threads", "1", "--out", str(out), *RANGE, "--json")
    assert r.exit_code == 0, r.output
    biggest = json.loads(r.stdout)
    assert biggest["phi"] >= -3.1  # a huge budget takes the top of the range
    # a budget well above the smallest model (so something must fit) and below the largest (so the search works).
    # "Something must fit" follows the search's own rule: the smallest's predicted p50 plus the profile's margin
    # (the tiny profile's held-out error, which a noisy calibration can make wide), and its measured time with room.
    smallest_ms, _ = smallest_in_range()
    p = run("predict", "--target", "host", "--phi", "-4", "--threads", "1", "--json")
    assert p.exit_code == 0, p.output
    margin = biggest["search"]["margin_pct"]
    must_fit = json.loads(p.stdout)["latency_ms"] * (1 + margin / 100) * 1.1
    budget = max(smallest_ms * 1.4, must_fit, (smallest_ms + biggest["measured"]["latency_ms"]) / 2)
    out2 = tmp_path / "run2"
    r = run("fit", "--target", "host", "--latency", f"{budget:.3f}ms", "--threads", "1", "--out", str(out2), *RANGE,
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for key in ("target", "family", "precision", "phi", "depth_multiplier", "width_multiplier", "resolution",
                "params", "macs", "budget", "predicted", "measured", "verified", "artifacts", "frontier"):
        assert key in d
    assert d["measured"] is not None and d["verified"]["latency"] is True
    assert d["measured"]["latency_ms"] <= budget
    # the noise seen: the reference model timed next to every measurement (fit.json `noise`)
    assert d["noise"]["reference"] == "edgefit-reference-v1" and d["noise"]["drift_pct"] >= 0
    assert all(m["reference_ms"] > 0 for m in d["measurements"]) and d["noise"]["check"] is None
    assert d["predicted"]["provenance"] == "measured"
    assert (out2 / "model.onnx").is_file() and (out2 / "report.md").is_file() and (out2 / "fit.json").is_file()
    assert (out2 / "latency_vs_phi.png").stat().st_size > 1000
    assert json.loads((out2 / "fit.json").read_text())["phi"] == d["phi"]
    assert "measured" in (out2 / "report.md").read_text().splitlines()[2]
    # the shipped file runs within budget when timed independently (generous: noise on a shared CI box)
    # (the quietest of three rounds: a burst of other work on the runner slows a round, not the model)
    t = time_onnx(out2 / "model.onnx", threads=1, warmup=3, min_repeats=20, min_time_s=0.3, rounds=3)
    assert min(t.round_p50_ms) <= budget * 1.25
    assert not list(out2.glob("candidate-*.onnx"))
    rows = {r["precision"]: r for r in d["precisions"]}
    assert set(rows) == {"fp32", "fp16", "int8"}
    assert rows["fp32"]["latency_ms"] == d["measured"]["latency_ms"] and "measured" in rows["fp32"]["latency_source"]
    assert rows["fp16"]["latency_ms"] is None and "does not run fp16" in rows["fp16"]["latency_source"]
    assert rows["fp32"]["size_mb"] == pytest.approx((out2 / "model.onnx").stat().st_size / 2**20, abs=1e-3)
    assert "| fp32 (this run) |" in (out2 / "report.md").read_text()


def test_budget_below_smallest_exits_3(host_profile, tmp_path):
    r = run("fit", "--target", "host", "--latency", "1us", "--threads", "1", "--out", str(tmp_path / "x"), *RANGE)
    assert r.exit_code == 3
    assert "smallest" in r.output and "φ=-4" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_without_force(host_profile, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    r = run("fit", "--target", "host", "--latency", "100ms", "--threads", "1", "--out", str(out), *RANGE)
    assert r.exit_code == 1 and "--force" in r.output
    assert (out / "keep.txt").read_text() == "earlier run"
    r = run("fit", "--target", "host", "--latency", "1us", "--threads", "1", "--out", str(out), "--force", *RANGE)
    assert r.exit_code == 3 and (out / "keep.txt").exists()  # a failed run leaves the earlier one intact


@pytest.mark.parametrize("args, code, text", [
    ([], 2, "at least one budget"),
    (["--latency", "10ms", "--precision", "fp16"], 2, "supports precision fp32, int8"),
    (["--latency", "10ms", "--family", "vgg"], 2, "Invalid value for '--family'"),
])
def test_fit_usage_errors(args, code, text):
    r = run("fit", "--target", "host", *args)
    assert r.exit_code == code, r.output
    assert text in r.output


def test_unknown_target_suggests(tmp_path):
    r = run("fit", "--target", "jetson-nan", "--latency", "10ms")
    assert r.exit_code == 1 and "jetson-nano" in r.output and "Known:" in r.output


def test_predicted_only_target_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        r = run("fit", "--target", "jetson-nano", "--latency", "12ms", "--out", str(out), "--phi-min", "-4",
                "--phi-max", "-2", "--json")
        assert r.exit_code == 0, r.output
    da, db = json.loads((a / "fit.json").read_text()), json.loads((b / "fit.json").read_text())
    assert da["phi"] == db["phi"]
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert da["measured"] is None and da["verified"]["latency"] is None
    assert da["predicted"]["provenance"] == "published"
    rows = {r["precision"]: r for r in da["precisions"]}  # the nano runs fp32 and fp16: both predicted, labelled
    assert "predicted (published profile" in rows["fp16"]["latency_source"] and rows["fp16"]["latency_ms"] > 0
    assert rows["int8"]["latency_ms"] is None and rows["int8"]["size_source"] == "weights only (estimate)"
    assert rows["fp16"]["size_source"] == "weights only (estimate)"  # model.onnx is fp32; TensorRT makes fp16
    first = (a / "report.md").read_text().splitlines()[2]
    assert "predicted, not measured" in first and "held-out error" in first


@pytest.fixture(scope="module")
def tiny_int8_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile8") / "host-int8.json"
    # the families the int8 fit needs (efficientnet) plus one other: each model is quantized, which takes a while
    suite = tuple(e for e in tiny_suite() if e.family in ("efficientnet", "resnet18"))
    calibrate(load_target("host"), "int8", threads=1, out=out, suite=suite, settings=TINY_TIMING)
    return out


def test_memory_budget_alone(host_profile, tmp_path):
    _, smallest_mb = smallest_in_range()
    budget = round(smallest_mb * 1.5 + 8, 1)  # the smallest fits with room to spare: a fit must be found
    r = run("fit", "--target", "host", "--memory", f"{budget}MiB", "--threads", "1", "--out", str(tmp_path / "m"),
            *RANGE, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["budget"]["latency_ms"] is None and d["verified"]["memory"] is True and d["verified"]["latency"] is None
    assert d["measured"]["memory_mb"] <= budget


# φ=-10 (resolution 56) learns digits in 3 CPU epochs (0.97 top-1 here); at φ=-4 one epoch stays at chance (0.10)
TRAINABLE = ["--phi-min", "-10", "--phi-max", "-9.9", "--data", "builtin:digits"]


@pytest.mark.slow
def test_fit_trains_and_verifies_accuracy(host_profile, tmp_path):
    out = tmp_path / "acc"
    r = run("fit", "--target", "host", "--latency", "1000ms", "--threads", "1", "--out", str(out), *TRAINABLE,
            "--train-epochs", "3", "--min-accuracy", "0.8", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["accuracy"]) >= {"torch", "onnx", "agreement", "dataset"}
    assert d["accuracy"]["onnx"] >= 0.8  # far above chance (0.1): the model really learned
    assert d["accuracy"]["dataset"] == "builtin:digits" and d["verified"]["accuracy"] is True
    assert abs(d["accuracy"]["torch"] - d["accuracy"]["onnx"]) <= 0.001
    assert d["num_classes"] == 10 and (out / "checkpoint.pt").is_file()
    assert "train:" in r.stderr and "step" in r.stderr  # the training shows its progress, not minutes of silence
    # an unreachable accuracy bar fails with exit 4 and says what was reached
    r = run("fit", "--target", "host", "--latency", "1000ms", "--threads", "1", "--out", str(tmp_path / "acc2"),
            *TRAINABLE, "--train-epochs", "1", "--min-accuracy", "1.0")
    assert r.exit_code == 4 and "below --min-accuracy" in r.output


@pytest.mark.slow
def test_fit_int8_on_host(host_profile, tiny_int8_profile, tmp_path):
    dest = host_profile_path("int8", 1)
    shutil.copy(tiny_int8_profile, dest)
    out = tmp_path / "q"
    r = run("fit", "--target", "host", "--latency", "1000ms", "--precision", "int8", "--threads", "1", "--out",
            str(out), *TRAINABLE, "--train-epochs", "3", "--int8-max-drop-pp", "3", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["precision"] == "int8" and (out / "model.fp32.onnx").is_file()
    q = d["int8"]["quantization"]
    assert q["quantize_linear"] > 0 and q["fused_total"] > 0  # ONNX Runtime really runs integer kernels
    gate = d["int8"]["gate"]
    assert d["int8"]["gated"] and gate["labels"] == "labels" and gate["passed"]
    assert gate["fp32_accuracy"] >= 0.8 and gate["drop_pp"] <= 3  # a trained model, and INT8 kept its accuracy
    assert d["verified"]["latency"] is True and d["measured"] is not None
    assert "int8" in (out / "report.md").read_text()
    rows = {r["precision"]: r for r in d["precisions"]}
    assert rows["int8"]["accuracy"] == d["int8"]["gate"]["int8_accuracy"]
    assert rows["fp32"]["accuracy"] == d["int8"]["gate"]["fp32_accuracy"] and rows["fp32"]["size_source"] == \
        "model.fp32.onnx"
    assert rows["int8"]["size_mb"] < rows["fp32"]["size_mb"]
    # paths point into the run directory, not into the temporary folder it was built in
    assert ".tmp-" not in (out / "fit.json").read_text() and d["int8"]["gate"]["int8_path"] == "model.onnx"
    assert (out / d["training"]["checkpoint"]).is_file()
