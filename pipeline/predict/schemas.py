"""The profile and target file formats, declared once as pydantic models.

The models are the single statement of both formats: :mod:`pipeline.predict.profile` and
:mod:`pipeline.predict.targets` validate with them, and ``docs/schema/*.schema.json`` are
generated from them (``python -m pipeline.predict.schemas`` rewrites those files; a test
fails when the checked-in copies drift from the models).

Keys are closed (``extra="forbid"``) wherever the set of keys is known, so a misspelt key
is an error that names it rather than a silently ignored line. Two places stay open on
purpose: a profile record may carry extra per-record facts (a calibration run adds
``params``, ``macs``, ``repeats``, ...) and a latency object extra non-negative statistics;
a hardware figure's value keys are free (``value``, ``fp32``, ``super``, ...) but each must
be a positive number or a non-empty string, next to a required ``source``.

Validation is strict (no coercion): ``224.0`` is not a resolution and ``"1"`` is not a
schema version. :func:`validate` turns pydantic's report into the caller's
:class:`~pipeline.core.errors.DeployError` subclass, one line naming the file and the
dotted key path of the first problem. Importing this module never imports torch.
"""

import json
import math
import re
import sys
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.core.errors import DeployError
from pipeline.core.scaling import PRESETS

SCHEMA_VERSION = 1
PROVENANCES = ("measured", "published", "roofline")
PRECISIONS = ("fp32", "fp16", "int8")
RECORD_KINDS = ("model", "op")
# Same names as pipeline.models.FAMILIES (a test keeps them equal); repeated here so that
# reading a profile, e.g. for `deploy targets`, does not pay for importing torch.
FAMILIES = ("efficientnet", "efficientnet-lite", "mobilenetv2", "resnet18", "resnet34", "resnet50")
PERCENTILES = ("p50", "p90", "p99")
KINDS = ("gpu", "cpu")
RUNTIMES = ("tensorrt", "onnxruntime")
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
NAME_RE = re.compile(NAME_PATTERN)

SCHEMA_DIR = Path("docs") / "schema"
RULE = "edgefit_rule"  # the error type of the cross-field rules below


def rule_error(message: str, key: str = "") -> PydanticCustomError:
    """A rule violation (``message`` fully formatted); ``key`` (dotted) is appended to the reported path."""
    return PydanticCustomError(RULE, message, {"key": key})


# --- field types -----------------------------------------------------------------------------------

NonEmptyStr = Annotated[str, Field(min_length=1, pattern=r"\S")]
PositiveInt = Annotated[int, Field(gt=0)]
FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeNumber = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Milliseconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]


