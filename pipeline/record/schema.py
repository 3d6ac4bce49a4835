"""The run record, ``RUN_DIR/fit.json``, as typed models: the contract between ``deploy fit`` and its readers.

``deploy fit`` writes the record; ``deploy build`` adds ``engine`` and artifacts;
``deploy verify --trtexec-times`` replaces ``measured`` and ``verified.latency``; the
report, users' scripts and the tests read it. Every one of them goes through
:class:`RunRecord`, so a record that does not follow this module is refused when it is
written *and* when it is read (:mod:`pipeline.record.rundir`), naming the key.

What is strict and what is not:

* The contract keys (what was chosen, the budget, predicted/measured/verified, artifacts,
  frontier and measurement rows, search) are typed models with ``extra="forbid"`` and
  strict types: a misspelt key, a string where a number belongs or a missing key fails.
* Free-form diagnostics whose shape belongs to another module (``parity``, ``int8``,
  ``training``, ``engine``) are ``dict[str, Any]``: typed here they would freeze that
  module's internals into the contract.
* Keys a writer adds later (``engine``, ``search.seconds_total``, the optional artifacts,
  the ``measured_ms``/``measured_fits`` of measured frontier rows) are optional; the JSON
  written keeps exactly the keys that were set (``exclude_unset``), so the file reads as
  it did before the schema existed, plus ``schema_version``.

``schema_version`` (an integer, now 1) versions the *shape*. Bump it when a change would
make an older reader misread, or refuse, a newer record: a key removed or renamed, a
type narrowed or changed, a key made required, a meaning changed. Adding an optional key
does not bump it. A record without ``schema_version`` was written before the schema
existed and has version 1's shape. After any change to these models, regenerate the
checked-in JSON Schema with ``python -m pipeline.record.schema`` (``tests/test_record.py``
fails while ``fit.schema.json`` differs from the models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, model_validator

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("fit.schema.json")

Precision = Literal["fp32", "fp16", "int8"]
Percentile = Literal[50, 90, 99]


class _Strict(BaseModel):
    """A contract sub-record: unknown keys and loose types are errors, not silent fixes."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class ScaleRecord(_Strict):
    """:class:`pipeline.core.scaling.Scale` as written (``Scale.to_dict``)."""

    depth: float
    width: float
    resolution: int
    dropout: float
    phi: float | None = None
    phi_depth: float | None = None
    phi_width: float | None = None
    phi_resolution: float | None = None
    preset: str | None = None


class ScalingRecord(_Strict):
    """The compound-scaling constants the architectures were made with (``--alpha/--beta/--gamma``, ``--scaling``).

    ``kind``: ``reference`` (shipped: efficientnet, dollar-fast), ``user`` (saved in the user config),
    ``run`` (taken from a grid or fit run), ``flags`` (given as numbers). ``base_resolution`` is φ=0's.
    """

    name: str | None
    alpha: float
    beta: float
    gamma: float
    kind: str
    source: str
    base_resolution: int


class BudgetRecord(_Strict):
    """What must fit; ``None`` means unconstrained. Memory in MiB, the noise margin in percent."""

    latency_ms: float | None
    memory_mb: float | None
    percentile: Percentile
    noise_margin_pct: float


class Predicted(_Strict):
    """The predictor's estimate for the chosen architecture, with where it came from."""

    latency_ms: float
    latency_ms_at_percentile: float
    memory_mb: float | None
    provenance: str
    heldout_error_pct: float | None
    profile: str | None
    method: str | None
    note: str | None
    # which held-out error applies: "same family", "leave-one-family-out" or "unknown" (older files lack it)
    error_case: str | None = None


class HostMeasured(_Strict):
    """The shipped model timed here by ``deploy fit`` (ONNX Runtime on a measurable target)."""

    latency_ms: float
    latency_ms_p90: float
    latency_ms_p99: float
    memory_mb: float | None
    device: str
    threads: int
    method: str
    latency_ms_worst_round: float | None
    when: str
    repeats: int


class Provenance(_Strict):
    source: str
    device: str
    file: str
    model: str | None = None  # how the timings are known to be of this run's model (trtexec log, sidecar, sha256)


class TrtexecMeasured(_Strict):
    """The engine timed on the device by trtexec, recorded by ``deploy verify --trtexec-times``."""

    latency_ms: float
    latency_ms_p90: float
    latency_ms_p99: float
    memory_mb: float | None
    device: str
    source: str
    file: str
    field: str
    statistic: str
    repeats: int
    warmup_dropped: int
    gpu_compute_ms: dict[str, float] | None
    tensorrt_version: str | None
    log: str | None
    precision: Precision
    provenance: Provenance
    when: str
    recorded: str


class AgentMeasured(_Strict):
    """The shipped model timed on a remote device by its measurement agent (``fit``/``verify --agent``)."""

    latency_ms: float
    latency_ms_p90: float
    latency_ms_p99: float
    memory_mb: float | None
    device: str
    threads: int | None  # None: a runtime without a CPU thread count (TensorRT)
    method: str
    latency_ms_worst_round: float | None
    when: str
    repeats: int
    agent: str  # the agent's URL
    model_sha256: str  # the bytes the agent measured
    facts: dict[str, Any]  # what the agent said the device is (GET /v1/info)


