"""The common shape of every scalable family: stem -> stages -> head -> pool -> classifier.

Keeping one skeleton lets the cost model attribute work to stages, the describe
command print one table for all families, and weight transfer walk stage by stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.scaling import Scale


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops on ``n`` intra-op threads inside the block, then restore the previous count.

    For the small, batch-1 forward passes edgefit runs outside training (BN recalibration, export
    parity): on a machine whose cores are busy with other work, torch's OpenMP threads wait on each
    other at every op. On the 2-core dev VM under load, one forward pass of a 128-pixel
    EfficientNet-Lite took 1.7 s at torch's default 2 threads and 0.03 s at 1 thread.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class StageSpec:
    """One row of the per-stage table: what the stage is, before any input is seen."""

    name: str
    blocks: int
    channels: int
    stride: int


class ScalableNet(nn.Module):
    """A classifier built from a :class:`Scale`; subclasses only fill in the parts."""

    family: str = ""

    def __init__(self, scale: Scale, num_classes: int, stem: nn.Module, stages: list[nn.Sequential],
                 head: nn.Module, features: int, dropout: float, specs: list[StageSpec]):
        super().__init__()
        self.scale = scale
        self.num_classes = num_classes
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(features, num_classes)
        self.stage_specs = specs

    @staticmethod
    def plan(scale: Scale) -> tuple[int, tuple[tuple[int, int], ...], int]:
        """(stem channels, ((channels, blocks) per stage), head channels) without building anything."""
        raise NotImplementedError

    @property
    def resolution(self) -> int:
        return self.scale.resolution

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) in execution order, matching ``stage_specs`` plus the head."""
        named = [("stem", self.stem)]
        named += [(spec.name, m) for spec, m in zip(self.stage_specs[1:], self.stages)]
        named.append(("head", nn.ModuleList([self.head, self.dropout, self.classifier])))
        return named

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.head(x)
        x = x.mean((2, 3))
        return self.classifier(self.dropout(x))
