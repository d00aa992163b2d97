"""MobileFaceNet, parameter-compatible with insightface arcface_torch ``backbones/mobilefacenet.py``.

Names follow that file: ``layers`` (ModuleList) of ConvBlock / DepthWise / Residual, ``conv_sep``,
``features`` (GDC head); every block keeps its ops in a ``layers`` Sequential. Group counts are
fixed per stage as in the reference (they do not scale with ``scale``), which the checkpoints rely on.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv (no bias) -> BN -> PReLU, as ``layers.{0,1,2}``."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """conv (no bias) -> BN, no activation."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``groups`` channels, depthwise kxk, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, residual: bool = False, kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1), groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(cin, groups),
            ConvBlock(groups, groups, kernel, stride, padding, groups=groups),
            LinearBlock(groups, cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int, kernel=(3, 3), stride=(1, 1), padding=(1, 1)):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, kernel, stride, padding, groups)
                                      for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise 7x7 conv -> flatten -> linear (no bias) -> BatchNorm1d."""

    def __init__(self, num_features: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=(7, 7), groups=512),
            nn.Flatten(),
            nn.Linear(512, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    def __init__(self, num_features: int = 512, blocks=(1, 4, 6, 2), scale: int = 2):
        super().__init__()
        c1, c2 = 64 * scale, 128 * scale
        stem2 = (ConvBlock(c1, c1, (3, 3), (1, 1), (1, 1), groups=64) if blocks[0] == 1
                 else Residual(c1, blocks[0], groups=128))
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, (3, 3), (2, 2), (1, 1)),
            stem2,
            DepthWise(c1, c1, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=128),
            Residual(c1, blocks[1], groups=128),
            DepthWise(c1, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=256),
            Residual(c2, blocks[2], groups=256),
            DepthWise(c2, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=512),
            Residual(c2, blocks[3], groups=256),
        ])
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(num_features)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))