def _measured_kind(value: Any) -> str:
    """Which measurement a ``measured`` object is: trtexec's carry a ``source``, an agent's its ``agent``."""
    if isinstance(value, dict):
        return "trtexec" if "source" in value else "agent" if "agent" in value else "host"
    return ("trtexec" if isinstance(value, TrtexecMeasured) else "agent" if isinstance(value, AgentMeasured)
            else "host")


Measured = Annotated[Annotated[HostMeasured, Tag("host")] | Annotated[TrtexecMeasured, Tag("trtexec")]
                     | Annotated[AgentMeasured, Tag("agent")], Discriminator(_measured_kind)]
MEASURED_TAGS = ("host", "trtexec", "agent")


class Verified(_Strict):
    """The verdicts (:mod:`pipeline.record.verdict`): ``None`` = not checked (nothing measured, no budget)."""

    latency: bool | None
    memory: bool | None
    accuracy: bool | None


class Accuracy(_Strict):
    """torch vs ONNX Runtime top-1 on the validation split (``deploy fit --data --train-epochs``)."""

    torch: float
    onnx: float
    agreement: float
    dataset: str
    samples: int
    max_abs_logit_diff: float
    passed: bool
    failures: list[str]
    min_accuracy: float | None


class PrecisionRow(_Strict):
    """One row of the precision table: latency with its provenance, size, accuracy."""

    precision: Precision
    latency_ms: float | None
    latency_source: str | None
    size_mb: float | None
    size_source: str | None
    accuracy: float | None


class Artifacts(_Strict):
    """Files of the run, relative to the run directory; ``onnx_opset<N>`` names a re-export for a target."""

    model_config = ConfigDict(extra="allow", strict=True, validate_assignment=True, json_schema_extra={
        "patternProperties": {"^onnx_opset[0-9]+$": {"type": "string"}}, "additionalProperties": False})
    __pydantic_extra__: dict[str, str]

    onnx: str
    report: str
    plot: str
    onnx_fp32: str | None = None
    checkpoint: str | None = None
    engine: str | None = None
    build_script: str | None = None
    onnx_int8_tensorrt: str | None = None
    calibration_cache: str | None = None

    @model_validator(mode="after")
    def _only_opset_extras(self) -> Artifacts:
        import re

        for key in self.__pydantic_extra__ or {}:
            if not re.fullmatch(r"onnx_opset[0-9]+", key):
                raise ValueError(f"unknown artifact '{key}'")
        return self


class FrontierRow(_Strict):
    """A distinct architecture the search evaluated (``Candidate``), plus its measurement when it has one."""

    index: int
    phi: float
    phi_max: float
    resolution: int
    depth_multiplier: float
    width_multiplier: float
    params: int
    macs: int
    latency_ms: float
    memory_mb: float
    fits: bool
    reason: str | None
    measured_ms: float | None = None
    measured_fits: bool | None = None


class MeasurementRow(_Strict):
    """One architecture timed by the closed loop (``Measurement``); its ONNX file is not kept."""

    index: int
    phi: float
    resolution: int
    predicted_ms: float
    latency_ms: float
    latency_ms_p90: float
    latency_ms_p99: float
    memory_mb: float | None
    repeats: int
    threads: int
    fits: bool
    error_pct: float
    onnx: str | None
    latency_ms_worst_round: float | None = None
    reference_ms: float | None = None  # the reference model, timed in the same rounds (pipeline.measure.reference)
    dims: list[float] | None = None  # φ_d, φ_w, φ_r of a per-dimension candidate (its ``phi`` is the compound pick's)


class PerDimensionPoint(_Strict):
    """One end of the per-dimension fill: its φ per dimension, size, latency (measured or predicted) and utilisation."""

    phi_depth: float
    phi_width: float
    phi_resolution: float
    resolution: int
    depth_multiplier: float
    width_multiplier: float
    latency_ms: float
    memory_mb: float | None
    utilisation: float | None  # latency / latency budget (memory / memory budget without one)


class PerDimensionStep(_Strict):
    """A rung of one dimension's ladder that was measured, or the rung each ladder chose."""

    dimension: Literal["resolution", "width"]
    phi: float
    resolution: int
    width_multiplier: float
    predicted_ms: float
    measured_ms: float | None
    fits: bool | None
    chosen: bool


class PerDimension(_Strict):
    """``deploy fit --search per-dimension``: from the compound pick, resolution then width raised into the gap."""

    basis: Literal["measured", "predicted"]
    order: list[str]
    compound: PerDimensionPoint
    chosen: PerDimensionPoint
    utilisation_gained_pp: float | None
    reason_next_rejected: str | None
    steps: list[PerDimensionStep]


