"""The one small interface every inference runtime implements.

A :class:`Runtime` says whether it can run here (:meth:`Runtime.available`), turns an
ONNX file into its own deployable artifact (:meth:`Runtime.build`: the ONNX file itself
for ONNX Runtime, a serialized engine for TensorRT) and loads that artifact into a
:class:`Session` that runs batches and times itself with the project's one timing
harness (:func:`pipeline.measure.timing.time_callable`).

Heavy or optional libraries (onnxruntime, tensorrt, tensorrt_rtx, CUDA) are imported
inside methods only, so importing this package never needs them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BackendUnavailable, UnknownName

PRECISIONS = ("fp32", "fp16", "int8")


def check_threads(threads: int | None, *, required: bool) -> int | None:
    if threads is None and not required:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r} (0 would let the runtime pick)")
    return threads



class Session(abc.ABC):
    """A loaded model: one float32 image batch in, logits out."""

    #: name, shape (dynamic dimensions as str/None) and dtype of the single input
    input_name: str
    input_shape: tuple
    output_name: str
    runtime: str
    threads: int | None = None

    @abc.abstractmethod
    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits (N×classes float32) for ``inputs`` (N×C×H×W, or a ``{name: array}`` feed)."""

    def example_input(self, seed: int = 0) -> np.ndarray:
        """A seeded standard-normal batch matching the input shape (a dynamic batch becomes 1)."""
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in self.input_shape]
        return np.random.default_rng(seed).standard_normal(dims, dtype=np.float32)

    def bind(self, inputs: np.ndarray) -> Callable[[], Any]:
        """A zero-argument callable that runs one inference on ``inputs``: what the timing harness calls.

        Backends override it to prepare everything (feeds, buffers) once, so the timed call is
        the inference and nothing else.
        """
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        return lambda: self.run(x)

    def predict(self, inputs: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits for any number of images, fed in batches the input shape accepts (batch 1 when it is static)."""
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        fixed = self.input_shape[0] if isinstance(self.input_shape[0], int) and self.input_shape[0] > 0 else None
        step = fixed or batch_size or 32
        out = []
        for start in range(0, len(inputs), step):
            chunk = inputs[start:start + step]
            if fixed is not None and len(chunk) != fixed:  # pad the last chunk of a static-batch model
                pad = np.zeros((fixed - len(chunk), *chunk.shape[1:]), dtype=np.float32)
                out.append(self.run(np.concatenate([chunk, pad]))[:len(chunk)])
            else:
                out.append(self.run(chunk))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class Runtime(abc.ABC):
    """An inference runtime: ``available()``, ``build()`` an artifact, ``load()`` it into a :class:`Session`."""

    name: str = ""

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """``(True, what)`` when this runtime can load and run here, else ``(False, why not)``."""

    def can_build(self) -> tuple[bool, str]:
        """Whether :meth:`build` works here (TensorRT-RTX builds without a GPU; most runtimes need what load needs)."""
        return self.available()

    def require(self) -> None:
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"{self.name}: {reason}")

    @abc.abstractmethod
    def build(self, onnx_path: str | Path, out_dir: str | Path, precision: str = "fp32", target: Any = None,
              **kw) -> Path:
        """Turn ``onnx_path`` into this runtime's artifact in ``out_dir``; returns its path."""

    def prepare(self, onnx_path: str | Path, work_dir: str | Path, precision: str = "fp32", target: Any = None
                ) -> Path:
        """What :meth:`load` needs to run ``onnx_path`` at ``precision``: by default the :meth:`build` artifact."""
        return self.build(onnx_path, work_dir, precision, target=target)

    def version(self) -> str | None:
        """The runtime's version, or None when it is not installed."""
        return None

    @abc.abstractmethod
    def load(self, artifact: str | Path, **kw) -> Session:
        """Load an artifact made by :meth:`build` (or an ONNX file, where the runtime runs ONNX directly)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UnknownName("precision", precision, list(PRECISIONS))
    return precision


__all__ = ["PRECISIONS", "Runtime", "Session", "check_precision", "check_threads"]
