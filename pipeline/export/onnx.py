"""torch -> ONNX export, its checks, and numerical parity against torch.

Exporter and opset
    The default is the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, the
    recommended and maintained path since torch 2.9) at opset :data:`DEFAULT_OPSET` = 18.
    18 is the lowest opset the dynamo exporter emits natively (lower requests are either
    refused or silently come back as 18), it is supported by every ONNX Runtime this
    project accepts (>= 1.18) and by TensorRT 10, and a lower opset reaches more runtimes
    than the exporter's own default (20) while losing nothing these CNNs need.
    Targets with an older runtime cap the opset, e.g. 13 for TensorRT 8.2 on the Jetson
    Nano: any opset below 18 is produced by the TorchScript exporter (``dynamo=False``),
    which torch 2.13 still ships (deprecated) for opsets up to 20. If a requested opset
    cannot be produced, :class:`ExportError` says why. The opset actually written is
    always verified, never assumed.

Files
    :func:`export_onnx` always writes ONE self-contained ``.onnx`` file: weights are
    embedded, never written as external data (every model here is far below protobuf's
    2 GB limit; a larger one is refused). The file is written atomically: to a temporary
    file in the destination directory, checked, then moved into place (:mod:`pipeline.core.io`), so a failed
    export never leaves a half-written file or destroys an existing good one.

Determinism
    Exporting the same weights twice gives byte-identical files. The dynamo exporter
    attaches debug metadata to nodes, among them Python stack traces with absolute paths
    and line numbers; only the path-free scope metadata in :data:`KEPT_METADATA` (which
    module an ONNX node came from) is kept, and doc strings are cleared.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline.core.compare import TOLERANCES, compare_logits, tolerance
from pipeline.core.errors import ExportError, ModelInvalid, UnknownName
from pipeline.core.io import atomic_writer
from pipeline.models.base import torch_threads

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
TORCHSCRIPT_MAX_OPSET = 20  # torch.onnx's TorchScript exporter stops here
MIN_OPSET = 9  # older opsets lack ops these families use in a form runtimes still accept
EXPORTERS = ("dynamo", "torchscript")
PROTOBUF_LIMIT = 2**31 - 1

# Node/value metadata kept after export: deterministic and free of paths, and what maps an
# ONNX node back to the module (stage) it came from. Everything else (stack traces,
# FX node dumps, the exported-program signature) is dropped.
KEPT_METADATA = frozenset({"namespace", "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"})

# Parity tolerances, one table. ``None`` means "not checked" (absolute error is not a
# meaningful criterion after INT8 quantisation; agreement of the ranking is).
# ``max_abs`` is per unit of logit scale: the bound is max_abs × max(1, max |torch logit|).
# fp32 rounding error grows with the size of what is summed, so one absolute figure either
# fails large models whose export is exact (EfficientNet φ=2 with logits up to 12 differed by
# 1.1e-4, cosine 1 - 1e-11) or is too loose for small ones.
# parity limits per precision: the parity columns of the one tolerance table (pipeline.core.compare)
PARITY_TOLERANCES: dict[str, dict[str, float | None]] = {p: t.parity_dict() for p, t in TOLERANCES.items()}


def _max_opset() -> int:
    """Highest opset both torch's exporter and the installed onnx checker know."""
    try:
        from torch.onnx import _constants

        torch_max = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        torch_max = 23
    return min(torch_max, onnx.defs.onnx_opset_version())


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: the file, how, and its content hash (``cached``: copied from an earlier
    export of the same model, :func:`export_cache_key`)."""

    path: Path
    opset: int
    exporter: str
    sha256: str
    bytes: int
    seconds: float
    cached: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def choose_exporter(opset: int | None = None, exporter: str | None = None) -> tuple[str, int]:
    """(exporter, opset) for a request; raises :class:`ExportError` if it cannot be produced."""
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"opset must be an integer, got {opset!r}.")
    top = _max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ExportError(f"cannot export ONNX opset {opset}: supported range is {MIN_OPSET}..{top}.")
    if exporter is None:
        exporter = "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"
    if exporter not in EXPORTERS:
        raise UnknownName("exporter", exporter, list(EXPORTERS))
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ExportError(
            f"the dynamo exporter produces opset >= {DYNAMO_MIN_OPSET} only, not {opset}; "
            "use exporter='torchscript' (or leave the exporter unset)."
        )
    if exporter == "torchscript":
        if opset > TORCHSCRIPT_MAX_OPSET:
            raise ExportError(
                f"the TorchScript exporter stops at opset {TORCHSCRIPT_MAX_OPSET}; use the dynamo exporter."
            )
        if not _has_torchscript_exporter():
            raise ExportError(
                f"opset {opset} needs the TorchScript exporter, which torch {torch.__version__} no longer provides; "
                f"use opset >= {DYNAMO_MIN_OPSET} or an older torch."
            )
    return exporter, opset


def fast_exporter(opset: int) -> str | None:
    """The exporter for a file made only to be timed, or one of many: ``deploy fit``'s candidates.

    The TorchScript exporter where it can write ``opset`` (it stops at 20, and a later torch may drop it),
    else ``None`` (the default exporter). It takes 0.5-1 s per EfficientNet-B0-sized model on the dev VM
    where the dynamo exporter takes 3-6 s, and fit exports up to five candidates. For every family, ONNX Runtime
    optimizes both exports to the same kernels, which run equally fast (tests/test_export.py checks the graphs;
    interleaved timing here: within 2 % for all five families). The file fit measures is the file it ships.
    The two exporters do not always write the same ops (``AdaptiveAvgPool2d(1)`` is GlobalAveragePool from
    one, ReduceMean from the other), so whatever is costed from a file is costed from the file that was timed.
    """
    if opset <= TORCHSCRIPT_MAX_OPSET and _has_torchscript_exporter():
        return "torchscript"
    return None


def _has_torchscript_exporter() -> bool:
    import inspect

    try:
        params = inspect.signature(torch.onnx.export).parameters
    except (TypeError, ValueError):
        return False
    return "dynamo" in params and hasattr(torch.jit, "trace")


@contextlib.contextmanager
def _quiet():
    """Keep the exporters' progress prints, deprecation warnings and logs off stdout/stderr.

    ``deploy fit --json`` must print nothing but JSON. Whatever was printed is kept in
    the yielded buffer, for error messages.
    """
    buf = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logger.setLevel(level)


def _export_proto(model: torch.nn.Module, example: torch.Tensor, exporter: str, opset: int, dynamic_batch: bool,
                  input_name: str, output_name: str) -> onnx.ModelProto:
    if exporter == "dynamo":
        dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, opset_version=opset, input_names=[input_name],
            output_names=[output_name], dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
            optimize=True,
        )
        return program.model_proto
    buf = io.BytesIO()
    dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (example,), buf, dynamo=False, opset_version=opset, input_names=[input_name],
        output_names=[output_name], dynamic_axes=dynamic_axes, export_params=True, do_constant_folding=True,
        verbose=False,
    )
    return onnx.load_from_string(buf.getvalue())


def _filter_metadata(props) -> None:
    keep = [(p.key, p.value) for p in props if p.key in KEPT_METADATA]
    del props[:]
    for key, value in keep:
        props.add(key=key, value=value)


def normalize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nondeterministic or machine-specific content (in place): doc strings, stack traces."""
    proto.doc_string = ""
    _filter_metadata(proto.metadata_props)
    for g in [proto.graph, *proto.functions]:
        g.doc_string = ""
        _filter_metadata(g.metadata_props)
        for node in g.node:
            node.doc_string = ""
            _filter_metadata(node.metadata_props)
        if isinstance(g, onnx.GraphProto):
            for coll in (g.input, g.output, g.value_info, g.initializer):
                for item in coll:
                    item.doc_string = ""
                    if hasattr(item, "metadata_props"):
                        _filter_metadata(item.metadata_props)
    return proto


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in value_info.type.tensor_type.shape.dim)


