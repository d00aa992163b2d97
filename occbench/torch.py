"""On-the-fly occlusion for training: :class:`OccludedDataset`, a ``torch.utils.data.Dataset``.

It runs the synth engine itself (the same worker ``occbench synth`` uses, its writes captured in
memory), so an item is exactly what synth writes for that image: with ``seed`` and epoch ``e`` the
pixels equal those of ``occbench synth --seed epoch_seed(seed, e)`` (epoch 0: ``--seed seed``),
decoded from the encoded image synth would write. Every draw depends only on (seed, epoch, key),
never on ``num_workers`` or the order items are asked for; ``set_epoch(e)`` gives a fresh draw.

>>> ds = OccludedDataset("casia", data_root="~/data", scales="1:0.5:2", clean_ratio=1/3, bank=64)  # doctest: +SKIP
>>> image, label, mask, pattern = ds[0]   # uint8 3xHxW, int, uint8 HxW (255 = occluded), int  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import cv2
import numpy as np
import torch

from .errors import OccbenchError
from .seeding import derive_seed
from .synth import pipeline as pl

__all__ = ["OccludedDataset", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The synth ``--seed`` whose output equals epoch ``epoch`` of a dataset built with ``seed``."""
    return int(seed) if int(epoch) == 0 else derive_seed(seed, "epoch", int(epoch))


class OccludedDataset(torch.utils.data.Dataset):
    """Occluded faces from any occbench source, drawn per (seed, epoch, index).

    source: a path or dataset name (as ``occbench synth --src``: folder, ``train.rec``, shards) or
    an open :class:`~occbench.io.sources.Source`. The other arguments are ``SynthConfig`` fields
    (``occluders``, ``scales``, ``clean_ratio``, ``bank``, ``placement``, ``landmarks``, ``k``, ...).

    Item: ``(image, label, mask, pattern)`` (+ ``params`` dict when ``return_params``): image uint8
    tensor 3xHxW (RGB), label the class id (the source's integer labels, else identities in sorted
    order), mask uint8 HxW (255 = occluded), pattern the K×K FROM pattern id (0 when clean). An image
    without a face (``noface``) is returned clean (pattern 0, status in params); an unreadable one
    raises, naming its key and reason. ``transform(image)`` is applied last when given.
    """

    def __init__(self, source, *, seed: int = 0, epoch: int = 0, transform=None, return_params: bool = False,
                 data_root: str | None = None, **synth_options):
        src_spec = source if isinstance(source, (str, os.PathLike)) else str(getattr(source, "root", "source"))
        self._cfg = pl.SynthConfig(src=str(src_spec), out=os.path.join(tempfile.gettempdir(), "occbench-dataset"),
                                   seed=int(seed), data_root=data_root, jobs=1, **synth_options)
        if self._cfg.per_scale or self._cfg.per_occluder:
            raise OccbenchError("OccludedDataset draws one variant per image: per_scale / per_occluder are for synth")
        self._cfg.validate()
        self._source = source if not isinstance(source, (str, os.PathLike)) else pl.open_run_source(self._cfg)
        pairs, pre_errors = pl._select_items(self._source, self._cfg)
        self.keys = [k for k, _ in pairs]
        self.identities = [i for _, i in pairs]
        self._pre_errors = pre_errors
        from .synth.sharded import label_map

        self.class_ids = label_map(self.identities)
        self.labels = [self.class_ids[i] for i in self.identities]
        self.occluders = pl.resolve_occluders(self._cfg)
        self.variants = pl.plan_variants(self.occluders, self._cfg.scales, False, False)
        self.seed, self.transform, self.return_params = int(seed), transform, return_params
        self.epoch = int(epoch)
        self._worker = None
        self._worker_key = None

    def __len__(self) -> int:
        return len(self.keys)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch`` from now on (call it on the dataset before each epoch's DataLoader
        iteration; persistent workers need ``DataLoader(..., persistent_workers=False)`` to see it)."""
        self.epoch = int(epoch)

    def synth_config(self, out: str) -> pl.SynthConfig:
        """The ``occbench synth`` configuration that writes this epoch's items to ``out``."""
        return dataclasses.replace(self._cfg, out=str(out), seed=epoch_seed(self.seed, self.epoch))

    def _spec(self) -> dict:
        cfg = dataclasses.replace(self._cfg, seed=epoch_seed(self.seed, self.epoch))
        return {"config": cfg.to_dict(), "out": cfg.out, "variants": [dataclasses.asdict(v) for v in self.variants],
                "occluders": list(self.occluders), "fingerprint": f"dataset-{cfg.seed}"}

    def _get_worker(self):
        key = (os.getpid(), self.epoch)
        if self._worker_key != key:  # one engine per process and epoch (bank looks follow the seed)
            from .synth.sharded import _ArrayWorker

            self._worker = _ArrayWorker(self._spec(), source=self._source, landmarker=pl.make_landmarker(self._cfg))
            self._worker_key = key
        return self._worker

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_worker"], state["_worker_key"] = None, None  # rebuilt in each DataLoader worker
        return state

    def __getitem__(self, index: int):
        from .io.images import decode_rgb

        index = int(index)
        key, identity = self.keys[index], self.identities[index]
        if key in self._pre_errors:
            raise OccbenchError(f"item {index} ({key!r}) cannot be used: {self._pre_errors[key]}")
        w = self._get_worker()
        rec = w.render(key, identity)
        row = rec["rows"][0]
        status = row["status"]
        if status in ("ok", "clean"):  # arrays where decoding would give them back (see _ArrayWorker)
            image, mask = w.captured[row["image"]], w.captured[row["mask"]]
            image = image if isinstance(image, np.ndarray) else decode_rgb(image)
            mask = mask if isinstance(mask, np.ndarray) else \
                cv2.imdecode(np.frombuffer(mask, np.uint8), cv2.IMREAD_GRAYSCALE)
            pattern = int(row["pattern"])
        elif status == "noface":
            image = decode_rgb(self._source.read_bytes(key))
            mask = np.zeros(image.shape[:2], np.uint8)
            pattern = 0
        else:
            raise OccbenchError(f"item {index} ({key!r}) cannot be used: {row['reason']}")
        img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.transform is not None:
            img_t = self.transform(img_t)
        out = (img_t, self.labels[index], torch.from_numpy(np.ascontiguousarray(mask)), pattern)
        if self.return_params:
            params = {f: row.get(f) for f in ("key", "status", "reason", "occluder", "scale", "seed", "area_frac",
                                              "cells", "params")} | {"epoch": self.epoch}
            if isinstance(params["params"], dict):  # kept as a dict by the worker: the JSON synth writes
                from .synth.manifest import to_json

                params["params"] = to_json(params["params"])
            return out + (params,)
        return out
