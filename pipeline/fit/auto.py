"""``deploy fit --family auto``: search every family, choose one by a stated rule, then fit that one.

Each family is searched exactly as ``deploy fit --family F`` searches it (the target's profile, the family's own
held-out error as margin, the largest architecture predicted to fit), which costs milliseconds per family since
costs come from plans (:mod:`pipeline.cost.plan`). Among the families whose best architecture is predicted to
fit, the one with the highest expected ImageNet top-1 at that size wins (:data:`pipeline.cost.accuracy.RULE`);
then the ordinary fit runs for it (measure, export, verify) and ``fit.json`` keeps every family's pick, the
choice and the rule under ``family_choice``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.core.budget import Budget
from pipeline.core.errors import BudgetInfeasible
from pipeline.core.names import FAMILY_NAMES
from pipeline.cost.accuracy import RULE, expected_top1
from pipeline.fit.options import SearchOptions
from pipeline.fit.search import enumerate_architectures, search

AUTO = "auto"


@dataclass(frozen=True)
class FamilyPick:
    """One family's best predicted fit, and the top-1 its published line expects at that size."""

    family: str
    fits: bool
    phi: float | None = None
    resolution: int | None = None
    params: int | None = None
    macs: int | None = None
    predicted_latency_ms: float | None = None
    predicted_memory_mb: float | None = None
    margin_pct: float | None = None
    expected_top1: float | None = None
    expected_how: str | None = None
    expected_from: tuple[str, ...] = ()
    reason: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["expected_from"] = list(self.expected_from)
        return d


def search_family(family: str, predictor, budget: Budget, search_options: SearchOptions, memory_limit_mb,
                  num_classes: int) -> FamilyPick:
    """``family``'s largest architecture predicted to fit, as ``deploy fit --family F`` would search it."""
    from pipeline.cost.plan import scale_cost
    from pipeline.fit.flow import UNKNOWN_ERROR_MARGIN_PCT

    error = predictor.error_for(family)
    margin = error.pct if error.pct is not None else UNKNOWN_ERROR_MARGIN_PCT
    mem_err = predictor.memory_heldout_error_pct
    lo, hi = search_options.phi_range
    archs = enumerate_architectures(family, lo, hi)

    def predict(arch):
        p = predictor.predict(scale_cost(family, arch.scale, num_classes), family)
        return p.latency_at(budget.percentile), p.memory_mb

    try:
        result = search(archs, predict, budget, margin, memory_limit_mb, num_classes,
                        memory_margin_pct=mem_err if mem_err is not None else UNKNOWN_ERROR_MARGIN_PCT)
    except BudgetInfeasible as exc:
        return FamilyPick(family, False, margin_pct=margin, reason=str(exc))
    c = result.chosen
    expected = expected_top1(family, c.macs)
    return FamilyPick(family, True, c.phi, c.resolution, c.params, c.macs, c.latency_ms, c.memory_mb, margin,
                      expected.top1, expected.how, expected.between)


def choose_family(target: str, budget: Budget, *, search_options: SearchOptions, precision: str | None,
                  threads: int | None, targets_dir=None, num_classes: int = 1000,
                  families: tuple[str, ...] = FAMILY_NAMES, log: Callable[[str], None] = lambda _: None,
                  progress=None) -> dict:
    """Every family's pick and the chosen family: ``fit.json``'s ``family_choice``."""
    from pipeline.fit.flow import check_budget, fit_predictor
    from pipeline.predict.targets import load_target

    tgt = load_target(target, targets_dir)
    precision = tgt.check_precision(precision)
    threads = threads or tgt.threads
    predictor = fit_predictor(tgt, precision, threads, log, progress)
    predictor.check_percentile(check_budget(budget).percentile)
    picks = [search_family(f, predictor, budget, search_options, tgt.memory_mb, num_classes) for f in families]
    fitting = [p for p in picks if p.fits]
    if not fitting:
        raise BudgetInfeasible("no family has an architecture predicted to fit: "
                               + "; ".join(f"{p.family}: {p.reason}" for p in picks))
    chosen = max(fitting, key=lambda p: (p.expected_top1, -p.predicted_latency_ms))
    for p in picks:
        what = (f"φ={p.phi:g} res {p.resolution}, {p.predicted_latency_ms:.2f} ms predicted, expected top-1 "
                f"{p.expected_top1:.1f}% ({p.expected_how})" if p.fits else "nothing fits")
        log(f"family {p.family}: {what}" + ("  <- chosen" if p is chosen else ""))
    return {"rule": RULE, "chosen": chosen.family, "precision": precision,
            "families": [p.to_dict() for p in picks]}


def fit_auto(target: str, budget: Budget, *, search_options: SearchOptions | None = None, precision: str | None = None,
             device=None, run=None, log: Callable[[str], None] = lambda _: None, progress=None, **options) -> dict:
    """:func:`choose_family`, then :func:`pipeline.fit.flow.fit` for the chosen family (same options)."""
    from dataclasses import replace

    from pipeline.fit.flow import fit
    from pipeline.fit.options import DeviceOptions, RunOptions

    search_options = search_options or SearchOptions(AUTO)
    device, run = device or DeviceOptions(), run or RunOptions()
    num_classes = run.num_classes
    if num_classes is None and options.get("data") is not None and options["data"].data:
        from pipeline.fit.steps import num_classes_of

        num_classes = num_classes_of(options["data"].data)
    choice = choose_family(target, budget, search_options=search_options, precision=precision,
                           threads=device.threads, targets_dir=device.targets_dir, num_classes=num_classes or 1000,
                           log=log, progress=progress)
    return fit(target, budget, search_options=replace(search_options, family=choice["chosen"]),
               precision=choice["precision"], device=device, run=run, log=log, progress=progress,
               family_choice=choice, **options)


__all__ = ["AUTO", "FamilyPick", "choose_family", "fit_auto", "search_family"]
