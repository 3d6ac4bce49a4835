"""The one weight loader: a ``torch.save`` file or a state dict into a built model.

``deploy fit --weights``, ``deploy build`` (re-export at another opset) and checkpoints
from ``deploy train`` all end here, so a mismatched file fails the same way everywhere:
a :class:`~pipeline.core.errors.ModelInvalid` naming the file, how many tensors are
missing or mismatched and one example, never a raw torch error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelInvalid

# Where a saved dict keeps its weights when it is more than a bare state dict (edgefit
# checkpoints use "state_dict"; other tools' files use the other two).
STATE_KEYS = ("state_dict", "weights", "model")


def read_torch_file(path: str | Path, what: str = "weights") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no code runs from the file); errors name the file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelInvalid(f"cannot read {what} {path} (truncated, corrupt or not a torch file?): "
                           f"{type(exc).__name__}: {first}") from None


def read_state_dict(path: str | Path) -> dict:
    """The state dict inside ``path`` (a bare state dict, or a dict holding one under :data:`STATE_KEYS`)."""
    return state_dict_of(read_torch_file(path), path)


def state_dict_of(data: Any, source: str | Path = "<weights>") -> dict:
    if isinstance(data, Mapping):
        for key in STATE_KEYS:
            if isinstance(data.get(key), Mapping):
                return dict(data[key])
        if data and all(hasattr(v, "shape") for v in data.values()):
            return dict(data)
    raise ModelInvalid(f"{source} holds no state dict (expected tensors, or a dict with one of "
                       f"{', '.join(STATE_KEYS)}).")


def load_weights(model, weights: str | Path | Mapping, hint: str = "") -> None:
    """Load ``weights`` (a file or a state dict) into ``model`` exactly: every tensor present, every shape equal.

    ``hint`` is appended to the mismatch message (what the user can do about it).
    """
    source = weights if not isinstance(weights, Mapping) else "<state dict>"
    state = read_state_dict(weights) if not isinstance(weights, Mapping) else state_dict_of(weights, source)
    mine = model.state_dict()
    bad = [k for k, v in state.items() if k not in mine or tuple(mine[k].shape) != tuple(v.shape)]
    missing = [k for k in mine if k not in state]
    if bad or missing:
        raise ModelInvalid(f"weights {source} do not match the architecture: {len(bad)} mismatched and "
                           f"{len(missing)} missing tensors (e.g. {(bad or missing)[0]})."
                           + (f" {hint}" if hint else ""))
    model.load_state_dict(state)


__all__ = ["STATE_KEYS", "load_weights", "read_state_dict", "read_torch_file", "state_dict_of"]
