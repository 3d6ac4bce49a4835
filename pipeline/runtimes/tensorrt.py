"""TensorRT and TensorRT-RTX: build serialized engines from ONNX, and load them only where they were built for.

Two flavours share one implementation, because they share the builder API:

* ``tensorrt`` (NVIDIA's ``tensorrt`` wheel, or JetPack's system package): Jetson and
  data-centre/desktop GPUs. Building needs the GPU the engine is for.
* ``tensorrt-rtx`` (pip ``tensorrt-rtx``, module ``tensorrt_rtx``): desktop RTX GPUs.
  Its ahead-of-time build needs no GPU, and the engine runs on every RTX GPU from
  compute capability 8.0 on (or on the capabilities asked for); a just-in-time step
  specialises it on first load. It is strongly typed: there are no FP16/INT8 builder
  flags, so fp16 means an fp16 ONNX model and int8 a QDQ model. Its timing cache is a
  documented no-op, so none is used.

Every engine ``model.engine`` gets a sidecar ``model.engine.json`` (see
:func:`write_sidecar`): runtime flavour and version, the GPU (name, compute capability)
it was built on or for, precision, the ONNX file's sha256 and the build time. An engine
only runs on the TensorRT version and GPU it was built for; loading anything else can
fail with "version tag does not match" or crash the process. :func:`check_engine`
therefore compares the sidecar with the running version and GPU *before* a single byte
of the engine is handed to TensorRT, and refuses with :class:`EngineMismatch`, which
says to rebuild on the device. It needs neither TensorRT nor a GPU to run.

The GPU is found through the CUDA driver (``libcuda``) with ctypes, so no CUDA Python
package is needed to know which GPU is present.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BackendUnavailable, EngineBuildFailed, EngineMismatch, ModelInvalid, UsageError
from pipeline.core.io import atomic_write, file_lock, sha256_file
from pipeline.runtimes.base import Runtime, Session, check_precision
from pipeline.runtimes.cuda import cuda_device

SIDECAR_SCHEMA = 1
FLAVOURS = {
    # flavour: (module, distribution names that carry it, in the order tried)
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11", "tensorrt_lean")),
    "tensorrt-rtx": ("tensorrt_rtx", ("tensorrt-rtx", "tensorrt_rtx")),
}
# By default a TensorRT-RTX engine runs on compute capability 8.0 and later (Ampere+); Turing (7.5) must be asked for.
RTX_DEFAULT_MIN_CC = "8.0"
DEFAULT_WORKSPACE_MB = 1024


# --- what is installed and which GPU is present (no TensorRT import) --------------------------------------------


def installed_version(flavour: str) -> str | None:
    """The installed TensorRT(-RTX) version from package metadata (no import), or from the module; None if absent."""
    module, dists = FLAVOURS[flavour]
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec(module) is None:  # JetPack installs the module without pip metadata
        return None
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - a broken install is "not available"
        return None


def import_trt(flavour: str):
    """The ``tensorrt`` / ``tensorrt_rtx`` module, or :class:`BackendUnavailable` saying how to get it."""
    module = FLAVOURS[flavour][0]
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError from a missing libnvinfer
        how = ("pip install tensorrt-rtx (desktop RTX GPUs; builds without a GPU)" if flavour == "tensorrt-rtx" else
               "JetPack ships it on Jetson; elsewhere pip install tensorrt (NVIDIA's index)")
        raise BackendUnavailable(f"{flavour} is not importable here ({type(exc).__name__}: {exc}); {how}.") from None


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def normalize_version(version: str) -> str:
    """``8201`` / ``8001`` (how trtexec 8.0-8.2 logs print it) -> ``8.2.1`` / ``8.0.1``; dotted versions unchanged."""
    text = str(version).strip()
    if re.fullmatch(r"\d{4,}", text):
        v = int(text)
        return f"{v // 1000}.{(v // 100) % 10}.{v % 100}"
    return text


def _version_key(version: str, parts: int = 3) -> tuple[int, ...]:
    """``8.2.1.8`` and ``8.2.1`` (and ``8201``) are one release for engine compatibility: compare major.minor.patch."""
    nums = [int(x) for x in re.findall(r"\d+", normalize_version(version))[:parts]]
    return tuple(nums + [0] * (parts - len(nums)))


# --- the sidecar ----------------------------------------------------------------------------------------------


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: str | Path, info: Mapping[str, Any]) -> Path:
    path = sidecar_path(engine)
    atomic_write(path, (json.dumps(dict(info), indent=2) + "\n").encode())
    return path


def read_sidecar(engine: str | Path) -> dict:
    path = sidecar_path(engine)
    rebuild = "rebuild the engine on the device (deploy build RUN_DIR there, or run RUN_DIR/build_on_device.sh)"
    if not path.is_file():
        raise EngineMismatch(f"{engine} has no sidecar {path.name}: cannot tell which GPU and TensorRT version it was "
                             f"built for, and loading a foreign engine can crash the process; {rebuild}.")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineMismatch(f"sidecar {path} is unreadable ({exc}); {rebuild}.") from None
    if not isinstance(info, dict) or "tensorrt_version" not in info or "runtime" not in info:
        raise EngineMismatch(f"sidecar {path} lacks 'runtime'/'tensorrt_version'; {rebuild}.")
    return info


def check_engine(engine: str | Path, flavour: str, version: str | None, device: Mapping | None) -> dict:
    """The engine's sidecar, if it was built for ``flavour`` ``version`` and the GPU ``device``; else EngineMismatch.

    Reads only the sidecar: no TensorRT import, no deserialisation. ``device`` is
    :func:`cuda_device`'s dict (``None``: no GPU here). Classic TensorRT engines need the
    same GPU model and compute capability; TensorRT-RTX engines need a compute capability
    they were built for (by default 8.0 or later).
    """
    info = read_sidecar(engine)
    fix = "Rebuild it on the device: `deploy build RUN_DIR` there, or copy RUN_DIR/build_on_device.sh over and run it."
    built_rt, built_ver = info.get("runtime"), str(info.get("tensorrt_version"))
    if built_rt != flavour:
        raise EngineMismatch(f"{engine} was built by {built_rt} {built_ver}, but this is {flavour}. {fix}")
    if version is None:
        raise BackendUnavailable(f"{flavour} is not installed here; cannot load {engine}.")
    if _version_key(built_ver) != _version_key(version):
        raise EngineMismatch(f"{engine} was built with {flavour} {built_ver}, but {version} is installed here; "
                             f"engines only load on the TensorRT version that built them. {fix}")
    if device is None:
        raise BackendUnavailable(f"no CUDA GPU is visible here; {engine} needs one to run.")
    cc, name = str(device.get("compute_capability")), str(device.get("name", ""))
    if flavour == "tensorrt-rtx":
        allowed = info.get("compute_capabilities")
        ok = cc in allowed if allowed else _cc_tuple(cc) >= _cc_tuple(info.get("min_compute_capability")
                                                                          or RTX_DEFAULT_MIN_CC)
        if not ok:
            want = ", ".join(allowed) if allowed else f">= {info.get('min_compute_capability') or RTX_DEFAULT_MIN_CC}"
            raise EngineMismatch(f"{engine} was built for compute capability {want}, but this GPU ({name}) is {cc}. "
                                 f"{fix}")
        return info
    gpu = info.get("gpu") or {}
    built_cc, built_name = str(gpu.get("compute_capability")), str(gpu.get("name", ""))
    if built_cc != cc or built_name.strip().lower() != name.strip().lower():
        raise EngineMismatch(f"{engine} was built on {built_name or 'an unknown GPU'} (compute capability {built_cc}), "
                             f"but this GPU is {name} ({cc}); a TensorRT engine only runs on the GPU model it was "
                             f"built for. {fix}")
    return info


# --- logging and parser errors ---------------------------------------------------------------------------------


def _make_logger(trt):
    """A TensorRT logger that keeps messages (warnings and errors) instead of printing them (keeps --json clean)."""

    class _Captured(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):  # noqa: D401 - TensorRT's callback
            sev = getattr(severity, "name", str(severity))
            if sev in ("INTERNAL_ERROR", "ERROR", "WARNING"):
                self.messages.append((sev, str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("INTERNAL_ERROR", "ERROR")]

    return _Captured()


def _call(obj, name: str, default=None):
    fn = getattr(obj, name, None)
    try:
        return fn() if callable(fn) else default
    except Exception:  # noqa: BLE001 - older TensorRT lacks some accessors
        return default


def parser_errors(parser, onnx_nodes: list | None = None) -> list[str]:
    """One line per ONNX parser error, naming the node (index, name, op type) it happened at."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        idx = _call(err, "node", -1)
        name, op = _call(err, "node_name", ""), _call(err, "node_operator", "")
        if onnx_nodes is not None and isinstance(idx, int) and 0 <= idx < len(onnx_nodes):
            name = name or onnx_nodes[idx].name
            op = op or onnx_nodes[idx].op_type
        where = "model"
        if isinstance(idx, int) and idx >= 0:
            where = f"node #{idx}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
        code = _call(err, "code")
        code = getattr(code, "name", code)
        lines.append(f"{where}: {_call(err, 'desc', '?')}" + (f" [{code}]" if code is not None else ""))
    return lines


