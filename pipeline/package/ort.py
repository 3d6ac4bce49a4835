"""ONNX Runtime's mobile tools, wrapped: ``.ort`` conversion, the reduced-build operator list, usability.

Three things come from the ``onnxruntime`` wheel's own tools, so they say what the mobile
runtime will actually do with the model:

* :func:`convert_to_ort`: ``onnxruntime.tools.convert_onnx_models_to_ort`` with the *Fixed*
  optimization style (every graph optimization applied now, at level "all", so the phone does
  no graph work at load time) and ``target_platform`` ``arm`` for mobile and ARM Linux (QDQ
  fusions use int8 kernels; the x86-only NCHWc layout is left out). Its side product is the
  ``required_operators.config`` for a reduced-size ONNX Runtime build.
* :func:`canonical_ort`: ONNX Runtime writes the small kernel-type table at the head of an
  ``.ort`` flatbuffer in hash-map order, so two conversions of one model differ in a few hundred
  bytes while meaning the same thing. The head is rebuilt here in sorted order, after the model
  table (whose bytes are identical), so a package is byte-reproducible.
* :func:`usability`: ``check_onnx_model_mobile_usability``'s partition analysis for NNAPI and
  CoreML (NeuralNetwork and MLProgram): how many partitions, how many nodes each covers, and
  which operators fall back to the CPU.

The tools print to stdout and log through ``logging``; both are captured so that ``--json``
output stays clean, and a failure quotes what they said.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ConversionFailed

ORT_FILE_IDENTIFIER = b"ORTM"
OPTIMIZATION_STYLE = "Fixed"
OPTIMIZATION_LEVEL = "all"
# Execution providers the usability check covers, with the supported-operator table each uses.
USABILITY_EPS = {
    "NNAPI": None,
    "CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
    "CoreML MLProgram": "coreml_supported_mlprogram_ops.md",
}


@dataclass(frozen=True)
class OrtConversion:
    """An ``.ort`` model and its reduced-build operator list, both free of local paths."""

    model: bytes
    required_operators: str
    optimization_style: str
    optimization_level: str
    target_platform: str
    converter_version: str


def _unsupported_op(message: str) -> str | None:
    """The operator ONNX Runtime named when it refused a node (its messages vary by cause)."""
    for pattern in (r"Could not find an implementation for (\S+?)\(", r"(\S+?)\(-?\d+\) is not a registered",
                    r"No Op registered for (\S+)", r"Unrecognized attribute.*for operator (\S+)"):
        m = re.search(pattern, message)
        if m:
            return m.group(1)
    return None


def convert_to_ort(onnx_bytes: bytes, target_platform: str) -> OrtConversion:
    """Convert an ONNX model (bytes) to a canonical ``.ort`` with the Fixed style for ``target_platform``.

    Raises :class:`ConversionFailed` naming the operator when a node has no kernel in ONNX Runtime.
    """
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    said = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="edgefit-ort-") as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "out"
        src.write_bytes(onnx_bytes)
        try:
            with contextlib.redirect_stdout(said), _quiet_logs():
                convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=target_platform)
        except Exception as exc:  # ORT raises pybind exception types (Fail, NotImplemented, ...)
            msg = re.sub(r"Load model from \S+ failed:\s*", "", " ".join(str(exc).split())) or type(exc).__name__
            op = _unsupported_op(msg)
            what = f"operator {op} has no ONNX Runtime kernel" if op else "ONNX Runtime refused the model"
            raise ConversionFailed(f"cannot convert the model to .ort: {what} ({msg[:300]}); "
                                   "re-export the model without it, or use an ONNX Runtime build with a kernel "
                                   "for it.") from None
        model = (out / "model.ort").read_bytes()
        config = (out / "model.required_operators.config").read_text(encoding="utf-8")
    return OrtConversion(model=canonical_ort(model), required_operators=_without_paths(config),
                         optimization_style=OPTIMIZATION_STYLE, optimization_level=OPTIMIZATION_LEVEL,
                         target_platform=target_platform, converter_version=ort.__version__)


@contextlib.contextmanager
def _quiet_logs():
    """Silence the tools' ``logging`` chatter (INFO lines naming temporary paths) for the duration."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _without_paths(config: str) -> str:
    """The operator config without the generator's comment lines, which name temporary paths."""
    ops = [line for line in config.splitlines() if line.strip() and not line.startswith("#")]
    return "# ONNX Runtime reduced-build operator config for model.ort (generated by edgefit)\n" + "\n".join(ops) + "\n"


