"""torch -> ONNX export: checks, parity against torch, determinism, atomic writes.

Real exports of every family at a small scale, run through real ONNX Runtime sessions.
Parity inputs are drawn fresh on every run (``seed=None``).
"""

from __future__ import annotations

import hashlib
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import pipeline
from pipeline.core.errors import ExportError, ModelInvalid, UnknownName
from pipeline.core.scaling import CompoundScaling
from pipeline.export.onnx import (
    DEFAULT_OPSET,
    PARITY_TOLERANCES,
    ExportResult,
    choose_exporter,
    export_onnx,
    fast_exporter,
    load_onnx_checked,
    onnx_io,
    parity,
)
from pipeline.models import FAMILIES, build, initialize
from pipeline.runtimes.onnxruntime import ort_session

SMALL = CompoundScaling().per_dimension(-3, -3, -4)  # resolution 128, a fraction of B0's width/depth
CLASSES = 10


@cache
def small_model(family: str, seed: int = 0) -> torch.nn.Module:
    """Cached: building plus BN recalibration costs seconds. Tests must not mutate it."""
    return initialize(build(family, SMALL, num_classes=CLASSES), seed=seed)


class TinyNet(torch.nn.Module):
    """Conv-BN-ReLU-Dropout classifier for tests that need an export but not a family."""

    resolution = 32

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(8, CLASSES))

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (model, ExportResult) with the default exporter/opset; each family exported once."""
    cache: dict[str, tuple] = {}
    root = tmp_path_factory.mktemp("export")

    def get(family: str):
        if family not in cache:
            model = small_model(family)
            cache[family] = (model, export_onnx(model, root / f"{family}.onnx"))
        return cache[family]

    return get


def ort_logits(path: Path, *xs: np.ndarray) -> list[np.ndarray]:
    sess = ort_session(path, threads=1)
    return [sess.run(None, {sess.get_inputs()[0].name: x})[0] for x in xs]


# --- every family: export, checks, parity --------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_exports_and_matches_torch(exported, family):
    model, result = exported(family)
    path = result.path
    assert isinstance(result, ExportResult)
    assert (result.exporter, result.opset) == ("dynamo", DEFAULT_OPSET)
    data = path.read_bytes()
    assert result.bytes == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
    assert list(path.parent.glob(f".{path.name}.*")) == []  # no temp files left behind
    # one self-contained file: no initializer lives in external data
    proto = load_onnx_checked(path, full_check=True)
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert onnx_io(path) == ("input", (1, 3, SMALL.resolution, SMALL.resolution), "logits")

    report = parity(model, path, n=4)  # fresh random inputs every run
    assert report, report.failures
    assert report.max_abs_err <= 1e-4
    assert report.source_of_inputs == "random" and report.n == 4

    # the logits must depend on the input, or agreement between runtimes proves nothing
    x = np.random.default_rng().standard_normal((2, 1, 3, SMALL.resolution, SMALL.resolution), dtype=np.float32)
    y0, y1 = ort_logits(path, x[0], x[1])
    assert np.abs(y0 - y1).max() > 100 * PARITY_TOLERANCES["fp32"]["max_abs"]
    assert np.abs(y0 - y1).max() > 1e-2 * np.abs(y0).max()
    assert report.output_spread > 1e-2


@pytest.fixture(scope="module")
def exported_13(tmp_path_factory):
    model = small_model("efficientnet")  # SiLU, sigmoid and squeeze-excite: the richest op set
    return model, export_onnx(model, tmp_path_factory.mktemp("opset13") / "b.onnx", opset=13)


def test_opset_13_uses_the_torchscript_exporter(exported_13):
    model, result = exported_13
    assert (result.exporter, result.opset) == ("torchscript", 13)
    proto = load_onnx_checked(result.path, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    onnx.shape_inference.infer_shapes(proto, strict_mode=True, check_type=True)
    report = parity(model, result.path, n=4)
    assert report and report.max_abs_err <= 1e-4


def _optimized_ops(path: Path, tmp: Path) -> list[tuple[tuple[str, str], int]]:
    """ONNX Runtime's own optimized graph (1 thread, all optimizations) as a multiset of (op type, domain): node
    and tensor names differ between exporters, the kernels ORT runs must not."""
    import collections

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(opts.optimized_model_filepath).graph
    return sorted(collections.Counter((n.op_type, n.domain) for n in graph.node).items())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fits_fast_exporter_gives_the_graph_onnx_runtime_runs_from_the_default_one(exported, family, tmp_path):
    """deploy fit times candidates exported with fast_exporter and ships that export: it must be the model, and the
    graph, that the default exporter would have given, once ONNX Runtime has optimized it."""
    exporter = fast_exporter(DEFAULT_OPSET)
    assert exporter == "torchscript"  # torch 2.13 ships it; fit falls back to the default once it does not
    model, default = exported(family)
    fast = export_onnx(model, tmp_path / "fast.onnx", exporter=exporter, opset=DEFAULT_OPSET)
    assert fast.exporter == "torchscript" and default.exporter == "dynamo"
    assert _optimized_ops(fast.path, tmp_path) == _optimized_ops(default.path, tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 128)).astype(np.float32)
    a = ort_logits(fast.path, x[:1], x[1:])
    b = ort_logits(default.path, x[:1], x[1:])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)
    assert fast_exporter(21) is None  # beyond the TorchScript exporter's last opset: the default exporter


def test_exporter_choice_and_impossible_requests():
    assert choose_exporter() == ("dynamo", DEFAULT_OPSET)
    assert choose_exporter(20) == ("dynamo", 20)
    assert choose_exporter(17) == ("torchscript", 17)
    assert choose_exporter(18, "torchscript") == ("torchscript", 18)
    with pytest.raises(ExportError, match="dynamo exporter produces opset >= 18"):
        choose_exporter(13, "dynamo")
    with pytest.raises(ExportError, match="TorchScript exporter stops"):
        choose_exporter(21, "torchscript")
    with pytest.raises(ExportError, match="supported range"):
        choose_exporter(5)
    with pytest.raises(ExportError, match="supported range"):
        choose_exporter(99)
    with pytest.raises(UnknownName):
        choose_exporter(18, "tflite")


def test_impossible_opset_fails_before_touching_the_file(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError):
        export_onnx(TinyNet(), target, opset=13, exporter="dynamo")
    assert not target.exists()


def test_dynamic_batch(tmp_path):
    model = small_model("resnet18")
    for opset in (13, DEFAULT_OPSET):
        result = export_onnx(model, tmp_path / f"dyn{opset}.onnx", opset=opset, dynamic_batch=True)
        name, shape, out = onnx_io(result.path)
        assert (name, shape[1:], out) == ("input", (3, SMALL.resolution, SMALL.resolution), "logits")
        assert isinstance(shape[0], str)
        x = np.random.default_rng(0).standard_normal((3, 3, SMALL.resolution, SMALL.resolution), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ort_logits(result.path, x)[0], ref, atol=1e-4, rtol=0)


# --- determinism ------------------------------------------------------------------------------


def test_reexport_is_byte_identical(exported, tmp_path):
    _, first = exported("resnet18")
    again = export_onnx(small_model("resnet18"), tmp_path / "again.onnx")  # a fresh object with the same weights
    assert again.path.read_bytes() == first.path.read_bytes()
    assert again.sha256 == first.sha256
    data = again.path.read_bytes()
    assert str(Path(pipeline.__file__).resolve().parent).encode() not in data  # no absolute source paths
    assert b"stack_trace" not in data


def test_torchscript_reexport_is_byte_identical(exported_13, tmp_path):
    model, first = exported_13
    again = export_onnx(model, tmp_path / "again.onnx", opset=13)
    assert again.path.read_bytes() == first.path.read_bytes()


# --- atomic writes and clean state --------------------------------------------------------------


def test_failed_check_leaves_the_existing_file_intact(tmp_path, monkeypatch):
    model = small_model("resnet18")
    target = tmp_path / "model.onnx"
    good = export_onnx(model, target, opset=13)
    before = target.read_bytes()

    def broken_checker(*args, **kwargs):
        raise onnx.checker.ValidationError("injected checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", broken_checker)
    from pipeline.core.paths import edgefit_home

    shutil.rmtree(edgefit_home() / "cache" / "onnx", ignore_errors=True)  # a fresh export, not the cached copy
    with pytest.raises(ExportError, match="injected checker failure"):
        export_onnx(model, target, opset=13)
    assert target.read_bytes() == before
    assert hashlib.sha256(before).hexdigest() == good.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # the temp file was removed
    with pytest.raises(ExportError):
        export_onnx(TinyNet(), tmp_path / "new.onnx", opset=13)
    assert not (tmp_path / "new.onnx").exists()


class _Exploding(torch.nn.Module):
    resolution = 32

    def forward(self, x):
        raise RuntimeError("forward is broken")


@pytest.mark.parametrize("opset", [13, DEFAULT_OPSET])
def test_exporter_failure_is_an_export_error_and_keeps_the_old_file(tmp_path, opset):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good file")
    with pytest.raises(ExportError, match="forward is broken"):
        export_onnx(_Exploding(), target, opset=opset)
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_restores_train_mode_and_prints_nothing(tmp_path, capsys):
    model = TinyNet().train()
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training
    report = parity(model, tmp_path / "m.onnx", n=2)  # exported in eval mode: no dropout, BN running stats
    assert report and model.training
    assert capsys.readouterr().out == ""  # `deploy fit --json` prints nothing but JSON


def test_model_without_resolution_needs_one(tmp_path):
    with pytest.raises(ExportError, match="resolution"):
        export_onnx(torch.nn.Conv2d(3, 4, 3), tmp_path / "m.onnx")


# --- reading files ------------------------------------------------------------------------------


def test_truncated_file_is_model_invalid_naming_the_file(exported, tmp_path):
    _, result = exported("mobilenetv2")
    data = result.path.read_bytes()
    for cut in (0.5, 0.999):
        bad = tmp_path / f"cut-{cut}.onnx"
        bad.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(ModelInvalid, match=bad.name):
            load_onnx_checked(bad)
        with pytest.raises(ModelInvalid, match=bad.name):
            onnx_io(bad)
    with pytest.raises(ModelInvalid, match="absent.onnx"):
        load_onnx_checked(tmp_path / "absent.onnx")


# --- parity -------------------------------------------------------------------------------------


def test_parity_detects_a_different_model(exported):
    _, result = exported("mobilenetv2")
    other = small_model("mobilenetv2", seed=42)  # same architecture, different weights
    report = parity(other, result.path, n=4, seed=0)
    assert not report and not report.passed
    assert any("max_abs_err" in f for f in report.failures)


def test_parity_with_given_inputs_and_seeds(exported):
    model, result = exported("resnet18")
    res = SMALL.resolution
    images = torch.randn(3, 3, res, res)
    report = parity(model, result.path, inputs=images)
    assert report and report.source_of_inputs == "dataset" and report.n == 3
    a = parity(model, result.path, n=2, seed=7)
    b = parity(model, result.path, n=2, seed=7)
    assert a == b  # a fixed seed reproduces the inputs exactly
    with pytest.raises(ExportError, match="expects"):
        parity(model, result.path, inputs=torch.randn(1, 3, res + 8, res + 8))
    with pytest.raises(UnknownName):
        parity(model, result.path, precision="fp8")


def test_parity_draws_fresh_inputs_without_a_seed(exported, monkeypatch):
    model, result = exported("resnet18")
    seeds = []
    real = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: (seeds.append(seed), real(seed))[1])
    parity(model, result.path, n=1)
    parity(model, result.path, n=1, seed=3)
    assert seeds == [None, 3]


def test_parity_tolerance_table_and_report():
    assert PARITY_TOLERANCES["fp32"] == {"max_abs": 1e-4, "cosine": 0.9999, "top1": 1.0}
    assert PARITY_TOLERANCES["int8"]["max_abs"] is None
    assert set(PARITY_TOLERANCES) == {"fp32", "fp16", "int8"}


def test_parity_tolerance_scales_with_the_logits(exported):
    """A large model's exact export passes: max_abs is per unit of logit scale, not a fixed figure."""
    model, result = exported("mobilenetv2")
    report = parity(model, result.path, n=2, seed=0)
    assert report and report.logit_scale >= 1.0
    bound = PARITY_TOLERANCES["fp32"]["max_abs"] * report.logit_scale
    assert report.max_abs_err <= bound
    tight = parity(model, result.path, n=2, seed=0, tolerances={"max_abs": report.max_abs_err / report.logit_scale / 2})
    assert not tight and "logit scale" in tight.failures[0]


