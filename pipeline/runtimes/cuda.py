"""Which NVIDIA GPU is present, asked of the CUDA driver itself (no CUDA Python package needed).

Both the ONNX Runtime CUDA backend and TensorRT need to know this, so it lives apart from
either of them.
"""

from __future__ import annotations

import ctypes

_CUDA_ATTR_CC_MAJOR, _CUDA_ATTR_CC_MINOR = 75, 76


def cuda_device(index: int = 0) -> dict | None:
    """``{"name", "compute_capability", "index"}`` of CUDA device ``index`` via the driver API, or None.

    Uses ``libcuda`` through ctypes (present wherever an NVIDIA driver is, Jetson included),
    so it needs no CUDA Python package. ``CUDA_VISIBLE_DEVICES`` applies as usual.
    """
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return None
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
            return None
        dev = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return None
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), _CUDA_ATTR_CC_MAJOR, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CUDA_ATTR_CC_MINOR, dev)
    except (AttributeError, OSError):
        return None
    return {"name": name.value.decode(errors="replace").strip(), "compute_capability": f"{major.value}.{minor.value}",
            "index": index}


__all__ = ["cuda_device"]
