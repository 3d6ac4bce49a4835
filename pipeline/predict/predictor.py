"""Latency and memory predictors, fitted from a profile.

Two models, chosen by how much the profile knows:

* **per-op-kind linear** (measured profiles, ≥ ``MIN_LINEAR_RECORDS`` records):
  latency = Σ_kind (ms/GMAC · GMACs + ms/MB · MB moved) + ms/op · ops + constant, fitted
  by non-negative least squares on *relative* error. Features come from the fused op
  list (:mod:`pipeline.cost.features`), so the fit transfers across families and per-dimension
  scaling instead of interpolating in φ.
* **roofline** (published profiles with a handful of points, or a datasheet-only
  roofline): latency = k · max(2·MACs / peak FLOP/s, bytes / bandwidth), one fitted
  efficiency k.

Every fitted predictor carries its leave-one-out held-out error (p90 of |error| in %),
which the search turns into a safety margin and every output prints next to a prediction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from pipeline.core.errors import DeployError, ProfileInvalid, ProfileMismatch, ProfileMissing
from pipeline.core.scaling import CompoundScaling, Scale, family_for, preset
from pipeline.cost.features import (
    CHANNEL_BLOCKS,
    LATENCY_FEATURES,
    MEMORY_FEATURES,
    latency_features,
    memory_features,
)
from pipeline.cost.ops import BYTES_PER_ELEMENT, Cost, Op, cost_from_ops
from pipeline.cost.plan import scale_cost
from pipeline.predict.heldout import HELDOUT_QUANTILE, ErrorEstimate, Heldout, p90
from pipeline.predict.layerwise import Device, LayerwiseModel, fit_layerwise, hardware_figure
from pipeline.predict.profile import Profile, load_profile

MIN_LINEAR_RECORDS = 8
# The least error a prediction from published records may state. Published figures come from
# harnesses we did not run: ArtTRT's own 95% intervals are ±10–30% of its means, and two sources
# timing ResNet-50 on one Raspberry Pi 4 differ by 17%. A held-out error below this is luck.
PUBLISHED_ERROR_FLOOR_PCT = 10.0


@dataclass(frozen=True)
class Prediction:
    """One prediction, always with where it came from and how far to trust it."""

    latency_ms: float
    latency_ms_p90: float | None
    memory_mb: float | None
    provenance: str
    heldout_error_pct: float | None
    memory_heldout_error_pct: float | None
    profile: str
    method: str
    note: str | None = None
    latency_ms_p99: float | None = None
    error_case: str | None = None  # "same family", "leave-one-family-out" or "unknown" (pipeline.predict.heldout)

    def to_dict(self) -> dict:
        return asdict(self)

    def latency_at(self, percentile: int) -> float:
        """Predicted latency at p50 (fitted) or p90/p99 (p50 × that percentile's tail ratio in the profile).

        A profile without that tail (published figures are medians) cannot say what a p90 or p99
        will be: that is an error, never a silent p50.
        """
        value = {50: self.latency_ms, 90: self.latency_ms_p90, 99: self.latency_ms_p99}.get(percentile)
        if value is None:
            raise TailUnavailable(self.profile, percentile)
        return value


def record_scale(rec: dict) -> Scale:
    """The :class:`Scale` a profile record timed (default α, β, γ; resolution as recorded)."""
    if rec.get("preset"):
        scale = preset(rec["preset"])
    elif rec.get("phi") is not None:
        scale = CompoundScaling().compound(rec["phi"])
    else:
        scale = CompoundScaling().per_dimension(rec["phi_depth"], rec["phi_width"], rec["phi_resolution"])
    return scale.with_resolution(int(rec["resolution"])) if rec.get("resolution") else scale


@functools.lru_cache(maxsize=512)
def _cached_cost(family: str, scale: Scale, num_classes: int) -> Cost:
    return scale_cost(family, scale, num_classes)


_PROBE_COSTS: dict[tuple, Cost] = {}


def record_cost(rec: dict) -> Cost:
    """The static cost of what a record timed: a family's scale, or a probe's stored op list."""
    if rec["family"] == "probe":
        key = (rec["probe"], rec["resolution"], rec.get("macs"), len(rec["ops"]))
        if key not in _PROBE_COSTS:
            ops = [Op.from_record(row) for row in rec["ops"]]
            _PROBE_COSTS[key] = cost_from_ops(ops, int(rec["resolution"]), int(rec.get("params") or 0))
        return _PROBE_COSTS[key]
    return _cached_cost(rec["family"], record_scale(rec), int(rec.get("num_classes", 1000)))


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (rows scaled by 1/y)."""
    coef, _ = nnls(x / y[:, None], np.ones_like(y))
    return coef


def _loo_errors(x: np.ndarray, y: np.ndarray, fit) -> np.ndarray:
    """Leave-one-out |relative error| in percent for each row."""
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = fit(x[keep], y[keep])
        errs.append(abs(float(x[i] @ coef) / y[i] - 1.0) * 100)
    return np.array(errs)


@dataclass(frozen=True)
class _Linear:
    names: tuple[str, ...]
    coef: tuple[float, ...]

    def __call__(self, features: dict[str, float]) -> float:
        return float(sum(c * features[n] for n, c in zip(self.names, self.coef)))


def _latency_matrix(costs: list[Cost], block: int) -> np.ndarray:
    return np.array([[latency_features(c, block)[n] for n in LATENCY_FEATURES] for c in costs])


def _best_channel_block(costs: list[Cost], y: np.ndarray) -> int:
    """The channel block with the lowest leave-one-out p90 error (ties: the smaller block)."""
    best = None
    for block in CHANNEL_BLOCKS:
        errors = _loo_errors(_latency_matrix(costs, block), y, _nnls_relative)
        score = float(np.percentile(errors, HELDOUT_QUANTILE))
        if best is None or score < best[0] - 1e-9:
            best = (score, block)
    return best[1]


def roofline_seconds(cost: Cost, hardware: dict, precision: str) -> float:
    """max(compute time, memory time) at datasheet peaks; GMACs alone if the peak is unknown."""
    peak = hardware_figure(hardware, "peak_gflops", precision) or hardware_figure(hardware, "peak_gflops", "fp32")
    bandwidth = hardware_figure(hardware, "memory_bandwidth_gbs", precision)
    if not peak:
        return cost.macs / 1e9
    moved = cost.weight_bytes[precision] + sum(op.in_bytes + op.out_bytes for op in cost.ops) \
        * BYTES_PER_ELEMENT[precision] / 4
    compute = 2 * cost.macs / (peak * 1e9)
    return max(compute, moved / (bandwidth * 1e9)) if bandwidth else compute


# -- the models a few-record profile can choose between: records -> (cost -> ms) -------------------


def _linear_fit(block: int):
    def fit(records: Sequence[dict]):
        costs = [record_cost(r) for r in records]
        y = np.array([r["latency_ms"]["p50"] for r in records])
        model = _Linear(LATENCY_FEATURES, tuple(float(c) for c in _nnls_relative(_latency_matrix(costs, block), y)))
        return lambda cost: model(latency_features(cost, block))
    return fit


def _roofline_fit(hardware: dict, precision: str):
    def fit(records: Sequence[dict]):
        roof = np.array([roofline_seconds(record_cost(r), hardware, precision) * 1e3 for r in records])
        y = np.array([r["latency_ms"]["p50"] for r in records])
        with_overhead = len(y) >= 3
        x = np.stack([roof, np.ones_like(roof)], axis=1) if with_overhead else roof[:, None]
        coef = _nnls_relative(x, y)
        return lambda cost: float(coef @ _roof_row(cost, hardware, precision, with_overhead))
    return fit


def _layerwise_fit(device: Device):
    def fit(records: Sequence[dict]):
        return fit_layerwise([record_cost(r) for r in records], [r["latency_ms"]["p50"] for r in records], device)
    return fit


def _on_records(fit):
    """Adapt a records -> (cost -> ms) fit to the records -> (record -> ms) form :class:`Heldout` takes."""
    def adapted(records: Sequence[dict]):
        model = fit(records)
        return lambda rec: model(record_cost(rec))
    return adapted


def device_kind(profile: Profile) -> str:
    """Which priors the layer-wise model starts from: TensorRT runs on a GPU, everything else here on a CPU."""
    return "gpu" if profile.runtime.get("name") == "tensorrt" else "cpu"


class Predictor:
    """A fitted latency + memory predictor for one profile."""

    def __init__(self, profile: Profile, method: str, latency, memory, heldout: Heldout | None,
                 memory_heldout: float | None, tail_ratios: dict[int, float | None], note: str | None = None,
                 channel_block: int = 1, hardware: dict | None = None):
        self.profile, self.method, self._latency, self._memory = profile, method, latency, memory
        self.heldout, self.memory_heldout_error_pct = heldout, memory_heldout
        self.tail_ratios, self.note = tail_ratios, note
        self.channel_block = channel_block  # conv channels padded to this (pipeline.cost.features)
        self.hardware = hardware or {}

    @property
    def provenance(self) -> str:
        return self.profile.provenance

    @property
    def heldout_error_pct(self) -> float | None:
        """Profile-wide leave-one-out p90: what ``deploy calibrate`` reports. Predictions use :meth:`error_for`."""
        return self.heldout.overall() if self.heldout else None

    def error_for(self, family: str | None) -> ErrorEstimate:
        """The held-out error that applies to a prediction for ``family`` (see :mod:`pipeline.predict.heldout`)."""
        if self.heldout is None:
            return ErrorEstimate(None, "unknown", self.note or "never measured on this device")
        floor = PUBLISHED_ERROR_FLOOR_PCT if self.provenance == "published" else 0.0
        return self.heldout.for_family(family, floor)

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, profile: Profile, hardware: dict | None = None, reference: Profile | None = None,
            reference_hardware: dict | None = None) -> Predictor:
        records = [r for r in profile.model_records if r["latency_ms"].get("p50")]
        if profile.provenance == "roofline":
            return cls._fit_roofline_transfer(profile, hardware or {}, reference, reference_hardware or {})
        if not records:
            raise ProfileInvalid(f"{profile.path}: no model records with a p50 latency; nothing to fit.")
        if profile.provenance == "measured" and len(records) >= MIN_LINEAR_RECORDS:
            return cls._fit_linear(profile, records)
        return cls._fit_few(profile, records, hardware or {})

    @classmethod
    def _fit_linear(cls, profile: Profile, records: list[dict]) -> Predictor:
        costs = [record_cost(r) for r in records]
        y = np.array([r["latency_ms"]["p50"] for r in records])
        block = profile.device.get("nchwc_block") if profile.runtime.get("name") == "onnxruntime" else None
        how = "the device's MLAS block" if block else "chosen on held-out error"
        block = int(block or _best_channel_block(costs, y))
        fit = _linear_fit(block)
        heldout = Heldout.compute(records, _on_records(fit))
        memory, mem_heldout = None, None
        mem = [(c, r["peak_memory_mb"]) for c, r in zip(costs, records) if r.get("peak_memory_mb")]
        if len(mem) >= 4:
            mx = np.array([[memory_features(c)[n] for n in MEMORY_FEATURES] for c, _ in mem])
            my = np.array([m for _, m in mem])
            memory = _Linear(MEMORY_FEATURES, tuple(float(v) for v in _nnls_relative(mx, my)))
            mem_heldout = p90(_loo_errors(mx, my, _nnls_relative))
        method = f"per-op-kind linear (NNLS, relative error; channels padded to blocks of {block}, {how})"
        return cls(profile, method, fit(records), memory, heldout, mem_heldout, _tail_ratios(records),
                   channel_block=block)

    @classmethod
    def _fit_few(cls, profile: Profile, records: list[dict], hardware: dict) -> Predictor:
        """The layer-wise model or the one-efficiency roofline, whichever held out better on this profile.

        Compared on leave-one-family-out error when the profile has two family groups. With one
        group, leave-one-out only says which model interpolates between ResNets best, not which
        carries to another family; the layer-wise model, built to carry across families from the
        datasheet, is kept then (and with a single record, where nothing can be compared).
        """
        device = Device.from_hardware(hardware, device_kind(profile), profile.precision)
        n = len(records)
        candidates = {
            "layer-wise": (_layerwise_fit(device), f"layer-wise roofline (per-layer max(compute, memory) + launch, "
                                                    f"+ fixed overhead; MAP with datasheet priors, {n} record(s))"),
            "roofline": (_roofline_fit(hardware, profile.precision),
                         f"roofline, {'efficiency + fixed overhead' if n >= 3 else 'one efficiency'} fitted on "
                         f"{n} record(s)"),
        }
        scored = {name: Heldout.compute(records, _on_records(fit)) for name, (fit, _) in candidates.items()}
        scores = {name: h.score() for name, h in scored.items()}
        chosen = "layer-wise"
        comparable = len(scored["layer-wise"].groups) >= 2 and all(v is not None for v in scores.values())
        if comparable and scores["roofline"] < scores["layer-wise"]:
            chosen = "roofline"
        fit, method = candidates[chosen]
        if comparable:
            method += (f"; chosen on leave-one-family-out p90 error: layer-wise {scores['layer-wise']:g}%, "
                       f"roofline {scores['roofline']:g}%")
        else:
            method += "; one family group, so no leave-one-family-out comparison: layer-wise kept"
        return cls(profile, method, fit(records), None, scored[chosen], None, _tail_ratios(records),
                   hardware=hardware)

    @classmethod
    def _fit_roofline_transfer(cls, profile: Profile, hardware: dict, reference: Profile | None,
                               reference_hardware: dict) -> Predictor:
        if reference is None:
            raise ProfileMissing(f"{profile.path}: roofline profile needs its reference profile "
                                 f"({profile.roofline and profile.roofline.get('reference_target')}).")
        ref = cls._fit_few(reference, list(reference.model_records), reference_hardware)
        note = (f"datasheet figures with the efficiencies fitted on {reference.target} "
                f"({reference.provenance}); never measured on this device, so its error is unknown")
        if isinstance(ref._latency, LayerwiseModel):  # efficiencies and overheads carry over; peaks are this device's
            device = Device.from_hardware(hardware, device_kind(profile), profile.precision)
            return cls(profile, "layer-wise roofline (efficiencies transferred)",
                       LayerwiseModel(device, ref._latency.theta), None, None, None, ref.tail_ratios, note,
                       hardware=hardware)
        return cls(profile, "roofline (efficiency transferred)",
                   lambda cost: ref._latency(cost) / roofline_seconds(cost, reference_hardware, reference.precision)
                   * roofline_seconds(cost, hardware, profile.precision),
                   None, None, None, ref.tail_ratios, note, hardware=hardware)

    # -- predicting ------------------------------------------------------------------------------
    def predict(self, cost: Cost, family: str | None = None) -> Prediction:
        """Latency and memory of ``cost``; ``family`` picks the held-out error that applies (None: unknown)."""
        return self._prediction(cost, self._latency(cost), self.error_for(family), self.method)

    def _prediction(self, cost: Cost, latency: float, error: ErrorEstimate, method: str) -> Prediction:
        """A :class:`Prediction` of ``latency`` with its error, tails, memory and notes."""
        memory = self._memory(memory_features(cost)) if self._memory else None
        notes = [self.note]
        if memory is None:
            memory = (cost.weight_bytes[self.profile.precision] + cost.activation_bytes) / 2**20
            context = hardware_figure(self.hardware, "runtime_context_mb", self.profile.precision)
            if context:
                memory += context
                notes.append(f"memory is a static estimate (weights + peak activations) plus {context:g} MiB for "
                             f"the runtime's context ({self.hardware['runtime_context_mb'].get('source', 'sourced')})")
            else:
                notes.append("memory is a static estimate (weights + peak activations)")
        if error.case == "outside-calibration":
            notes.append(f"error: {error.detail}")
        elif error.case != "same family":
            notes.append(f"held-out error: {error.detail}")
        if self.provenance != "measured":
            notes.insert(0, f"predicted from a {self.provenance} profile, not measured")
        tails = {p: None if r is None else round(latency * r, 4) for p, r in self.tail_ratios.items()}
        return Prediction(round(latency, 4), tails[90], round(memory, 2), self.provenance, error.pct,
                          self.memory_heldout_error_pct, str(self.profile.path), f"{method}; error: {error.case}",
                          "; ".join(filter(None, notes)) or None, tails[99], error.case)

    def node_times(self):
        """The per-node model of this profile (:mod:`pipeline.predict.nodes`), or None when it has none.

        Only a host calibration with ONNX Runtime at fp32 writes node times; they are fitted once per predictor.
        """
        name = self.profile.method.get("node_times")
        if not name or self.profile.path is None:
            return None
        if not hasattr(self, "_node_times"):
            from pipeline.predict.nodes import load_node_times

            self._node_times = load_node_times(self.profile.path.with_name(name), self.profile.created)
        return self._node_times

    def predict_onnx(self, path: str | Path, cost: Cost | None = None) -> Prediction:
        """Latency and memory of an ONNX file edgefit did not build.

        With node times, the latency is the per-node model's sum over ORT's executed graph of the file
        (its stated error: that model's leave-one-group-out p90, or none when over OUTSIDE_LIMIT_PCT of the
        predicted time is in nodes the calibration never timed anything like, which the note names);
        else the linear model on the file's cost.
        Memory always comes from the profile's memory fit.
        """
        from pipeline.cost.onnx import onnx_cost

        cost = cost or onnx_cost(path)
        nt = self.node_times()
        if nt is None:
            return self.predict(cost)
        from pipeline.cost.ort_graph import executed_graph
        from pipeline.predict.nodes import OUTSIDE_LIMIT_PCT

        nodes = executed_graph(path, int(self.profile.device.get("threads") or 1))
        latency, cov = nt.model.predict(nodes)
        if cov.outside_pct > OUTSIDE_LIMIT_PCT:
            error = ErrorEstimate(None, "outside-calibration",
                                  f"{cov.outside_pct:.1f}% of the predicted time is in nodes the calibration never "
                                  f"timed anything like ({cov.describe()}), over the {OUTSIDE_LIMIT_PCT:g}% the "
                                  "held-out error stands for: the error is unknown; time the file on the device")
        else:
            outside = (f"; {cov.outside_pct:.1f}% of the predicted time outside the calibration ({cov.describe()})"
                       if cov.parts else "")
            error = ErrorEstimate(nt.stated_error_pct, "leave-one-group-out",
                                  "p90 of the per-node model's errors on each suite group (each family, the probes) "
                                  "predicted with that group left out" + outside)
        method = (f"per-node model on ONNX Runtime's executed graph ({len(nodes)} nodes; conv extra-trees on "
                  f"{nt.models} suite models' nodes and {nt.grid} single-layer timings, per-op linear for the rest)")
        return self._prediction(cost, latency, error, method)

    def check_percentile(self, percentile: int) -> None:
        """Refuse a p90/p99 budget this profile has no tail for, before any search runs on a silent p50."""
        if percentile != 50 and self.tail_ratios.get(percentile) is None:
            raise TailUnavailable(str(self.profile.path), percentile)


