"""Inference runtimes behind one interface: ONNX Runtime (CPU, CUDA), TensorRT and TensorRT-RTX.

``get_runtime(name)`` returns a :class:`Runtime`; optional libraries are imported only
when a runtime is used, so importing this package needs none of them.
"""

from __future__ import annotations

from pipeline.runtimes.base import PRECISIONS, RUNTIME_NAMES, Runtime, Session, check_precision, get_runtime

__all__ = ["PRECISIONS", "RUNTIME_NAMES", "Runtime", "Session", "check_precision", "get_runtime"]
