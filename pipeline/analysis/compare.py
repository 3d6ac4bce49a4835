"""`deploy similarity`: a layer-by-layer similarity matrix between two trained runs, JSON + heatmap + report.

Both models see the same validation images (the dataset's seeded split), each through its own
checkpoint's preprocessing (its resolution and normalisation), so a φ=−2 model at 192 px and a φ=0
model at 224 px are compared on identical inputs, as each would receive them in deployment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.analysis.activations import collect, resolve_layers
from pipeline.analysis.similarity import CCA_METHODS, METHODS, SimilarityError, samples_needed, similarity
from pipeline.core.errors import UsageError
from pipeline.core.io import atomic_write, write_json

POOLING = "global-average"  # spatial dims (H, W) averaged: one value per channel, see activations.py
DEFAULT_SAMPLES = 2000
BATCH = 64


def _describe(ckpt, run: Path, layers, acts) -> dict:
    return {"run": str(run), "family": ckpt.family, "scale": ckpt.scale.to_dict(),
            "resolution": ckpt.preprocess.resolution, "val_accuracy": ckpt.val_accuracy,
            "layers": [{"label": lay.label, "module": lay.module, "channels": int(acts[lay.label].shape[1])}
                       for lay in layers]}


def _inputs(data, indices: np.ndarray, preprocess):
    from pipeline.data.datasets import batches

    for _, x, _ in batches(data, indices, preprocess, BATCH):
        yield x


def _check_cca(method: str, n: int, side: str, info: dict) -> None:
    wide = max(info["layers"], key=lambda lay: lay["channels"])
    if n < samples_needed(wide["channels"]):
        raise SimilarityError(
            f"{method} needs more samples than neurons: run {side}'s layer {wide['label']} has {wide['channels']} "
            f"channels but only {n} validation images are available; it needs at least "
            f"{samples_needed(wide['channels'])} (ideally {10 * wide['channels']}+). Use a larger dataset, "
            "--layers naming narrower modules, or a CKA method.")


def compare_runs(run_a: str | Path, run_b: str | Path, data: str | Path, *, method: str = "linear-cka",
                 layers: str = "stages", samples: int = DEFAULT_SAMPLES, out_dir: str | Path | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Similarity of every layer of run A with every layer of run B; writes JSON, PNG and report when out_dir."""
    from pipeline.data.datasets import load_dataset
    from pipeline.train.trainer import load_checkpoint

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if samples < 4:
        raise UsageError(f"--samples must be at least 4 (unbiased HSIC needs 4), got {samples}")
    ds = load_dataset(data)
    idx = ds.split().val[:samples]
    sides = {}
    for side, run in (("a", Path(run_a)), ("b", Path(run_b))):
        ckpt = load_checkpoint(run)
        model = ckpt.model()
        lays = resolve_layers(model, layers)
        total = math.ceil(len(idx) / BATCH)
        acts = collect(model, lays, _inputs(ds, idx, ckpt.preprocess), progress=progress, total=total)
        sides[side] = (lays, acts, _describe(ckpt, run, lays, acts))
    n = len(idx)
    if method in CCA_METHODS:
        for side in ("a", "b"):
            _check_cca(method, n, side.upper(), sides[side][2])
    (la, aa, ia), (lb, ab, ib) = sides["a"], sides["b"]
    matrix = [[round(similarity(aa[x.label], ab[y.label], method), 6) for y in lb] for x in la]
    common = [lay.label for lay in la if lay.label in {m.label for m in lb}]
    matched = [{"layer": lab, "value": matrix[[x.label for x in la].index(lab)][[y.label for y in lb].index(lab)]}
               for lab in common]
    result = {"method": method, "layers": layers, "pooling": POOLING, "samples": n,
              "dataset": {"name": ds.name, "split": "val"}, "a": ia, "b": ib,
              "rows": [x.label for x in la], "columns": [y.label for y in lb], "matrix": matrix,
              "matched": matched, "artifacts": {}}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_heatmap(result, out / "similarity.png")
        result["artifacts"] = {"json": "similarity.json", "heatmap": "similarity.png", "report": "report.md"}
        write_json(out / "similarity.json", result)
        atomic_write(out / "report.md", report_markdown(result))
    return result


def _name(side: dict) -> str:
    phi = side["scale"].get("phi")
    tag = side["scale"].get("preset") or (f"φ={phi:g}" if phi is not None else "per-dimension φ")
    return f"{side['family']} {tag} @{side['resolution']}px"


def plot_heatmap(result: dict, path: Path) -> Path:
    """Rows: run A's layers, columns: run B's; colour = similarity, values written in the cells when few."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(result["matrix"], dtype=float)
    rows, cols = result["rows"], result["columns"]
    size = max(4.0, 0.35 * max(len(rows), len(cols)) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=110)
    im = ax.imshow(m, cmap="magma", vmin=min(0.0, float(m.min())), vmax=1.0, origin="lower")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(f"B: {_name(result['b'])}")
    ax.set_ylabel(f"A: {_name(result['a'])}")
    if len(rows) * len(cols) <= 144:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if m[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, label=result["method"])
    ax.set_title(f"{result['method']} on {result['samples']} {result['dataset']['name']} val images", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def report_markdown(result: dict) -> str:
    a, b = result["a"], result["b"]
    lines = [f"# Representation similarity: {_name(a)} vs {_name(b)}", "",
             f"- method: **{result['method']}**; layers: `{result['layers']}`; spatial dimensions: "
             f"{result['pooling']} pooled (one value per channel)",
             f"- inputs: {result['samples']} validation images of {result['dataset']['name']}, each model with its "
             "own checkpoint preprocessing",
             f"- A: `{a['run']}` (val accuracy {a['val_accuracy']})",
             f"- B: `{b['run']}` (val accuracy {b['val_accuracy']})",
             "", f"![similarity heatmap]({result['artifacts'].get('heatmap', 'similarity.png')})", ""]
    if result["matched"]:
        lines += ["## Layers matched by name", "", "| layer | channels A | channels B | similarity |",
                  "|---|---|---|---|"]
        ca = {lay["label"]: lay["channels"] for lay in a["layers"]}
        cb = {lay["label"]: lay["channels"] for lay in b["layers"]}
        lines += [f"| {m['layer']} | {ca[m['layer']]} | {cb[m['layer']]} | {m['value']:.4f} |"
                  for m in result["matched"]]
        lines.append("")
    lines += ["Similarity is 1 for identical representations (up to the method's invariances: CKA is invariant "
              "to orthogonal maps and isotropic scaling, CCA to any invertible linear map). The full matrix is in "
              "`similarity.json`.", ""]
    return "\n".join(lines)
