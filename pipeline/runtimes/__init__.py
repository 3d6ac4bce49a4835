"""Inference runtimes behind one interface: ONNX Runtime (CPU, CUDA), TensorRT and TensorRT-RTX.

``pipeline.runtimes.registry.get_runtime(name)`` returns a :class:`~pipeline.runtimes.base.Runtime`;
optional libraries are imported only when a runtime is used, so importing this package needs none of them.
"""
