"""How honest are predictions from published profiles? Each record predicted from the others.

For every shipped profile with provenance ``published``: hold out each record, refit on the
rest exactly as ``deploy predict`` would, and compare the actual error with the error the
refitted predictor *stated* for that family. Writes ``results/predictor_published.{json,md}``
with one row per record, the coverage (|actual| ≤ stated), and per profile which model was
kept (layer-wise or roofline) on its leave-one-family-out error.

    python bench/predictor_published.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save_results  # noqa: E402
from pipeline.fit.flow import UNKNOWN_ERROR_MARGIN_PCT  # noqa: E402
from pipeline.predict.evaluate import COVERAGE_GOAL, coverage, held_out_cases, published_profiles  # noqa: E402


def _num(v, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(summaries, cases) -> str:
    covered, stated = coverage(cases)
    unknown = [c for c in cases if c.stated_pct is None and c.error_pct is not None]
    unknown_ok = sum(abs(c.error_pct) <= UNKNOWN_ERROR_MARGIN_PCT for c in unknown)
    lines = [
        "# Predictions from published profiles, checked on records they were not fitted on", "",
        f"**Coverage: {covered} of {stated} stated errors cover the actual error "
        f"({covered / max(stated, 1):.0%}; goal ≥ {COVERAGE_GOAL:.0%}).** "
        f"{len(unknown)} held-out cases had no stated error (family never timed, one family group left); "
        f"the unknown-error margin fit uses then ({UNKNOWN_ERROR_MARGIN_PCT:g}%) covers {unknown_ok} of them.", "",
        "Each row: one record held out, the predictor refitted on the profile's other records (as "
        "`deploy predict` fits it), the held-out record predicted. *stated* is the error the refitted "
        "predictor claims for that family; *covered* means |error| ≤ stated.", "",
        "## Per record", "",
        "| target | precision | family | runtime of the record | actual ms | predicted ms | error | stated | case "
        "| covered |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        cov = {True: "covered", False: "**not covered**", None: "—"}[c.covered]
        lines.append(f"| {c.target} | {c.precision} | {c.family} | {c.runtime} | {c.actual_ms:g} | "
                     f"{_num(c.predicted_ms)} | {_num(c.error_pct, '+.1f')}% | {_num(c.stated_pct, '.1f')}% | "
                     f"{c.case} | {cov} |")
    lines += ["", "## Per profile: which model was kept", "",
              "Layer-wise and roofline are compared on leave-one-family-out p90 error when the profile has two "
              "or more family groups (ResNets are one group); otherwise the layer-wise model is kept.", "",
              "| target | precision | records | families | held-out p90 of the kept model | method |",
              "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.target} | {s.precision} | {s.records} | {', '.join(s.families)} | "
                     f"{_num(s.chosen_error_pct, '.1f')}% | {s.method} |")
    return "\n".join(lines)


def main() -> int:
    summaries, cases = [], []
    for target, precision in published_profiles():
        print(f"{target.name} {precision}", flush=True)
        summary, rows = held_out_cases(target, precision)
        summaries.append(summary)
        cases += rows
    covered, stated = coverage(cases)
    data = {"coverage": {"covered": covered, "stated": stated, "goal": COVERAGE_GOAL},
            "unknown_error_margin_pct": UNKNOWN_ERROR_MARGIN_PCT,
            "profiles": [s.__dict__ for s in summaries], "cases": [c.to_dict() for c in cases]}
    _, md = save_results("predictor_published", data, markdown(summaries, cases))
    print(f"coverage {covered}/{stated}; wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
