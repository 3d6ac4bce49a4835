"""The one measuring interface: a device takes a model and timing settings, and returns what it measured.

``deploy fit``'s closed loop and ``deploy calibrate`` measure only through a
:class:`Device`, never through a runtime directly, so every place that times a model gets
the same statistics and the same provenance, whatever is behind the device:

* :class:`LocalDevice`: this machine. The target's runtime comes from the registry
  (:mod:`pipeline.runtimes.registry`): ONNX Runtime runs the ONNX file itself, TensorRT
  builds an engine first. Latency is timed in-process by :func:`~pipeline.measure.timing.time_session`,
  peak memory in a fresh child process (:mod:`pipeline.measure.memory`).
* a remote device (a measurement agent on a Jetson, a Raspberry Pi, ...) implements the same
  two methods over the network.

A :class:`DeviceMeasurement` always says which device, when, with which runtime and which
settings, and which file (its sha256): a latency without that is not a measurement.
"""

from __future__ import annotations

import abc
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import BackendUnavailable
from pipeline.core.io import sha256_file
from pipeline.measure.settings import TimingSettings
from pipeline.measure.timing import Timing

# target runtime (as targets/*.toml spell it) -> registry name of the backend that runs it on a local machine
LOCAL_RUNTIMES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class DeviceMeasurement:
    """Latency statistics and peak memory of one model on one device, with their provenance."""

    latency: Timing
    memory_mb: float | None
    device: str
    runtime: dict
    threads: int | None
    settings: TimingSettings
    when: str
    model_sha256: str
    memory_method: str | None = None
    facts: dict = field(default_factory=dict)
    agent: str | None = None  # the measurement agent's URL when a remote device timed it
    # the reference model (pipeline.measure.reference) timed after each round of this one, when asked for
    reference: Timing | None = None

    @property
    def method(self) -> str:
        """How it was timed, in one line (for reports and fit.json)."""
        rt = self.runtime.get("label") or self.runtime.get("name", "?")
        return f"{rt}, {self.settings.describe()}"

    def provenance(self) -> dict:
        return {"source": "measured", "device": self.device, "when": self.when, "method": self.method,
                "model_sha256": self.model_sha256}


class Device(abc.ABC):
    """Somewhere a model can be timed: this machine, or a remote device behind an agent."""

    name: str
    slots: int = 1  # models it can time at once without disturbing each other (a farm: one per agent)
    # whether ``measure(..., reference=True)`` can time the reference model next to the real one
    supports_reference: bool = False

    @abc.abstractmethod
    def facts(self) -> dict:
        """What the device is: model/CPU, memory, runtime versions, thread count (recorded in profiles)."""

    @abc.abstractmethod
    def measure(self, model: str | Path, settings: TimingSettings, *, precision: str = "fp32",
                memory: bool = True, reference: bool = False) -> DeviceMeasurement:
        """Time ``model`` (an ONNX file) with ``settings``; ``memory`` also measures its peak memory;
        ``reference`` also times the reference model after each round (where ``supports_reference``)."""

    def peak_memory(self, model: str | Path) -> tuple[float | None, str | None]:
        """Peak memory of ``model`` alone, without timing it: ``(MiB, method)``, ``(None, why)`` where it cannot be."""
        return None, f"not measured: {type(self).__name__} measures memory only with a timing"


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class LocalDevice(Device):
    """This machine, running ``target``'s runtime with ``threads`` threads."""

    def __init__(self, target, threads: int | None = None):
        from pipeline.runtimes.registry import get_runtime

        if target.runtime not in LOCAL_RUNTIMES:
            raise BackendUnavailable(f"no local backend for runtime '{target.runtime}' of target '{target.name}'.")
        self.target = target
        self.threads = threads or target.threads or 1
        self.runtime = get_runtime(LOCAL_RUNTIMES[target.runtime], threads=self.threads)
        self.name = target.name
        self._facts: dict | None = None
        self.supports_reference = self.runtime.name == "onnxruntime"

    def runtime_info(self) -> dict:
        """``{"name", "version", "provider", "label"}`` of the runtime that measures here."""
        ok, what = self.runtime.available()
        if not ok:
            raise BackendUnavailable(f"{self.runtime.name}: {what}")
        info = {"name": self.target.runtime, "version": self.runtime.version(), "label": what}
        providers = getattr(self.runtime, "providers", None)
        if providers:
            info["provider"] = providers[0]
        return info

    def facts(self) -> dict:
        from pipeline.predict.targets import host_machine

        if self._facts is None:
            self._facts = {**host_machine(), "threads": self.threads, "python": platform.python_version()}
        return dict(self._facts)

    @property
    def label(self) -> str:
        """How fit.json names this device: the target and the CPU it really ran on."""
        return f"{self.target.name}: {self.facts()['cpu_model']}"

    def measure(self, model: str | Path, settings: TimingSettings, *, precision: str = "fp32",
                memory: bool = True, reference: bool = False) -> DeviceMeasurement:
        from pipeline.measure.timing import time_session, time_session_with_reference

        model = Path(model)
        runtime = self.runtime_info()
        ref_timing = None
        with tempfile.TemporaryDirectory(prefix="edgefit-measure-") as work:
            artifact = self.runtime.prepare(model, work, precision, target=self.target)
            session = self.runtime.load(artifact, threads=self.threads)
            if reference and self.supports_reference:
                from pipeline.measure.reference import reference_model_path

                ref = self.runtime.load(reference_model_path(), threads=self.threads)
                latency, ref_timing = time_session_with_reference(session, ref, settings)
                del ref
            else:
                latency = time_session(session, settings)
            del session
        mem, how = self._memory(model) if memory else (None, None)
        return DeviceMeasurement(latency=latency, memory_mb=mem, device=self.label, runtime=runtime,
                                 threads=self.threads, settings=settings, when=now(),
                                 model_sha256=sha256_file(model), memory_method=how, facts=self.facts(),
                                 reference=ref_timing)

    def peak_memory(self, model: str | Path) -> tuple[float | None, str | None]:
        return self._memory(Path(model))

    def _memory(self, model: Path) -> tuple[float | None, str | None]:
        """Peak memory in a child process; only ONNX Runtime has a child harness today."""
        if self.runtime.name != "onnxruntime":
            return None, f"not measured: no peak-memory harness for {self.runtime.name} yet"
        from pipeline.measure.memory import peak_memory_onnx

        result = peak_memory_onnx(model, threads=self.threads)
        return result.peak_mb, result.method


__all__ = ["LOCAL_RUNTIMES", "Device", "DeviceMeasurement", "LocalDevice", "now"]
