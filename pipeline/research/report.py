"""Markdown reports and plots of ``deploy grid`` and ``deploy study`` (read from their JSON, nothing recomputed)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.io import atomic_write

GRID_REPORT, GRID_PLOT = "report.md", "grid.png"
STUDY_REPORT, STUDY_PLOT = "report.md", "study.png"


def pct(value: float | None, spread: float | None = None) -> str:
    """0.6123, 0.011 -> '61.23 ± 1.10%'; a single seed has no spread."""
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" + ("" if spread is None else f" ± {100 * spread:.2f}")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grid(result: dict, path: Path) -> Path:
    """Accuracy against latency, every point labelled α/β/γ; references and the winner marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    pts = [p for p in result["points"] if p["val_accuracy_mean"] is not None]
    styles = {"efficientnet": ("s", "C3", "EfficientNet (1.2/1.1/1.15)"), "dollar-fast": ("D", "C2", "Dollár fast")}
    seen = set()
    for p in pts:
        x, y = p["latency_ms"], 100 * p["val_accuracy_mean"]
        ref = next((r for r in p["references"] if r in styles), None)
        marker, colour, label = styles[ref] if ref else ("o", "C0", "grid point")
        err = None if p["val_accuracy_std"] is None else 100 * p["val_accuracy_std"]
        ax.errorbar([x], [y], yerr=None if err is None else [err], fmt=marker, color=colour, ms=6, capsize=2,
                    label=None if label in seen else label)
        seen.add(label)
        ax.annotate(p["name"], (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
    if pts and pts[0]["rank"] == 1:
        w = pts[0]
        ax.plot([w["latency_ms"]], [100 * w["val_accuracy_mean"]], "*", ms=16, color="gold", mec="k", zorder=5,
                label=f"winner {w['name']}")
    budget = result["options"].get("latency_ms")
    if budget:
        ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget {budget:g} ms")
    o = result["options"]
    prov = {p["provenance"] for p in pts}
    ax.set_xlabel(f"latency p50 on {o['target']}, ms ({', '.join(sorted(prov)) or 'none'})")
    ax.set_ylabel("validation top-1, % (mean over seeds ± std)")
    what = f"φ={o['phi']:g}" if o["objective"] == "accuracy" else f"largest φ within {o['latency_ms']:g} ms"
    ax.set_title(f"{o['family']} on {result['data']['name']}: α/β/γ grid at {what}, {o['epochs']} epochs",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def grid_markdown(result: dict, plot_name: str) -> str:
    o, pts = result["options"], result["points"]
    scored = [p for p in pts if p["val_accuracy_mean"] is not None]
    lines = [f"# α, β, γ grid: {o['family']} on {result['data']['name']}", ""]
    if not result["complete"]:
        lines += ["**Incomplete**: the grid was interrupted; rerun the same command to resume.", ""]
    what = (f"each point trained at φ={o['phi']:g}" if o["objective"] == "accuracy" else
            f"each point trained at the largest φ in [{o['phi_min']:g}, {o['phi_max']:g}] that `deploy fit` finds "
            f"within {o['latency_ms']:g} ms on {o['target']} (measure-and-correct loop where it can measure)")
    lines += [f"Objective **{o['objective']}**: {what}, {o['epochs']} epoch(s), {o['seeds']} seed(s) per point, "
              f"base resolution {result['base_resolution']} px (φ=0). Grid: α, β, γ ≥ 1 in steps of {o['step']:g} with "
              f"|α·β²·γ² − {o['flops_ratio']:g}| ≤ {o['tolerance']:g}, plus EfficientNet's constants and Dollár's "
              f"fast scaling (d=s^0.1, w=s^0.4, r=s^0.05) as references. {len(pts)} points, "
              f"{result['seconds']:.0f} s.", ""]
    lat_prov = sorted({p['provenance'] for p in scored if p.get("provenance")})
    lines += [f"Latency: {', '.join(lat_prov) or '—'} (p50, one model per seed, timed after its training; the host "
              "may have been shared, so compare points with each other, not with other runs). Accuracy: validation "
              "top-1 of the best epoch, mean ± sample standard deviation over seeds.", ""]
    w = result.get("winner")
    if w:
        lines.append(f"**Winner: α={w['alpha']:g}, β={w['beta']:g}, γ={w['gamma']:g}** "
                     f"({pct(w['val_accuracy_mean'], w['val_accuracy_std'])}, {w['latency_ms']:.2f} ms).")
        for name, ref in result["references"].items():
            if ref is None or ref["rank"] is None:
                continue
            diff = 100 * (w["val_accuracy_mean"] - ref["val_accuracy_mean"])
            behind = "the winner" if ref["rank"] == 1 else (
                "tied with the winner" if abs(diff) < 5e-3 else f"{diff:.2f} points behind the winner")
            lines.append(f"- {name} ({ref['alpha']:.4g}/{ref['beta']:.4g}/{ref['gamma']:.4g}): rank {ref['rank']} of "
                         f"{len(scored)}, {pct(ref['val_accuracy_mean'])} at {ref['latency_ms']:.2f} ms ({behind}).")
        std = [p["val_accuracy_std"] for p in scored if p["val_accuracy_std"] is not None]
        if std:
            lines.append(f"- Seed spread (median std over points): {100 * sorted(std)[len(std) // 2]:.2f} points; "
                         "differences smaller than that are noise.")
        else:
            lines.append("- One seed per point: no spread is known, so close ranks may be noise.")
        lines += ["", f"Use it: `deploy fit --alpha {w['alpha']:g} --beta {w['beta']:g} --gamma {w['gamma']:g} …`, "
                      "`--scaling <this folder>`, or save it by name with `deploy scaling save NAME --from "
                      "<this folder>`.", ""]
    lines += [f"![accuracy against latency]({plot_name})", "",
              "| rank | α/β/γ | α·β²·γ² | reference | φ | res | depth × | width × | MACs (M) | params | act MiB | "
              "latency ms | val top-1 | seeds |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pts:
        refs = ", ".join(p["references"]) + ("" if p["on_grid"] or not p["references"] else " (off grid)")
        lines.append(
            f"| {p['rank'] or '—'} | {p['name']} | {p['flops_factor']:.3f} | {refs} | "
            f"{'—' if p['phi'] is None else format(p['phi'], 'g')} | {p['resolution'] or '—'} | "
            f"{'—' if p['depth_multiplier'] is None else format(p['depth_multiplier'], '.3f')} | "
            f"{'—' if p['width_multiplier'] is None else format(p['width_multiplier'], '.3f')} | "
            f"{'—' if p['macs'] is None else format(p['macs'] / 1e6, '.1f')} | "
            f"{'—' if p['params'] is None else format(p['params'], ',')} | {p['activation_mb'] or '—'} | "
            f"{'—' if p['latency_ms'] is None else format(p['latency_ms'], '.2f')} | "
            f"{pct(p['val_accuracy_mean'], p['val_accuracy_std'])} | {p['seeds']} |")
    return "\n".join(lines)


def write_grid_report(result: dict, out: Path) -> Path:
    png = plot_grid(result, out / GRID_PLOT)
    return atomic_write(out / GRID_REPORT, grid_markdown(result, png.name) + "\n")


def plot_study(result: dict, path: Path) -> Path:
    """Accuracy against MACs per family: each strategy a line from the shared baseline through its ratios."""
    plt = _plt()
    fams = result["families"]
    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 4.4), dpi=110, squeeze=False)
    markers = {"depth": "v", "width": "^", "resolution": "s"}
    for ax, (family, f) in zip(axes[0], fams.items()):
        base = f["baseline"]
        names = [r["strategy"] for r in next(iter(f["ratios"].values()))["rows"]]
        for i, name in enumerate(names):
            pts = [base] + [next(r for r in v["rows"] if r["strategy"] == name) for v in f["ratios"].values()]
            xs = [p["macs"] / 1e6 for p in pts]
            ys = [100 * p["val_accuracy_mean"] for p in pts]
            err = [0 if p["val_accuracy_std"] is None else 100 * p["val_accuracy_std"] for p in pts]
            ax.errorbar(xs, ys, yerr=err, marker=markers.get(name, "o"), ms=5, capsize=2, label=name,
                        ls="-" if name.startswith("compound") else "--", color=f"C{i}")
        ax.set_xscale("log")
        ax.set_xlabel("MACs (M, log scale)")
        ax.set_ylabel("validation top-1, % (mean ± std over seeds)")
        ax.set_title(f"{family} from φ={result['options']['phi']:g}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling one dimension vs compound at matched MACs on {result['data']['name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def study_markdown(result: dict, plot_name: str) -> str:
    o, paper = result["options"], result["paper"]
    ratios = ", ".join(f"{r:g}" for r in o["flops_ratios"])
    lines = [f"# Per-dimension vs compound scaling on {result['data']['name']}", "",
             f"EfficientNet's Table 3 in shape: from each family's base model (φ={o['phi']:g}; "
             f"{result['base_resolution']} px at φ=0) one dimension at a time, or all three together, to {ratios}"
             f"× its MACs. Each strategy's φ is solved for the MACs ratio; rounding (channels to 8, whole blocks, "
             f"8-px resolutions) means the ratio reached (column `× MACs`) is the nearest available. {o['epochs']} "
             f"epoch(s), {o['seeds']} seed(s), mean ± sample standard deviation; latency measured on {o['target']} "
             f"where it can be (the column says). {result['seconds']:.0f} s.", "",
             f"The paper ({paper['source']}): compound scaling beat the best single dimension by "
             f"{paper['compound_ahead_points'][0]:g}-{paper['compound_ahead_points'][1]:g} points of ImageNet top-1.",
             "", "## What this run says", ""]
    for family, f in result["families"].items():
        for ratio, v in f["ratios"].items():
            for vd in v["verdicts"]:
                spread = ("no spread (one seed)" if vd["spread_points"] is None
                          else f"seed spread {vd['spread_points']:.2f}")
                lines.append(f"- **{family}, ×{ratio} MACs**: {vd['compound']} vs the best single dimension "
                             f"({vd['best_single']}): {vd['difference_points']:+.2f} points ({spread}) — {vd['call']}"
                             + ("; the size of the gain is within the paper's 0.6-2 points" if vd["agrees"]
                                and vd["within_paper_range"] else "") + ".")
    lines += ["", f"![accuracy against MACs]({plot_name})", ""]
    for family, f in result["families"].items():
        base = f["baseline"]
        lines += [f"## {family}", "", "| model | d × | w × | r × | × MACs | MACs (M) | params | latency ms | "
                  "latency from | val top-1 |", "|---|---|---|---|---|---|---|---|---|---|",
                  f"| baseline {family} (φ={o['phi']:g}, {base['resolution']} px) | 1 | 1 | 1 | 1 | "
                  f"{base['macs'] / 1e6:.1f} | {base['params']:,} | {base['latency_ms']:.2f} | {base['provenance']} | "
                  f"{pct(base['val_accuracy_mean'], base['val_accuracy_std'])} |"]
        for ratio, v in f["ratios"].items():
            for r in v["rows"]:
                lines.append(f"| scale by {r['strategy']} (×{ratio}) | {r['depth_vs_base']:g} | "
                             f"{r['width_vs_base']:g} | {r['resolution_vs_base']:g} | {r['macs_ratio']:.2f} | "
                             f"{r['macs'] / 1e6:.1f} | "
                             f"{r['params']:,} | {r['latency_ms']:.2f} | {r['provenance']} | "
                             f"{pct(r['val_accuracy_mean'], r['val_accuracy_std'])} |")
        lines.append("")
    return "\n".join(lines)


def write_study_report(result: dict, out: Path) -> Path:
    png = plot_study(result, out / STUDY_PLOT)
    return atomic_write(out / STUDY_REPORT, study_markdown(result, png.name) + "\n")


__all__ = ["GRID_PLOT", "GRID_REPORT", "STUDY_PLOT", "STUDY_REPORT", "grid_markdown", "plot_study", "study_markdown",
           "write_study_report", "pct", "plot_grid", "write_grid_report"]