class Search(_Strict):
    """How the architecture was chosen."""

    architectures: int
    margin_pct: float
    memory_margin_pct: float | None = None  # memory's own held-out error (schema 1 files may lack it)
    predictor_choice_phi: float
    reason_next_rejected: str | None
    seconds: float
    seconds_total: float | None = None  # set once the whole run is done
    # the whole search step (fitting the predictor, enumerating architectures, searching): what `fit` logs
    step_seconds: float | None = None
    mode: Literal["compound", "per-dimension"] | None = None  # --search (files before it: compound)
    per_dimension: PerDimension | None = None


class LoadCheckRecord(_Strict):
    """A shipped file that contradicted its earlier measurement, timed again next to the reference model
    (:class:`pipeline.measure.loop.LoadCheck`): ``verdict`` "load" (the machine) or "slower" (the model)."""

    percentile: int
    earlier_ms: float
    contradicting_ms: float
    reference_baseline_ms: float
    reference_ms: float
    model_ms: float
    drift_pct: float
    corrected_ms: float
    limit_ms: float
    rounds: int
    verdict: Literal["load", "slower"]
    detail: str


class Noise(_Strict):
    """The noise seen while measuring: the reference model's timing next to every measurement, and its drift."""

    reference: str
    reference_ms: dict[str, float | None]  # architecture index -> reference p50 next to its measurement
    shipped_reference_ms: float | None
    drift_pct: float  # slowest over fastest reference timing, minus 1: how much the machine's load moved
    check: LoadCheckRecord | None = None


class FamilyPick(_Strict):
    """One family's largest architecture predicted to fit (``--family auto``) and its expected top-1."""

    family: str
    fits: bool
    phi: float | None = None
    resolution: int | None = None
    params: int | None = None
    macs: int | None = None
    predicted_latency_ms: float | None = None
    predicted_memory_mb: float | None = None
    margin_pct: float | None = None
    expected_top1: float | None = None  # percent, ImageNet, from the family's published line
    expected_how: str | None = None  # published | interpolated | extrapolated
    expected_from: list[str] = []
    reason: str | None = None


class FamilyChoice(_Strict):
    """``--family auto``: each family's pick, the one chosen, and the rule that chose it."""

    rule: str
    chosen: str
    precision: Precision
    families: list[FamilyPick]


class Host(_Strict):
    python: str
    machine: str


class RunRecord(_Strict):
    """``RUN_DIR/fit.json``. Field order is the order of the keys in the file."""

    schema_version: Literal[1] = SCHEMA_VERSION
    target: str
    family: str
    precision: Precision
    phi: float
    phi_max: float
    depth_multiplier: float
    width_multiplier: float
    resolution: int
    params: int
    macs: int
    scale: ScaleRecord
    scaling: ScalingRecord | None = None  # files before --alpha/--beta/--gamma on fit: EfficientNet's constants
    num_classes: int
    budget: BudgetRecord
    predicted: Predicted
    measured: Measured | None
    verified: Verified
    accuracy: Accuracy | None
    int8: dict[str, Any] | None
    precisions: list[PrecisionRow]
    training: dict[str, Any] | None
    artifacts: Artifacts
    frontier: list[FrontierRow]
    measurements: list[MeasurementRow]
    search: Search
    parity: dict[str, Any]
    weights: str
    host: Host
    engine: dict[str, Any] | None = None  # added by `deploy build`
    noise: Noise | None = None  # measured runs on a device that times the reference model
    family_choice: FamilyChoice | None = None  # --family auto

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object written to fit.json: the keys that were set, ``schema_version`` first."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data.pop("schema_version", None)
        return {"schema_version": SCHEMA_VERSION, **data}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of fit.json, generated from :class:`RunRecord`."""
    schema = _normalized(RunRecord.model_json_schema(mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "edgefit run record (RUN_DIR/fit.json)",
            "description": f"schema_version {SCHEMA_VERSION}; generated from pipeline/record/schema.py by "
                           "`python -m pipeline.record.schema`. Do not edit by hand."}


def _normalized(node: Any) -> Any:
    """Drop what pydantic versions disagree on but means nothing: ``additionalProperties: true``, ``enum`` = ``const``.

    So the checked-in file is the same whichever pydantic >= 2.7 generates it.
    """
    if isinstance(node, list):
        return [_normalized(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalized(v) for k, v in node.items() if not (k == "additionalProperties" and v is True)}
    if "const" in out and out.get("enum") == [out["const"]]:
        del out["enum"]
    return out


def schema_text() -> str:
    """The checked-in file's exact text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: str | Path = SCHEMA_FILE) -> Path:
    """Regenerate the checked-in JSON Schema (run after changing the models)."""
    from pipeline.core.io import atomic_write

    return atomic_write(path, schema_text())


if __name__ == "__main__":
    print(write_schema())


__all__ = ["SCHEMA_FILE", "SCHEMA_VERSION", "Accuracy", "AgentMeasured", "Artifacts", "BudgetRecord", "FamilyChoice",
           "FamilyPick", "FrontierRow", "HostMeasured", "LoadCheckRecord", "MeasurementRow", "Noise", "PerDimension",
           "PerDimensionPoint", "PerDimensionStep", "PrecisionRow", "Predicted", "RunRecord", "ScalingRecord", "Search",
           "TrtexecMeasured", "Verified", "json_schema", "schema_text", "write_schema"]
