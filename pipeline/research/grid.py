"""``deploy grid``: find α, β, γ for your own data and device by a grid search, as EfficientNet did on ImageNet.

EfficientNet's α=1.2, β=1.1, γ=1.15 came from a small grid search at φ=1 on ImageNet, for
accuracy, on TPUs; neither the grid nor the proxy schedule was published. This module runs that
search on the user's data and device:

1. **Enumerate** α, β, γ ≥ 1 on a ``step`` grid, keeping the points whose FLOPs factor per unit
   of φ, α·β²·γ², is within ``tolerance`` of ``flops_ratio``; EfficientNet's constants and
   Dollár et al.'s fast scaling (d=s^0.1, w=s^0.4, r=s^0.05 for s = the ratio) are added to every
   grid as reference points.
2. **Run each point** (:func:`pipeline.research.points.run_point`, cached per point): train at φ
   for ``epochs`` per seed, validation accuracy, latency measured on the target, MACs, parameters,
   peak activation memory. With ``objective="accuracy-at-latency"`` the φ of each point is instead
   the largest that fits the latency budget on the target, found by ``deploy fit``'s own search and
   measure-and-correct loop; accuracy per millisecond on *this* device is what is ranked then.
3. **Rank** the points by mean validation accuracy over the seeds (ties: the faster one) and write
   ``grid.json`` (one row per (α, β, γ) point, the per-seed rows inside it, the winner as the
   top-level ``scaling``) and ``report.md`` with the accuracy-against-latency plot.

A killed grid resumes: every finished point is in ``OUT/points/``, and ``grid.json`` is rewritten
after each point with ``complete: false`` until the last.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import BudgetInfeasible, UsageError
from pipeline.core.io import write_json
from pipeline.core.scaling import REFERENCE_SCALINGS, flops_factor, reference_constants
from pipeline.research.points import PointCache, PointSpec
from pipeline.research.report import write_grid_report

GRID_JSON = "grid.json"
OBJECTIVES = ("accuracy", "accuracy-at-latency")
MAX_GRID_POINTS = 2000  # beyond this the step is a typo, not a plan
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class GridOptions:
    """A grid search: what to train, on which grid, how to rank. Defaults follow the issue's command line."""

    family: str
    data: str
    phi: float = 1.0
    flops_ratio: float = 2.0
    tolerance: float = 0.1
    step: float = 0.05
    seeds: int = 3
    epochs: int = 10
    objective: str = "accuracy"
    target: str = "host"
    threads: int | None = None
    latency_ms: float | None = None  # the budget of accuracy-at-latency
    phi_min: float = -4.0  # accuracy-at-latency: the φ range the budget is searched in
    phi_max: float = 4.0
    base_resolution: int | None = None  # φ=0's resolution; None: the dataset's native size, else 224
    batch_size: int = 64
    lr: float = 1e-2
    train_threads: int | None = 1
    opset: int | None = None  # of the timed ONNX files (None: the target's highest, as fit ships)

    def check(self) -> GridOptions:
        from pipeline.models import check_family

        check_family(self.family)
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}.")
        if self.objective == "accuracy-at-latency" and not self.latency_ms:
            raise UsageError("--objective accuracy-at-latency needs --latency (the budget, e.g. 5ms).")
        if self.latency_ms and self.objective != "accuracy-at-latency":
            raise UsageError("--latency is the budget of --objective accuracy-at-latency; pass that objective too.")
        if not (self.flops_ratio > 1 and math.isfinite(self.flops_ratio)):
            raise UsageError(f"--flops-ratio must be above 1, got {self.flops_ratio:g}.")
        if not (0 < self.step <= 1):
            raise UsageError(f"--step must be in (0, 1], got {self.step:g}.")
        if not (0 <= self.tolerance < self.flops_ratio - 1):
            raise UsageError(f"--tolerance must be in [0, flops ratio - 1), got {self.tolerance:g}.")
        if self.seeds < 1 or self.epochs < 1:
            raise UsageError("--seeds and --epochs must be at least 1.")
        return self


