"""Held-out error where it holds: for the family being predicted, not for the profile as a whole.

A profile of two ResNets says how well one ResNet predicts another, and nothing about an
EfficientNet. So every record is held out twice:

* **leave-one-out** (LOO): refit on every other record, predict it;
* **leave-one-family-out** (LOFO): refit without its whole family *group*, predict it.

Groups, not family names, because ResNet-18/34/50 share their blocks: one ResNet predicting
another is not evidence about a depthwise network (:data:`pipeline.core.names.FAMILY_GROUPS`).

The error stated for a prediction of family ``f`` is then (:meth:`Heldout.for_family`):

1. ``f``'s group is in the profile: the p90 of that group's LOO errors ("same family");
2. it is not, but the profile holds two or more groups: the p90 of all LOFO errors
   ("leave-one-family-out"). A group is held out only when at least two records, and at least
   as many as it holds, remain: a new family is predicted from *all* the profile's groups, so
   predicting three ResNets from one MobileNetV2 record is a harder problem than the one the
   figure stands for, and would swamp it;
3. otherwise ``None`` with a note: the family was never timed here and nothing says how
   far a prediction for it can be off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.names import family_group

HELDOUT_QUANTILE = 90  # the held-out error we report and plan with: p90 of |relative error|
# Fewer same-family held-out errors than this are too few to trust on their own: the stated error is
# then at least the profile's leave-one-family-out error (one lucky ResNet-from-MobileNet guess of 0.3%
# is not a 0.3% error bar).
MIN_SAME_FAMILY_CASES = 3
CASES = ("same family", "leave-one-family-out", "unknown")

Fit = Callable[[Sequence[dict]], Callable[[dict], float]]  # records -> (record -> predicted ms)


def record_family(record: dict) -> str:
    """The family a record stands for; each calibration probe is a family of its own ("probe:NAME")."""
    return f"probe:{record['probe']}" if record.get("family") == "probe" else record["family"]


def is_probe(family: str) -> bool:
    return family.startswith("probe:")


def p90(errors: Sequence[float]) -> float | None:
    """p90 of |errors| in percent (None for no errors)."""
    return None if len(errors) == 0 else round(float(np.percentile(np.abs(errors), HELDOUT_QUANTILE)), 2)


def _floored(pct: float | None, floor_pct: float) -> float | None:
    return None if pct is None else round(max(pct, floor_pct), 2)


@dataclass(frozen=True)
class ErrorEstimate:
    """The error stated for one prediction, and which of the three cases it came from."""

    pct: float | None
    case: str
    detail: str


@dataclass(frozen=True)
class Heldout:
    """Signed held-out errors (percent, predicted/actual − 1) of one model over a profile's records."""

    families: tuple[str, ...]
    loo: tuple[float | None, ...]
    lofo: tuple[float | None, ...]

    @classmethod
    def compute(cls, records: Sequence[dict], fit: Fit) -> Heldout:
        families = tuple(record_family(r) for r in records)
        y = [float(r["latency_ms"]["p50"]) for r in records]
        loo: list[float | None] = [None] * len(records)
        if len(records) >= 2:
            for i, rec in enumerate(records):
                model = fit([r for j, r in enumerate(records) if j != i])
                loo[i] = (model(rec) / y[i] - 1) * 100
        lofo: list[float | None] = [None] * len(records)
        groups = sorted({family_group(f) for f in families})
        if len(groups) >= 2:
            for g in groups:
                rest = [r for r in records if family_group(record_family(r)) != g]
                if len(rest) < max(2, len(records) - len(rest)):
                    continue  # see the module docstring: too little left to stand for a real prediction
                model = fit(rest)
                for i, rec in enumerate(records):
                    if family_group(record_family(rec)) == g:
                        lofo[i] = (model(rec) / y[i] - 1) * 100
        return cls(families, tuple(loo), tuple(lofo))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted({family_group(f) for f in self.families}))

    def overall(self) -> float | None:
        """p90 of the families' LOO errors: the profile-wide figure ``deploy calibrate`` reports.

        Calibration probes are left out: each is the only one of its kind, so its LOO error says how
        well an architecture nothing like it is predicted, which is :meth:`foreign_pct`'s question.
        """
        fam = [e for f, e in zip(self.families, self.loo) if e is not None and not is_probe(f)]
        return p90(fam or [e for e in self.loo if e is not None])

    def lofo_pct(self) -> float | None:
        """p90 of the LOFO errors of the families' groups: the error for a family this profile did not time."""
        return p90([e for f, e in zip(self.families, self.lofo) if e is not None and not is_probe(f)])

    def foreign_pct(self) -> float | None:
        """p90 of every LOFO error, probes included: the error for an ONNX file of unknown architecture."""
        return p90([e for e in self.lofo if e is not None])

    def score(self) -> float | None:
        """What two models are compared on: LOFO error when there are two groups, else LOO."""
        return self.lofo_pct() if len(self.groups) >= 2 else self.overall()

    def for_family(self, family: str | None, floor_pct: float = 0.0) -> ErrorEstimate:
        """The error stated for a prediction of ``family`` (None: an ONNX file of unknown family).

        ``floor_pct`` is the least error any stated figure may claim (published records carry
        their own harness noise; see :data:`pipeline.predict.predictor.PUBLISHED_ERROR_FLOOR_PCT`).
        """
        group = family_group(family) if family else None
        same = [e for f, e in zip(self.families, self.loo) if family_group(f) == group and e is not None]
        lofo = self.lofo_pct()
        if same:
            timed = sorted({f for f in self.families if family_group(f) == group})
            pct, detail = p90(same), f"leave-one-out over this profile's {', '.join(timed)} record(s)"
            if len(same) < MIN_SAME_FAMILY_CASES and lofo is not None and lofo > pct:
                pct, detail = lofo, detail + f" (only {len(same)}: raised to the leave-one-family-out error)"
            return ErrorEstimate(_floored(pct, floor_pct), "same family", detail)
        what = family or "this model's family"
        if family is None and self.foreign_pct() is not None and any(is_probe(f) for f in self.families):
            return ErrorEstimate(_floored(self.foreign_pct(), floor_pct), "leave-one-family-out",
                                 "an architecture of unknown family: error from predicting each family and each "
                                 "calibration probe of this profile from all the others")
        if lofo is not None:
            return ErrorEstimate(_floored(lofo, floor_pct), "leave-one-family-out",
                                 f"{what} was never timed on this profile; error from predicting each of its "
                                 f"families ({', '.join(self.groups)}) from the others")
        if group in self.groups:
            return ErrorEstimate(None, "unknown", f"{what} is the only record in this profile: nothing to hold out")
        known = ", ".join(sorted(set(self.families)))
        return ErrorEstimate(None, "unknown",
                             f"{what} was never timed on this target and the profile holds one family group "
                             f"({self.groups[0]}: {known}), "
                             f"so nothing says how far a prediction for another family can be off")