# --- the runtime --------------------------------------------------------------------------------------------------


def default_timing_cache(flavour: str, version: str, device: Mapping | None) -> Path:
    """Per-machine timing cache, reused across builds: ``edgefit_home()/tensorrt/<flavour>-<version>-<gpu>.cache``."""
    from pipeline.core.paths import edgefit_home

    gpu = re.sub(r"[^a-z0-9]+", "-", (device or {}).get("name", "nogpu").lower()).strip("-")
    return edgefit_home() / "tensorrt" / f"{flavour}-{version}-{gpu}.cache"


@dataclass(frozen=True)
class EngineOptions:
    """How :meth:`TensorRT.build` builds: workspace limit (MiB), timing cache (path, or False for none),
    target compute capabilities (TensorRT-RTX), an INT8 calibrator, the engine's file name and extra
    sidecar entries."""

    workspace_mb: int | None = None
    timing_cache: str | Path | bool | None = None
    compute_capabilities: tuple[str, ...] | list[str] | None = None
    calibrator: Any = None
    engine_name: str = "model.engine"
    extra_sidecar: Mapping | None = None


class TensorRT(Runtime):
    """``TensorRT("tensorrt")`` or ``TensorRT("tensorrt-rtx")``: build engines, load them where they belong."""

    def __init__(self, flavour: str = "tensorrt", device_index: int = 0, threads: int | None = None):
        """``threads`` is accepted like every backend's and ignored: the engine runs on the GPU."""
        if flavour not in FLAVOURS:
            raise UsageError(f"TensorRT flavour must be one of {', '.join(FLAVOURS)}, not {flavour!r}.")
        self.flavour = self.name = flavour
        self.device_index = device_index

    def version(self) -> str | None:
        return installed_version(self.flavour)

    def device(self) -> dict | None:
        return cuda_device(self.device_index)

    def can_build(self) -> tuple[bool, str]:
        version = self.version()
        if version is None:
            return False, f"{self.flavour} is not installed."
        try:
            import_trt(self.flavour)
        except BackendUnavailable as exc:
            return False, str(exc)
        if self.flavour == "tensorrt-rtx":
            return True, f"TensorRT-RTX {version} (ahead-of-time build; no GPU needed)"
        dev = self.device()
        if dev is None:
            return False, f"TensorRT {version} is installed, but building an engine needs the target GPU and none " \
                          "is visible."
        return True, f"TensorRT {version} on {dev['name']} ({dev['compute_capability']})"

    def available(self) -> tuple[bool, str]:
        """Whether engines can be loaded and run here: the module imports and a GPU is visible."""
        version = self.version()
        if version is None:
            return False, f"{self.flavour} is not installed."
        dev = self.device()
        if dev is None:
            return False, f"{self.flavour} {version} is installed but no CUDA GPU is visible (running an engine " \
                          "needs one)."
        try:
            import_trt(self.flavour)
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, f"{self.flavour} {version} on {dev['name']} ({dev['compute_capability']})"

    # -- build --------------------------------------------------------------------------------------------------

    def build(self, onnx_path: str | Path, out_dir: str | Path, precision: str = "fp32", target: Any = None,
              options: EngineOptions | None = None, **overrides: Any) -> Path:
        """Parse ``onnx_path``, build and serialize ``out_dir/engine_name`` plus its sidecar; returns the engine path.

        * precision: classic TensorRT sets the FP16/INT8 builder flags. int8 needs a QDQ
          model (explicit quantization) or an ``IInt8EntropyCalibrator2`` (``calibrator``,
          see :func:`pipeline.export.quantize.make_entropy_calibrator`). TensorRT-RTX is strongly
          typed: fp16 builds from an fp16 copy of the model, int8 needs a QDQ model.
        * workspace limit: ``workspace_mb``, else ``target.trt_workspace_mb``, else 1024 MiB.
        * timing cache (classic TensorRT): ``timing_cache`` path (default: per machine
          under edgefit's home), read before and updated after every build; ``False``
          disables it. TensorRT-RTX ignores timing caches, so none is used.
        * ``compute_capabilities`` (TensorRT-RTX): e.g. ``["8.9"]``; default: all it supports.

        ``overrides`` are :class:`EngineOptions` fields. Parser failures raise :class:`EngineBuildFailed`
        listing every error with its node.
        """
        import dataclasses

        import onnx

        o = dataclasses.replace(options or EngineOptions(), **overrides)
        workspace_mb, timing_cache, compute_capabilities = o.workspace_mb, o.timing_cache, o.compute_capabilities
        calibrator, engine_name, extra_sidecar = o.calibrator, o.engine_name, o.extra_sidecar

        check_precision(precision)
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        if not onnx_path.is_file():
            raise ModelInvalid(f"ONNX model {onnx_path} does not exist.")
        ok, why = self.can_build()
        if not ok:
            raise BackendUnavailable(f"cannot build a {self.flavour} engine here: {why}")
        trt = import_trt(self.flavour)
        version = str(trt.__version__)
        device = self.device()
        rtx = self.flavour == "tensorrt-rtx"
        out_dir.mkdir(parents=True, exist_ok=True)
        from pipeline.runtimes.convert import convert_fp16, is_quantized

        quantized = is_quantized(onnx_path)
        source = onnx_path
        if precision == "int8" and not quantized and (rtx or calibrator is None):
            raise UsageError(
                "int8 needs a QDQ model (pipeline.export.quantize.quantize_onnx(..., runtime='tensorrt'))"
                + ("" if rtx else " or an INT8 calibrator (pipeline.export.quantize.make_entropy_calibrator)")
                + f"; {onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes.")
        if rtx and precision == "fp16" and not quantized:
            source = convert_fp16(onnx_path, out_dir / f"{onnx_path.stem}.fp16.onnx")
        workspace_mb = int(workspace_mb or getattr(target, "trt_workspace_mb", None) or DEFAULT_WORKSPACE_MB)
        logger = _make_logger(trt)
        started = time.perf_counter()
        builder = trt.Builder(logger)
        flags = 0
        explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        if explicit is not None and _version_key(version, 1)[0] < 10:
            flags |= 1 << int(explicit)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if hasattr(parser, "parse_from_file"):
            parsed = parser.parse_from_file(str(source))
        else:  # pragma: no cover - very old TensorRT
            parsed = parser.parse(source.read_bytes(), str(source))
        if not parsed or parser.num_errors:
            nodes = list(onnx.load(str(source), load_external_data=False).graph.node)
            errs = parser_errors(parser, nodes) or logger.errors() or ["the parser gave no reason"]
            raise EngineBuildFailed(f"{self.flavour} {version} cannot parse {source.name} ({len(errs)} error"
                                    f"{'s' if len(errs) != 1 else ''}): " + "; ".join(errs))
        config = builder.create_builder_config()
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        else:  # pragma: no cover - TensorRT < 8.4
            config.max_workspace_size = workspace_mb << 20
        if not rtx:
            if precision == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            if precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
                if not quantized:
                    config.int8_calibrator = calibrator
        ccs = None
        if rtx and compute_capabilities:
            ccs = [str(c) for c in compute_capabilities]
            config.num_compute_capabilities = len(ccs)
            for i, cc in enumerate(ccs):
                member = getattr(trt.ComputeCapability, "SM" + cc.replace(".", ""), None)
                if member is None:
                    raise UsageError(f"{self.flavour} {version} cannot target compute capability {cc}.")
                config.set_compute_capability(member, i)
        cache_path = None
        if not rtx and timing_cache is not False:
            cache_path = Path(timing_cache) if timing_cache not in (None, True) else default_timing_cache(
                self.flavour, version, device)
            blob = cache_path.read_bytes() if cache_path.is_file() else b""
            cache = config.create_timing_cache(blob)
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            errs = logger.errors() or ["build_serialized_network returned nothing"]
            raise EngineBuildFailed(f"{self.flavour} {version} could not build an engine from {source.name}: "
                                    + "; ".join(errs[-5:]))
        seconds = time.perf_counter() - started
        engine = out_dir / engine_name
        data = bytes(serialized)
        atomic_write(engine, data)
        if cache_path is not None:  # shared by every build on this machine: merge under the lock
            with file_lock(cache_path):
                atomic_write(cache_path, bytes(config.get_timing_cache().serialize()))
        info = {
            "schema": SIDECAR_SCHEMA,
            "runtime": self.flavour,
            "tensorrt_version": version,
            "gpu": None if device is None else {"name": device["name"],
                                                "compute_capability": device["compute_capability"]},
            "built_without_gpu": device is None,
            "precision": precision,
            "onnx": onnx_path.name,
            "onnx_sha256": sha256_file(onnx_path),
            "built_from": source.name,
            "explicit_quantization": quantized,
            "build_seconds": round(seconds, 3),
            "built_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "built_on": {"host": platform.node(), "machine": platform.machine()},
            "workspace_mb": workspace_mb,
            "timing_cache": str(cache_path) if cache_path else None,
            "layers": network.num_layers,
            "engine_bytes": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
        }
        if rtx:
            info["timing_cache_note"] = "TensorRT-RTX ignores timing caches (a documented no-op); none used."
            info["compute_capabilities"] = ccs
            if ccs is None:
                info["min_compute_capability"] = RTX_DEFAULT_MIN_CC
        warnings = [m for s, m in logger.messages if s == "WARNING"]
        if warnings:
            info["build_warnings"] = warnings[:20]
        if extra_sidecar:
            info.update(extra_sidecar)
        write_sidecar(engine, info)
        return engine

    # -- load ---------------------------------------------------------------------------------------------------

    def load(self, artifact: str | Path, **kw) -> TrtSession:
        """Check the sidecar against this machine (no TensorRT import for that), then deserialize and run."""
        artifact = Path(artifact)
        if not artifact.is_file():
            raise ModelInvalid(f"engine {artifact} does not exist.")
        info = check_engine(artifact, self.flavour, self.version(), self.device())
        trt = import_trt(self.flavour)
        return TrtSession(trt, artifact, info, self.flavour)


