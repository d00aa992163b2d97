"""Improved ResNet (IResNet) face backbones, parameter-compatible with insightface arcface_torch.

The module / parameter names (conv1, bn1, prelu, layer1..4 of IBasicBlock{bn1, conv1, bn2, prelu,
conv2, bn3, downsample.{0,1}}, bn2, dropout, fc, features) match
``recognition/arcface_torch/backbones/iresnet.py``, so its ``backbone.pth`` files load unchanged with
``load_state_dict(strict=True)``.

``width`` (default 64) and ``input_size`` are extensions for tiny test models and non-112x112
crops; the defaults give exactly the published architectures.
"""
from __future__ import annotations

import math

import torch
from torch import nn

DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation style block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet with four stages of ``layers`` blocks, each stage halving the resolution.

    Output: (N, num_features) embedding (before L2 normalisation).
    """

    def __init__(self, layers: tuple[int, int, int, int] | list[int], *, num_features: int = 512,
                 dropout: float = 0.0, width: int = 64, input_size: tuple[int, int] = (112, 112)):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet needs 4 stage depths, got {layers}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
        self.prelu = nn.PReLU(width)
        cin = width
        for i, (n, cout) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{i}", self._stage(cin, cout, n))
            cin = cout
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        # Four stride-2 stages: 112 -> 56 -> 28 -> 14 -> 7.
        fh, fw = (math.ceil(s / 16) for s in input_size)
        self.fc = nn.Linear(cin * fh * fw, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        self._init_weights()

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=2, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-5))
        mods = [IBasicBlock(cin, cout, stride=2, downsample=down)]
        mods += [IBasicBlock(cout, cout) for _ in range(blocks - 1)]
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.features.weight.requires_grad_(False)  # fixed scale, as in arcface_torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        x = self.fc(self.dropout(x))
        return self.features(x)


def iresnet(depth: int, **kw) -> IResNet:
    if depth not in DEPTHS:
        raise ValueError(f"no iresnet{depth}; depths: {sorted(DEPTHS)}")
    return IResNet(DEPTHS[depth], **kw)
