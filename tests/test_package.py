"""`deploy package` / `deploy package verify`: real ONNX Runtime conversion, real sessions, real tampering."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from pipeline.cli import cli
from pipeline.core.compare import compare_logits, tolerance
from pipeline.core.errors import PackageCorrupt
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import batches, load_dataset
from pipeline.package.archive import read_package
from pipeline.package.manifest import METADATA_KEYS, preprocess_from_spec
from pipeline.package.ort import canonical_ort, convert_to_ort
from pipeline.train.trainer import TrainOptions, load_checkpoint, train
from pipeline.train.verify import verify_accuracy
from tests.tinymodels import make_run

FILES = {"model.ort", "required_operators.config", "usability.json", "manifest.json", "INTEGRATION.md"}


def deploy(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _x(session, n: int = 4, seed: int = 1) -> np.ndarray:
    shape = session.get_inputs()[0].shape
    return np.random.default_rng(seed).standard_normal((n, *shape[1:]), dtype=np.float32)


def _logits(session, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    """A host fit run of a tiny EfficientNet (fit.json + model.onnx), packaged once for the module."""
    run = make_run(tmp_path_factory.mktemp("fp32") / "a", "host", family="efficientnet")
    r = deploy("package", run, "--platform", "android", "--out", run.parent / "a.zip")
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    """The same model quantized to QDQ INT8 by edgefit's quantizer: an int8 fit run."""
    from pipeline.export.quantize import quantize_onnx

    run = make_run(tmp_path_factory.mktemp("int8") / "q", "host", family="efficientnet", precision="int8")
    (run / "model.onnx").rename(run / "model.fp32.onnx")
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    quantize_onnx(run / "model.fp32.onnx", run / "model.onnx", x, calibration_batches=8)
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A `deploy train` run on 200 digits (1 epoch, 16 px), exported and checked by `deploy verify`."""
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:20] for c in range(10)])
    data = tmp_path_factory.mktemp("data") / "digits200.npz"
    np.savez(data, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    run = tmp_path_factory.mktemp("train") / "t"
    train("efficientnet", resolve_scale(phi=-4),
          data, out_dir=run, options=TrainOptions(epochs=1, resolution=16, batch_size=32))
    verify_accuracy(run, data)
    return run, data


def test_fp32_package_verifies_and_its_ort_agrees_with_the_run(fp32_run):
    pkg = fp32_run.parent / "a.zip"
    with zipfile.ZipFile(pkg) as zf:
        assert set(zf.namelist()) == FILES  # untrained: no labels.txt
        model = zf.read("model.ort")
        manifest = json.loads(zf.read("manifest.json"))
    assert model[4:8] == b"ORTM"
    r = deploy("package", "verify", pkg, "--run", fp32_run, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["passed"] and d["comparison"]["precision"] == "fp32" and not d["comparison"]["failures"]
    # independently of `verify`: the .ort loads in a plain InferenceSession and matches model.onnx
    packaged, ref = ort.InferenceSession(model), ort.InferenceSession(str(fp32_run / "model.onnx"))
    x = _x(ref)
    assert compare_logits(_logits(ref, x), _logits(packaged, x), tolerance("fp32"))
    assert manifest["model"]["precision"] == "fp32" and manifest["onnxruntime"]["optimization_style"] == "Fixed"
    assert manifest["onnxruntime"]["target_platform"] == "arm"
    assert manifest["latency"]["provenance"] == "predicted" and manifest["accuracy"] is None
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}]
    assert manifest["preprocess"]["source"].startswith("default")  # untrained: ImageNet normalisation, said so
    assert manifest["files"]["model.ort"] == hashlib.sha256(model).hexdigest()


def test_int8_package_verifies_within_the_int8_tolerance(int8_run, tmp_path):
    pkg = tmp_path / "q.zip"
    assert deploy("package", int8_run, "--platform", "android", "--out", pkg).exit_code == 0
    r = deploy("package", "verify", pkg, "--run", int8_run, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["comparison"]["precision"] == "int8"
    with zipfile.ZipFile(pkg) as zf:
        model, ops = zf.read("model.ort"), zf.read("required_operators.config").decode()
    assert "QLinearConv" in ops  # the reduced build needs the fused integer kernels
    packaged, ref = ort.InferenceSession(model), ort.InferenceSession(str(int8_run / "model.onnx"))
    x = _x(ref)
    assert compare_logits(_logits(ref, x), _logits(packaged, x), tolerance("int8"))


def test_packaging_twice_gives_the_same_bytes(fp32_run, tmp_path):
    again = tmp_path / "again.zip"
    assert deploy("package", fp32_run, "--platform", "android", "--out", again).exit_code == 0
    assert sha(again) == sha(fp32_run.parent / "a.zip")
    with zipfile.ZipFile(again) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)} and {i.external_attr >> 16 for i in infos} == {
        0o100644}
    text = b"".join(zipfile.ZipFile(again).read(n) for n in FILES if not n.startswith("model"))
    assert str(tmp_path).encode() not in text and str(fp32_run.parent).encode() not in text  # no absolute paths


def test_canonical_ort_is_stable_and_loads_the_same(fp32_run):
    data = (fp32_run / "model.onnx").read_bytes()
    a, b = convert_to_ort(data, "arm").model, convert_to_ort(data, "arm").model
    assert a == b and canonical_ort(a) == a  # canonical form is a fixed point
    ref, got = ort.InferenceSession(data), ort.InferenceSession(a)
    x = _x(ref)
    assert compare_logits(_logits(ref, x), _logits(got, x), tolerance("fp32"))


def test_usability_lists_nnapi_and_coreml_partitions(fp32_run):
    with zipfile.ZipFile(fp32_run.parent / "a.zip") as zf:
        report = json.loads(zf.read("usability.json"))
    assert {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"} <= set(report)
    for r in report.values():
        assert r["partitions"] >= 1 and 0 < r["supported_nodes"] <= r["nodes"]
        assert r["suitability"] in ("YES", "MAYBE", "NO") and isinstance(r["cpu_fallback_ops"], list)


def test_usability_summary_goes_to_stderr_and_json_stays_clean(fp32_run, tmp_path):
    r = deploy("package", fp32_run, "--platform", "ios", "--out", tmp_path / "i.zip", "--json")
    assert r.exit_code == 0, r.output
    assert "usability: NNAPI" in r.stderr and "CoreML" in r.stderr
    d = json.loads(r.stdout)
    assert d["platform"] == "ios" and set(d["files"]) == FILES
    md = zipfile.ZipFile(tmp_path / "i.zip").read("INTEGRATION.md").decode()
    assert "pod 'onnxruntime-objc'" in md and 'forResource: "model", ofType: "ort"' in md and '"input"' in md


@pytest.mark.parametrize("name", sorted(FILES))
def test_one_changed_byte_in_any_file_fails_verify_naming_it(fp32_run, tmp_path, name):
    src = fp32_run.parent / "a.zip"
    files = {i.filename: zipfile.ZipFile(src).read(i) for i in zipfile.ZipFile(src).infolist()}
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    files[name] = bytes(data)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    r = deploy("package", "verify", bad)
    assert r.exit_code in (1, 4), r.output
    assert name in r.output and r.output.startswith("error:")


def test_a_corrupt_zip_is_exit_1_naming_the_entry(fp32_run, tmp_path):
    data = bytearray((fp32_run.parent / "a.zip").read_bytes())
    with zipfile.ZipFile(fp32_run.parent / "a.zip") as zf:
        info = zf.getinfo("model.ort")
    data[info.header_offset + 30 + len("model.ort") + 1000] ^= 0xFF  # inside model.ort's compressed bytes
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    r = deploy("package", "verify", bad)
    assert r.exit_code == 1 and "model.ort" in r.output
    with pytest.raises(PackageCorrupt):
        read_package(tmp_path / "bad.zip")


def test_the_preprocessing_is_what_verify_used_and_travels_in_the_model(trained_run, tmp_path):
    run, data = trained_run
    pkg = tmp_path / "t.zip"
    r = deploy("package", run, "--platform", "android", "--out", pkg)
    assert r.exit_code == 0, r.output
    files = read_package(pkg)
    manifest = json.loads(files["manifest.json"])
    assert "labels.txt" in files and files["labels.txt"].decode().splitlines() == [str(c) for c in range(10)]
    # the manifest's preprocessing on digits images gives the tensor `deploy verify` fed the model
    ck = load_checkpoint(run / "checkpoint.pt")
    ds = load_dataset(data)
    split = ds.split()
    _, verified_x, _ = next(iter(batches(ds, split.val, ck.preprocess, 16)))
    ours = preprocess_from_spec(manifest["preprocess"])(ds.images(split.val[:16]))
    assert np.array_equal(ours.numpy(), verified_x.numpy())
    assert manifest["preprocess"]["color"] == ck.preprocess.color == "gray"
    assert manifest["preprocess"]["input_max"] == ck.preprocess.input_max
    checked = json.loads((run / "verify.json").read_text())  # a train run's accuracy is its ONNX verification
    assert manifest["accuracy"]["top1"] == round(checked["onnx_top1"], 4) and manifest["accuracy"]["model"] == \
        "model.onnx"
    assert manifest["latency"]["provenance"] is None and manifest["target"] is None  # a train run has no target
    # the model file alone carries the same preprocessing and the labels
    meta = ort.InferenceSession(files["model.ort"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta[METADATA_KEYS["preprocess"]]) == manifest["preprocess"]
    assert json.loads(meta[METADATA_KEYS["labels"]]) == [str(c) for c in range(10)]
    onnx_meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert METADATA_KEYS["preprocess"] not in onnx_meta  # the run's own model is left untouched
    assert deploy("package", "verify", pkg, "--run", run).exit_code == 0


def test_folder_output_and_onnx_format(fp32_run, tmp_path):
    out = tmp_path / "pkg"
    r = deploy("package", fp32_run, "--platform", "linux-arm64", "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == FILES - {"model.ort"} | {"model.onnx"}
    assert deploy("package", "verify", out, "--run", fp32_run).exit_code == 0
    model = onnx.load(str(out / "model.onnx"))
    assert {p.key for p in model.metadata_props} >= {METADATA_KEYS["preprocess"], METADATA_KEYS["version"]}
    assert "pip install onnxruntime==" in (out / "INTEGRATION.md").read_text()


def test_verify_against_another_run_is_a_mismatch(fp32_run, tmp_path):
    other = make_run(tmp_path / "other", "host", family="resnet18")
    r = deploy("package", "verify", fp32_run.parent / "a.zip", "--run", other)
    assert r.exit_code == 4 and "model.onnx" in r.output


def test_errors_are_one_clear_line(fp32_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = deploy("package", empty, "--platform", "android", "--out", tmp_path / "x.zip")
    assert r.exit_code == 1 and "not a run directory" in r.output
    nomodel = make_run(tmp_path / "nomodel", "host")
    (nomodel / "model.onnx").unlink()
    r = deploy("package", nomodel, "--platform", "android", "--out", tmp_path / "x.zip")
    assert r.exit_code == 1 and "no model to package" in r.output and "model.onnx" in r.output
    r = deploy("package", fp32_run, "--platform", "windows-phone")
    assert r.exit_code == 2 and "windows-phone" in r.output
    existing = fp32_run.parent / "a.zip"
    before = sha(existing)
    r = deploy("package", fp32_run, "--platform", "android", "--out", existing)
    assert r.exit_code == 1 and "--force" in r.output and sha(existing) == before
    assert not (tmp_path / "x.zip").exists()  # failed runs leave nothing behind


def test_a_model_the_converter_cannot_handle_is_named(tmp_path):
    run = make_run(tmp_path / "custom", "host")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("FancyOp", ["input"], ["logits"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    (run / "model.onnx").write_bytes(model.SerializeToString())
    r = deploy("package", run, "--platform", "android", "--out", tmp_path / "c.zip")
    assert r.exit_code == 1 and "FancyOp" in r.output and "edgefit-ort-" not in r.output
    assert not (tmp_path / "c.zip").exists()


def test_force_replaces_and_help_shows_both_forms(fp32_run, tmp_path):
    out = tmp_path / "f.zip"
    out.write_bytes(b"old")
    assert deploy("package", fp32_run, "--platform", "android", "--out", out, "--force").exit_code == 0
    assert sha(out) == sha(fp32_run.parent / "a.zip")
    r = deploy("package", "--help")
    assert r.exit_code == 0 and "verify PACKAGE" in r.output and "RUN_DIR --platform" in r.output
    assert deploy("package", "verify", "--help").exit_code == 0


def test_a_gpu_fp16_run_ships_its_fp32_onnx_labelled_as_such_with_its_prediction(tmp_path):
    run = make_run(tmp_path / "nano", "jetson-nano", family="efficientnet", precision="fp16")
    pkg = tmp_path / "n.zip"
    assert deploy("package", run, "--platform", "android", "--out", pkg).exit_code == 0
    manifest = json.loads(read_package(pkg)["manifest.json"])
    assert manifest["model"]["precision"] == "fp32" and manifest["model"]["run_precision"] == "fp16"
    assert manifest["latency"]["provenance"] == "predicted" and manifest["target"] == "jetson-nano"
    assert deploy("package", "verify", pkg, "--run", run).exit_code == 0


def test_a_dynamic_batch_model_is_packaged_with_a_static_shape(tmp_path):
    run = make_run(tmp_path / "dyn", "host")
    model = onnx.load(str(run / "model.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(run / "model.onnx"))
    pkg = tmp_path / "d.zip"
    assert deploy("package", run, "--platform", "android", "--out", pkg).exit_code == 0
    manifest = json.loads(read_package(pkg)["manifest.json"])
    assert manifest["inputs"][0]["shape"] == [1, 3, 32, 32] and manifest["outputs"][0]["shape"] == [1, 10]
    assert deploy("package", "verify", pkg, "--run", run).exit_code == 0