class TrtSession(Session):
    """A deserialized engine run through the name-based tensor API (TensorRT >= 8.5, TensorRT-RTX).

    GPU buffers come from torch.cuda, so a CUDA build of torch is needed. Older TensorRT
    (the Jetson Nano's 8.2) is timed with trtexec through ``build_on_device.sh`` instead.
    """

    def __init__(self, trt, engine_path: Path, info: dict, flavour: str):
        try:
            import torch
        except ImportError:  # pragma: no cover
            torch = None
        if torch is None or not torch.cuda.is_available():
            raise BackendUnavailable("running a TensorRT engine from Python needs a CUDA build of torch here "
                                     "(for GPU buffers); trtexec on the device needs nothing.")
        self._torch, self.info, self.runtime = torch, info, flavour
        self.logger = _make_logger(trt)
        self.rt = trt.Runtime(self.logger)
        self.engine = self.rt.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"{flavour} refused {engine_path}: " + "; ".join(self.logger.errors()[-3:]))
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise ModelInvalid(f"{engine_path} has inputs {ins} and outputs {outs}; one image input is expected.")
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self._trt = trt

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        x = inputs[self.input_name] if isinstance(inputs, Mapping) else inputs
        x_dev = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(x_dev.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        dtype = torch.float16 if self.engine.get_tensor_dtype(self.output_name) == self._trt.DataType.HALF \
            else torch.float32
        y_dev = torch.empty(out_shape, dtype=dtype, device="cuda")
        if self.engine.get_tensor_dtype(self.input_name) == self._trt.DataType.HALF:
            x_dev = x_dev.half()
        self.context.set_tensor_address(self.input_name, x_dev.data_ptr())
        self.context.set_tensor_address(self.output_name, y_dev.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailable(f"{self.runtime} inference failed: " + "; ".join(self.logger.errors()[-3:]))
        stream.synchronize()
        return y_dev.float().cpu().numpy()


__all__ = ["FLAVOURS", "EngineOptions", "TensorRT", "TrtSession", "check_engine", "cuda_device", "default_timing_cache",
           "import_trt", "installed_version", "normalize_version", "parser_errors", "read_sidecar",
           "sidecar_path", "write_sidecar"]
