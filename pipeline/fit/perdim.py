"""``deploy fit --search per-dimension``: fill the gap the compound step leaves under the budget.

Compound scaling moves depth, width and resolution together, so consecutive architectures can
be far apart: on the 2-core dev VM a 15 ms budget picks B0 at about 12 ms because the next
compound step measures about 17 ms. After the compound pick this step raises one dimension at a
time with the others held, **resolution first, then width** (the issue's order: resolution is
the finest step for a CPU, 8 px at a time; width then fills what is left in channel steps of 8):

1. the distinct architectures of ``φ_r`` in [φ, φ + ``SPAN``] (the pick's φ_d and φ_w held) form a
   ladder, smallest first, whose first rung is the compound pick itself;
2. on a measurable target the ladder goes through the same measure-and-correct loop as the
   compound search (:func:`pipeline.measure.loop.closed_loop`), starting from the compound pick's
   measurement, so what ships was measured and the next rung measured over the budget; elsewhere
   the ladder is searched on predictions with the same margin as the compound search;
3. from the chosen rung the same is done for ``φ_w``.

The result records both points and the utilisation gained (latency, or memory when only a memory
budget is given, over the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from pipeline.core.budget import Budget
from pipeline.fit.options import SearchOptions
from pipeline.fit.search import NEIGHBOURS, Architecture, distinct_scales, rejection
from pipeline.measure.loop import Measurement, closed_loop


class FitContext(Protocol):
    """What the fill needs of :class:`pipeline.fit.flow.FitContext` (a protocol: flow imports this module)."""

    family: str
    budget: Budget
    search: SearchOptions
    archs: list[Architecture]
    result: Any  # the compound SearchResult: its margins (predicted targets only)
    target: Any  # its memory_mb (predicted targets only)
    num_classes: int

    def predict_arch(self, i: int) -> tuple[float, float]: ...

    def log(self, msg: str) -> None: ...

DIMENSIONS = ("resolution", "width")  # the order the gap is filled in
SPAN = 3.0  # how far above the compound φ one dimension's φ may go (γ^3 ≈ 1.5x resolution)


def dims_of(scale) -> tuple[float, float, float]:
    """(φ_d, φ_w, φ_r) of a compound or per-dimension scale."""
    if scale.phi is not None:
        return scale.phi, scale.phi, scale.phi
    return scale.phi_depth, scale.phi_width, scale.phi_resolution


def ladder(ctx: FitContext, arch: Architecture, dimension: str) -> list[Architecture]:
    """Distinct architectures raising ``dimension``'s φ from ``arch`` (its first rung is ``arch`` itself)."""
    scaling = ctx.search.compound_scaling()
    pd, pw, pr = dims_of(arch.scale)
    start = pr if dimension == "resolution" else pw

    def scale_of(phi: float):
        return scaling.per_dimension(pd, phi, pr) if dimension == "width" else scaling.per_dimension(pd, pw, phi)

    rungs = distinct_scales(ctx.family, scale_of, start, start + SPAN)
    return [arch] + [Architecture(ctx.family, arch.phi, arch.phi_max, s) for _, _, s in rungs[1:]]


def _point(ctx: FitContext, i: int, m: Measurement | None) -> dict:
    """One end of the fill (compound pick or final choice): scale, latency and utilisation."""
    s = ctx.archs[i].scale
    pd, pw, pr = dims_of(s)
    lat, mem = (m.latency_ms, m.memory_mb) if m is not None else ctx.predict_arch(i)
    return {"phi_depth": pd, "phi_width": pw, "phi_resolution": pr, "resolution": s.resolution,
            "depth_multiplier": round(s.depth, 6), "width_multiplier": round(s.width, 6),
            "latency_ms": round(lat, 4), "memory_mb": None if mem is None else round(mem, 2),
            "utilisation": utilisation(ctx, lat, mem)}


def utilisation(ctx: FitContext, latency_ms: float, memory_mb: float | None) -> float | None:
    """Latency over the latency budget (memory over the memory budget when there is no latency budget)."""
    b = ctx.budget
    if b.latency_ms:
        return round(latency_ms / b.latency_ms, 4)
    if b.memory_mb and memory_mb is not None:
        return round(memory_mb / b.memory_mb, 4)
    return None