def canonical_ort(data: bytes) -> bytes:
    """The same ``.ort`` model with its head (root table, kernel-type table) rebuilt in sorted order.

    A flatbuffer is written back to front, so the model table and everything under it sit at
    the end of the file and are byte-identical between conversions; only the kernel-type table
    written after them comes out in hash-map order. Offsets in a flatbuffer are relative and
    point towards the end, so the model's bytes are kept as they are and a fresh head is built in
    front of them, in a fixed order. The result loads in ONNX Runtime exactly like the input.
    """
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession as fbs_session

    if len(data) < 8 or data[4:8] != ORT_FILE_IDENTIFIER:
        raise ConversionFailed("ONNX Runtime wrote a file that is not an ORT-format model; cannot package it.")
    root = fbs_session.InferenceSession.GetRootAs(data, 0)
    model = root.Model()
    if model is None:
        raise ConversionFailed("the .ort file ONNX Runtime wrote has no model table; cannot package it.")
    model_pos = model._tab.Pos
    vtable_pos = model_pos - struct.unpack_from("<i", data, model_pos)[0]
    version_pos = root._tab.Indirect(root._tab.Pos + root._tab.Offset(4)) if root._tab.Offset(4) else None
    keep_from = min(model_pos, vtable_pos)
    if len(data) % 8:
        return data  # not 8-byte aligned as ORT writes it: keep its bytes rather than risk misaligned tensors
    tail = data[keep_from:]
    b = flatbuffers.Builder(len(tail) + 4096)
    b.Bytes[len(b.Bytes) - len(tail):] = tail
    b.head = len(b.Bytes) - len(tail)
    b.minalign = 8
    end = len(data)
    version = None
    if version_pos is not None:  # the version string is written first, so it normally lies in the kept tail
        version = end - version_pos if version_pos >= keep_from else b.CreateString(root.OrtVersion())
    resolver = _build_resolver(b, root.KernelTypeStrResolver())
    fbs_session.InferenceSessionStart(b)
    if version is not None:
        fbs_session.InferenceSessionAddOrtVersion(b, version)
    fbs_session.InferenceSessionAddModel(b, end - model_pos)
    if resolver is not None:
        fbs_session.InferenceSessionAddKernelTypeStrResolver(b, resolver)
    b.Finish(fbs_session.InferenceSessionEnd(b), file_identifier=ORT_FILE_IDENTIFIER)
    return bytes(b.Output())


