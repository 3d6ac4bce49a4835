"""``deploy compress``: shrink a trained run by deep compression (storage) or structured pruning (latency)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import FRACTION, json_option, percent_option
from pipeline.cli.output import emit
from pipeline.core.budget import Budget


def phased_bar(label: str):
    """One tqdm bar per phase (pruning steps, fine-tuning, from scratch): a new bar whenever the count restarts."""
    from pipeline.cli.output import progress_bar

    state: dict = {"n": None, "i": 0}

    def update(i: int, n: int, what: str) -> None:
        if state["n"] != n or i < state["i"]:
            state["bar"] = progress_bar(label, "step", leave=False)
        state["n"], state["i"] = n, i
        state["bar"](i, n, what)

    return update


def compress_text(d: dict) -> str:
    if d["method"] == "deep-compression":
        s = d["storage"]
        lines = [f"deep compression: {s['original_bytes']:,} B -> {s['compressed_bytes']:,} B ({d['ratio']:.1f}x), "
                 f"decompression exact: {d['decompression_exact']}"]
        if d["accuracy"]:
            a = d["accuracy"]
            lines.append(f"  val top-1 {a['original']:.4f} -> {a['compressed']:.4f} ({a['samples']} images)")
        lines.append(f"  {d['latency_note']}")
    else:
        from pipeline.analysis.prune import prune_text

        lines = [prune_text(d)]
    lines += [f"  {k}: {v}" for k, v in d["artifacts"].items()]
    return "\n".join(lines)


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--method", type=click.Choice(["deep-compression", "prune"]), required=True)
@click.option("--bits", type=click.IntRange(1, 16), default=5, show_default=True,
              help="deep-compression: bits per shared-weight index (2^bits - 1 shared values + zero).")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True,
              help=f"deep-compression: the share of each Conv/Linear weight pruned by magnitude ({FRACTION}).")
@click.option("--index-bits", type=click.IntRange(1, 16), default=5, show_default=True,
              help="deep-compression: bits per relative sparse index (Han et al.: 5 for FC, 8 for conv).")
@click.option("--latency", default=None, help="prune: the latency budget the pruned model must fit, e.g. 3ms.")
@click.option("--target", default="host", show_default=True, help="prune: a measurable target.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=None,
              help="prune: epochs of fine-tuning after pruning (default 3); deep-compression: epochs of retraining "
                   "the pruned weights before sharing, as Han et al. (default 0: none; needs --data).")
@click.option("--data", default=None, help="Dataset: accuracy before/after; prune: required (fine-tuning).")
@percent_option("--noise-margin", default=Budget().noise_margin_pct, max_open=50,
                help="prune: a measured latency this close under the budget counts as over it")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN/compress-<method>).")
@json_option("Print the result as one JSON object (progress goes to stderr).")
def compress(run, method, bits, sparsity, index_bits, latency, target, finetune_epochs, data, noise_margin, out,
             as_json):
    """Compress a trained run (RUN holds checkpoint.pt): deep compression or pruning to a measured latency."""
    out = out or run / f"compress-{method}"
    finetune_epochs_dc = finetune_epochs or 0
    finetune_epochs = 3 if finetune_epochs is None else finetune_epochs
    if method == "deep-compression":
        from pipeline.analysis.compress import deep_compress_run

        result = deep_compress_run(run, sparsity=sparsity, bits=bits, index_bits=index_bits, data=data,
                                   finetune_epochs=finetune_epochs_dc, out_dir=out, progress=phased_bar("retrain"))
    else:
        if latency is None or data is None:
            raise click.UsageError("--method prune needs --latency and --data")
        from pipeline.analysis.prune import PruneOptions, prune_run

        opts = PruneOptions(latency=latency, target=target, finetune_epochs=finetune_epochs,
                            noise_margin=noise_margin / 100)
        result = prune_run(run, data, options=opts, out_dir=out, progress=phased_bar("prune"))
    emit(result, as_json, compress_text)