def _roof_row(cost: Cost, hardware: dict, precision: str, with_overhead: bool) -> np.ndarray:
    roof = roofline_seconds(cost, hardware, precision) * 1e3
    return np.array([roof, 1.0] if with_overhead else [roof])


def _tail_ratios(records: list[dict]) -> dict[int, float | None]:
    """{90: median p90/p50, 99: median p99/p50} over the records that state that percentile (None: none does)."""
    out: dict[int, float | None] = {}
    for pct in (90, 99):
        ratios = [r["latency_ms"][f"p{pct}"] / r["latency_ms"]["p50"] for r in records
                  if r["latency_ms"].get(f"p{pct}")]
        out[pct] = float(np.median(ratios)) if ratios else None
    return out


class TailUnavailable(DeployError):
    """A p90/p99 budget on a profile that holds only medians (exit 1)."""

    def __init__(self, profile: str, percentile: int):
        super().__init__(f"the profile {profile} has no p{percentile} latencies (its records give only the median), "
                         f"so a p{percentile} budget cannot be predicted honestly. Use --percentile 50, or measure "
                         f"on the device (deploy calibrate --agent URL, or deploy fit --agent URL).")
        self.percentile = percentile


def check_host_profile(profile: Profile, machine: dict) -> None:
    """Refuse a host profile measured on another CPU model or core count."""
    device = profile.device
    for key in ("cpu_model", "cores"):
        if key in device and device[key] != machine.get(key):
            raise ProfileMismatch(
                f"{profile.path} was measured on {device.get('cpu_model')} with {device.get('cores')} cores, but this "
                f"machine is {machine.get('cpu_model')} with {machine.get('cores')} cores: "
                "recalibrate with `deploy calibrate --target host`.")


