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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from pipeline.core.errors import DeployError, ProfileInvalid, ProfileMismatch, ProfileMissing
from pipeline.core.scaling import CompoundScaling, Scale, preset
from pipeline.cost.features import CHANNEL_BLOCKS, LATENCY_FEATURES, MEMORY_FEATURES, latency_features, memory_features
from pipeline.cost.trace import BYTES_PER_ELEMENT, Cost, scale_cost
from pipeline.predict.profile import Profile, load_profile

MIN_LINEAR_RECORDS = 8
HELDOUT_QUANTILE = 90  # the held-out error we report and plan with: p90 of |relative error|


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


def record_cost(rec: dict) -> Cost:
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


def _pct(errors: np.ndarray) -> float | None:
    return None if len(errors) == 0 else round(float(np.percentile(errors, HELDOUT_QUANTILE)), 2)


@dataclass(frozen=True)
class _Linear:
    names: tuple[str, ...]
    coef: tuple[float, ...]

    def __call__(self, features: dict[str, float]) -> float:
        return float(sum(c * features[n] for n, c in zip(self.names, self.coef)))


def _latency_matrix(costs: list[Cost], block: int) -> np.ndarray:
    return np.array([[latency_features(c, block)[n] for n in LATENCY_FEATURES] for c in costs])


def _best_channel_block(costs: list[Cost], y: np.ndarray) -> tuple[int, np.ndarray]:
    """The channel block with the lowest leave-one-out p90 error (ties: the smaller block), and its LOO errors."""
    best = None
    for block in CHANNEL_BLOCKS:
        errors = _loo_errors(_latency_matrix(costs, block), y, _nnls_relative)
        score = float(np.percentile(errors, HELDOUT_QUANTILE))
        if best is None or score < best[0] - 1e-9:
            best = (score, block, errors)
    return best[1], best[2]


def _hardware_figure(hardware: dict, key: str, precision: str) -> float | None:
    fig = hardware.get(key)
    if not isinstance(fig, dict):
        return None
    value = fig.get(precision, fig.get("value"))
    return float(value) if isinstance(value, (int, float)) else None


def roofline_seconds(cost: Cost, hardware: dict, precision: str) -> float:
    """max(compute time, memory time) at datasheet peaks; GMACs alone if the peak is unknown."""
    peak = _hardware_figure(hardware, "peak_gflops", precision) or _hardware_figure(hardware, "peak_gflops", "fp32")
    bandwidth = _hardware_figure(hardware, "memory_bandwidth_gbs", precision)
    if not peak:
        return cost.macs / 1e9
    moved = cost.weight_bytes[precision] + sum(op.in_bytes + op.out_bytes for op in cost.ops) \
        * BYTES_PER_ELEMENT[precision] / 4
    compute = 2 * cost.macs / (peak * 1e9)
    return max(compute, moved / (bandwidth * 1e9)) if bandwidth else compute


