"""Train a tiny network for a few steps on faces occluded on the fly (FROM occludes in its DataLoader).

    python examples/train_on_the_fly.py --src ../shared/realdata/lfw-guesswho/lfw --steps 20
    python examples/train_on_the_fly.py --synthetic 64 --steps 5      # generated faces, no data needed

The DataLoader workers run occbench's synth engine: each epoch is a fresh, reproducible draw
(``set_epoch``), and epoch e's images are exactly what ``occbench synth --seed epoch_seed(seed, e)`` writes.
The network predicts the identity and the occlusion mask (a joint loss, as FROM's).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from occbench.torch import OccludedDataset


class TinyNet(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.mask_head = nn.Conv2d(32, 1, 1)
        self.cls = nn.Linear(32, n_classes)

    def forward(self, x):
        f = self.body(x)
        return self.cls(f.mean(dim=(2, 3))), self.mask_head(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=None, help="any occbench source (folder, train.rec, shards)")
    ap.add_argument("--synthetic", type=int, default=0, help="train on N generated faces instead of --src")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    tmp = None
    src = a.src
    if a.synthetic or not src:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from synthetic_faces import write_faces

        tmp = tempfile.TemporaryDirectory(prefix="occbench-train-")
        src = str(Path(tmp.name) / "faces")
        write_faces(src, a.synthetic or 32, 112, "jpg", ids=4)
    ds = OccludedDataset(src, seed=a.seed, scales=(1.0, 1.5, 2.0), clean_ratio=1 / 3, bank=a.bank,
                         landmarks="template" if a.synthetic or not a.src else "auto")
    n_classes = max(ds.labels) + 1
    net = TinyNet(n_classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(a.seed)
    step, epoch = 0, 0
    while step < a.steps:
        ds.set_epoch(epoch)
        dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         generator=torch.Generator().manual_seed(a.seed + epoch))
        for image, label, mask, pattern in dl:
            x = image.float().div(255).sub(0.5).div(0.5)
            logits, mask_logits = net(x)
            target = F.interpolate(mask[:, None].float().div(255), size=mask_logits.shape[-2:], mode="area")
            loss = F.cross_entropy(logits, label) + F.binary_cross_entropy_with_logits(mask_logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            print(f"epoch {epoch} step {step}: loss {loss.item():.4f} "
                  f"(occluded fraction {target.mean().item():.3f}, patterns {pattern.tolist()[:4]}...)", flush=True)
            if step >= a.steps:
                break
        epoch += 1
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