def test_the_same_model_is_exported_once(tmp_path):
    """A repeated export of the same module tree and weights is copied from the cache, byte for byte; other weights
    are exported afresh."""
    import copy

    from tinymodels import tiny_model

    model = copy.deepcopy(tiny_model())
    first = export_onnx(model, tmp_path / "a.onnx")
    again = export_onnx(model, tmp_path / "b.onnx")
    assert not first.cached and again.cached and again.sha256 == first.sha256
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not export_onnx(model, tmp_path / "c.onnx").cached


class _Mode(torch.nn.Module):
    """Same parameters, same repr; forward() branches on a plain attribute."""

    resolution = 16

    def __init__(self, mode: str):
        super().__init__()
        self.mode, self.conv = mode, torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return (y.transpose(2, 3) if self.mode == "t" else y).flatten(1)


def test_a_module_flag_that_changes_forward_changes_the_cache_key(tmp_path):
    """Two instances alike but for a plain attribute must not share an export (the second got the first's graph)."""
    torch.manual_seed(0)
    a = _Mode("plain").eval()
    b = _Mode("t").eval()
    b.load_state_dict(a.state_dict())
    first, second = export_onnx(a, tmp_path / "a.onnx"), export_onnx(b, tmp_path / "b.onnx")
    assert not second.cached and first.sha256 != second.sha256
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node}
    assert "Transpose" in ops