def _check(proto_path: Path, *, opset: int, input_name: str, output_name: str, input_shape: tuple) -> None:
    """The post-export checks; any failure raises :class:`ExportError`."""
    try:
        onnx.checker.check_model(str(proto_path), full_check=True)
        proto = onnx.load(str(proto_path))
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, check_type=True)
    except Exception as exc:
        raise ExportError(f"exported model failed the ONNX checker / shape inference: {_first_line(exc)}") from exc
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExportError(f"asked for ONNX opset {opset} but the exporter wrote opset {got}.")
    if [i.name for i in proto.graph.input] != [input_name] or [o.name for o in proto.graph.output] != [output_name]:
        raise ExportError(
            f"exported graph has inputs {[i.name for i in proto.graph.input]} and outputs "
            f"{[o.name for o in proto.graph.output]}, expected ['{input_name}'] and ['{output_name}']."
        )
    dims = _dims(proto.graph.input[0])
    if dims[1:] != input_shape[1:] or (isinstance(input_shape[0], int) and dims[0] != input_shape[0]):
        raise ExportError(f"exported input shape {dims} does not match {input_shape}.")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _root_cause(exc: BaseException) -> str:
    """First lines of the exception and of its innermost cause (the exporters wrap the real error)."""
    inner, seen = exc, {id(exc)}
    while (nxt := inner.__cause__ or inner.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        inner = nxt
    outer = _first_line(exc)
    return outer if inner is exc else f"{outer} (caused by {_first_line(inner)})"


# Exports kept under edgefit_home()/cache/onnx, keyed by everything the file depends on. The dynamo exporter takes
# 5-20 s per model on the 2-core dev VM (torch.export, decompositions, ONNX passes) and fit exports the same
# deterministic candidates again whenever a budget is tried twice; the oldest files go beyond this size.
EXPORT_CACHE_MB = 1024
_EXPORT_CACHE_VERSION = 2  # bump when export_onnx's output changes for the same inputs


@functools.cache
def _source_digest(module_name: str) -> str:
    import inspect
    import sys

    try:
        return hashlib.sha256(inspect.getsource(sys.modules[module_name]).encode()).hexdigest()
    except (KeyError, OSError, TypeError):
        return "?"


def export_cache_key(model: torch.nn.Module, resolution: int, opset: int, exporter: str, dynamic_batch: bool,
                     input_name: str, output_name: str) -> str:
    """What an export depends on: the module tree, its classes' source, every weight, the settings, the versions.

    Two models with this key give byte-identical exports (the export is deterministic and normalized).
    """
    h = hashlib.sha256()
    classes = sorted({type(m).__module__ for m in model.modules()} | {"pipeline.export.onnx"})
    h.update(repr((_EXPORT_CACHE_VERSION, torch.__version__, onnx.__version__, type(model).__qualname__, str(model),
                   resolution, opset, exporter, dynamic_batch, input_name, output_name,
                   [(c, _source_digest(c)) for c in classes], _module_attributes(model))).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


_PLAIN = (bool, int, float, str, type(None))


def _module_attributes(model: torch.nn.Module) -> list:
    """Every module's plain attributes (a stride, a flag, a mode string): forward() may branch on them.

    ``str(model)`` shows only what a module's ``extra_repr`` chooses to, so two instances of one
    class that differ in such a flag would otherwise share a key, and the second would get the
    first one's graph.
    """
    out = []
    for name, m in model.named_modules():
        attrs = sorted((k, repr(v)) for k, v in vars(m).items() if not k.startswith("_")
                       and (isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v))))
        out.append((name, attrs))
    return out


