"""``tiny-occ``: a small CNN with occlusion outputs (embedding + 14x14 mask logits + K x K pattern
logits), trained by ``examples/tiny_occlusion_model.py``. It exists to prove the occlusion-scoring
plumbing on a real learned model; its embedding is not trained for identity.

``input_size`` fixes the pattern head's input (the 1/16 grid of the crop). Returns a dict ``{"embedding": (N, D), "mask": (N, 1, H/8, W/8) logits (high = occluded),
"pattern": (N, P) logits}`` and declares it in ``output_spec``.
"""
from __future__ import annotations

import torch
from torch import nn

from ...synth.patterns import n_patterns
from ..outputs import MaskSpec, OutputSpec, PatternSpec


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyOcc(nn.Module):
    def __init__(self, width: int = 16, num_features: int = 128, k: int = 5, input_size: tuple[int, int] = (112, 112)):
        super().__init__()
        w = int(width)
        gh, gw = (-(-int(input_size[0]) // 16), -(-int(input_size[1]) // 16))  # the 1/16 feature grid
        self.k = int(k)
        self.output_spec = OutputSpec(embedding="embedding", mask=MaskSpec("mask", "logits", 1),
                                      pattern=PatternSpec("pattern", self.k, "logits", "FROM"))
        # the input is halved first (cheap to train on a CPU): 112 -> 56
        self.stem = _block(3, w, 2)  # 1/4 of the input
        self.s2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))  # 1/8: the mask grid
        self.mask_head = nn.Sequential(_block(2 * w, w, 1), nn.Conv2d(w, 1, 1))
        self.s4 = _block(2 * w, 4 * w, 2)  # 1/16
        self.layout = nn.Sequential(nn.Conv2d(4 * w, 8, 1), nn.ReLU(inplace=True))
        self.pattern_head = nn.Linear(8 * gh * gw + 4 * w, n_patterns(self.k))
        self.embedding_head = nn.Linear(4 * w, int(num_features))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f3 = self.s2(self.stem(nn.functional.avg_pool2d(x, 2)))
        mask = self.mask_head(f3)
        f4 = self.s4(f3)
        pooled = f4.mean(dim=(2, 3))
        # the pattern head sees where things are (an 8-channel map of the 1/16 grid) and the pooled features
        layout = self.layout(f4).flatten(1)
        pattern = self.pattern_head(torch.cat([layout, pooled], dim=1))
        return {"embedding": self.embedding_head(pooled), "mask": mask, "pattern": pattern}


def tiny_occ(**kw) -> TinyOcc:
    return TinyOcc(**kw)