@dataclass(frozen=True)
class GridPoint:
    """One (α, β, γ) of the grid; ``references`` names the published scalings it is (may be several or none)."""

    alpha: float
    beta: float
    gamma: float
    references: tuple[str, ...] = ()
    on_grid: bool = True

    @property
    def name(self) -> str:
        """``α/β/γ`` as the plot labels it."""
        return f"{self.alpha:.4g}/{self.beta:.4g}/{self.gamma:.4g}"


def grid_constants(flops_ratio: float, tolerance: float, step: float) -> list[tuple[float, float, float]]:
    """α, β, γ ≥ 1 on the step grid with |α·β²·γ² − ratio| ≤ tolerance, smallest α first."""
    hi = flops_ratio + tolerance
    n_a, n_b = int(math.floor((hi - 1) / step + 1e-9)), int(math.floor((math.sqrt(hi) - 1) / step + 1e-9))
    if (n_a + 1) * (n_b + 1) ** 2 > 50 * MAX_GRID_POINTS:
        raise UsageError(f"--step {step:g} makes a grid of millions of points; use 0.05 or coarser.")
    out = []
    for i in range(n_a + 1):
        for j in range(n_b + 1):
            for k in range(n_b + 1):
                a, b, g = (round(1 + x * step, 6) for x in (i, j, k))
                if abs(flops_factor(a, b, g) - flops_ratio) <= tolerance + 1e-9:
                    out.append((a, b, g))
    if len(out) > MAX_GRID_POINTS:
        raise UsageError(f"the grid has {len(out)} points (more than {MAX_GRID_POINTS}); raise --step or lower "
                         "--tolerance.")
    return out


def grid_points(flops_ratio: float, tolerance: float, step: float) -> list[GridPoint]:
    """The grid plus the reference scalings (EfficientNet's constants, Dollár's fast scaling for this ratio)."""
    points = {c: GridPoint(*c) for c in grid_constants(flops_ratio, tolerance, step)}
    for name in REFERENCE_SCALINGS:
        c = tuple(round(v, 6) for v in reference_constants(name, flops_ratio))
        old = points.get(c)
        points[c] = GridPoint(*c, references=(*old.references, name) if old else (name,), on_grid=old is not None)
    return sorted(points.values(), key=lambda p: (p.alpha, p.beta, p.gamma))


def _spread(values: list[float]) -> float | None:
    return round(statistics.stdev(values), 6) if len(values) > 1 else None


def summarise(point: GridPoint, rows: list[dict], extra: dict | None = None) -> dict:
    """One grid.json row: the (α, β, γ), its architecture and cost, accuracy mean ± spread, latency."""
    accs = [r["val_accuracy"] for r in rows]
    lats = [r["latency_ms"] for r in rows]
    first = rows[0] if rows else {}
    return {
        "alpha": point.alpha, "beta": point.beta, "gamma": point.gamma, "name": point.name,
        "flops_factor": round(flops_factor(point.alpha, point.beta, point.gamma), 6),
        "references": list(point.references), "on_grid": point.on_grid,
        **{k: first.get(k) for k in ("phi_depth", "depth_multiplier", "width_multiplier", "resolution", "params",
                                     "macs", "activation_mb", "provenance")},
        "phi": first.get("phi_depth"),
        "seeds": len(rows),
        "val_accuracy_mean": round(statistics.fmean(accs), 6) if accs else None,
        "val_accuracy_std": _spread(accs),
        "val_accuracy_min": min(accs) if accs else None, "val_accuracy_max": max(accs) if accs else None,
        "latency_ms": round(statistics.fmean(lats), 4) if lats else None,
        "latency_ms_min": min(lats) if lats else None, "latency_ms_max": max(lats) if lats else None,
        **(extra or {}),
        "rows": rows,
    }


def rank(points: list[dict]) -> list[dict]:
    """Best first: mean validation accuracy, then the faster; points without a score last."""
    scored = [p for p in points if p["val_accuracy_mean"] is not None]
    rest = [p for p in points if p["val_accuracy_mean"] is None]
    scored.sort(key=lambda p: (-p["val_accuracy_mean"], p["latency_ms"]))
    for i, p in enumerate(scored, 1):
        p["rank"] = i
    for p in rest:
        p["rank"] = None
    return scored + rest


