"""``deploy grid``: search α, β, γ on your data and device (resumable; grid.json + report.md with a plot)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import backend_options, family_option, json_option, threads_option
from pipeline.cli.output import bar_log, emit, progress_bar
from pipeline.cli.render import table
from pipeline.core.units import Duration


def grid_text(d: dict) -> str:
    from pipeline.research.report import pct

    rows = [{"rank": p["rank"], "abg": p["name"], "refs": ", ".join(p["references"]), "res": p["resolution"],
             "ms": None if p["latency_ms"] is None else f"{p['latency_ms']:.2f}",
             "acc": pct(p["val_accuracy_mean"], p["val_accuracy_std"])} for p in d["points"][:12]]
    w = d["winner"]
    head = [f"winner α={w['alpha']:g} β={w['beta']:g} γ={w['gamma']:g}: {pct(w['val_accuracy_mean'])} at "
            f"{w['latency_ms']:.2f} ms" if w else "no point was scored"]
    head += [f"  {d['out']}/grid.json, {d['out']}/report.md" + (f"; saved as scaling '{d['saved_as']}'"
                                                               if d.get("saved_as") else ""), ""]
    more = [f"  … {len(d['points']) - 12} more in grid.json"] if len(d["points"]) > 12 else []
    return "\n".join(head) + table(rows, [("rank", "rank"), ("abg", "α/β/γ"), ("refs", "reference"), ("res", "res"),
                                          ("ms", "latency ms"), ("acc", "val top-1")]) + "\n".join([""] + more)


@click.command()
@family_option
@click.option("--data", required=True, help="Labelled set: builtin:shapes (recommended), builtin:digits, .npz, folder.")
@click.option("--phi", type=float, default=1.0, show_default=True, help="φ every point is trained at (objective "
              "accuracy).")
@click.option("--flops-ratio", type=float, default=2.0, show_default=True, help="Target α·β²·γ² (FLOPs per unit φ).")
@click.option("--tolerance", type=float, default=0.1, show_default=True, help="Allowed |α·β²·γ² − ratio|.")
@click.option("--step", type=float, default=0.05, show_default=True, help="Grid step of α, β, γ (from 1).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Training seeds per point.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Epochs per training.")
@click.option("--objective", type=click.Choice(["accuracy", "accuracy-at-latency"]), default="accuracy",
              show_default=True, help="accuracy-at-latency: rank by the accuracy of the largest model that fits "
                                      "--latency on the target.")
@click.option("--latency", type=Duration(), default=None, help="Budget of accuracy-at-latency, e.g. 5ms.")
@click.option("--phi-min", type=float, default=-4.0, show_default=True, help="accuracy-at-latency: φ range searched.")
@click.option("--phi-max", type=float, default=4.0, show_default=True)
@click.option("--target", "target_name", default="host", show_default=True,
              help="Where latency is measured (predicted and labelled so when it cannot be measured here).")
@threads_option("Runtime threads of the target when measuring (default: the target's).")
@click.option("--train-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="torch threads while training (0: torch's default). One thread is fastest on a shared 2-core box.")
@click.option("--base-resolution", type=click.IntRange(min=32), default=None,
              help="Resolution of φ=0 (default: the dataset's native size, builtin:shapes 64; else 224).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Grid folder (default runs/grid-<family>); rerunning into it resumes.")
@click.option("--save-scaling", default=None, metavar="NAME", help="Save the winner's α, β, γ as this named scaling.")
@backend_options
@json_option("Print grid.json to stdout (progress goes to stderr).")
def grid(family, data, phi, flops_ratio, tolerance, step, seeds, epochs, objective, latency, phi_min, phi_max,
         target_name, threads, train_threads, base_resolution, out, save_scaling, backend, ray_address, trial_cpus,
         as_json):
    """Grid-search α, β, γ: train each point, measure it on the target, rank, report (resumes where it stopped)."""
    from pipeline.core.scalings import check_name
    from pipeline.research.backends import backend_for
    from pipeline.research.grid import GridOptions, run_grid, save_winner

    if save_scaling:
        check_name(save_scaling)  # before hours of training, not after
    family = family or "efficientnet"
    out = out or Path("runs") / f"grid-{family}"
    opts = GridOptions(family, data, phi, flops_ratio, tolerance, step, seeds, epochs, objective, target_name, threads,
                       latency, phi_min, phi_max, base_resolution, train_threads=train_threads or None)
    runner = backend_for(backend, ray_address, trial_cpus)
    result = run_grid(opts, out, progress=progress_bar("grid", unit="training"), log=bar_log, backend=runner)
    if save_scaling:
        save_winner(result, save_scaling)
    emit({**result, "out": str(out), "saved_as": save_scaling}, as_json, grid_text)
