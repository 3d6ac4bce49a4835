"""The runtime registry: a runtime name (as targets and the CLI spell it) -> its backend class.

Backends are imported here, on first use, so ``pipeline.runtimes.base`` never imports a
backend and no backend imports another.
"""

from __future__ import annotations

from pipeline.core.errors import UnknownName
from pipeline.runtimes.base import Runtime


def get_runtime(name: str, **kw) -> Runtime:
    """``onnxruntime`` (CPU), ``onnxruntime-cuda``, ``tensorrt`` or ``tensorrt-rtx``."""
    from pipeline.runtimes.onnxruntime import OnnxRuntime, OnnxRuntimeCUDA
    from pipeline.runtimes.tensorrt import TensorRT

    factories = {
        "onnxruntime": lambda: OnnxRuntime(**kw),
        "onnxruntime-cuda": lambda: OnnxRuntimeCUDA(**kw),
        "tensorrt": lambda: TensorRT("tensorrt", **kw),
        "tensorrt-rtx": lambda: TensorRT("tensorrt-rtx", **kw),
    }
    if name not in factories:
        raise UnknownName("runtime", name, list(factories))
    return factories[name]()


RUNTIME_NAMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx")


__all__ = ["RUNTIME_NAMES", "get_runtime"]
