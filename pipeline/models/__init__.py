"""Scalable model families: ``build(family, scale, num_classes)``; ``plan``/``signature`` without torch.

``check_family``, ``plan`` and ``signature`` (:mod:`pipeline.models.plans`) are imported eagerly and
need no torch, so searching and costing architectures stays light; everything that builds a network
(``FAMILIES``, ``build``, ``initialize``, ``ScalableNet`` …) is loaded, with torch, on first use.
"""

from __future__ import annotations

from typing import Any

from pipeline.models.plans import check_family, plan, signature

_TORCH_NAMES = {"FAMILIES": "registry", "build": "registry", "initialize": "registry", "ScalableNet": "base",
                "StageSpec": "base", "torch_threads": "base"}

__all__ = ["FAMILIES", "ScalableNet", "StageSpec", "build", "check_family", "initialize", "plan", "signature",
           "torch_threads"]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f"pipeline.models.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
