"""Check the stated errors of published profiles against records they were not fitted on.

For every record of a profile: refit the predictor on the *other* records (the same code
path ``deploy predict`` takes), predict the held-out record, and compare the actual error
with the error the refitted predictor *states* for that record's family. A stated error
"covers" the case when |actual| ≤ stated. This is the check behind
``bench/predictor_published.py`` and a test: a stated error that does not cover the
actual error in at least nine cases of ten is not an error bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.predict.predictor import Predictor, load_predictor, record_cost
from pipeline.predict.profile import Profile, load_profile

COVERAGE_GOAL = 0.9


@dataclass(frozen=True)
class HeldOutCase:
    target: str
    precision: str
    family: str
    runtime: str
    actual_ms: float
    predicted_ms: float | None
    error_pct: float | None
    stated_pct: float | None
    case: str
    covered: bool | None  # None: nothing was stated (the unknown case) or nothing left to fit on

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProfileSummary:
    target: str
    precision: str
    records: int
    families: tuple[str, ...]
    method: str
    chosen_error_pct: float | None  # the chosen model's held-out p90 (LOFO when ≥ 2 family groups)


def published_profiles():
    """(target, precision) of every shipped profile whose provenance is ``published``."""
    from pipeline.predict.targets import list_targets

    for target in list_targets():
        for precision in target.precisions:
            path = target.profile_path(precision)
            if not target.measurable and path.is_file() and load_profile(path).provenance == "published":
                yield target, precision


def _without(profile: Profile, index: int) -> Profile:
    records = [r for i, r in enumerate(profile.records) if i != index]
    return Profile.from_dict({**profile.to_dict(), "records": records}, profile.path)


def held_out_cases(target, precision: str) -> tuple[ProfileSummary, list[HeldOutCase]]:
    """Every record of ``target``'s published ``precision`` profile, predicted from the others."""
    full = load_predictor(target, precision)
    profile = full.profile
    summary = ProfileSummary(target.name, precision, len(profile.model_records),
                             tuple(sorted({r["family"] for r in profile.model_records})), full.method,
                             full.heldout.score() if full.heldout else None)
    cases = []
    for i, rec in enumerate(profile.records):
        if rec["kind"] != "model":
            continue
        actual = float(rec["latency_ms"]["p50"])
        common = dict(target=target.name, precision=precision, family=rec["family"],
                      runtime=rec.get("runtime") or profile.runtime.get("name", ""), actual_ms=actual)
        if len(profile.model_records) < 2:
            cases.append(HeldOutCase(**common, predicted_ms=None, error_pct=None, stated_pct=None,
                                     case="only record", covered=None))
            continue
        predictor = Predictor.fit(_without(profile, i), target.hardware)
        pred = predictor.predict(record_cost(rec), rec["family"])
        error = (pred.latency_ms / actual - 1) * 100
        stated = pred.heldout_error_pct
        cases.append(HeldOutCase(**common, predicted_ms=pred.latency_ms, error_pct=round(error, 2),
                                 stated_pct=stated, case=pred.error_case or "unknown",
                                 covered=None if stated is None else abs(error) <= stated))
    return summary, cases


def coverage(cases: list[HeldOutCase]) -> tuple[int, int]:
    """(covered, cases with a stated error)."""
    stated = [c for c in cases if c.covered is not None]
    return sum(c.covered for c in stated), len(stated)
