"""Classifier architectures, chosen by name (`settings.model_arch`); random init only.

Every model takes the flat pixel vector of the feature store, float32 `[batch, d]` with
`d = image_size**2 * in_channels` in height-width-channel order, and returns logits
`[batch, n_classes]`. Reading the vector as `[b, h, w, c]` and permuting to `[b, c, h, w]`
gives a channels-last tensor without a copy, which is what fast convolutions want on GPUs.
A 4-D image batch `[b, c, h, w]` is accepted as is.

Architectures (`ARCHS`):
- `cnn`: a compact CNN for the 8x8 demo cards (two conv blocks, ~20k weights at width 16).
- `resnet18` / `resnet50`: ResNet v1.5 (basic / bottleneck blocks), written here because
  torchvision is not a dependency. Images smaller than 64 px get a 3x3 stem without
  max-pool so an 8x8 card is not pooled away. `width` scales the channels (64 = standard).

Heads on embedding vectors (`HEADS`, `build_head`): `linear` and `mlp`, trained in the
`head` mode on a backbone's vectors (flywheel.features.embedding).

`Probabilities` wraps a classifier with a softmax: that is the model logged to MLflow.
Only torch is imported here (the GPU image has no mlflow/feast/kfp).
"""

from __future__ import annotations

import torch
from torch import nn

from flywheel.errors import InputError

ARCHS = ("cnn", "resnet18", "resnet50")
HEADS = ("linear", "mlp")  # heads on embedding vectors (`build_head`)


class ImageClassifier(nn.Module):
    """Flat pixel vectors (or image batches) -> logits, around a convolutional backbone."""

    def __init__(self, backbone: nn.Module, image_size: int, in_channels: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.in_channels = in_channels
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            s, c = self.image_size, self.in_channels
            x = x.view(-1, s, s, c).permute(0, 3, 1, 2)  # channels-last view, no copy
        return self.backbone(x)


class Probabilities(nn.Module):
    """The served model: float32 `[-1, d]` -> class probabilities `[-1, n_classes]`."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x).float(), dim=-1)


def _compact_cnn(in_channels: int, n_classes: int, width: int) -> nn.Module:
    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(2 * w, n_classes),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def _resnet(block, depths, in_channels, n_classes, width, image_size) -> nn.Module:
    if image_size >= 64:  # ImageNet stem: /4
        stem = [
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.MaxPool2d(3, 2, 1),
        ]
    else:  # small images: keep the resolution
        stem = [
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
    layers, cin = list(stem), width
    for i, depth in enumerate(depths):
        w = width * 2**i
        for j in range(depth):
            layers.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
            cin = w * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for m in net.modules():  # zero-init the last BN of each residual branch
        if isinstance(m, (BasicBlock, Bottleneck)):
            nn.init.zeros_(m.body[-1].weight)
    return net


def build_model(
    arch: str, n_classes: int, image_size: int, in_channels: int = 1, width: int | None = None
) -> ImageClassifier:
    """A randomly initialised classifier by architecture name (see `ARCHS`)."""
    if arch == "cnn":
        backbone = _compact_cnn(in_channels, n_classes, width or 16)
    elif arch == "resnet18":
        backbone = _resnet(
            BasicBlock, (2, 2, 2, 2), in_channels, n_classes, width or 64, image_size
        )
    elif arch == "resnet50":
        backbone = _resnet(
            Bottleneck, (3, 4, 6, 3), in_channels, n_classes, width or 64, image_size
        )
    else:
        raise InputError(
            f"unknown model architecture {arch!r} (FLYWHEEL_MODEL_ARCH); choose one of "
            f"{', '.join(ARCHS)}"
        )
    return ImageClassifier(backbone, image_size, in_channels, n_classes)


def build_head(arch: str, d: int, n_classes: int, width: int | None = None) -> nn.Module:
    """A head on embedding vectors `[batch, d]` -> logits: `linear` (a linear probe) or
    `mlp` (layer norm, one hidden layer of `width` (default 256), GELU, dropout)."""
    if arch == "linear":
        return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_classes))
    if arch == "mlp":
        w = width or 256
        return nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, w), nn.GELU(), nn.Dropout(0.1), nn.Linear(w, n_classes)
        )
    raise InputError(f"unknown head {arch!r} for embeddings; choose one of {', '.join(HEADS)}")
