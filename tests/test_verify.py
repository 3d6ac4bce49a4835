"""Accuracy verification: torch vs real ONNX Runtime on a trained tiny model; a perturbed model fails (exit 4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from pipeline.cli import cli
from pipeline.core.errors import EXIT_VERIFICATION, ModelInvalid, VerificationFailed
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import load_dataset
from pipeline.export.onnx import export_onnx
from pipeline.train.trainer import TrainOptions, load_checkpoint, train
from pipeline.train.verify import VerifyReport, verify_accuracy


@pytest.fixture(scope="module")
def digits_small(tmp_path_factory):
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:30] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "digits300.npz"
    np.savez(path, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_small):
    """A tiny EfficientNet trained for 3 epochs on 300 digits at 16 px (~45 % top-1): a run dir with checkpoint.pt."""
    out = tmp_path_factory.mktemp("run")
    train("efficientnet", resolve_scale(phi=-4), digits_small, out_dir=out,
          options=TrainOptions(epochs=3, resolution=16, batch_size=16))
    return out


@pytest.fixture(scope="module")
def verified(tmp_path_factory, trained, digits_small):
    """The trained run after one verify: it also holds model.onnx (exported once for the module)."""
    run = copy_run(trained, tmp_path_factory.mktemp("verified") / "run")
    verify_accuracy(run, digits_small)
    return run


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_verify_passes_exports_and_saves(tmp_path, trained, digits_small):
    run = copy_run(trained, tmp_path / "run")
    report = verify_accuracy(run, digits_small)
    assert isinstance(report, VerifyReport) and report and report.passed
    assert (run / "model.onnx").is_file() and (run / "verify.json").is_file()
    assert report.samples == 60 and report.agreement == 1.0 and report.drop_pp == pytest.approx(0.0)
    assert report.torch_top1 == report.onnx_top1 == pytest.approx(load_checkpoint(run).val_accuracy)
    assert report.max_abs_logit_diff < 1e-3
    assert report.thresholds == {"max_drop_pp": 0.1, "min_agreement": 0.995}
    saved = json.loads((run / "verify.json").read_text())
    assert saved["passed"] is True and saved["dataset"] == str(digits_small)
    report.raise_for_failure()  # no-op


def test_verify_dynamic_batch_onnx_and_checkpoint_path(tmp_path, trained, digits_small):
    run = copy_run(trained, tmp_path / "run")
    ck = load_checkpoint(run)
    export_onnx(ck.model(), run / "model.onnx", dynamic_batch=True, resolution=ck.preprocess.resolution)
    report = verify_accuracy(run / "checkpoint.pt", None)  # data defaults to the one recorded
    assert report and report.dataset == str(digits_small)


def perturb(onnx_path, num_classes=10):
    """Negate the classifier weight (the 2-D initializer with a num_classes axis): predictions change."""
    proto = onnx.load(str(onnx_path))
    init = next(i for i in proto.graph.initializer if len(i.dims) == 2 and num_classes in i.dims)
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((-arr).astype(arr.dtype), init.name))
    onnx.save(proto, str(onnx_path))


def test_cli_verify_fails_on_perturbed_onnx_with_exit_4(tmp_path, verified, digits_small):
    run = copy_run(verified, tmp_path / "run")
    ok = CliRunner().invoke(cli, ["verify", str(run), "--data", str(digits_small)])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output
    perturb(run / "model.onnx")
    res = CliRunner().invoke(cli, ["verify", str(run), "--data", str(digits_small), "--json"])
    assert res.exit_code == EXIT_VERIFICATION == 4, res.output
    assert "accuracy verification failed" in res.stderr
    assert "top-1 agreement" in res.stderr and "< min_agreement 0.995" in res.stderr  # number and threshold
    data = json.loads(res.stdout)
    assert data["passed"] is False and data["agreement"] < 0.995
    assert any(f.startswith("top-1 agreement") for f in data["failures"])
    if data["drop_pp"] > 0.1:
        assert "> max_drop_pp 0.1" in res.stderr
    assert json.loads((run / "verify.json").read_text())["passed"] is False
    report = verify_accuracy(run, digits_small, save=False)
    assert not report
    with pytest.raises(VerificationFailed, match="agreement"):
        report.raise_for_failure()
    # the accuracy-drop check on its own: negated logits rank the true class last
    assert report.drop_pp > 0.1  # precondition: the trained model is better than its negation
    drop_only = verify_accuracy(run, digits_small, min_agreement=0.0, save=False)
    assert not drop_only and len(drop_only.failures) == 1
    assert drop_only.failures[0].startswith("accuracy drop") and "> max_drop_pp 0.1" in drop_only.failures[0]


def test_loose_thresholds_pass_a_small_perturbation(tmp_path, verified, digits_small):
    run = copy_run(verified, tmp_path / "run")
    proto = onnx.load(str(run / "model.onnx"))
    init = next(i for i in proto.graph.initializer if len(i.dims) == 2 and 10 in i.dims)
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((arr * 1.001).astype(arr.dtype), init.name))
    onnx.save(proto, str(run / "model.onnx"))
    report = verify_accuracy(run, digits_small, max_drop_pp=5.0, min_agreement=0.9, save=False)
    assert report and report.max_abs_logit_diff > 0


def test_wrong_dataset_and_mismatched_onnx(tmp_path, trained, digits_small):
    run = copy_run(trained, tmp_path / "run")
    other = tmp_path / "three.npz"
    np.savez(other, x=np.zeros((6, 8, 8), np.uint8), y=np.array([0, 1, 2, 0, 1, 2]))
    res = CliRunner().invoke(cli, ["verify", str(run), "--data", str(other)])
    assert res.exit_code == 1 and "classes" in res.stderr
    ck = load_checkpoint(run)
    export_onnx(ck.model(), run / "model.onnx", resolution=24)
    with pytest.raises(ModelInvalid, match="expects input"):
        verify_accuracy(run, digits_small)


def test_verify_with_data_still_exits_4_when_the_device_timings_miss_the_budget(verified, digits_small, tmp_path):
    from test_trtexec import trace, write_trtexec_json
    from tinymodels import fit_record

    run = copy_run(verified, tmp_path / "run")
    (run / "fit.json").write_text(json.dumps(fit_record("jetson-nano", "efficientnet", "fp16", latency_ms=0.001)))
    times = write_trtexec_json(run / "trtexec_times.json", trace(30, start_ms=600))
    (run / "trtexec.log").write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=model.onnx\n")
    r = CliRunner().invoke(cli, ["verify", str(run), "--data", str(digits_small), "--trtexec-times", str(times),
                                 "--device", "bench nano"], catch_exceptions=False)
    assert r.exit_code == EXIT_VERIFICATION, r.output  # accuracy passes; the latency does not
    assert "over the budget" in r.stderr and json.loads((run / "fit.json").read_text())["verified"]["latency"] is False
