"""ONNX Runtime: the CPU execution provider, and the CUDA one where this build has it and a GPU is present.

ONNX Runtime runs ONNX files directly, so "building" is only a precision conversion:
fp32 is the file itself, fp16 is a converted copy (inputs/outputs stay float32), and
int8 must already be a QDQ model made by :func:`pipeline.export.quantize.quantize_onnx`,
because static quantization needs calibration data that a build step does not have.
Sessions are configured by :func:`ort_session` (below), the same settings
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
from pipeline.runtimes.base import Runtime, Session, check_precision, check_threads
from pipeline.runtimes.convert import convert_fp16, is_quantized

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _model_name(model: str | Path | bytes) -> str:
    return "<in-memory ONNX model>" if isinstance(model, (bytes, bytearray)) else str(model)


def session_options(threads: int):
    """The ``SessionOptions`` every measurement uses (also used by the memory child).

    * ``intra_op_num_threads = threads``: explicit, never ORT's "all cores" default.
    * ``inter_op_num_threads = 1`` and ``ORT_SEQUENTIAL``: CNNs are a chain; a second
      pool only adds threads that compete with the intra-op pool.
    * ``ORT_ENABLE_ALL``: the optimisations a deployed application gets (BN/activation
      fusion, layout transforms), so what we time is what ships.
    * Spinning: intra-op threads *may* spin (ORT's default) so that handing work to the
      pool between consecutive operators inside one ``Run()`` costs no wake-up, but
      ``session.force_spinning_stop = 1`` stops them the moment ``Run()`` returns.
      Otherwise an idle pool keeps burning cores after each call, which (a) steals CPU
      from the other configurations in :func:`compare_interleaved` and from anything
      else on the machine, and (b) makes back-to-back benchmarking faster than an edge
      application that runs one inference per camera frame and is idle in between. The
      unused inter-op pool never spins. With ``threads == 1`` there is no pool at all.
    * Log level "error": ORT's optimizer warnings would pollute ``--json`` output.
    """
    import onnxruntime as ort

    threads = check_threads(threads, required=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


def ort_session(
    model: str | Path | bytes,
    threads: int,
    providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
):
    """An ``onnxruntime.InferenceSession`` configured as in :func:`session_options`.

    An unreadable, truncated or invalid file raises :class:`ModelInvalid` naming the
    file; a provider that this ONNX Runtime build lacks raises :class:`BackendUnavailable`.
    """
    import onnxruntime as ort

    so = session_options(threads)
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendUnavailable(
            f"ONNX Runtime {ort.__version__} has no {', '.join(missing)}; available: {', '.join(available)}."
        )
    name = _model_name(model)
    if not isinstance(model, (bytes, bytearray)):
        path = Path(model)
        if not path.is_file():
            raise ModelInvalid(f"ONNX model {path} does not exist or is not a file.")
        model = str(path)
    try:
        return ort.InferenceSession(model, sess_options=so, providers=list(providers))
    except Exception as exc:  # ORT raises pybind exception types (InvalidProtobuf, Fail, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelInvalid(
            f"cannot load ONNX model {name} (truncated, corrupt or unsupported?): {msg}"
        ) from None


def random_inputs(session, seed: int = 0, shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds matching the session's declared inputs.

    A dynamic first (batch) dimension becomes 1; any other dynamic dimension needs
    ``shape``. Float inputs are standard normal, integer inputs small non-negative ints.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        dims = list(shape) if shape is not None else list(inp.shape)
        for i, d in enumerate(dims):
            if not isinstance(d, int) or d < 0:
                if i == 0:
                    dims[i] = 1
                else:
                    raise ModelInvalid(
                        f"input '{inp.name}' has a dynamic dimension {i} ({d!r}); give the input shape explicitly."
                    )
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise ModelInvalid(f"input '{inp.name}' has unsupported type {inp.type}.")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(dims, dtype=np.float32).astype(dtype, copy=False)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=dims).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, 100, size=dims).astype(dtype)
    return feeds


class OrtSession(Session):
    def __init__(self, model: str | Path | bytes, threads: int, providers: tuple[str, ...], runtime: str):
        self.sess = ort_session(model, threads, providers)
        self.providers = tuple(self.sess.get_providers())
        if providers and self.providers[0] != providers[0]:
            raise BackendUnavailable(f"ONNX Runtime fell back to {self.providers[0]} instead of {providers[0]}.")
        inp, out = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
        self.input_name, self.input_shape, self.output_name = inp.name, tuple(inp.shape), out.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.runtime, self.threads = runtime, threads

    def bind(self, inputs: np.ndarray):
        """One inference with the feed prepared once, every output requested (as an application runs it)."""
        feed = {self.input_name: np.ascontiguousarray(inputs, dtype=self.input_dtype)}
        outputs = [o.name for o in self.sess.get_outputs()]
        return lambda: self.sess.run(outputs, feed)

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

    def prepare(self, onnx_path: str | Path, work_dir: str | Path, precision: str = "fp32", target: Any = None
                ) -> Path:
        """ONNX Runtime runs the file itself (fp32, int8 QDQ); only fp16 needs a converted copy."""
        if precision == "fp16":
            return self.build(onnx_path, work_dir, precision, target=target)
        check_precision(precision)
        if precision == "int8" and not is_quantized(onnx_path):
            raise UsageError(f"{onnx_path} is not quantized; int8 for ONNX Runtime needs calibration data: "
                             "make a QDQ model with `deploy fit --precision int8`.")
        return Path(onnx_path)

    def version(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        return ort.__version__

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


__all__ = ["OnnxRuntime", "OnnxRuntimeCUDA", "OrtSession", "convert_fp16", "is_quantized", "ort_session",
           "random_inputs", "session_options"]
