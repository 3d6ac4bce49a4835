"""``deploy similarity``: CKA/CCA between the layers of two trained runs (e.g. two scales of one family)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import json_option
from pipeline.cli.output import emit, progress_bar

METHOD_CHOICES = ["linear-cka", "rbf-cka", "debiased-cka", "svcca", "pwcca"]


def similarity_text(d: dict) -> str:
    lines = [f"{d['method']} on {d['samples']} {d['dataset']['name']} val images ({d['pooling']} pooled)",
             f"  A {d['a']['run']}  B {d['b']['run']}"]
    if d["matched"]:
        lines += [f"  {m['layer']:<12} {m['value']:.4f}" for m in d["matched"]]
    for key, name in d["artifacts"].items():
        lines.append(f"  {key}: {name}")
    return "\n".join(lines)


@click.command()
@click.argument("run_a", type=click.Path(exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, help="builtin:digits, an .npz file or an image folder (its val split is used).")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="linear-cka", show_default=True)
@click.option("--layers", default="stages", show_default=True,
              help="stages (stem, stage1..N, head), all (every block), or comma-separated module names.")
@click.option("--samples", type=click.IntRange(min=4), default=2000, show_default=True,
              help="At most this many validation images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for similarity.json, similarity.png and report.md (default runs/similarity).")
@json_option("Print the result as one JSON object (progress goes to stderr).")
def similarity(run_a, run_b, data, method, layers, samples, out, as_json):
    """Layer-by-layer representation similarity of two runs (each RUN holds checkpoint.pt)."""
    from pipeline.analysis.compare import compare_runs

    result = compare_runs(run_a, run_b, data, method=method, layers=layers, samples=samples,
                          out_dir=out or Path("runs") / "similarity", progress=progress_bar("activations", "batch",
                                                                                            leave=False))
    emit(result, as_json, similarity_text)