def _fit_key(opts: GridOptions, point: GridPoint, base: int, num_classes: int) -> str:
    inputs = {"family": opts.family, "abg": [point.alpha, point.beta, point.gamma], "base": base,
              "budget": opts.latency_ms, "target": opts.target, "threads": opts.threads,
              "range": [opts.phi_min, opts.phi_max], "classes": num_classes}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def largest_fitting_phi(opts: GridOptions, point: GridPoint, base: int, num_classes: int, out: Path,
                        log: Callable[[str], None]) -> dict:
    """``deploy fit``'s answer for this (α, β, γ): the largest φ whose model fits the budget on the target.

    Cached in ``OUT/fits/<key>/`` (the fit's own run directory) or ``OUT/fits/<key>.json`` when
    nothing fits. Returns ``{"phi", "fit_latency_ms", "fit_measured", "fits"}``.
    """
    from pipeline.core.budget import Budget
    from pipeline.core.scalings import NamedScaling
    from pipeline.fit.flow import fit
    from pipeline.fit.options import DeviceOptions, RunOptions, SearchOptions

    key = _fit_key(opts, point, base, num_classes)
    run_dir, infeasible = out / "fits" / key, out / "fits" / f"{key}.json"
    if (run_dir / "fit.json").is_file():
        record = json.loads((run_dir / "fit.json").read_text(encoding="utf-8"))
    elif infeasible.is_file():
        return json.loads(infeasible.read_text(encoding="utf-8"))
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        named = NamedScaling(None, point.alpha, point.beta, point.gamma, "flags", f"grid point {point.name}")
        try:
            record = fit(opts.target, Budget(latency_ms=opts.latency_ms), search_options=SearchOptions(
                opts.family, opts.phi_min, opts.phi_max, named, base_resolution=base),
                run=RunOptions(out=run_dir, force=True, num_classes=num_classes),
                device=DeviceOptions(threads=opts.threads), log=log)
        except BudgetInfeasible as exc:
            result = {"phi": None, "fits": False, "fit_latency_ms": None, "fit_measured": None, "reason": str(exc)}
            write_json(infeasible, result)
            return result
    m = record.get("measured")
    return {"phi": record["phi"], "fits": True, "fit_measured": m is not None, "reason": None,
            "fit_latency_ms": (m or record["predicted"])["latency_ms"], "fit_run": str(run_dir)}


def run_grid(opts: GridOptions, out: str | Path, *, progress: Progress | None = None,
             log: Callable[[str], None] = lambda _: None, device=None, backend=None) -> dict:
    """Run (or resume) the grid in ``out``; write grid.json and report.md there; return grid.json's object.

    ``backend`` (:mod:`pipeline.research.backends`) runs the points: here one by one (default) or as
    Ray tasks. Either way finished points land in, and are read back from, the same per-point cache.
    """
    from pipeline.data.datasets import load_dataset
    from pipeline.research.backends import LocalBackend, PointFailure, PointJob

    opts = opts.check()
    backend = backend or LocalBackend()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(opts.data)
    base = opts.base_resolution or data.base_resolution or 224
    points = grid_points(opts.flops_ratio, opts.tolerance, opts.step)
    cache = PointCache(out)
    total = len(points) * opts.seeds + (len(points) if opts.objective == "accuracy-at-latency" else 0)
    log(f"grid: {len(points)} (α, β, γ) points ({sum(p.on_grid for p in points)} on the grid, "
        f"{sum(not p.on_grid for p in points)} reference only) × {opts.seeds} seed(s), {opts.epochs} epoch(s) each, "
        f"on {data.name}, backend {backend.name}; results cached in {cache.dir}")
    done, extras, jobs, owner = 0, [], [], []
    if progress:
        progress(0, total, "starting")
    for n, point in enumerate(points):  # the φ of each point first (accuracy-at-latency searches it here)
        extra, phi = {}, opts.phi
        if opts.objective == "accuracy-at-latency":
            extra = largest_fitting_phi(opts, point, base, data.num_classes, out, log)
            done += 1
            if progress:
                progress(done, total, f"{point.name}: fit")
            phi = extra["phi"]
        extras.append(extra)
        if phi is None:
            done += opts.seeds
            log(f"{point.name}: nothing fits {opts.latency_ms:g} ms ({extra.get('reason')})")
            continue
        for seed in range(opts.seeds):
            spec = PointSpec.compound(opts.family, point.alpha, point.beta, point.gamma, phi, seed=seed,
                                      data=opts.data, epochs=opts.epochs, target=opts.target,
                                      threads=opts.threads, base_resolution=base, batch_size=opts.batch_size,
                                      lr=opts.lr, train_threads=opts.train_threads, opset=opts.opset,
                                      label="+".join(point.references) or "grid")
            jobs.append(PointJob(spec, f"{point.name} seed {seed}"))
            owner.append(n)
    results = backend.run(jobs, cache, data=data, device=device, log=log, progress=progress, done_before=done,
                          total=total)
    rows: list[list[dict]] = [[] for _ in points]
    failures: list[list[dict]] = [[] for _ in points]
    for n, job, row in zip(owner, jobs, results):
        if isinstance(row, PointFailure):
            failures[n].append(row.to_dict())
            continue
        rows[n].append(row)
        log(f"{job.label}: val accuracy {row['val_accuracy']:.4f}, {row['latency_ms']:.2f} ms "
            f"({row['provenance']}){' [cached]' if row['cached'] else ''}")
    summaries = [summarise(point, rows[n], {**extras[n], **({"failures": failures[n]} if failures[n] else {})})
                 for n, point in enumerate(points)]
    result = _grid_record(opts, data, base, summaries, complete=True, seconds=time.perf_counter() - started, out=out)
    result["backend"] = backend.name
    write_json(out / GRID_JSON, result)
    write_grid_report(result, out)
    return result


