"""The reference model: a small fixed network timed next to real measurements, to tell load from slowness.

On a shared machine (a laptop, a CI runner, this project's 2-core VM) the same model measures 10–25%
slower while something else runs. A single re-measurement cannot tell that from a model that really
got slower. A model whose own speed never changes can: timed in the same rounds as the model, its
drift from an earlier timing *is* the machine's load, and dividing it out of the model's timing leaves
what the model would take on the machine as it was (:func:`pipeline.measure.loop.load_check`).

The network is three convolutions and a classifier, built with ``onnx.helper`` from seeded weights
(no torch, always the same bytes), about a millisecond at one thread: enough arithmetic to feel the
same contention as a real model, little enough to add ~0.1 s per timing round.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

REFERENCE_NAME = "edgefit-reference-v1"
RESOLUTION = 64
# (out channels, kernel, stride) of the three convolutions
LAYERS = ((24, 3, 2), (48, 3, 2), (64, 3, 1))
CLASSES = 10


def reference_model_bytes() -> bytes:
    """The reference network as an ONNX file (opset 13), byte-for-byte the same on every call."""
    return conv_net_bytes(RESOLUTION, LAYERS, REFERENCE_NAME)


def conv_net_bytes(resolution: int, layers: tuple[tuple[int, int, int], ...], name: str = "convnet",
                   seed: int = 20240601) -> bytes:
    """A plain conv net (conv + ReLU per ``(out channels, kernel, stride)``, pool, linear) as ONNX bytes, opset 13,
    seeded: the reference model, and stand-in models for tests that need timings without torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, cin = "input", 3
    for i, (cout, k, s) in enumerate(layers):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = np.zeros(cout, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        p = (k - 1) // 2
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      strides=[s, s], pads=[p, p, p, p]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, cin = f"r{i}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
    fc = (rng.standard_normal((CLASSES, cin)) / np.sqrt(cin)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fcb")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgefit")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def reference_model_path() -> Path:
    """The reference network written once per process to a temporary file (removed at exit)."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="edgefit-reference-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / f"{REFERENCE_NAME}.onnx"
    path.write_bytes(reference_model_bytes())
    return path


__all__ = ["REFERENCE_NAME", "conv_net_bytes", "reference_model_bytes", "reference_model_path"]
