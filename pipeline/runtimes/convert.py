"""ONNX-level conversions that every runtime backend needs: is a model quantized, make an fp16 copy."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ModelInvalid
from pipeline.core.io import atomic_write

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def is_quantized(onnx_path: str | Path) -> bool:
    """True when the model holds QuantizeLinear/DequantizeLinear nodes (a QDQ model)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in QDQ_OPS for n in proto.graph.node)


def convert_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """An fp16 copy of an fp32 ONNX model; inputs and outputs stay float32 (Cast nodes at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_path = Path(out_path)
    try:
        proto = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted types
        raise ModelInvalid(f"cannot convert {onnx_path} to fp16: {exc}") from None
    return atomic_write(out_path, proto.SerializeToString())


__all__ = ["QDQ_OPS", "convert_fp16", "is_quantized"]
