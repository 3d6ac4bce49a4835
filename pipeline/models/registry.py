"""The torch side of the families: the classes by name, ``build`` and deterministic ``initialize``."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.scaling import Scale
from pipeline.models.base import ScalableNet, torch_threads
from pipeline.models.efficientnet import EfficientNet
from pipeline.models.efficientnet_lite import EfficientNetLite
from pipeline.models.mobilenetv2 import MobileNetV2
from pipeline.models.plans import check_family
from pipeline.models.resnet import ResNet18, ResNet34, ResNet50

FAMILIES: dict[str, type[ScalableNet]] = {
    cls.family: cls for cls in (EfficientNet, EfficientNetLite, MobileNetV2, ResNet18, ResNet34, ResNet50)
}

__all__ = ["FAMILIES", "build", "initialize"]


def build(family: str, scale: Scale, num_classes: int = 1000, device: str | torch.device = "cpu") -> ScalableNet:
    """Build ``family`` at ``scale``. ``device="meta"`` builds without allocating weights (for costing)."""
    cls = FAMILIES[check_family(family)]
    with torch.device(device):
        model = cls(scale, num_classes)
    return model.eval()


@torch.no_grad()
def initialize(model: ScalableNet, seed: int = 0, calibration_batches: int = 1, batch: int = 8) -> ScalableNet:
    """Deterministic init whose outputs depend on the input.

    PyTorch's default init with untrained BatchNorm statistics (mean 0, var 1) makes
    activations explode or vanish through depth, so logits barely depend on the input
    and a parity check between runtimes means nothing. We use He init and then set every
    BatchNorm's running statistics from a few seeded random batches (a data-free
    "BN recalibration"), which normalises each layer like a trained network would.
    """
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.normal_(m.bias, std=0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, std=0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0 / m.in_features**0.5)
                nn.init.zeros_(m.bias)
        res = min(model.resolution, 128)  # BN statistics barely depend on resolution; keep this cheap
        model.train()
        for _ in range(calibration_batches):
            model(torch.randn(batch, 3, res, res))
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model