def _cached_export(key: str) -> Path:
    from pipeline.core.paths import edgefit_home

    return edgefit_home() / "cache" / "onnx" / f"{key}.onnx"


def _keep_in_cache(key: str, data: bytes) -> None:
    """Store an export (atomically); then drop the least recently used beyond :data:`EXPORT_CACHE_MB`."""
    path = _cached_export(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as f:
            f.write(data)
        files = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for p in files:
            total += p.stat().st_size
            if total > EXPORT_CACHE_MB * 2**20 and p != path:
                p.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full home only costs speed


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    opset: int | None = None,
    dynamic_batch: bool = False,
    input_name: str = "input",
    output_name: str = "logits",
    exporter: str | None = None,
    resolution: int | None = None,
) -> ExportResult:
    """Export ``model`` (in eval mode, input ``(1, 3, R, R)``) to ONE self-contained ONNX file.

    ``R`` is ``model.resolution`` (or ``resolution``). ``opset=None`` means
    :data:`DEFAULT_OPSET`; the exporter follows from the opset (dynamo for >= 18,
    TorchScript below) unless ``exporter`` is given. ``dynamic_batch`` names the first
    dimension ``batch``. The file is checked (``onnx.checker`` with ``full_check`` and
    strict shape inference, opset, I/O names and shape) before it atomically replaces
    ``path``; a failure raises :class:`ExportError` and leaves any existing file as it
    was. The model's train/eval mode is restored afterwards. An export of the very same model (module tree, source,
    weights, settings; :func:`export_cache_key`) made before is copied from the cache instead.
    """
    exporter, opset = choose_exporter(opset, exporter)
    res = resolution if resolution is not None else getattr(model, "resolution", None)
    if not isinstance(res, int) or res < 1:
        raise ExportError("the model has no integer .resolution; pass resolution= explicitly.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_shape = ("batch" if dynamic_batch else 1, 3, res, res)
    label = type(model).__name__
    t0 = time.perf_counter()
    key = export_cache_key(model, res, opset, exporter, dynamic_batch, input_name, output_name)
    try:
        data = _cached_export(key).read_bytes()
        os.utime(_cached_export(key))  # recently used
    except OSError:
        data = None
    if data is not None:
        with atomic_writer(path) as f:
            f.write(data)
        return ExportResult(path=path, opset=opset, exporter=exporter, sha256=hashlib.sha256(data).hexdigest(),
                            bytes=len(data), seconds=time.perf_counter() - t0, cached=True)
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
        with _quiet() as printed, torch.no_grad(), torch_threads(1):
            try:
                proto = _export_proto(model, example, exporter, opset, dynamic_batch, input_name, output_name)
            except ExportError:
                raise
            except Exception as exc:
                tail = " | ".join(printed.getvalue().strip().splitlines()[-3:])
                raise ExportError(
                    f"{exporter} export of {label} to opset {opset} failed: {_root_cause(exc)}"
                    + (f" (exporter said: {tail})" if tail else "")
                ) from exc
    finally:
        model.train(was_training)
    normalize(proto)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise ExportError(f"{label} is larger than 2 GB; edgefit writes single-file ONNX models only.")
    data = proto.SerializeToString(deterministic=True)
    with atomic_writer(path) as f:  # checked before it replaces anything
        f.write(data)
        f.flush()
        _check(Path(f.name), opset=opset, input_name=input_name, output_name=output_name, input_shape=input_shape)
    _keep_in_cache(key, data)
    return ExportResult(
        path=path,
        opset=opset,
        exporter=exporter,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        seconds=time.perf_counter() - t0,
    )


# --- reading ONNX files ---------------------------------------------------------------------


def load_onnx_checked(path: str | Path, *, full_check: bool = False) -> onnx.ModelProto:
    """Load and check an ONNX file; :class:`ModelInvalid` naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelInvalid(f"ONNX model {path} does not exist or is not a file.")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelInvalid(f"{path} is not a readable ONNX model (truncated or corrupt?): {_first_line(exc)}") from None
    try:
        onnx.checker.check_model(proto, full_check=full_check)
    except Exception as exc:
        raise ModelInvalid(f"{path} is not a valid ONNX model: {_first_line(exc)}") from None
    if not proto.graph.input or not proto.graph.output:
        raise ModelInvalid(f"{path} has no graph inputs or outputs.")
    return proto


def onnx_io(path: str | Path) -> tuple[str, tuple, str]:
    """``(input_name, input_shape, output_name)`` of a single-input classifier.

    Dynamic dimensions appear as their symbolic name (e.g. ``"batch"``) or ``None``.
    """
    proto = load_onnx_checked(path)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if not inputs:
        raise ModelInvalid(f"{path} has no graph inputs.")
    return inputs[0].name, _dims(inputs[0]), proto.graph.output[0].name


# --- parity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityReport:
    """torch vs ONNX Runtime on the same inputs. Truthy when every tolerance holds.

    ``cosine_min`` is the smallest per-sample cosine similarity of the logits,
    ``top1_agreement`` the fraction of samples with the same arg-max. ``output_spread``
    is the largest difference between the torch logits of different inputs: if it is
    near zero the model ignores its input and agreement proves nothing. ``logit_scale``
    is max(1, max |torch logit|), the unit of the ``max_abs`` tolerance. ``failures``
    names each tolerance that did not hold.
    """

    max_abs_err: float
    mean_abs_err: float
    cosine_min: float
    top1_agreement: float
    n: int
    tolerances: dict = field(default_factory=dict)
    passed: bool = False
    source_of_inputs: str = "random"
    precision: str = "fp32"
    output_spread: float = 0.0
    failures: tuple[str, ...] = ()
    logit_scale: float = 1.0

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = list(self.failures)
        return d


def _as_batch(inputs: Any) -> np.ndarray:
    if isinstance(inputs, torch.Tensor):
        arr = inputs.detach().cpu().numpy()
    elif isinstance(inputs, np.ndarray):
        arr = inputs
    elif isinstance(inputs, Iterable):
        arr = np.concatenate([_as_batch(x) for x in inputs])
    else:
        raise ExportError(f"parity inputs must be a tensor, array or iterable of them, got {type(inputs).__name__}.")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ExportError(f"parity inputs must be images (N, C, H, W), got shape {arr.shape}.")
    return np.ascontiguousarray(arr, dtype=np.float32)


def parity(
    model: torch.nn.Module,
    onnx_path: str | Path,
    *,
    n: int = 8,
    inputs: Any = None,
    seed: int | None = None,
    threads: int = 1,
    precision: str = "fp32",
    tolerances: dict[str, float | None] | None = None,
) -> ParityReport:
    """Run the same inputs through torch (eval, no_grad, fp32) and ONNX Runtime and compare logits.

    Without ``inputs``, ``n`` standard-normal images of shape ``(3, R, R)`` are drawn,
    from ``seed`` or, when ``seed`` is None, fresh each call (so repeated checks cover
    new inputs). Given ``inputs`` (N images, e.g. a calibration set) they are used as
    they are and the report says ``source_of_inputs="dataset"``. Each sample runs at
    batch 1 on both sides. ``tolerances`` overrides entries of
    :data:`PARITY_TOLERANCES` for ``precision``.
    """
    from pipeline.runtimes.onnxruntime import ort_session

    tol = tolerance(precision, **(tolerances or {}))
    load_onnx_checked(onnx_path)
    sess = ort_session(onnx_path, threads)
    inp = sess.get_inputs()[0]
    out_name = sess.get_outputs()[0].name
    if inputs is None:
        if n < 1:
            raise ExportError("parity needs n >= 1 inputs.")
        shape = list(inp.shape[1:])
        if not all(isinstance(d, int) for d in shape):
            res = getattr(model, "resolution", None)
            shape = [3, res, res]
        rng = np.random.default_rng(seed)
        batch = rng.standard_normal((n, *shape), dtype=np.float32)
        source = "random"
    else:
        batch = _as_batch(inputs)
        source = "dataset"
        want = tuple(inp.shape[1:])
        if all(isinstance(d, int) for d in want) and batch.shape[1:] != want:
            raise ExportError(f"parity inputs have shape {batch.shape[1:]} per image but {onnx_path} expects {want}.")
    ort_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    was_training = model.training
    model.eval()
    ref, got = [], []
    try:
        with torch.no_grad(), torch_threads(threads):  # batch 1: more threads only wait on each other
            for x in batch:
                x1 = x[None]
                ref.append(model(torch.from_numpy(x1)).float().numpy().reshape(1, -1))
                got.append(np.asarray(sess.run([out_name], {inp.name: x1.astype(ort_dtype)})[0],
                                      dtype=np.float32).reshape(1, -1))
    finally:
        model.train(was_training)
    ref_a, got_a = np.concatenate(ref), np.concatenate(got)
    if ref_a.shape != got_a.shape:
        raise ExportError(f"torch gives logits of shape {ref_a.shape} but {onnx_path} gives {got_a.shape}.")
    cmp = compare_logits(ref_a, got_a, tol)
    return ParityReport(
        max_abs_err=cmp.max_abs_err,
        mean_abs_err=cmp.mean_abs_err,
        cosine_min=cmp.cosine_min,
        top1_agreement=cmp.top1_agreement,
        n=len(batch),
        tolerances=tol.parity_dict(),
        passed=cmp.passed,
        source_of_inputs=source,
        precision=precision,
        output_spread=cmp.output_spread,
        failures=tuple(f.replace("output is", "ONNX Runtime output is") for f in cmp.failures),
        logit_scale=cmp.logit_scale,
    )


__all__ = [
    "DEFAULT_OPSET",
    "PARITY_TOLERANCES",
    "ExportResult",
    "ParityReport",
    "choose_exporter",
    "export_onnx",
    "fast_exporter",
    "load_onnx_checked",
    "normalize",
    "onnx_io",
    "parity",
]
