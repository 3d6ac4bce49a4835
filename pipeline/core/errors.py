"""Library errors.

Every failure a user can cause is a :class:`DeployError` with a message that says
what to do next. The CLI maps ``exit_code`` to the process exit status, so the
exit-code contract (docs/architecture.md, "Exit codes") lives here, next to the errors that produce it.
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INFEASIBLE = 3
EXIT_VERIFICATION = 4


class DeployError(Exception):
    """Base class: an actionable, one-line error (exit code 1)."""

    exit_code = EXIT_ERROR


class UsageError(DeployError):
    """Input that is well-formed for the shell but meaningless for edgefit (exit 2)."""

    exit_code = EXIT_USAGE


class UnknownName(DeployError):
    """A name (family, preset, target) that is not known; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str], suggestion: str | None = None):
        hint = f" Did you mean '{suggestion}'?" if suggestion else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Known: {', '.join(sorted(known))}.")
        self.kind, self.name, self.known = kind, name, known


class FamilyNotFound(UnknownName):
    pass


class PresetNotFound(UnknownName):
    pass


class TargetNotFound(UnknownName):
    pass


class InvalidScale(DeployError):
    """A scaling coefficient that cannot describe a model (NaN, absurd magnitude)."""


class TargetInvalid(DeployError):
    """A target TOML file that does not follow the schema."""


class ProfileInvalid(DeployError):
    """A measured/published profile that is corrupt or does not follow the schema."""


class ProfileMissing(DeployError):
    """No usable profile for a target; the message says how to create one."""


class ProfileMismatch(DeployError):
    """A host profile measured on a different machine; recalibrate."""


class ModelInvalid(DeployError):
    """An ONNX or weights file that cannot be read or does not match."""


class ExportError(DeployError):
    """torch -> ONNX export or its parity check failed."""


class BackendUnavailable(DeployError):
    """A runtime (TensorRT, CUDA EP, ...) that is not installed or has no device."""


class BudgetInfeasible(DeployError):
    """No model in the search range fits the budget (exit 3)."""

    exit_code = EXIT_INFEASIBLE


class VerificationFailed(DeployError):
    """A measured latency/memory or accuracy check failed (exit 4)."""

    exit_code = EXIT_VERIFICATION


class DataNotFound(DeployError):
    """A dataset that does not exist (path or ``builtin:`` name)."""


class DataInvalid(DeployError):
    """A dataset or preprocessing that cannot be used: corrupt image, empty class, x/y mismatch, one class."""


class EngineBuildFailed(DeployError):
    """TensorRT could not parse the ONNX model or build an engine from it; the message names the nodes."""


class EngineMismatch(DeployError):
    """A serialized engine built for another GPU or TensorRT version; rebuild it on the device."""


class TimesInvalid(DeployError):
    """A timings file (e.g. trtexec --exportTimes) that is missing, truncated or not in the expected format."""


class RecordInvalid(DeployError):
    """A run record (``RUN_DIR/fit.json``) that is not JSON or does not follow its schema; names the key."""


class AgentUnreachable(BackendUnavailable):
    """A measurement agent that cannot be reached or dropped the connection: a farm drops it and re-sends its job."""


class ConversionFailed(DeployError):
    """ONNX Runtime could not convert a model for a mobile runtime (an operator without a kernel); names it."""


class PackageCorrupt(DeployError):
    """A package (zip or folder from ``deploy package``) that is unreadable, incomplete or altered; names the file."""


class PackageMismatch(VerificationFailed):
    """A package whose model disagrees with its manifest or with the run it was made from (exit 4); names the file."""
