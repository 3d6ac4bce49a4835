"""Find the largest compound-scaled architecture whose predicted cost fits every budget.

Rounding turns continuous φ into plateaus and jumps (φ=0.25 already adds a block to every
EfficientNet stage), so bisection on φ itself would miss steps. We first enumerate the
*distinct* architectures over the φ range (cheap: only the channel/block plan and the
resolution are computed), then bisect over that ordered list on the predicted cost,
which is monotone in φ, and check a few neighbours to absorb small non-monotonicities.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pipeline.core.budget import Budget
from pipeline.core.errors import BudgetInfeasible
from pipeline.core.scaling import CompoundScaling, Scale
from pipeline.cost.plan import scale_cost
from pipeline.fit.options import DEFAULT_PHI_RANGE
from pipeline.models import signature

GRID_STEP = 0.01  # then refined by bisection, so plateaus narrower than the step are still found
NEIGHBOURS = 3  # candidates either side of the boundary that go into the frontier table
PLOT_POINTS = 12  # evenly spread candidates evaluated for the report's curve

__all__ = ["DEFAULT_PHI_RANGE", "Budget", "distinct_scales", "enumerate_architectures", "rejection", "search"]


@dataclass(frozen=True)
class Architecture:
    """One distinct architecture and the φ interval [phi, phi_max] that produces it."""

    family: str
    phi: float
    phi_max: float
    scale: Scale


@dataclass(frozen=True)
class Candidate:
    """An architecture with its static cost and (possibly corrected) prediction."""

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
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    chosen: Candidate
    frontier: tuple[Candidate, ...]
    next_larger: Candidate | None
    margin_pct: float
    architectures: int
    seconds: float
    archs: tuple[Architecture, ...] = field(repr=False, default=())
    evaluate: Callable[[int], Candidate] | None = field(repr=False, default=None, compare=False)
    memory_margin_pct: float | None = None

    @property
    def reason_next_rejected(self) -> str | None:
        if self.next_larger is None:
            return "no larger architecture in the φ range"
        return self.next_larger.reason


def enumerate_architectures(family: str, phi_min: float, phi_max: float,
                            scaling: CompoundScaling | None = None) -> list[Architecture]:
    """Distinct architectures for compound φ in [phi_min, phi_max], smallest first."""
    scaling = scaling or CompoundScaling()
    return [Architecture(family, p, e, s) for p, e, s in distinct_scales(family, scaling.compound, phi_min, phi_max)]


def distinct_scales(family: str, scale_of: Callable[[float], Scale], phi_min: float,
                    phi_max: float) -> list[tuple[float, float, Scale]]:
    """``(first φ, last φ, scale)`` of each distinct architecture ``scale_of(φ)`` gives for φ in [phi_min, phi_max].

    ``scale_of`` is compound scaling for the search, or one dimension's φ with the others held
    (the per-dimension fill, :mod:`pipeline.fit.perdim`). The range is scanned in steps of
    ``GRID_STEP`` and every change of architecture located by bisection to 1e-4.
    """
    if not (math.isfinite(phi_min) and math.isfinite(phi_max)) or phi_min >= phi_max:
        raise BudgetInfeasible(f"empty φ range [{phi_min}, {phi_max}]: --phi-min must be below --phi-max.")

    def sig(phi: float) -> tuple:
        return signature(family, scale_of(phi))

    def first_phi(lo: float, hi: float, s_hi: tuple) -> float:
        """Smallest φ (to 1e-4) in (lo, hi] with signature s_hi, by bisection."""
        while hi - lo > 1e-4:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if sig(mid) == s_hi else (mid, hi)
        nice = round(hi, 4)
        return nice if lo < nice and sig(nice) == s_hi else round(math.ceil(hi * 1e4) / 1e4, 4)

    n = max(1, int(math.ceil((phi_max - phi_min) / GRID_STEP)))
    grid = [round(phi_min + i * (phi_max - phi_min) / n, 6) for i in range(n + 1)]
    starts: list[float] = [phi_min]
    prev = sig(phi_min)
    for a, b in zip(grid, grid[1:]):
        s_b = sig(b)
        if s_b != prev:
            starts.append(first_phi(a, b, s_b))
            prev = s_b
    ends = [s for s in starts[1:]] + [phi_max]
    return [(p, round(e, 4), scale_of(p)) for p, e in zip(starts, ends)]


Predict = Callable[[Architecture], tuple[float, float]]  # -> (latency_ms at the percentile, memory MiB)


def search(archs: list[Architecture], predict: Predict, budget: Budget, margin_pct: float,
           memory_limit_mb: float | None = None, num_classes: int = 1000,
           memory_margin_pct: float | None = None) -> SearchResult:
    """Largest architecture whose prediction × (1 + margin) fits every budget.

    Latency is padded by ``margin_pct`` (the latency predictor's held-out error) and memory by
    ``memory_margin_pct`` (the memory predictor's own held-out error; the latency margin when
    not given): one predictor's error says nothing about the other's.
    """
    margins = (margin_pct, margin_pct if memory_margin_pct is None else memory_margin_pct)
    started = time.perf_counter()
    cache: dict[int, Candidate] = {}

    def evaluate(i: int) -> Candidate:
        if i not in cache:
            arch = archs[i]
            cost = scale_cost(arch.family, arch.scale, num_classes)
            lat, mem = predict(arch)
            reason = rejection(lat, mem, budget, margins, memory_limit_mb)
            s = arch.scale
            cache[i] = Candidate(i, arch.phi, arch.phi_max, s.resolution, round(s.depth, 4), round(s.width, 4),
                                 cost.params, cost.macs, round(lat, 4), round(mem, 2), reason is None, reason)
        return cache[i]

    if not evaluate(0).fits:
        smallest = evaluate(0)
        raise BudgetInfeasible(
            f"no {archs[0].family} in φ ∈ [{archs[0].phi:g}, {archs[-1].phi_max:g}] fits: the smallest "
            f"(φ={smallest.phi:g}, resolution {smallest.resolution}) is predicted at {smallest.latency_ms:.2f} ms and "
            f"{smallest.memory_mb:.1f} MiB ({smallest.reason}). Raise the budget or lower --phi-min.")
    lo, hi = 0, len(archs) - 1  # invariant: lo fits
    if evaluate(hi).fits:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if evaluate(mid).fits else (lo, mid)
    best = lo
    for j in range(lo + 1, min(len(archs), lo + 1 + NEIGHBOURS)):  # absorb small non-monotonicity
        if evaluate(j).fits:
            best = j
    for j in range(max(0, best - NEIGHBOURS), min(len(archs), best + NEIGHBOURS + 1)):
        evaluate(j)
    step = max(1, len(archs) // PLOT_POINTS)
    for j in range(0, len(archs), step):
        evaluate(j)
    nxt = cache.get(best + 1)
    return SearchResult(cache[best], tuple(cache[k] for k in sorted(cache)), nxt, margin_pct, len(archs),
                        round(time.perf_counter() - started, 4), tuple(archs), evaluate, margins[1])


def rejection(lat: float, mem: float, budget: Budget, margins: tuple[float, float],
               limit: float | None) -> str | None:
    """Why a prediction does not fit, or None when it does. ``margins``: (latency %, memory %)."""
    k, km = 1 + margins[0] / 100, 1 + margins[1] / 100
    if budget.latency_ms is not None and lat * k > budget.latency_ms:
        return (f"predicted p{budget.percentile} {lat:.2f} ms + {margins[0]:.1f}% margin = {lat * k:.2f} ms "
                f"> {budget.latency_ms:g} ms budget")
    if budget.memory_mb is not None and mem * km > budget.memory_mb:
        return (f"predicted {mem:.1f} MiB + {margins[1]:.1f}% memory margin = {mem * km:.1f} MiB "
                f"> {budget.memory_mb:g} MiB budget")
    if limit is not None and mem > limit:
        return f"predicted {mem:.1f} MiB > the target's {limit:g} MiB"
    return None
