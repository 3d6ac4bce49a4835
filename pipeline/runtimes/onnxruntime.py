"""ONNX Runtime: the CPU execution provider, and the CUDA one where this build has it and a GPU is present.

ONNX Runtime runs ONNX files directly, so "building" is only a precision conversion:
fp32 is the file itself, fp16 is a converted copy (inputs/outputs stay float32), and
int8 must already be a QDQ model made by :func:`pipeline.export.quantize.quantize_onnx`,
because static quantization needs calibration data that a build step does not have.
Sessions are configured by :func:`pipeline.measure.timing.ort_session`, the same settings
every measurement in edgefit uses.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BackendUnavailable, ModelInvalid, UsageError
from pipeline.runtimes.base import Runtime, Session, check_precision
from pipeline.runtimes.convert import convert_fp16, is_quantized


class OrtSession(Session):
    def __init__(self, model: str | Path | bytes, threads: int, providers: tuple[str, ...], runtime: str):
        from pipeline.measure.timing import ort_session

        self.sess = ort_session(model, threads, providers)
        self.providers = tuple(self.sess.get_providers())
        if providers and self.providers[0] != providers[0]:
            raise BackendUnavailable(f"ONNX Runtime fell back to {self.providers[0]} instead of {providers[0]}.")
        inp, out = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
        self.input_name, self.input_shape, self.output_name = inp.name, tuple(inp.shape), out.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.runtime, self.threads = runtime, threads

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        feed = dict(inputs) if isinstance(inputs, Mapping) else {self.input_name: inputs}
        feed = {k: np.ascontiguousarray(v, dtype=self.input_dtype) for k, v in feed.items()}
        return np.asarray(self.sess.run([self.output_name], feed)[0], dtype=np.float32)


class OnnxRuntime(Runtime):
    """ONNX Runtime on CPU (``CPUExecutionProvider``)."""

    name = "onnxruntime"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self, threads: int | None = None):
        self.threads = threads or os.cpu_count() or 1

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc})."
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            return False, f"ONNX Runtime {ort.__version__} has no {', '.join(missing)}."
        return True, f"ONNX Runtime {ort.__version__} ({', '.join(self.providers)})"

    def build(self, onnx_path: str | Path, out_dir: str | Path, precision: str = "fp32", target: Any = None,
              **kw) -> Path:
        """fp32: the ONNX file (copied into ``out_dir`` if elsewhere); fp16: a converted copy; int8: a QDQ model."""
        check_precision(precision)
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        if not onnx_path.is_file():
            raise ModelInvalid(f"ONNX model {onnx_path} does not exist.")
        out_dir.mkdir(parents=True, exist_ok=True)
        if precision == "fp16":
            return convert_fp16(onnx_path, out_dir / f"{onnx_path.stem}.fp16.onnx")
        if precision == "int8" and not is_quantized(onnx_path):
            raise UsageError(f"{onnx_path} is not quantized; int8 for ONNX Runtime needs calibration data: "
                             "make a QDQ model with `deploy fit --precision int8`.")
        dest = out_dir / onnx_path.name
        if dest.resolve() != onnx_path.resolve():
            shutil.copyfile(onnx_path, dest)
        return dest

    def load(self, artifact: str | Path, threads: int | None = None, **kw) -> OrtSession:
        self.require()
        return OrtSession(artifact, threads or self.threads, self.providers, self.name)


class OnnxRuntimeCUDA(OnnxRuntime):
    """ONNX Runtime with the CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)."""

    name = "onnxruntime-cuda"
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return False, f"{why} Install onnxruntime-gpu on a machine with an NVIDIA GPU."
        from pipeline.runtimes.cuda import cuda_device

        dev = cuda_device()
        if dev is None:
            return False, "no CUDA device is visible (no libcuda or no GPU)."
        return True, f"{why} on {dev['name']} (compute capability {dev['compute_capability']})"


__all__ = ["OnnxRuntime", "OnnxRuntimeCUDA", "OrtSession", "convert_fp16", "is_quantized"]