def load_predictor(target, precision: str | None = None, threads: int | None = None,
                   profile_path=None) -> Predictor:
    """Fit the predictor for ``target`` at ``precision`` from its profile (or ``profile_path``)."""
    from pipeline.predict.targets import host_machine, host_profile_path, load_target

    precision = target.check_precision(precision)
    if profile_path is None:
        profile_path = (host_profile_path(precision, threads or target.threads or 1, target.runtime)
                        if target.measurable else target.profile_path(precision))
    if not profile_path.exists():
        how = (f"run `deploy calibrate --target {target.name}`" + (f" --threads {threads}" if threads else "")
               if target.measurable else
               f"run `deploy calibrate --target {target.name}` on the device, or add {profile_path}")
        raise ProfileMissing(f"no {precision} profile for target '{target.name}' ({profile_path}): {how}.")
    profile = load_profile(profile_path)
    if target.measurable:
        check_host_profile(profile, host_machine())
    reference = reference_hw = None
    if profile.provenance == "roofline" and profile.roofline:
        ref_target = load_target(profile.roofline["reference_target"])
        reference = load_profile(ref_target.profile_path(profile.roofline["reference_precision"]))
        reference_hw = ref_target.hardware
    return Predictor.fit(profile, target.hardware, reference, reference_hw)