def _grid_record(opts: GridOptions, data, base: int, summaries: list[dict], *, complete: bool, seconds: float,
                 out: Path) -> dict:
    ranked = rank([dict(s) for s in summaries])
    winner = ranked[0] if ranked and ranked[0]["rank"] == 1 else None
    refs = {name: next((p for p in ranked if name in p["references"]), None) for name in REFERENCE_SCALINGS}
    return {
        "schema_version": 1, "kind": "edgefit-grid", "complete": complete,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"), "seconds": round(seconds, 1),
        "options": asdict(opts), "base_resolution": base,
        "data": {"name": data.name, "fingerprint": data.fingerprint(), "samples": len(data),
                 "classes": list(data.classes)},
        "points_total": len(grid_points(opts.flops_ratio, opts.tolerance, opts.step)),
        "winner": None if winner is None else {k: winner[k] for k in (
            "alpha", "beta", "gamma", "name", "val_accuracy_mean", "val_accuracy_std", "latency_ms", "phi")},
        "references": {k: None if v is None else {"alpha": v["alpha"], "beta": v["beta"], "gamma": v["gamma"],
                                                  "rank": v["rank"], "val_accuracy_mean": v["val_accuracy_mean"],
                                                  "latency_ms": v["latency_ms"]} for k, v in refs.items()},
        # the winner as a named scaling: `--scaling OUT` takes these constants (pipeline.core.scalings)
        "scaling": None if winner is None else {
            "name": None, "alpha": winner["alpha"], "beta": winner["beta"], "gamma": winner["gamma"],
            "kind": "run", "source": f"{(out / GRID_JSON).resolve()} winner ({opts.family} on {data.name}, objective "
                                     f"{opts.objective})"},
        "points": ranked,
    }


def save_winner(result: dict, name: str, force: bool = False) -> Path:
    """Save the grid's winner as the named scaling ``name`` in the user config."""
    from pipeline.core.scalings import save_scaling

    sc = result.get("scaling")
    if sc is None:
        raise UsageError("the grid has no winner (no point was scored); nothing to save.")
    return save_scaling(name, sc["alpha"], sc["beta"], sc["gamma"], sc["source"], force=force)


__all__ = ["GRID_JSON", "OBJECTIVES", "GridOptions", "GridPoint", "grid_constants", "grid_points",
           "largest_fitting_phi", "rank", "run_grid", "save_winner", "summarise"]