def fill_gap(ctx: FitContext, chosen: int, measurements: list[Measurement],
             measure: Callable[[int], Measurement] | None) -> tuple[int, list[Measurement], dict]:
    """Raise resolution, then width, from the compound pick ``chosen`` (an index into ``ctx.archs``).

    The ladders' architectures are appended to ``ctx.archs`` (so everything downstream indexes
    them like any other). ``measure`` is ``None`` on a target that cannot be measured: the ladders
    are then searched on predictions. Returns (chosen index, all measurements, the record's
    ``search.per_dimension``).
    """
    compound = chosen
    by_index = {m.index: m for m in measurements}
    steps: list[dict] = []
    reason = None
    for dimension in DIMENSIONS:
        rungs = ladder(ctx, ctx.archs[chosen], dimension)
        if len(rungs) < 2:
            continue
        glob = [chosen] + list(range(len(ctx.archs), len(ctx.archs) + len(rungs) - 1))
        ctx.archs.extend(rungs[1:])
        if measure is None:
            local, reason = _predicted_pick(ctx, rungs, glob)
        else:
            local, new, reason = _measured_pick(ctx, rungs, glob, by_index, measure)
            for m in new:
                by_index[m.index] = m
        for j, g in enumerate(glob):
            m = by_index.get(g)
            if m is None and j not in (0, local):
                continue
            lat, mem = ctx.predict_arch(g)
            s = ctx.archs[g].scale
            steps.append({"dimension": dimension, "phi": dims_of(s)[2 if dimension == "resolution" else 1],
                          "resolution": s.resolution, "width_multiplier": round(s.width, 6),
                          "predicted_ms": round(lat, 4), "measured_ms": None if m is None else m.latency_ms,
                          "fits": None if m is None else m.fits, "chosen": j == local})
        ctx.log(f"per-dimension: {dimension} -> resolution {ctx.archs[glob[local]].scale.resolution}, "
                f"width x{ctx.archs[glob[local]].scale.width:.3f}")
        chosen = glob[local]
    all_measured = sorted(by_index.values(), key=lambda m: m.index)
    basis = "predicted" if measure is None else "measured"
    before, after = _point(ctx, compound, by_index.get(compound)), _point(ctx, chosen, by_index.get(chosen))
    gained = None
    if before["utilisation"] is not None and after["utilisation"] is not None:
        gained = round(100 * (after["utilisation"] - before["utilisation"]), 2)
    summary = {"basis": basis, "order": list(DIMENSIONS), "compound": before, "chosen": after,
               "utilisation_gained_pp": gained, "reason_next_rejected": reason, "steps": steps}
    return chosen, all_measured, summary


def _measured_pick(ctx: FitContext, rungs: list[Architecture], glob: list[int], by_index: dict[int, Measurement],
                   measure: Callable[[int], Measurement]) -> tuple[int, list[Measurement], str | None]:
    """The closed loop over one ladder, from the compound pick's (or previous ladder's) measurement."""
    def predicted(j: int) -> tuple[float, float]:
        return ctx.predict_arch(glob[j])

    def measure_local(j: int) -> Measurement:
        m = measure(glob[j])
        return replace(m, index=j, dims=list(dims_of(ctx.archs[glob[j]].scale)))

    known = {0: replace(by_index[glob[0]], index=0)} if glob[0] in by_index else {}
    start = _corrected_start(known, predicted, len(rungs), ctx)
    if start == 0 and known:
        start = 1  # nothing larger is predicted to fit: measure the next rung to show it does not
    ok, done = closed_loop(len(rungs), start, predicted, measure_local, ctx.budget, ctx.log, known=known)
    new = [replace(m, index=glob[m.index]) for m in done if m.index not in known]
    nxt = next((m for m in done if m.index == ok + 1), None)
    if nxt is not None:
        reason = (f"next rung (resolution {nxt.resolution}, width x{ctx.archs[glob[nxt.index]].scale.width:.3f}) "
                  f"measured p{ctx.budget.percentile} {nxt.judged_latency(ctx.budget.percentile):.2f} ms: over the "
                  f"budget less the {ctx.budget.noise_margin_pct:g}% noise margin")
    else:
        reason = "no larger rung measured" if ok < len(rungs) - 1 else "top of the ladder reached"
    return ok, new, reason


def _corrected_start(known: dict[int, Measurement], predicted, n: int, ctx: FitContext) -> int:
    """The largest rung whose prediction, corrected by the known measurement's ratio, fits (0 if none)."""
    from pipeline.measure.loop import measured_fits

    if not known:
        return 0
    m = known[0]
    lat0, mem0 = predicted(0)
    lat_r = m.latency_at(ctx.budget.percentile) / lat0
    mem_r = (m.memory_mb / mem0) if m.memory_mb and mem0 else 1.0
    best = 0
    for j in range(1, n):
        lat, mem = predicted(j)
        if measured_fits(lat * lat_r, mem * mem_r, ctx.budget):
            best = j
        elif lat * lat_r > 1.5 * (ctx.budget.latency_ms or float("inf")):
            break  # far over: the rest of the ladder is larger still
    return best


def _predicted_pick(ctx: FitContext, rungs: list[Architecture], glob: list[int]) -> tuple[int, str | None]:
    """The largest rung predicted to fit with the compound search's margins (a scan up the ladder).

    The scan stops after ``NEIGHBOURS`` consecutive rungs that do not fit (the compound search's
    allowance for small non-monotonicities), so only the rungs near the gap are costed.
    """
    r = ctx.result
    margins = (r.margin_pct, r.margin_pct if r.memory_margin_pct is None else r.memory_margin_pct)
    best, misses, reason = 0, 0, None
    for j in range(1, len(rungs)):
        lat, mem = ctx.predict_arch(glob[j])
        why = rejection(lat, mem, ctx.budget, margins, ctx.target.memory_mb)
        if why is None:
            best, misses = j, 0
            continue
        if j == best + 1:
            reason = why
        misses += 1
        if misses >= NEIGHBOURS:
            break
    return best, reason


__all__ = ["DIMENSIONS", "SPAN", "dims_of", "fill_gap", "ladder", "utilisation"]
