"""``deploy study``: one dimension at a time against compound scaling, at matched MACs (EfficientNet's Table 3).

Tan & Le (2019, Table 3) scaled MobileNets and ResNet-50 by width only, by resolution only and by
compound scaling to about the same FLOPs, and found compound ahead of the best single dimension by
0.6-2 points of ImageNet top-1. This module repeats that on the user's data and device:

* for each family and each FLOPs (here: MACs) ratio R, the strategies are **depth only**, **width
  only**, **resolution only**, **compound with EfficientNet's constants** and, when given, **compound
  with the grid's winner** (``--scaling``);
* each strategy's single φ is solved so that the model's MACs (counted on the traced model, at the
  trained resolution) are as close as rounding allows to R × the base model's; the ratio reached is
  reported beside R, since channel, block and 8-px resolution rounding make exact matches rare;
* each model is trained per seed with the same recipe (:func:`pipeline.research.points.run_point`,
  sharing the grid's per-point cache), evaluated on the validation split and measured on the target.

The result is ``study.json`` and ``report.md`` (the Table-3-shaped table per family, mean ± sample
standard deviation over seeds, a plot of accuracy against MACs, and one plain sentence per family
and ratio saying whether compound beat the best single dimension by more than the seed spread).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import DeployError, UsageError
from pipeline.core.io import write_json
from pipeline.core.scaling import DEFAULTS, CompoundScaling, reference_constants
from pipeline.research.points import PointCache, PointSpec

STUDY_JSON = "study.json"
SINGLE = ("depth", "width", "resolution")
PAPER = (0.6, 2.0)  # compound ahead of the best single dimension, points of ImageNet top-1 (Tan & Le 2019, Table 3)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StudyOptions:
    """The study: families, data, MACs ratios, seeds and schedule; ``winner`` is a grid's (α, β, γ) or None."""

    families: tuple[str, ...]
    data: str
    flops_ratios: tuple[float, ...] = (2.0, 4.0)
    seeds: int = 3
    epochs: int = 10
    phi: float = 0.0  # the base model every strategy scales from
    target: str = "host"
    threads: int | None = None
    winner: tuple[float, float, float] | None = None
    winner_name: str | None = None
    base_resolution: int | None = None
    batch_size: int = 64
    lr: float = 1e-2
    train_threads: int | None = 1
    opset: int | None = None

    def check(self) -> StudyOptions:
        from pipeline.models import check_family

        if not self.families:
            raise UsageError("give at least one --family.")
        for f in self.families:
            check_family(f)
        if not self.flops_ratios or any(not (r > 1 and math.isfinite(r)) for r in self.flops_ratios):
            raise UsageError(f"--flops-ratios must all be above 1, got {list(self.flops_ratios)}.")
        if self.seeds < 1 or self.epochs < 1:
            raise UsageError("--seeds and --epochs must be at least 1.")
        return self


def strategies(opts: StudyOptions) -> list[tuple[str, tuple[float, float, float]]]:
    """(name, direction) of every strategy: how much each dimension's φ moves per unit of scaling.

    Every model of the study is written with EfficientNet's bases and one φ per dimension, so all
    strategies scale the *same* base model (φ = ``opts.phi``): a single dimension moves its own φ
    only; a compound scaling with constants (a, b, g) moves them as (ln a/ln 1.2, ln b/ln 1.1,
    ln g/ln 1.15), which multiplies depth, width and resolution by a^Δ, b^Δ and g^Δ.
    """
    out = [("depth", (1.0, 0.0, 0.0)), ("width", (0.0, 1.0, 0.0)), ("resolution", (0.0, 0.0, 1.0)),
           ("compound (EfficientNet)", (1.0, 1.0, 1.0))]
    if opts.winner is not None:
        out.append((f"compound ({opts.winner_name or 'grid winner'})", direction(opts.winner)))
    return out


def direction(constants: tuple[float, float, float]) -> tuple[float, float, float]:
    """Per-dimension φ moved per unit of compound φ with ``constants``, in EfficientNet's bases."""
    eff = reference_constants("efficientnet")
    return tuple(round(math.log(c) / math.log(e), 6) for c, e in zip(constants, eff))


def dims_at(base: float, u: tuple[float, float, float], delta: float) -> tuple[float, float, float]:
    return tuple(round(base + delta * x, 4) for x in u)


def _scale(base_resolution: int, dims: tuple[float, float, float]):
    s = CompoundScaling(*reference_constants("efficientnet"), base_resolution)
    return s.compound(dims[0]) if dims[0] == dims[1] == dims[2] else s.per_dimension(*dims)