def _figure_value(value: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (number and math.isfinite(value) and value > 0) or (isinstance(value, str) and value.strip()):
        return value
    raise rule_error(f"must be a positive number or a non-empty string, got {_show(value)}")


FigureValue = Annotated[Any, PlainValidator(_figure_value), WithJsonSchema({"anyOf": [
    {"type": "number", "exclusiveMinimum": 0}, {"type": "string", "minLength": 1, "pattern": r"\S"}]})]


def _int_or_auto(value: Any) -> int | str:
    if value == "auto" and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise rule_error(f'must be a positive integer or "auto", got {_show(value)}')


IntOrAuto = Annotated[Any, PlainValidator(_int_or_auto), WithJsonSchema({"anyOf": [
    {"type": "integer", "exclusiveMinimum": 0}, {"const": "auto"}]})]


def _schema_version(value: int) -> int:
    if value != SCHEMA_VERSION:
        raise rule_error(f"is {value!r}; this edgefit reads schema version {SCHEMA_VERSION}")
    return value


def _iso_timestamp(value: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise rule_error(f"must be an ISO 8601 time stamp, got {_show(value)}") from None
    return value


class _Closed(BaseModel):
    """Only the declared keys; no coercion between types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    """Declared keys are checked; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)


class Figure(_Open):
    """A hardware figure: one or more values and the ``source`` they are quoted (or derived) from."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 2})

    __pydantic_extra__: dict[str, FigureValue] = Field(init=False)
    source: NonEmptyStr = Field(description="where the values come from; 'derived: ...' says how")

    @model_validator(mode="after")
    def _has_a_value(self) -> "Figure":
        if not self.model_extra:
            raise rule_error("has a source but no value")
        return self


Hardware = dict[str, Figure]


# --- profiles --------------------------------------------------------------------------------------


class Latency(_Open):
    """Milliseconds per call; percentiles are positive and do not decrease, other statistics are >= 0."""

    __pydantic_extra__: dict[str, NonNegativeNumber] = Field(init=False)
    p50: Milliseconds
    p90: Milliseconds = Field(default=None, description="absent when not stated")
    p99: Milliseconds = Field(default=None, description="absent when not stated")

    @model_validator(mode="after")
    def _percentiles_do_not_decrease(self) -> "Latency":
        given = [getattr(self, p) for p in PERCENTILES if p in self.model_fields_set]
        if given != sorted(given):
            got = self.model_dump(exclude_unset=True)
            raise rule_error(f"percentiles must not decrease (p50 <= p90 <= p99), got {got}")
        return self


class _Record(_Open):
    FILLED: ClassVar[tuple[str, ...]] = ("peak_memory_mb",)

    latency_ms: Latency
    peak_memory_mb: NonNegativeNumber | None = None
    source: NonEmptyStr = Field(default=None, description="where the number comes from (required when published)")
    conditions: NonEmptyStr = Field(default=None, description="what exactly was timed")
    runtime: NonEmptyStr = Field(default=None, description="the runtime that really ran, if not the profile's")
    precision: Precision = Field(default=None, description="must equal the profile's precision")

    def as_dict(self) -> dict:
        """The record as given, plus the defaults readers rely on (``peak_memory_mb``, scale keys, ...)."""
        data = self.model_dump(exclude_unset=True)
        for key in self.FILLED:
            data.setdefault(key, getattr(self, key))
        return data


class ModelRecord(_Record):
    """One timed model: which family and scale, at which resolution."""

    FILLED: ClassVar[tuple[str, ...]] = ("peak_memory_mb", "phi", "phi_depth", "phi_width", "phi_resolution",
                                         "preset", "num_classes")

    kind: Literal["model"]
    family: Literal[(*FAMILIES, "probe")]  # type: ignore[valid-type]
    probe: NonEmptyStr = Field(default=None, description="family 'probe': which calibration probe "
                               "(pipeline.models.probes)")
    ops: list[list[Any]] = Field(default=None, description="family 'probe': the probe's op list, as costed from "
                                 "its ONNX export (pipeline.cost.ops.Op.to_record)")
    phi: FiniteNumber | None = None
    phi_depth: FiniteNumber | None = None
    phi_width: FiniteNumber | None = None
    phi_resolution: FiniteNumber | None = None
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    resolution: PositiveInt
    num_classes: PositiveInt = 1000

    @model_validator(mode="after")
    def _says_which_model(self) -> "ModelRecord":
        if self.family == "probe":
            if self.probe is None or not self.ops:
                raise rule_error("is 'probe', so 'probe' (its name) and 'ops' (its op list) are required", key="family")
            return self
        per_dim = all(v is not None for v in (self.phi_depth, self.phi_width, self.phi_resolution))
        if self.preset is None and self.phi is None and not per_dim:
            raise rule_error("is null, and neither 'preset' nor all of phi_depth/phi_width/phi_resolution "
                             "say which model was timed", key="phi")
        return self


class OpRecord(_Record):
    """One timed operator (``op`` describes it)."""

    kind: Literal["op"]
    op: dict[str, Any] = Field(default=None, description="the operator's kind and shape")


Record = Annotated[ModelRecord | OpRecord, Discriminator("kind")]
RECORD_ADAPTER: TypeAdapter = TypeAdapter(Record)


class Runtime(_Closed):
    """The runtime the profile is for; ``version`` is null when the source does not state it."""

    name: NonEmptyStr
    version: NonEmptyStr | None
    provider: NonEmptyStr | None = None
    notes: NonEmptyStr | None = None


class Roofline(_Closed):
    """Datasheet figures and the reference target whose records fit the efficiencies."""

    reference_target: NonEmptyStr
    reference_precision: Precision
    hardware: Hardware
    reference_hardware: Hardware = Field(default=None, description="the reference target's figures, if not its own")
    note: NonEmptyStr


def record_rule(record: _Record, provenance: str, precision: str) -> tuple[str, str] | None:
    """(key, problem) for a rule a record breaks because of its profile: ``source`` when published, same precision."""
    if provenance == "published" and "source" not in record.model_fields_set:
        return "source", "is missing: every published record must cite where its number comes from"
    if record.precision is not None and record.precision != precision:
        return "precision", f"is {record.precision!r} in a {precision} profile"
    return None


class ProfileModel(_Closed):
    """A calibration profile: latencies for one (target, runtime, precision) and where they came from."""

    schema_version: Annotated[int, AfterValidator(_schema_version), WithJsonSchema({"const": SCHEMA_VERSION})]
    target: NonEmptyStr
    runtime: Runtime
    precision: Precision
    provenance: Literal[PROVENANCES]  # type: ignore[valid-type]
    device: dict[str, Any]
    created: Annotated[NonEmptyStr, AfterValidator(_iso_timestamp)]
    method: dict[str, Any]
    records: list[Record]
    roofline: Roofline | None = Field(default=None, description="only, and required, when provenance is roofline")
    notes: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _provenance_rules(self) -> "ProfileModel":
        for i, record in enumerate(self.records):
            broken = record_rule(record, self.provenance, self.precision)
            if broken is not None:
                raise rule_error(broken[1], key=f"records[{i}].{broken[0]}")
        if self.provenance == "roofline":
            if self.roofline is None:
                raise rule_error("is missing: a roofline profile names its figures and reference", key="roofline")
        elif self.roofline is not None:
            raise rule_error(f"is only allowed when provenance is 'roofline', not {self.provenance!r}",
                             key="roofline")
        elif not self.records:
            raise rule_error(f"is empty; a {self.provenance} profile needs at least one record", key="records")
        return self


# --- targets ---------------------------------------------------------------------------------------


class ProfileRef(_Closed):
    """Where the default precision's profile is, when not at the conventional path."""

    path: NonEmptyStr = Field(default=None, description="absolute, or relative to the targets folder's parent")


class TargetModel(_Closed):
    """A deployment target (``targets/<name>.toml``)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase-with-dashes, the file's name")]
    description: NonEmptyStr
    kind: Literal[KINDS]  # type: ignore[valid-type]
    runtime: Literal[RUNTIMES]  # type: ignore[valid-type]
    precisions: Annotated[list[Precision], Field(min_length=1, description="distinct; the first is the default")]
    memory_mb: IntOrAuto = Field(description='"auto" (detected) only on a measurable target')
    max_onnx_opset: PositiveInt
    measurable: bool = Field(description="true only for the machine running edgefit")
    threads: IntOrAuto = Field(default=None, description='required for kind = "cpu"; "auto" only if measurable')
    trt_workspace_mb: PositiveInt = Field(default=None, description='required for runtime = "tensorrt"')
    hardware: Hardware = Field(default_factory=dict)
    profile: ProfileRef = Field(default_factory=ProfileRef)

    @field_validator("name")
    @classmethod
    def _matches_file_name(cls, name: str, info: ValidationInfo) -> str:
        stem = (info.context or {}).get("file_stem")
        if stem is not None and name != stem:
            raise rule_error(f"must match the file name '{stem}', got {name!r}")
        return name

    @field_validator("precisions")
    @classmethod
    def _distinct(cls, precisions: list[str]) -> list[str]:
        if len(set(precisions)) != len(precisions):
            raise rule_error(f"must not repeat a precision, got {precisions}")
        return precisions

    @model_validator(mode="after")
    def _cross_key_rules(self) -> "TargetModel":
        if self.runtime == "tensorrt" and self.kind != "gpu":
            raise rule_error('tensorrt needs kind = "gpu"', key="runtime")
        for key in ("memory_mb", "threads"):
            if getattr(self, key) == "auto" and not self.measurable:
                raise rule_error('may be "auto" only on a measurable target; give a positive integer', key=key)
        if self.threads is None and self.kind == "cpu":
            raise rule_error('is missing (required for kind = "cpu")', key="threads")
        if self.runtime == "tensorrt" and self.trt_workspace_mb is None:
            raise rule_error('is missing (required for runtime = "tensorrt")', key="trt_workspace_mb")
        return self


# --- one line per failure ----------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, where: str, error: type[DeployError], noun: str = "a JSON object",
             context: dict | None = None) -> M:
    """``model`` validated from ``data``, or ``error`` with one line: ``where: 'dotted.path' problem``."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(error_line(exc, where, model, noun)) from None


def error_line(exc: ValidationError, where: str, root: Any, noun: str = "a JSON object") -> str:
    """The first error as one readable line, and how many other keys are wrong."""
    described = [_describe(e, root, noun) for e in exc.errors(include_url=False)]
    others = len({path for path, _ in described} - {described[0][0]})
    path, problem = described[0]
    more = f" (and {others} more)" if others else ""
    return f"{where}: '{path}' {problem}{more}."


def _describe(err: Any, root: Any, noun: str) -> tuple[str, str]:
    kind, ctx = err["type"], err.get("ctx") or {}
    path, owner = _walk(root, err["loc"])
    if kind == RULE and ctx.get("key"):
        path = _join(path, ctx["key"])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path = _join(path, ctx["discriminator"].strip("'"))
        if kind == "union_tag_not_found":
            return path, "is missing"
        return path, f"must be one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    path = path or "(top level)"
    known = list(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else []
    if kind == "missing":
        required = [k for k in known if owner.model_fields[k].is_required()]
        return path, "is missing" + (f" (required: {', '.join(required)})" if len(required) > 1 else "")
    if kind == "extra_forbidden":
        return path, "is not a known key" + (f" (known: {', '.join(known)})" if known else "")
    if kind == RULE:
        return path, err["msg"]
    return path, f"{_phrase(kind, err['msg'], ctx, noun)}, got {_show(err['input'])}"


def _phrase(kind: str, msg: str, ctx: dict, noun: str) -> str:
    if kind in ("string_too_short", "string_pattern_mismatch") and ctx.get("pattern", r"\S") == r"\S":
        return "must be a non-empty string"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be {noun}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item{'s' if ctx['min_length'] != 1 else ''}"
    if kind == "finite_number":
        return "must be a finite number"
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be "):]
    return "is invalid: " + msg


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return path + (key if key.startswith("[") else "." + key)


def _walk(root: Any, loc: tuple) -> tuple[str, Any]:
    """The dotted path of ``loc`` (union tags dropped) and the type holding its last key."""
    path, node, owner = "", root, None
    for item in loc:
        node = _unwrap(node)
        members = _tagged_members(node)
        if isinstance(item, str) and item in members:  # pydantic names the union member: not a key
            node = members[item]
            continue
        owner = node
        path = _join(path, f"[{item}]" if isinstance(item, int) else str(item))
        node = _child(node, item)
    return path, owner


def _unwrap(node: Any) -> Any:
    while True:
        if typing.get_origin(node) is Annotated:
            node = typing.get_args(node)[0]
        elif _is_union(node) and sum(a is not type(None) for a in typing.get_args(node)) == 1:
            node = next(a for a in typing.get_args(node) if a is not type(None))
        else:
            return node


def _is_union(node: Any) -> bool:
    return typing.get_origin(node) in (Union, getattr(types, "UnionType", Union))


def _tagged_members(node: Any) -> dict[str, type[BaseModel]]:
    if not _is_union(node):
        return {}
    members = {}
    for arg in typing.get_args(node):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields:
            for tag in typing.get_args(arg.model_fields["kind"].annotation):
                members[tag] = arg
    return members


def _child(node: Any, item: Any) -> Any:
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(item)
        return field.annotation if field is not None else None
    args = typing.get_args(node)
    if typing.get_origin(node) in (list, tuple) and args:
        return args[0]
    if typing.get_origin(node) is dict and len(args) == 2:
        return args[1]
    return None


# --- JSON Schema files -------------------------------------------------------------------------------

SCHEMAS: dict[str, type[BaseModel]] = {"profile.schema.json": ProfileModel, "target.schema.json": TargetModel}


def json_schema(model: type[BaseModel], file_name: str) -> dict:
    """The JSON Schema (draft 2020-12) of ``model``, as checked in under ``docs/schema/``."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": file_name,
            **_normalise(model.model_json_schema(mode="validation"))}


def _normalise(node: Any) -> Any:
    """Drop what says nothing, so the file reads the same whichever pydantic >= 2.9 wrote it.

    ``"default": null`` where null is not allowed only means "may be absent",
    ``"additionalProperties": true`` is JSON Schema's default (newer pydantic spells it out), and
    ``"enum": [x]`` next to ``"const": x`` repeats it (older pydantic writes both).
    """
    if isinstance(node, list):
        return [_normalise(n) for n in node]
    if not isinstance(node, dict):
        return node
    nullable = any(option.get("type") == "null" for option in node.get("anyOf", ()))
    redundant = {"additionalProperties": True, "enum": [node["const"]] if "const" in node else object()}
    if not nullable:
        redundant["default"] = None
    return {k: _normalise(v) for k, v in node.items() if not (k in redundant and redundant[k] == v)}


def render_schemas() -> dict[str, str]:
    """file name -> the text of the schema file (compare parsed: pydantic versions differ in ``0`` vs ``0.0``)."""
    return {name: json.dumps(json_schema(model, name), indent=2, ensure_ascii=False) + "\n"
            for name, model in SCHEMAS.items()}


def schema_file_is_current(path: Path, text: str) -> bool:
    """Whether the file at ``path`` holds the same schema as ``text`` (as JSON values, so ``0 == 0.0``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(text)
    except (OSError, ValueError):
        return False


def write_schemas(folder: str | Path | None = None) -> list[Path]:
    """(Re)write the schema files (default: the project's ``docs/schema``); returns the files written."""
    from pipeline.core.io import atomic_write
    from pipeline.core.paths import project_root

    folder = Path(folder) if folder is not None else project_root() / SCHEMA_DIR
    return [atomic_write(folder / name, text) for name, text in render_schemas().items()]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.predict.schemas [--check]``: regenerate, or only compare, docs/schema/."""
    from pipeline.core.paths import project_root

    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python -m pipeline.predict.schemas [--check]", file=sys.stderr)
        return 2
    folder = project_root() / SCHEMA_DIR
    if args == ["--check"]:
        stale = [name for name, text in render_schemas().items() if not schema_file_is_current(folder / name, text)]
        for name in stale:
            print(f"{folder / name} differs from the models; run: python -m pipeline.predict.schemas", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
