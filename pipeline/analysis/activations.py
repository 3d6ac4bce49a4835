"""Activations of named modules, collected with forward hooks and pooled to (samples × channels).

Why pooled: models of different scales run at different resolutions, so their feature maps have
different spatial sizes; flattening would compare vectors of unrelated length and meaning, and make
CCA impossible (H·W·C neurons ≫ samples). Global average pooling over H×W keeps one value per channel,
the same reduction the network's own head applies, so every layer becomes a samples × channels matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import DeployError

LAYER_SETS = ("stages", "all")


class LayerNotFound(DeployError):
    """A requested module name that the model does not have."""


@dataclass(frozen=True)
class Layer:
    """A module to hook: its display `label` (matched across scales) and its `module` path in the model."""

    label: str
    module: str


def stage_layers(model) -> list[Layer]:
    """Stem, one entry per stage (its output) and the head conv, labelled as the architecture names them.

    The labels (stem, stage1…stageN, head) are the same at every scale of a family, which is what
    lets `deploy similarity` match stages by name between, say, φ=−2 and φ=0.
    """
    specs = [s.name for s in model.stage_specs]
    layers = [Layer("stem", "stem")]
    layers += [Layer(name, f"stages.{i}") for i, name in enumerate(specs[1:-1])]
    layers.append(Layer("head", "head"))
    return layers


def block_layers(model) -> list[Layer]:
    """Stem, every block of every stage (stageK.J, 1-based J) and the head: the finest matched granularity."""
    specs = [s.name for s in model.stage_specs]
    layers = [Layer("stem", "stem")]
    for i, (name, stage) in enumerate(zip(specs[1:-1], model.stages)):
        layers += [Layer(f"{name}.{j + 1}", f"stages.{i}.{j}") for j in range(len(stage))]
    layers.append(Layer("head", "head"))
    return layers


def resolve_layers(model, spec: str | Sequence[str]) -> list[Layer]:
    """`stages`, `all`, or explicit module names (comma-separated or a list), each checked against the model."""
    if isinstance(spec, str) and spec == "stages":
        return stage_layers(model)
    if isinstance(spec, str) and spec == "all":
        return block_layers(model)
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise LayerNotFound(f"no layers given; use {' or '.join(LAYER_SETS)} or module names")
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        sample = ", ".join(list(modules)[1:8])
        raise LayerNotFound(f"{model.family} has no module named {', '.join(repr(m) for m in missing)}; "
                            f"use stages, all, or names from model.named_modules() (e.g. {sample}, ...)")
    return [Layer(n, n) for n in names]


def pool(output) -> np.ndarray:
    """(N, C, H, W) → (N, C) by global average; (N, C) is kept; anything else is flattened per sample."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    t = output.detach().float()
    if t.ndim == 4:
        t = t.mean((2, 3))
    elif t.ndim != 2:
        t = t.reshape(t.shape[0], -1)
    return t.cpu().numpy().astype(np.float64)


def collect(model, layers: Sequence[Layer], batches_iter, *, progress: Callable[[int, int, str], None] | None = None,
            total: int | None = None) -> dict[str, np.ndarray]:
    """Run `model` (eval, no grad) over input batches; return {label: samples × channels (float64)}.

    `batches_iter` yields input tensors. Hooks are removed even when the forward pass fails.
    """
    import torch

    modules = dict(model.named_modules())
    for layer in layers:
        if layer.module not in modules:
            raise LayerNotFound(f"{model.family} has no module named {layer.module!r}")
    store: dict[str, list[np.ndarray]] = {layer.label: [] for layer in layers}

    def hook_for(label: str):
        def hook(_module, _inputs, output):
            store[label].append(pool(output))
        return hook

    handles = [modules[layer.module].register_forward_hook(hook_for(layer.label)) for layer in layers]
    was = model.training
    model.eval()
    done = 0
    try:
        with torch.no_grad():
            for i, x in enumerate(batches_iter):
                model(x)
                done += x.shape[0]
                if progress:
                    progress(i + 1, total or i + 1, f"{done} images")
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {label: np.concatenate(parts) for label, parts in store.items()}