def _build_resolver(b, resolver) -> int | None:
    """Write the kernel-type table (op id -> kernel type string -> args) sorted by its keys."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        ArgTypeAndIndex as fbs_arg,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        KernelTypeStrArgsEntry as fbs_kts,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        KernelTypeStrResolver as fbs_resolver,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        OpIdKernelTypeStrArgsEntry as fbs_op,
    )

    if resolver is None:
        return None
    ops = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        e = resolver.OpKernelTypeStrArgs(i)
        strs = []
        for j in range(e.KernelTypeStrArgsLength()):
            k = e.KernelTypeStrArgs(j)
            strs.append((k.KernelTypeStr(), [(k.Args(n).ArgType(), k.Args(n).Index()) for n in range(k.ArgsLength())]))
        ops.append((e.OpId(), sorted(strs)))
    ops.sort()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    op_offsets = []
    for op_id, strs in ops:
        str_offsets = []
        for name, args in strs:
            arg_offsets = []
            for arg_type, index in args:
                fbs_arg.ArgTypeAndIndexStart(b)
                fbs_arg.ArgTypeAndIndexAddArgType(b, arg_type)
                fbs_arg.ArgTypeAndIndexAddIndex(b, index)
                arg_offsets.append(fbs_arg.ArgTypeAndIndexEnd(b))
            args_vec, name_off = vector(arg_offsets), b.CreateString(name)
            fbs_kts.KernelTypeStrArgsEntryStart(b)
            fbs_kts.KernelTypeStrArgsEntryAddKernelTypeStr(b, name_off)
            fbs_kts.KernelTypeStrArgsEntryAddArgs(b, args_vec)
            str_offsets.append(fbs_kts.KernelTypeStrArgsEntryEnd(b))
        strs_vec, op_off = vector(str_offsets), b.CreateString(op_id)
        fbs_op.OpIdKernelTypeStrArgsEntryStart(b)
        fbs_op.OpIdKernelTypeStrArgsEntryAddOpId(b, op_off)
        fbs_op.OpIdKernelTypeStrArgsEntryAddKernelTypeStrArgs(b, strs_vec)
        op_offsets.append(fbs_op.OpIdKernelTypeStrArgsEntryEnd(b))
    ops_vec = vector(op_offsets)
    fbs_resolver.KernelTypeStrResolverStart(b)
    fbs_resolver.KernelTypeStrResolverAddOpKernelTypeStrArgs(b, ops_vec)
    return fbs_resolver.KernelTypeStrResolverEnd(b)


def usability(onnx_bytes: bytes) -> dict:
    """Per execution provider: partitions, supported nodes, and the operators that fall back to the CPU.

    The model is optimized to ONNX Runtime's basic level first, as the mobile usability checker
    does (that is the graph an execution provider is offered at load time).
    """
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="edgefit-usability-") as tmp:
        src, opt = Path(tmp) / "model.onnx", Path(tmp) / "model.basic.onnx"
        src.write_bytes(onnx_bytes)
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
            optimize_model(src, opt, use_external_initializers=True)
            model = ModelProtoWithShapeInfo(opt).model_with_shape_info
            infos = {name: (uc.check_nnapi_partitions(model, require_fixed_input_sizes=True) if table is None
                            else uc.check_coreml_partitions(model, require_fixed_input_sizes=True,
                                                            config_filename=table))
                     for name, table in USABILITY_EPS.items()}
    return {name: _partition_dict(info) for name, info in infos.items()}


def _partition_dict(info) -> dict:
    nodes = int(info.num_nodes)
    return {
        "partitions": int(info.num_partitions),
        "nodes": nodes,
        "supported_nodes": int(info.num_supported_nodes),
        "supported_pct": round(100.0 * info.num_supported_nodes / nodes, 1) if nodes else 0.0,
        "cpu_fallback_ops": sorted(info.unsupported_ops),
        "nodes_unsupported_due_to_dynamic_shape": int(info.nodes_unsupported_due_to_dynamic_input),
        "ops_with_unsupported_rank": sorted(info.ops_with_unsupported_rank),
        "suitability": info.suitability().name,
    }


def usability_summary(report: dict) -> str:
    """One line: each provider's partition count, node coverage and verdict."""
    parts = []
    for name, r in report.items():
        parts.append(f"{name} {r['partitions']} partition{'s' if r['partitions'] != 1 else ''} "
                     f"({r['supported_pct']:g}% of {r['nodes']} nodes, {r['suitability']})"
                     + (f", CPU fallback: {', '.join(r['cpu_fallback_ops'])}" if r["cpu_fallback_ops"] else ""))
    return "usability: " + "; ".join(parts)


__all__ = ["OrtConversion", "canonical_ort", "convert_to_ort", "usability", "usability_summary"]
