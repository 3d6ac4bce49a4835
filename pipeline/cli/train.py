"""``deploy train``: train a scaled model on a labelled dataset and keep the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.describe import scale_name
from pipeline.cli.options import family_option, fraction_option, json_option, named_scaling, scale_options
from pipeline.cli.output import bar_log, emit, key_values, log, progress_bar
from pipeline.cli.render import si


def train_text(d: dict) -> str:
    res = f"resolution {d['resolution']}" + (
        f" (nominal {d['nominal_resolution']})" if d["resolution"] != d["nominal_resolution"] else "")
    lines = [f"{d['family']} ({scale_name(d['scale'])}), {res}, {si(d['params'])} params, {d['num_classes']} classes",
             f"  val accuracy {d['val_accuracy']:.4f} (best epoch {d['best_epoch']} of {d['epochs']}) "
             f"on {d['dataset']['name']}, {d['seconds']:.1f} s on {d['device']}",
             f"  checkpoint {d['checkpoint']}"]
    sc = d["settings"].get("scaling")
    if sc:
        lines.insert(1, f"  scaling α={sc['alpha']:g} β={sc['beta']:g} γ={sc['gamma']:g} "
                        f"({sc['name'] or sc['source']})")
    if d.get("transfer"):
        from pipeline.train.trainer import TransferReport

        lines.append("  " + TransferReport(**d["transfer"]).summary())
    if d.get("teacher"):
        t = d["teacher"]
        lines.append(f"  distilled from {t['family']} {t['checkpoint']} (val {t['val_accuracy']:.4f}), "
                     f"T={t['temperature']:g}, a={t['alpha_kd']:g}")
    return "\n".join(lines)


def _renamed_device(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--device`` names the measurement device (see ``deploy verify``); train's compute device moved."""
    if value is not None:
        raise click.UsageError(f"train's compute device is --train-device cpu|cuda|auto (got --device {value}); "
                               "--device names the measurement device, as in `deploy verify`.", ctx)


@click.command()
@family_option
@scale_options
@click.option("--data", required=True, help="builtin:digits, an .npz file (x, y) or an image folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Peak learning rate (AdamW, one-cycle schedule).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resolution", type=click.IntRange(min=8), default=None,
              help="Train (and export) at this input size instead of the scale's; default: the dataset's "
                   "(builtin:digits: 32) or the scale's resolution. Recorded in the checkpoint.")
@click.option("--init-from", type=click.Path(exists=True), default=None,
              help="Checkpoint (or run dir) of another scale of the same family to start from.")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="Checkpoint (or run dir) to distil from (any family/scale, same classes).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Distillation temperature T.")
@fraction_option("--alpha-kd", default=0.5, help="Distillation weight a: (1-a)·CE + a·T²·KL")
@click.option("--train-device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True,
              help="Torch device to train on.")
@click.option("--device", hidden=True, is_eager=True, expose_value=False, callback=_renamed_device)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/train-<family>).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes on this node (torchrun + DDP; gloo on CPU, NCCL on GPUs); "
                   "--batch-size is per process.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes in the run (each runs the same command with its own --node-rank).")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank.")
@click.option("--rdzv-endpoint", default=None, help="HOST:PORT where the nodes meet (needed with --nnodes > 1).")
@json_option("Print the result as one JSON object (progress goes to stderr).")
def train(family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, scaling_name, data, epochs,
          batch_size, lr, seed, resolution, init_from, teacher, temperature, alpha_kd, train_device, out, nproc, nnodes,
          node_rank, rdzv_endpoint, as_json):
    """Train a scaled model on a labelled dataset; keep the best checkpoint (DIR/checkpoint.pt)."""
    from pipeline.core.scaling import family_for, resolve_scale
    from pipeline.train.trainer import TrainOptions
    from pipeline.train.trainer import train as run

    family = family_for(family, preset)
    named = named_scaling(alpha, beta, gamma, scaling_name)
    scale = resolve_scale(phi, phi_depth, phi_width, phi_resolution, preset, named.scaling())
    opts = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, resolution=resolution,
                        init_from=init_from, teacher=teacher, temperature=temperature, alpha_kd=alpha_kd,
                        device=train_device, scaling=None if preset else named.to_dict())
    out = out or Path("runs") / f"train-{family}"
    if nproc > 1 or nnodes > 1:
        from pipeline.train.distributed import launch

        emit(launch(family, scale, data, out_dir=out, options=opts, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                    rdzv_endpoint=rdzv_endpoint, log=log), as_json, train_text if node_rank == 0 else key_values)
        return
    result = run(family, scale, data, out_dir=out, options=opts,
                 progress=progress_bar("train", unit="step", leave=False), log=bar_log)
    emit(result.to_dict(), as_json, train_text)