def device_profile_path(target, precision: str, threads: int | None) -> Path | None:
    """A profile measured *on the device* by ``deploy calibrate`` (under edgefit_home), if any."""
    from pipeline.core.paths import edgefit_home

    folder = edgefit_home() / "profiles" / target.name
    if threads:
        candidate = folder / f"{target.runtime}-{precision}-t{threads}.json"
        return candidate if candidate.exists() else None
    found = sorted(folder.glob(f"{target.runtime}-{precision}-t*.json"))
    return found[0] if found else None


def predict(target_name: str, model: Scale | str | Path, family: str | None = None, *,
            precision: str | None = None, threads: int | None = None, num_classes: int = 1000,
            targets_dir: str | Path | None = None, profile_path: str | Path | None = None) -> dict:
    """``deploy predict``: predicted latency and memory of one model (a scale of ``family``, or an ONNX file).

    ``family`` defaults to the scale's preset's family (lite0 → efficientnet-lite), else EfficientNet.
    """
    from pipeline.cost.describe import describe_scale
    from pipeline.cost.onnx import onnx_cost
    from pipeline.models import check_family
    from pipeline.predict.targets import load_target

    target = load_target(target_name, targets_dir)
    precision = target.check_precision(precision)
    if profile_path is None and not target.measurable:
        profile_path = device_profile_path(target, precision, threads)
    predictor = load_predictor(target, precision, threads, Path(profile_path) if profile_path else None)
    if isinstance(model, Scale):
        family = family_for(family, model.preset)
        described = describe_scale(check_family(family), model, num_classes)
        cost = _cached_cost(family, model, num_classes)
    else:
        cost = onnx_cost(model)
        described = {"onnx": str(model), "resolution": cost.resolution, "params": cost.params, "macs": cost.macs,
                     "weight_bytes": cost.weight_bytes, "activation_bytes": cost.activation_bytes}
    pred = predictor.predict(cost, family) if isinstance(model, Scale) else predictor.predict_onnx(model, cost)
    return {"target": target.name, "precision": precision, **pred.to_dict(), **described}