class Predictor:
    """A fitted latency + memory predictor for one profile."""

    def __init__(self, profile: Profile, method: str, latency, memory, heldout: float | None,
                 memory_heldout: float | None, tail_ratios: dict[int, float | None], note: str | None = None,
                 channel_block: int = 1):
        self.profile, self.method, self._latency, self._memory = profile, method, latency, memory
        self.heldout_error_pct, self.memory_heldout_error_pct = heldout, memory_heldout
        self.tail_ratios, self.note = tail_ratios, note
        self.channel_block = channel_block  # conv channels padded to this (pipeline.cost.features)

    @property
    def provenance(self) -> str:
        return self.profile.provenance

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
        return cls._fit_roofline(profile, records, hardware or {})

    @classmethod
    def _fit_linear(cls, profile: Profile, records: list[dict]) -> Predictor:
        costs = [record_cost(r) for r in records]
        y = np.array([r["latency_ms"]["p50"] for r in records])
        block, loo = _best_channel_block(costs, y)
        coef = _nnls_relative(_latency_matrix(costs, block), y)
        heldout = _pct(loo)
        latency = _Linear(LATENCY_FEATURES, tuple(float(c) for c in coef))
        memory, mem_heldout = None, None
        mem = [(c, r["peak_memory_mb"]) for c, r in zip(costs, records) if r.get("peak_memory_mb")]
        if len(mem) >= 4:
            mx = np.array([[memory_features(c)[n] for n in MEMORY_FEATURES] for c, _ in mem])
            my = np.array([m for _, m in mem])
            memory = _Linear(MEMORY_FEATURES, tuple(float(v) for v in _nnls_relative(mx, my)))
            mem_heldout = _pct(_loo_errors(mx, my, _nnls_relative))
        method = f"per-op-kind linear (NNLS, relative error; channels padded to blocks of {block})"
        return cls(profile, method, latency, memory, heldout, mem_heldout, _tail_ratios(records), channel_block=block)

    @classmethod
    def _fit_roofline(cls, profile: Profile, records: list[dict], hardware: dict) -> Predictor:
        """k · roofline (+ a fixed overhead once there are ≥ 3 records to fit and still hold one out)."""
        roof = np.array([roofline_seconds(record_cost(r), hardware, profile.precision) * 1e3 for r in records])
        y = np.array([r["latency_ms"]["p50"] for r in records])
        with_overhead = len(y) >= 3
        x = np.stack([roof, np.ones_like(roof)], axis=1) if with_overhead else roof[:, None]
        coef = _nnls_relative(x, y)
        heldout = _pct(_loo_errors(x, y, _nnls_relative)) if len(y) >= 2 else None
        note = None if heldout is not None else "only one record: held-out error unknown"
        terms = "efficiency + fixed overhead" if with_overhead else "one efficiency"
        return cls(profile, f"roofline, {terms} fitted on {len(y)} record(s)",
                   lambda cost: float(coef @ _roof_row(cost, hardware, profile.precision, with_overhead)),
                   None, heldout, None, _tail_ratios(records), note)

    @classmethod
    def _fit_roofline_transfer(cls, profile: Profile, hardware: dict, reference: Profile | None,
                               reference_hardware: dict) -> Predictor:
        if reference is None:
            raise ProfileMissing(f"{profile.path}: roofline profile needs its reference profile "
                                 f"({profile.roofline and profile.roofline.get('reference_target')}).")
        ref = cls._fit_roofline(reference, list(reference.model_records), reference_hardware)
        note = (f"roofline from datasheet figures with the efficiency fitted on {reference.target} "
                f"({reference.provenance}); never measured on this device, so its error is unknown")
        return cls(profile, "roofline (efficiency transferred)",
                   lambda cost: ref._latency(cost) / roofline_seconds(cost, reference_hardware, reference.precision)
                   * roofline_seconds(cost, hardware, profile.precision),
                   None, None, None, ref.tail_ratios, note)

    # -- predicting ------------------------------------------------------------------------------
    def predict(self, cost: Cost) -> Prediction:
        if self.method.startswith("per-op"):
            latency = self._latency(latency_features(cost, self.channel_block))
        else:
            latency = self._latency(cost)
        memory = self._memory(memory_features(cost)) if self._memory else None
        note = self.note
        if memory is None:
            memory = (cost.weight_bytes[self.profile.precision] + cost.activation_bytes) / 2**20
            note = "; ".join(filter(None, [note, "memory is a static estimate (weights + peak activations)"]))
        if self.provenance != "measured":
            note = "; ".join(filter(None, [f"predicted from a {self.provenance} profile, not measured", note]))
        tails = {p: None if r is None else round(latency * r, 4) for p, r in self.tail_ratios.items()}
        return Prediction(round(latency, 4), tails[90], round(memory, 2), self.provenance, self.heldout_error_pct,
                          self.memory_heldout_error_pct, str(self.profile.path), self.method, note, tails[99])

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


def predict(target_name: str, model: Scale | str | Path, family: str = "efficientnet", *,
            precision: str | None = None, threads: int | None = None, num_classes: int = 1000,
            targets_dir: str | Path | None = None, profile_path: str | Path | None = None) -> dict:
    """``deploy predict``: predicted latency and memory of one model (a scale of ``family``, or an ONNX file)."""
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
        described = describe_scale(check_family(family), model, num_classes)
        cost = _cached_cost(family, model, num_classes)
    else:
        cost = onnx_cost(model)
        described = {"onnx": str(model), "resolution": cost.resolution, "params": cost.params, "macs": cost.macs,
                     "weight_bytes": cost.weight_bytes, "activation_bytes": cost.activation_bytes}
    pred = predictor.predict(cost)
    return {"target": target.name, "precision": precision, **pred.to_dict(), **described}
