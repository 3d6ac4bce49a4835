"""Deployment targets: one TOML file per device (``targets/<name>.toml``), read and checked here.

Targets are data, not code, so users can add their own (``--targets-dir`` or a
``targets/`` folder in the working directory) and a file with a built-in name overrides
the built-in. Every hardware figure must cite its source; numbers nobody can trace are
worse than no numbers, because the predictor and the report would repeat them.

The format is declared in :mod:`pipeline.predict.schemas` (``TargetModel``; its JSON
Schema is ``docs/schema/target.schema.json``).

``host`` is the machine running edgefit. Its memory and thread count may be ``"auto"``
(detected here), and its profile is measured here, so it lives under
:func:`~pipeline.core.paths.edgefit_home`, keyed by the CPU, never in the repository.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pipeline.core.errors import DeployError, ProfileMissing, TargetInvalid, TargetNotFound, UsageError
from pipeline.core.paths import edgefit_home, project_root
from pipeline.predict.profile import PRECISIONS, load_profile
from pipeline.predict.schemas import KINDS, NAME_RE, RUNTIMES, TargetModel, validate

STATUSES = ("measured", "published", "roofline", "none", "invalid")


@dataclass(frozen=True)
class Target:
    """One validated target. ``memory_mb``/``threads`` are resolved ints; ``detected`` names those that were "auto"."""

    name: str
    description: str
    kind: str
    runtime: str
    precisions: tuple[str, ...]
    memory_mb: int
    threads: int | None
    max_onnx_opset: int
    trt_workspace_mb: int | None
    measurable: bool
    hardware: dict
    profile: dict
    path: Path
    detected: tuple[str, ...] = field(default=())

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def check_precision(self, precision: str | None) -> str:
        """``precision`` (default: the target's default) if the target supports it."""
        precision = precision or self.default_precision
        if precision not in self.precisions:
            raise UsageError(f"target '{self.name}' supports precision {', '.join(self.precisions)}; "
                             f"not '{precision}'.")
        return precision

    def profile_path(self, precision: str | None = None) -> Path:
        """Where the profile for ``precision`` is (or would be written).

        A profile measured on the device by ``deploy calibrate`` (:func:`device_profile_path`) wins
        over everything shipped. Then ``[profile].path`` wins for the default precision. Measurable targets (host) keep
        theirs under edgefit_home, per machine and thread count. Otherwise the conventional
        ``calibration/<name>/<runtime>-<precision>.json``. Relative paths are looked up next
        to the target's own ``targets/`` folder first, then in the project.
        """
        precision = self.check_precision(precision)
        measured = device_profile_path(self.name, self.runtime, precision)
        if not self.measurable and measured.is_file():  # calibrated on the device: it beats any shipped profile
            return measured
        if precision == self.default_precision and "path" in self.profile:
            rel = Path(self.profile["path"]).expanduser()
            if rel.is_absolute():
                return rel
        elif self.measurable:
            return host_profile_path(precision, self.threads or os.cpu_count() or 1, self.runtime)
        else:
            rel = Path("calibration", self.name, f"{self.runtime}-{precision}.json")
        # A copy of a built-in target in a user folder keeps the shipped profile unless it has its own.
        local, shipped = self.path.parent.parent / rel, project_root() / rel
        return shipped if shipped.is_file() and not local.is_file() else local

    def profile_status(self, precision: str | None = None) -> str:
        """``measured`` | ``published`` | ``roofline`` (the profile's provenance), ``none``, or ``invalid``."""
        try:
            return load_profile(self.profile_path(precision)).provenance
        except ProfileMissing:
            return "none"
        except DeployError:
            return "invalid"

    def summary(self) -> dict:
        """The ``deploy targets --json`` object for this target."""
        profiles = {p: {"status": self.profile_status(p), "path": str(self.profile_path(p))} for p in self.precisions}
        return {
            "name": self.name, "description": self.description, "kind": self.kind, "runtime": self.runtime,
            "precisions": list(self.precisions), "memory_mb": self.memory_mb, "threads": self.threads,
            "max_onnx_opset": self.max_onnx_opset, "measurable": self.measurable, "profiles": profiles,
            "source_file": str(self.path),
        }


# --- finding and loading ---------------------------------------------------------------------------


def search_dirs(targets_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for ``<name>.toml``, highest priority first."""
    dirs = []
    if targets_dir is not None:
        user = Path(targets_dir).expanduser()
        if not user.is_dir():
            raise DeployError(f"targets folder {user} does not exist.")
        dirs.append(user)
    own = project_root() / "targets"
    cwd = Path.cwd() / "targets"
    if cwd.is_dir() and cwd.resolve() != own.resolve():
        dirs.append(cwd)
    dirs.append(own)
    return dirs


def target_files(targets_dir: str | Path | None = None) -> dict[str, Path]:
    """name -> TOML file; the first folder of :func:`search_dirs` holding a name wins."""
    found: dict[str, Path] = {}
    for folder in search_dirs(targets_dir):
        for file in sorted(folder.glob("*.toml")):
            found.setdefault(file.stem, file)
    return dict(sorted(found.items()))


def known_target_names(targets_dir: str | Path | None = None) -> list[str]:
    return list(target_files(targets_dir))


def load_target(name: str, targets_dir: str | Path | None = None) -> Target:
    """The target called ``name``; unknown names raise TargetNotFound with the closest known name."""
    files = target_files(targets_dir)
    if name not in files:
        known = list(files)
        close = difflib.get_close_matches(str(name).lower(), known, n=1)
        raise TargetNotFound("target", name, known, close[0] if close else None)
    return parse_target_file(files[name])


def list_targets(targets_dir: str | Path | None = None) -> list[Target]:
    return [parse_target_file(path) for path in target_files(targets_dir).values()]


def describe_targets(targets_dir: str | Path | None = None) -> list[dict]:
    """``deploy targets``: one :meth:`Target.summary` per known target, sorted by name."""
    return [target.summary() for target in list_targets(targets_dir)]


def parse_target_file(path: str | Path) -> Target:
    """Read and validate one TOML file (raises TargetInvalid naming the file and key)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetInvalid(f"{path}: cannot read target file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetInvalid(f"{path}: not valid TOML: {exc}") from None
    return _validate(raw, path)


# --- validation ------------------------------------------------------------------------------------


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validate(raw: dict, path: Path) -> Target:
    """The schema's checks (:class:`~pipeline.predict.schemas.TargetModel`), then "auto" resolved on this machine."""
    model = validate(TargetModel, raw, str(path), TargetInvalid, noun="a table", context={"file_stem": path.stem})
    detected = []
    memory_mb, threads = model.memory_mb, model.threads
    if memory_mb == "auto":
        memory_mb = total_memory_mb()
        detected.append("memory_mb")
    if threads == "auto":
        threads = os.cpu_count() or 1
        detected.append("threads")
    hardware = {name: figure.model_dump() for name, figure in model.hardware.items()}
    return Target(model.name, model.description, model.kind, model.runtime, tuple(model.precisions), memory_mb,
                  threads, model.max_onnx_opset, model.trt_workspace_mb, model.measurable, hardware,
                  model.profile.model_dump(exclude_unset=True), path.resolve(), tuple(detected))


# --- the host ----------------------------------------------------------------------------------------


def total_memory_mb() -> int:
    """Physical RAM in MiB, capped by a cgroup memory limit (containers report the host's RAM otherwise)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 0
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # missing, or "max"
            continue
        total = min(total, limit) if total else limit
    if total <= 0:
        raise DeployError("cannot detect this machine's memory; set memory_mb in a targets/host.toml of your own.")
    return total // 2**20


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import cpuinfo  # py-cpuinfo: slow (it may start a subprocess), so only when /proc says nothing

        brand = cpuinfo.get_cpu_info().get("brand_raw", "")
        if brand:
            return brand
    except Exception:  # noqa: BLE001 - any failure just means "use the next fallback"
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


@functools.lru_cache(maxsize=1)
def _host_facts() -> tuple[str, int, str]:
    return _cpu_model(), os.cpu_count() or 1, platform.machine() or "unknown"


def host_machine() -> dict:
    """What identifies this machine for its profiles: CPU model, logical cores, architecture, MLAS channel block."""
    cpu_model, cores, machine = _host_facts()
    return {"cpu_model": cpu_model, "cores": cores, "machine": machine, "nchwc_block": nchwc_block(machine)}


def nchwc_block(machine: str) -> int:
    """The channel block ONNX Runtime's CPU convolutions use here (MLAS: 16 with AVX-512F, 8 with AVX; else none).

    The blocked (NCHWc) layout exists only in MLAS's x86-64 kernels; 1 means ORT keeps every
    convolution in the plain layout (pipeline.cost.features).
    """
    if machine.lower() not in ("x86_64", "amd64"):
        return 1
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8  # any x86-64 ORT runs on has AVX; without /proc we cannot tell AVX-512
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return 16 if "avx512f" in flags else 8 if "avx" in flags else 1


def host_machine_key() -> str:
    """Short, readable and stable: ``<cpu slug>-<cores>c-<hash>``, e.g. ``amd-epyc-7763-...-16c-1a2b3c4d``."""
    info = host_machine()
    slug = re.sub(r"[^a-z0-9]+", "-", info["cpu_model"].lower()).strip("-")[:40].strip("-") or "cpu"
    digest = hashlib.sha256(f"{info['cpu_model']}|{info['cores']}".encode()).hexdigest()[:8]
    return f"{slug}-{info['cores']}c-{digest}"


def device_profile_path(target: str, runtime: str, precision: str) -> Path:
    """``edgefit_home()/profiles/<target>/<runtime>-<precision>.json``: where a device-measured profile lands."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'.")
    return edgefit_home() / "profiles" / target / f"{runtime}-{precision}.json"


def host_profile_path(precision: str, threads: int, runtime: str = "onnxruntime") -> Path:
    """``edgefit_home()/profiles/host/<machine-key>/<runtime>-<precision>-t<threads>.json``."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'.")
    if not _positive_int(threads):
        raise UsageError(f"threads must be a positive integer, not {threads!r}.")
    return edgefit_home() / "profiles" / "host" / host_machine_key() / f"{runtime}-{precision}-t{threads}.json"


__all__ = ["KINDS", "NAME_RE", "RUNTIMES", "STATUSES", "Target", "describe_targets", "device_profile_path",
           "host_machine", "host_machine_key",
           "host_profile_path", "known_target_names", "list_targets", "load_target", "parse_target_file",
           "search_dirs", "target_files", "total_memory_mb"]