def matched_delta(family: str, u: tuple[float, float, float], base_phi: float, ratio: float, base_resolution: int,
                  num_classes: int) -> tuple[float, float]:
    """(Δ along ``u``, MACs ratio reached) closest, in log MACs, to ``ratio`` × the base model's MACs.

    The distinct architectures along ``u`` above the base are enumerated (rounding makes MACs a step
    function) and bisected on MACs; of the two rungs around the ratio the nearer on a log scale wins.
    """
    from pipeline.cost.plan import scale_cost
    from pipeline.fit.search import distinct_scales

    def macs(dims) -> int:
        return scale_cost(family, _scale(base_resolution, dims), num_classes).macs

    base_macs = macs((base_phi,) * 3)
    eff = reference_constants("efficientnet")
    exponent = u[0] * math.log(eff[0]) + 2 * u[1] * math.log(eff[1]) + 2 * u[2] * math.log(eff[2])
    span = 1.6 * math.log(ratio) / exponent + 0.5  # far enough past the ratio for rounding to reach it
    limit = (DEFAULTS["max_abs_phi"] - abs(base_phi)) / max(u)  # |φ| stays within what a scale allows
    seen: dict[float, float] = {}

    def ratio_at(delta: float) -> float:
        if delta not in seen:
            seen[delta] = macs(dims_at(base_phi, u, delta)) / base_macs
        return seen[delta]

    while True:
        span = min(span, limit)
        rungs = distinct_scales(family, lambda d: _scale(base_resolution, dims_at(base_phi, u, d)), 0.0, span)
        # a minimum resolution or whole blocks can hold MACs flat for a while: look further when short
        if ratio_at(rungs[-1][0]) >= ratio or span >= limit:
            break
        span *= 2

    def r(i: int) -> float:
        return ratio_at(rungs[i][0])

    lo, hi = 0, len(rungs) - 1  # bisection for the first rung at or above the ratio
    if r(hi) < ratio:
        return rungs[hi][0], r(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if r(mid) < ratio else (lo, mid)
    best = min((lo, hi), key=lambda i: abs(math.log(r(i) / ratio)))
    return rungs[best][0], r(best)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _summary(strategy: str, ratio: float | None, reached: float | None, u, dims, rows: list[dict]) -> dict:
    acc, acc_std = _mean_std([r["val_accuracy"] for r in rows])
    lat, lat_std = _mean_std([r["latency_ms"] for r in rows])
    first = rows[0]
    return {"strategy": strategy, "ratio": ratio, "macs_ratio": None if reached is None else round(reached, 4),
            "direction": list(u), "phi_depth": dims[0], "phi_width": dims[1], "phi_resolution": dims[2],
            "depth_multiplier": first["depth_multiplier"], "width_multiplier": first["width_multiplier"],
            "resolution": first["resolution"], "macs": first["macs"], "params": first["params"],
            "activation_mb": first["activation_mb"], "provenance": first["provenance"],
            "latency_ms": None if lat is None else round(lat, 4), "latency_ms_std": lat_std,
            "val_accuracy_mean": acc, "val_accuracy_std": acc_std, "seeds": len(rows),
            "val_accuracies": [r["val_accuracy"] for r in rows], "keys": [r["key"] for r in rows]}


def verdict(compound: dict, singles: list[dict]) -> dict:
    """Does compound beat the best single dimension by more than the seed spread? (the paper: by 0.6-2 points)."""
    best = max(singles, key=lambda s: s["val_accuracy_mean"])
    diff = 100 * (compound["val_accuracy_mean"] - best["val_accuracy_mean"])
    stds = [s for s in (compound["val_accuracy_std"], best["val_accuracy_std"]) if s is not None]
    spread = 100 * max(stds) if stds else None
    if spread is None:
        call = "unknown: one seed, no spread to judge the difference against"
        agrees = None
    elif diff > spread:
        call, agrees = "agrees with the paper's ordering (compound ahead by more than the seed spread)", True
    elif diff < -spread:
        call, agrees = (f"disagrees with the paper: the best single dimension ({best['strategy']}) is ahead by more "
                        "than the seed spread"), False
    else:
        call, agrees = ("does not reproduce the paper's ordering: the difference is within the seed spread "
                        "(no strategy is clearly ahead)"), False
    within = PAPER[0] <= diff <= PAPER[1]
    return {"compound": compound["strategy"], "best_single": best["strategy"], "difference_points": round(diff, 3),
            "spread_points": None if spread is None else round(spread, 3), "agrees": agrees, "call": call,
            "within_paper_range": within}


def run_study(opts: StudyOptions, out: str | Path, *, progress: Progress | None = None,
              log: Callable[[str], None] = lambda _: None, device=None, backend=None) -> dict:
    """Run (or resume, from the per-point cache) the study in ``out``; write study.json and report.md.

    ``backend`` runs the points (:mod:`pipeline.research.backends`: here, or as Ray tasks).
    """
    from pipeline.data.datasets import load_dataset
    from pipeline.research.backends import LocalBackend, PointFailure, PointJob
    from pipeline.research.report import write_study_report

    backend = backend or LocalBackend()

    opts = opts.check()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(opts.data)
    base_res = opts.base_resolution or data.base_resolution or 224
    cache = PointCache(out)
    strats = strategies(opts)
    total = len(opts.families) * (1 + len(opts.flops_ratios) * len(strats)) * opts.seeds
    done = 0
    log(f"study: {', '.join(opts.families)} from φ={opts.phi:g} (base resolution {base_res}), MACs ratios "
        f"{', '.join(f'{r:g}' for r in opts.flops_ratios)}, {len(strats)} strategies, {opts.seeds} seed(s): {total} "
        f"trainings of {opts.epochs} epoch(s); results cached in {cache.dir}")
    eff = reference_constants("efficientnet")

    def train_rows(family: str, dims, label: str) -> list[dict]:
        """The seeds of one model, run by the backend (a Ray backend trains them side by side)."""
        nonlocal done
        jobs = [PointJob(PointSpec(family, *eff, *dims, seed=seed, data=opts.data, epochs=opts.epochs,
                                   target=opts.target, threads=opts.threads, base_resolution=base_res,
                                   batch_size=opts.batch_size, lr=opts.lr, train_threads=opts.train_threads,
                                   opset=opts.opset, label=label), f"{family} {label} seed {seed}")
                for seed in range(opts.seeds)]
        rows = backend.run(jobs, cache, data=data, device=device, log=log, progress=progress, done_before=done,
                           total=total)
        done += len(jobs)
        failed = [r for r in rows if isinstance(r, PointFailure)]
        if failed:  # a Table-3 row needs every seed: unlike a grid point, it cannot be left out
            raise DeployError(f"study point {failed[0].label} failed: {failed[0].error}")
        for job, row in zip(jobs, rows):
            log(f"{job.label}: val accuracy {row['val_accuracy']:.4f}, {row['macs'] / 1e6:.1f} M MACs, "
                f"{row['latency_ms']:.2f} ms{' [cached]' if row['cached'] else ''}")
        return rows

    if progress:
        progress(0, total, "starting")
    families = {}
    for family in opts.families:
        base_dims = (opts.phi,) * 3
        baseline = _summary("baseline", 1.0, 1.0, (0.0, 0.0, 0.0), base_dims,
                            train_rows(family, base_dims, "baseline"))
        by_ratio = {}
        for ratio in opts.flops_ratios:
            rows = []
            for name, u in strats:
                delta, reached = matched_delta(family, u, opts.phi, ratio, base_res, data.num_classes)
                dims = dims_at(opts.phi, u, delta)
                summary = _summary(name, ratio, reached, u, dims, train_rows(family, dims, f"{name} x{ratio:g}"))
                for k in ("depth", "width"):  # Table 3 states each model's multipliers relative to the baseline
                    summary[f"{k}_vs_base"] = round(summary[f"{k}_multiplier"] / baseline[f"{k}_multiplier"], 3)
                summary["resolution_vs_base"] = round(summary["resolution"] / baseline["resolution"], 3)
                rows.append(summary)
            singles = [r for r in rows if r["strategy"] in SINGLE]
            compounds = [r for r in rows if r["strategy"].startswith("compound")]
            by_ratio[f"{ratio:g}"] = {"rows": rows, "verdicts": [verdict(c, singles) for c in compounds]}
        families[family] = {"baseline": baseline, "ratios": by_ratio}
    result = {"schema_version": 1, "kind": "edgefit-study",
              "created": datetime.now().astimezone().isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - started, 1), "options": asdict(opts), "base_resolution": base_res,
              "data": {"name": data.name, "fingerprint": data.fingerprint(), "samples": len(data),
                       "classes": len(data.classes)},
              "paper": {"source": "Tan & Le 2019, EfficientNet, Table 3", "compound_ahead_points": list(PAPER)},
              "families": families}
    write_json(out / STUDY_JSON, result)
    write_study_report(result, out)
    return result


__all__ = ["PAPER", "SINGLE", "STUDY_JSON", "StudyOptions", "direction", "matched_delta", "run_study", "strategies",
           "verdict"]
