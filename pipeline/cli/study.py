"""``deploy study``: depth, width, resolution or compound at matched MACs (EfficientNet's Table 3, on your data)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import backend_options, json_option, threads_option
from pipeline.cli.output import bar_log, emit, progress_bar
from pipeline.cli.render import table


def study_text(d: dict) -> str:
    from pipeline.research.report import pct

    out = []
    for family, f in d["families"].items():
        rows = [{"model": "baseline", "x": "1.00", "macs": f"{f['baseline']['macs'] / 1e6:.1f}",
                 "ms": f"{f['baseline']['latency_ms']:.2f}",
                 "acc": pct(f["baseline"]["val_accuracy_mean"], f["baseline"]["val_accuracy_std"])}]
        for ratio, v in f["ratios"].items():
            rows += [{"model": f"{r['strategy']} ×{ratio}", "x": f"{r['macs_ratio']:.2f}",
                      "macs": f"{r['macs'] / 1e6:.1f}", "ms": f"{r['latency_ms']:.2f}",
                      "acc": pct(r["val_accuracy_mean"], r["val_accuracy_std"])}
                     for r in v["rows"]]
        out += [family, table(rows, [("model", "model"), ("x", "× MACs"), ("macs", "MACs (M)"), ("ms", "latency ms"),
                                     ("acc", "val top-1")]), ""]
        for ratio, v in f["ratios"].items():
            out += [f"  ×{ratio}: {vd['compound']} {vd['difference_points']:+.2f} points vs {vd['best_single']}: "
                    f"{vd['call']}" for vd in v["verdicts"]]
        out.append("")
    return "\n".join(out + [f"{d['out']}/study.json, {d['out']}/report.md"])


def _floats(ctx, param, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, e.g. 2,4; got {value!r}.") from None


@click.command()
@click.option("--family", "families", default="efficientnet", show_default=True,
              help="Base family or families, comma-separated (e.g. efficientnet,resnet18,mobilenetv2).")
@click.option("--data", required=True, help="Labelled set: builtin:shapes (recommended), builtin:digits, .npz, folder.")
@click.option("--flops-ratios", default="2,4", show_default=True, callback=_floats,
              help="MACs ratios to the base model, comma-separated.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--phi", type=float, default=0.0, show_default=True, help="φ of the base model every strategy scales.")
@click.option("--scaling", "scaling_name", default=None, metavar="NAME",
              help="A grid's winner to add as a compound strategy: a grid folder, or a saved scaling name.")
@click.option("--target", "target_name", default="host", show_default=True, help="Where latency is measured.")
@threads_option("Runtime threads of the target when measuring (default: the target's).")
@click.option("--train-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="torch threads while training (0: torch's default).")
@click.option("--base-resolution", type=click.IntRange(min=32), default=None,
              help="Resolution of φ=0 (default: the dataset's native size, builtin:shapes 64; else 224).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study folder (default runs/study); rerunning into it resumes, as does a grid's folder.")
@backend_options
@json_option("Print study.json to stdout (progress goes to stderr).")
def study(families, data, flops_ratios, seeds, epochs, phi, scaling_name, target_name, threads, train_threads,
          base_resolution, out, backend, ray_address, trial_cpus, as_json):
    """Compare depth-, width-, resolution-only and compound scaling at matched MACs (mean ± spread over seeds)."""
    from pipeline.core.scalings import lookup
    from pipeline.research.backends import backend_for
    from pipeline.research.study import StudyOptions, run_study

    winner = lookup(scaling_name) if scaling_name else None
    opts = StudyOptions(tuple(f.strip() for f in families.split(",") if f.strip()), data, flops_ratios, seeds, epochs,
                        phi, target_name, threads, None if winner is None else (winner.alpha, winner.beta,
                                                                                 winner.gamma),
                        None if winner is None else (winner.name or "grid winner"), base_resolution,
                        train_threads=train_threads or None)
    out = out or Path("runs") / "study"
    result = run_study(opts, out, progress=progress_bar("study", unit="training"), log=bar_log,
                       backend=backend_for(backend, ray_address, trial_cpus))
    emit({**result, "out": str(out)}, as_json, study_text)
