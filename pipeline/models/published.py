"""Published ImageNet top-1 accuracy of each family's reference architectures, with the source of every number.

``deploy fit --family auto`` compares families by the accuracy they can be expected to reach at the size that
fits the budget (:mod:`pipeline.cost.accuracy`). Each row names an architecture this package can build (a
width, depth and resolution, or a preset) and its published top-1; its MACs are computed by edgefit's own cost
model, so every family is placed on the same MAC axis (sources count MACs differently: the Lite README counts
407 M for lite0, edgefit counts 385 M for the same network).
"""

from __future__ import annotations

from dataclasses import dataclass

EFFICIENTNET_PAPER = "Tan & Le 2019, EfficientNet, arXiv:1905.11946, Table 2 (ImageNet top-1)"
LITE_README = ("tensorflow/tpu models/official/efficientnet/lite/README.md (FP32 accuracy column; "
               "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)")
MOBILENETV2_README = ("tensorflow/models research/slim/nets/mobilenet/README.md (MobileNetV2 checkpoints table, "
                      "Top 1 Accuracy)")
TORCHVISION = "torchvision.models weights IMAGENET1K_V1, acc@1 (https://pytorch.org/vision/stable/models.html)"


@dataclass(frozen=True)
class Published:
    """One published architecture: how to build it here and the top-1 its authors report."""

    label: str
    width: float
    depth: float
    resolution: int
    top1: float  # percent
    source: str
    preset: str | None = None
    family: str | None = None  # built as another family (ResNet-34 on the ResNet-18 line); None: this one


PUBLISHED_TOP1: dict[str, tuple[Published, ...]] = {
    "efficientnet": tuple(Published(f"B{i}", w, d, r, acc, EFFICIENTNET_PAPER, preset=f"b{i}") for i, (w, d, r, acc)
                          in enumerate(((1.0, 1.0, 224, 77.1), (1.0, 1.1, 240, 79.1), (1.1, 1.2, 260, 80.1),
                                        (1.2, 1.4, 300, 81.6), (1.4, 1.8, 380, 82.9), (1.6, 2.2, 456, 83.6),
                                        (1.8, 2.6, 528, 84.0), (2.0, 3.1, 600, 84.3)))),
    "efficientnet-lite": tuple(Published(f"lite{i}", w, d, r, acc, LITE_README, preset=f"lite{i}")
                               for i, (w, d, r, acc) in enumerate(((1.0, 1.0, 224, 75.1), (1.0, 1.1, 240, 76.7),
                                                                   (1.1, 1.2, 260, 77.6), (1.2, 1.4, 280, 79.8),
                                                                   (1.4, 1.8, 300, 81.5)))),
    "mobilenetv2": tuple(Published(f"mobilenet_v2_{w}_{r}", w, 1.0, r, acc, MOBILENETV2_README)
                         for w, r, acc in ((1.0, 96, 60.3), (1.0, 128, 65.3), (1.0, 160, 68.8), (1.0, 192, 70.7),
                                           (1.0, 224, 71.8), (1.3, 224, 74.4), (1.4, 224, 75.0))),
    # ResNet-18 has one published size; ResNet-34 (the same basic block, deeper) gives the line its slope
    "resnet18": (Published("ResNet-18", 1.0, 1.0, 224, 69.758, TORCHVISION),
                 Published("ResNet-34", 1.0, 1.0, 224, 73.314, TORCHVISION, family="resnet34")),
    "resnet34": (Published("ResNet-18", 1.0, 1.0, 224, 69.758, TORCHVISION, family="resnet18"),
                 Published("ResNet-34", 1.0, 1.0, 224, 73.314, TORCHVISION)),
    # ResNet-50 has one published size; its line takes the ResNet-18 -> ResNet-34 slope (see pipeline.cost.accuracy)
    "resnet50": (Published("ResNet-50", 1.0, 1.0, 224, 76.13, TORCHVISION),),
}
SLOPE_FROM = {"resnet50": "resnet18"}  # a family with one point borrows the slope of this family's line

__all__ = ["PUBLISHED_TOP1", "SLOPE_FROM", "Published"]
