"""The run report: Markdown with a latency-vs-φ plot, written next to fit.json.

It reads the run only through :class:`~pipeline.record.schema.RunRecord`, so a report is
never rendered from a record that does not follow the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.record.schema import RunRecord


def plot_frontier(fit: RunRecord, path: Path) -> Path:
    """Predicted (and measured) latency against φ, the budget line and the chosen point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    front = fit.frontier
    ax.plot([f.phi for f in front], [f.latency_ms for f in front], "o-", ms=3, label="predicted p50")
    meas = fit.measurements
    if meas:
        ax.plot([m.phi for m in meas], [m.latency_ms for m in meas], "s", color="C3", label="measured p50")
    if fit.budget.latency_ms:
        ax.axhline(fit.budget.latency_ms, color="k", ls="--", lw=1, label="budget")
    lat = (fit.measured or fit.predicted).latency_ms
    ax.plot([fit.phi], [lat], "*", ms=14, color="C2", label=f"chosen φ={fit.phi:g}")
    ax.set_xlabel("φ (compound)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{fit.family} on {fit.target} ({fit.precision})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _error_words(p) -> str:
    """The held-out error and which case it is (pipeline.predict.heldout)."""
    if p.heldout_error_pct is None:
        return "unknown"
    case = p.error_case or "leave-one-out"
    return f"{p.heldout_error_pct:g}% (p90, {case})"


def _unknown_error_line(fit: RunRecord) -> str | None:
    """The first thing a reader must know when nothing says how wrong the prediction may be."""
    p = fit.predicted
    if p.heldout_error_pct is not None or fit.measured is not None:
        return None
    return (f"**The error of this prediction is unknown.** {fit.family} was never timed on {fit.target}'s "
            f"{fit.precision} profile and the profile has too few families to estimate a cross-family error, so the "
            f"search used the documented unknown-error margin of {fit.search.margin_pct:g}% (see docs/predictions.md). "
            f"Measure on the device before relying on it.")


def _provenance_line(fit: RunRecord) -> str:
    p = fit.predicted
    err = _error_words(p)
    if fit.measured is None:
        return (f"**Latency was predicted, not measured**: from a {p.provenance} profile "
                f"(`{p.profile}`), held-out error {err}. Nothing here was timed on {fit.target}.")
    m = fit.measured
    how = f"{m.threads} threads" if hasattr(m, "threads") else m.source
    return (f"Latency was **measured** on {m.device} ({how}): p50 {m.latency_ms:.2f} ms, "
            f"p90 {m.latency_ms_p90:.2f} ms. The {p.provenance} profile predicted {p.latency_ms:.2f} ms "
            f"(held-out error {err}).")


def _precision_lines(fit: RunRecord) -> list[str]:
    """fp32 / fp16 / int8 side by side; every latency says whether it was measured or predicted."""
    rows = fit.precisions
    if not rows:
        return []

    def num(a, fmt: str) -> str:
        return "—" if a is None else format(a, fmt)

    lines = ["## Precision", "", "| precision | latency ms | latency from | size MiB | size from | accuracy |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.precision}{' (this run)' if r.precision == fit.precision else ''} | "
              f"{num(r.latency_ms, '.2f')} | {r.latency_source} | "
              f"{num(r.size_mb, '.2f')} | {r.size_source} | {num(r.accuracy, '.4f')} |" for r in rows]
    return lines + [""]


def family_choice_lines(fit: RunRecord) -> list[str]:
    """``--family auto``: every family's best predicted fit side by side, and the rule that chose."""
    choice = fit.family_choice
    if choice is None:
        return []
    lines = ["## Family choice (`--family auto`)", "", f"Rule: {choice.rule}.", "",
             "| family | fits | φ | resolution | params | MACs (M) | predicted ms | margin % | expected top-1 % | "
             "from | |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in choice.families:
        mark = "**chosen**" if p.family == choice.chosen else ""
        if not p.fits:
            lines.append(f"| {p.family} | no | | | | | | {p.margin_pct or 0:.1f} | | {p.reason} | |")
            continue
        lines.append(f"| {p.family} | yes | {p.phi:g} | {p.resolution} | {p.params:,} | {p.macs / 1e6:.1f} | "
                     f"{p.predicted_latency_ms:.2f} | {p.margin_pct:.1f} | {p.expected_top1:.1f} | "
                     f"{p.expected_how}: {', '.join(p.expected_from)} | {mark} |")
    return lines + [""]


def noise_lines(fit: RunRecord) -> list[str]:
    """The reference model's drift during the run, and the load check when one ran."""
    noise = fit.noise
    if noise is None:
        return []
    lines = ["## Noise", "", f"The reference model ({noise.reference}) was timed next to every measurement; it "
             f"drifted by {noise.drift_pct:.1f}% over the run (slowest over fastest timing).", ""]
    if noise.check is not None:
        lines += [f"Load check ({noise.check.verdict}): {noise.check.detail}.", ""]
    return lines


def _chosen_words(fit: RunRecord) -> str:
    s = fit.scale
    if s.phi is None and s.phi_depth is not None:
        return f"φ_d={s.phi_depth:g}, φ_w={s.phi_width:g}, φ_r={s.phi_resolution:g}"
    return f"φ={fit.phi:g}"


def _scaling_line(fit: RunRecord) -> list[str]:
    """The constants the architectures were made with, when they are not EfficientNet's."""
    sc = fit.scaling
    if sc is None or sc.name == "efficientnet":
        return []
    return [f"Scaling: α={sc.alpha:g}, β={sc.beta:g}, γ={sc.gamma:g} ({sc.name or sc.kind}; {sc.source}).", ""]


def _per_dimension_lines(fit: RunRecord) -> list[str]:
    """``--search per-dimension``: where the compound pick was, what was raised, the utilisation gained."""
    pd = fit.search.per_dimension
    if pd is None:
        return []
    c, f = pd.compound, pd.chosen

    def util(p) -> str:
        return "—" if p.utilisation is None else f"{100 * p.utilisation:.1f}%"

    lines = ["## Per-dimension fill", "",
             f"After the compound pick, {' then '.join(pd.order)} were raised within the budget "
             f"({pd.basis} latencies). Utilisation {util(c)} -> **{util(f)}**"
             + (f" (+{pd.utilisation_gained_pp:.1f} pp)" if pd.utilisation_gained_pp is not None else "") + ".", "",
             "| | φ_d | φ_w | φ_r | resolution | width × | latency ms | utilisation |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in (("compound pick", c), ("per-dimension choice", f)):
        lines.append(f"| {name} | {p.phi_depth:g} | {p.phi_width:g} | {p.phi_resolution:g} | {p.resolution} | "
                     f"{p.width_multiplier:.3f} | {p.latency_ms:.2f} | {util(p)} |")
    lines += ["", "| dimension | φ | resolution | width × | predicted ms | measured ms | fits | chosen |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s.dimension} | {s.phi:g} | {s.resolution} | {s.width_multiplier:.3f} | {s.predicted_ms:.2f} | "
              f"{'—' if s.measured_ms is None else format(s.measured_ms, '.2f')} | "
              f"{'—' if s.fits is None else s.fits} | {'<-' if s.chosen else ''} |" for s in pd.steps]
    return lines + ["", f"Next rung rejected because: {pd.reason_next_rejected}.", ""]


def write_report(fit: RunRecord | dict, run_dir: Path) -> Path:
    """``report.md`` (+ ``latency_vs_phi.png``): provenance first, then the decision and its evidence.

    ``fit`` is the run record, or its JSON object (validated here, so a report never shows a
    record that fit.json's schema would refuse).
    """
    from pipeline.record.rundir import parse_record
    from pipeline.record.schema import RunRecord

    if not isinstance(fit, RunRecord):
        fit = parse_record(fit, run_dir / "fit.json")
    png = plot_frontier(fit, run_dir / "latency_vs_phi.png")
    b, v = fit.budget, fit.verified
    budget = ", ".join(x for x in (b.latency_ms and f"{b.latency_ms:g} ms p{b.percentile}",
                                   b.memory_mb and f"{b.memory_mb:.1f} MiB") if x)
    unknown = _unknown_error_line(fit)
    lines = [
        f"# edgefit: {fit.family} for {fit.target} ({fit.precision})", "",
        *([unknown, ""] if unknown else []),
        _provenance_line(fit), "",
        f"Budget: {budget}. Chosen: **{_chosen_words(fit)}** (depth ×{fit.depth_multiplier:.3f}, width "
        f"×{fit.width_multiplier:.3f}, resolution {fit.resolution}), {fit.params:,} parameters, "
        f"{fit.macs / 1e6:.1f} M MACs.", "",
        *_scaling_line(fit),
        f"Next larger architecture rejected because: {fit.search.reason_next_rejected}.", "",
        *_per_dimension_lines(fit),
        f"Verified: latency {v.latency}, memory {v.memory}, accuracy {v.accuracy}.", "",
        f"![latency vs φ]({png.name})", "",
    ]
    lines += family_choice_lines(fit)
    lines += noise_lines(fit)
    if fit.measurements:
        lines += ["## Measurements on the device", "",
                  "| φ | resolution | predicted ms | measured p50 | p90 | memory MiB | error | fits |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m.phi:g}{'' if m.dims is None else ' (φ_d/w/r ' + '/'.join(f'{x:g}' for x in m.dims) + ')'} | "
                  f"{m.resolution} | {m.predicted_ms:.2f} | {m.latency_ms:.2f} | "
                  f"{m.latency_ms_p90:.2f} | {m.memory_mb} | {m.error_pct:+.1f}% | {m.fits} |"
                  for m in fit.measurements]
        lines.append("")
    par = fit.parity
    if par:
        lines += ["## Export fidelity (ONNX Runtime vs PyTorch)", "",
                  f"{par['n']} {par['source_of_inputs']} inputs: max abs error {par['max_abs_err']:.2e}, "
                  f"min cosine {par['cosine_min']:.6f}, top-1 agreement {par['top1_agreement']:.3f}; "
                  f"tolerances {par['tolerances']}, max_abs times the logit scale {par.get('logit_scale', 1.0):.3g} "
                  f"({'pass' if par['passed'] else 'FAIL'}).", "",
                  f"Weights: {fit.weights}.", ""]
    acc = fit.accuracy
    if acc:
        lines += ["## Accuracy", "", f"On the validation split of {acc.dataset} ({acc.samples} images): "
                  f"PyTorch {acc.torch:.4f}, ONNX Runtime {acc.onnx:.4f}, top-1 agreement "
                  f"{acc.agreement:.4f}, max abs logit difference {acc.max_abs_logit_diff:.2e}"
                  + (f"; required ≥ {acc.min_accuracy:g}" if acc.min_accuracy is not None else "") + ".",
                  ""]
    lines += _precision_lines(fit)
    q = fit.int8
    if q:
        g = q["gate"]
        lines += [f"INT8: {q['quantization']['method']} calibration on {q['calibration_data']}; accuracy "
                  f"fp32 {g['fp32_accuracy']:.4f} vs int8 {g['int8_accuracy']:.4f} against {g['labels']}, drop "
                  f"{g['drop_pp']:.2f} pp (limit {g['max_drop_pp']:g}"
                  f"{'' if q['gated'] else ', not gated: untrained'}).",
                  ""]
        if q.get("sensitivity"):
            lines += ["Layers causing most of the INT8 error (exclude with `--int8-exclude`): "
                      + ", ".join(f"{x['node']} ({x['rel_l2']:.3f})" for x in q["sensitivity"]), ""]
    lines += ["## Frontier (distinct architectures evaluated)", "",
              "| φ | φ up to | resolution | params | MACs (M) | predicted ms | memory MiB | fits |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {f.phi:g} | {f.phi_max:g} | {f.resolution} | {f.params:,} | {f.macs / 1e6:.1f} | "
              f"{f.latency_ms:.2f} | {f.memory_mb:.1f} | {f.fits} |" for f in fit.frontier]
    from pipeline.core.io import atomic_write

    return atomic_write(run_dir / "report.md", "\n".join(lines) + "\n")
