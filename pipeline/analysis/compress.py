"""`deploy compress --method deep-compression` on a run: compress its checkpoint, check, count, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.analysis.deepcompress import Compressed, compress_state, decompress, shared_state
from pipeline.core.errors import DeployError
from pipeline.core.io import atomic_write, write_json

STORAGE_NOTE = ("Deep compression changes storage, not dense-runtime latency: the decompressed model has the same "
                "shapes and multiply-adds, so a dense runtime (ONNX Runtime, TensorRT) runs it exactly as fast as "
                "the original.")


def state_numpy(model) -> dict[str, np.ndarray]:
    """The model's state dict as numpy arrays (parameters and buffers, as they would be stored)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state(model, state: dict[str, np.ndarray]) -> None:
    import torch

    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})


def accuracy(model, data, indices: np.ndarray, preprocess) -> float:
    """Top-1 of `model` on `data[indices]`."""
    from pipeline.train.trainer import predict_logits

    logits = predict_logits(model, data, indices, preprocess)
    return float(np.mean(logits.argmax(1) == data.labels[indices]))


def save_compressed(c: Compressed, path: Path) -> Path:
    """The encoded streams, codebooks and dense tensors in one .npz (the container adds a little over the count)."""
    arrays = {}
    for t in c.tensors:
        s = c.streams[t.name]
        arrays[f"{t.name}/codes"] = np.frombuffer(s["codes"][0], dtype=np.uint8)
        arrays[f"{t.name}/gaps"] = np.frombuffer(s["gaps"][0], dtype=np.uint8)
        arrays[f"{t.name}/codebook"] = t.codebook
    arrays.update({f"dense/{k}": v for k, v in c.dense.items()})
    meta = {"sparsity": c.sparsity, "bits": c.bits, "index_bits": c.index_bits,
            "code_lengths": {str(s): ln for s, (_, ln) in c.code_table.items()},
            "gap_lengths": {str(s): ln for s, (_, ln) in c.gap_table.items()},
            "tensors": [{"name": t.name, "shape": list(t.shape), "entries": int(t.codes.size),
                         "code_bits": c.streams[t.name]["codes"][1], "gap_bits": c.streams[t.name]["gaps"][1]}
                        for t in c.tensors]}
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def retrain_pruned(model, data, preprocess, sparsity: float, epochs: int, progress=None) -> dict[str, float]:
    """Han et al.'s step 1: prune by magnitude, then retrain with the pruned weights held at zero.

    Returns the per-tensor sparsity actually applied (what `compress_state` must keep).
    """
    import torch

    from pipeline.analysis.deepcompress import compressible, magnitude_mask
    from pipeline.analysis.prune import train_module

    params = dict(model.named_parameters())
    masks = {k: torch.from_numpy(magnitude_mask(p.detach().numpy(), sparsity)) for k, p in params.items()
             if compressible(k, p.detach().numpy())}

    def apply() -> None:
        with torch.no_grad():
            for k, m in masks.items():
                params[k].mul_(m)

    apply()
    train_module(model, data, data.split(), preprocess, epochs=epochs, lr=2e-3, batch_size=64, seed=0,
                 progress=progress, label="retrain", after_step=apply)
    return {k: 1 - float(m.sum()) / m.numel() for k, m in masks.items()}


def deep_compress_run(run: str | Path, *, sparsity: float = 0.9, bits: int = 5, index_bits: int = 5,
                      data: str | Path | None = None, finetune_epochs: int = 0, out_dir: str | Path | None = None,
                      progress=None) -> dict:
    """Compress a run's checkpoint; verify decompression is exact; with data, top-1 before and after.

    With `finetune_epochs` (needs data) the pruned network is retrained with its masks before weight
    sharing, as Han et al. do; without, the trained weights are pruned and shared as they are.
    """
    from pipeline.data.datasets import load_dataset
    from pipeline.train.trainer import load_checkpoint

    if finetune_epochs and data is None:
        raise DeployError("deep compression with --finetune-epochs needs --data to retrain on")
    ckpt = load_checkpoint(run)
    model = ckpt.model()
    ds = load_dataset(data) if data is not None else None
    before = accuracy(model, ds, ds.split().val, ckpt.preprocess) if ds is not None else None
    per_tensor: float | dict = sparsity
    if finetune_epochs:
        per_tensor = retrain_pruned(model, ds, ckpt.preprocess, sparsity, finetune_epochs, progress)
    c = compress_state(state_numpy(model), sparsity=per_tensor, bits=bits, index_bits=index_bits)
    shared, restored = shared_state(c), decompress(c)
    exact = all(np.array_equal(shared[k], restored[k]) for k in shared)
    if not exact:
        raise DeployError("deep compression: decompressed weights differ from the shared-weight model (a bug)")
    result = {"method": "deep-compression", "run": str(run), "family": ckpt.family, "scale": ckpt.scale.to_dict(),
              "sparsity": sparsity, "bits": bits, "index_bits": index_bits, "finetune_epochs": finetune_epochs,
              "storage": c.storage.to_dict(),
              "ratio": round(c.storage.ratio, 3), "decompression_exact": exact, "layers": c.layers,
              "accuracy": None, "latency_note": STORAGE_NOTE, "artifacts": {}}
    if ds is not None:
        val = ds.split().val
        load_state(model, restored)
        after = accuracy(model, ds, val, ckpt.preprocess)
        note = (f"pruned, retrained {finetune_epochs} epoch(s) with the masks, then k-means shared" if finetune_epochs
                else "no retraining: pruning and k-means are applied to the trained weights")
        result["accuracy"] = {"dataset": ds.name, "split": "val", "samples": int(len(val)),
                              "original": round(before, 4), "compressed": round(after, 4), "note": note}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_compressed(c, out / "deepcompressed.npz")
        result["artifacts"] = {"compressed": "deepcompressed.npz", "json": "compression.json", "report": "report.md"}
        result["file_bytes"] = (out / "deepcompressed.npz").stat().st_size
        write_json(out / "compression.json", result)
        atomic_write(out / "report.md", deep_report(result))
    return result


def deep_report(r: dict) -> str:
    s = r["storage"]
    lines = [f"# Deep compression of {r['family']} ({r['run']})", "",
             f"Sparsity {r['sparsity']:.0%}, {r['bits']}-bit weight sharing (2^{r['bits']}−1 shared values + 0), "
             f"{r['index_bits']}-bit relative indices, Huffman-coded.", "",
             f"**{s['original_bytes']:,} B → {s['compressed_bytes']:,} B: {r['ratio']:.1f}×** "
             f"(decompression exact: {r['decompression_exact']}).", "",
             "| part | bits |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {s[k]:,} |" for k in
              ("code_bits", "index_bits", "codebook_bits", "header_bits", "huffman_table_bits", "dense_bits")]
    lines += [f"| **total** | **{s['total_bits']:,}** |", ""]
    if r["accuracy"]:
        a = r["accuracy"]
        lines += [f"Top-1 on {a['samples']} {a['dataset']} val images: {a['original']:.4f} → {a['compressed']:.4f} "
                  f"({a['note']}).", ""]
    lines += ["| tensor | shape | kept | fillers | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {x['name']} | {'×'.join(map(str, x['shape']))} | {x['kept']}/{x['weights']} | {x['fillers']} | "
              f"{x['ratio']}× |" for x in r["layers"]]
    lines += ["", r["latency_note"], ""]
    return "\n".join(lines)
