"""A FROM-sized occlusion-aware model, for timing only (random weights): the 50-layer IResNet trunk
(FROM's backbone is LResNet50E-IR), a mask decoder on its 7x7 feature map whose mask multiplies the
features before the embedding head (as FROM cleans corrupted features), and a pattern head on the mask
(K=5, 226 classes, as FROM's occlusion pattern predictor). Its outputs have the shapes and declaration
of a real one, so occbench collects and scores them as it would a trained FROM.

    python benchmarks/bench_occlusion_overhead.py --model from_sized_model:from_sized --limit 40
"""
from __future__ import annotations

import torch
from torch import nn

from occbench.recognizers.archs.iresnet import iresnet
from occbench.recognizers.outputs import MaskSpec, OutputSpec, PatternSpec
from occbench.synth.patterns import n_patterns


class FromSized(nn.Module):
    def __init__(self, depth: int = 50, k: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = iresnet(int(depth))
        c = self.trunk.bn2.num_features
        self.mask_head = nn.Sequential(nn.Conv2d(c, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1))
        self.pattern_head = nn.Linear(7 * 7, n_patterns(int(k)))
        self.output_spec = OutputSpec(embedding="embedding", mask=MaskSpec("mask", "logits", 1),
                                      pattern=PatternSpec("pattern", int(k), "logits", "FROM"))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.trunk
        f = t.layer4(t.layer3(t.layer2(t.layer1(t.prelu(t.bn1(t.conv1(x)))))))
        mask = self.mask_head(f)  # (N, 1, 7, 7) logits, high = occluded
        clean = f * torch.sigmoid(-mask)  # the features the mask keeps
        emb = t.features(t.fc(t.dropout(torch.flatten(t.bn2(clean), 1))))
        return {"embedding": emb, "mask": mask, "pattern": self.pattern_head(mask.flatten(1))}


def from_sized(depth: int = 50, k: int = 5) -> nn.Module:
    return FromSized(depth, k).eval()
