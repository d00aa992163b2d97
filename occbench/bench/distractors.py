"""MegaFace-style distractors for 1:N protocols (``--distractors list.csv``): the list, and its
embeddings through the engine's own landmark -> alignment -> embedding chain, cached.

The list is a CSV ``path[,identity]`` (a header row ``path,...`` is optional; identities are ignored:
a distractor never matches a probe). Paths are relative to the data root (``--data-root``; default the
list's folder) and may not escape it. List order defines the nested subsets of a sweep (the first N
enrolled distractors). An unreadable or undecodable image, or one without a face, is a failure row with
its reason; failures are listed in the results and left out of the gallery.

Cache: embeddings are stored under ``(model fingerprint, "distractors", digest of [the keys, every
file's size and mtime, the landmarks table, the alignments])``, so a later run of any model already
seen on the same list (and the same landmarker) extracts nothing.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from .protocols import canonical_json

NAMESPACE = "distractors"  # the "protocol" part of the cache keys: shared by every protocol


def read_distractor_list(path: str | os.PathLike) -> list[str]:
    """Keys (relative posix paths) in list order; refuses unsafe paths and duplicates by row."""
    from .data import _norm_rel

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise DataNotFoundError(f"cannot read the distractor list {path}: {e.strerror or e}") from None
    start = 1 if rows and rows[0] and rows[0][0].strip().lower() == "path" else 0
    keys: list[str] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        key = _norm_rel(row[0], f"{path} row {i}")
        if key in seen:
            raise ConfigError(f"{path} row {i}: {key} is listed twice (first in row {seen[key]})")
        seen[key] = i
        keys.append(key)
    if not keys:
        raise ConfigError(f"{path} lists no distractor images (one path per row, relative to the data root)")
    return keys


@dataclass
class DistractorSet:
    """The enrolled distractors (embeddings in list order) and what failed."""

    list_path: Path
    root: Path
    keys: list[str]  # enrolled, list order
    emb: np.ndarray  # (n_enrolled, D) float32
    n_listed: int
    failed: list[dict] = field(default_factory=list)  # {key, stage, reason}
    cached: bool = False
    list_sha256: str = ""

    @property
    def n(self) -> int:
        return len(self.keys)

    def describe(self) -> dict:
        """For the results' protocol block (deterministic: no paths of this machine, no timings)."""
        by_stage: dict[str, int] = {}
        for f in self.failed:
            by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
        return {"list": self.list_path.name, "list_sha256": self.list_sha256, "n_listed": self.n_listed,
                "n_enrolled": self.n, "n_failed": len(self.failed), "failed_by_stage": dict(sorted(by_stage.items())),
                "failed": self.failed,
                "what": "distractor images added to the gallery (never a probe's mate); failures are left out"}


def load_distractors(list_path, data_root, protocol, recognizer, cache, cache_dir: Path, batch_size: int,
                     num_workers: int, jobs: int = 1, tick=None, add_total=None) -> DistractorSet:
    """Landmarks, alignment and embeddings of every listed distractor (each step cached). ``add_total(n)``
    and ``tick(n)`` drive an outer progress bar (3 steps per image)."""
    from ..recognizers.registry import file_sha256
    from .data import Task, check_images
    from .embed import compute_alignments, embed_set
    from .variants import clean_landmarks, keys_digest

    list_path = Path(list_path)
    if protocol.landmarks.get("method") == "file":
        raise ConfigError(f"protocol {protocol.name} reads its landmarks from a file, which does not cover the "
                          "distractors: use a protocol with a landmark detector for --distractors")
    keys = read_distractor_list(list_path)
    root = Path(data_root) if data_root is not None else list_path.parent
    if not root.is_dir():
        raise DataNotFoundError(f"distractor root {root} is not a folder (--data-root, or the list's folder)")
    # a task over the distractors alone: same checks as protocol images (escapes refused, missing recorded)
    task = check_images(Task(protocol, "identification", str(root), images_root=root,
                             gallery=[(k, "") for k in keys]))
    task.root = root
    tick = tick or (lambda n: None)
    if add_total is not None:
        add_total(3 * len(keys))
    run_dir = cache_dir / "runs" / NAMESPACE / keys_digest(keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(keys)  # the engine's key order; list order is restored below
    lms = clean_landmarks(task, ordered, cache_dir, run_dir, root, jobs=jobs, progress=False, tick=tick)
    al = compute_alignments(recognizer, task, ordered, lms, cache, NAMESPACE, tick=tick)
    sources = [None if k in task.missing else task.image_source(k) for k in ordered]
    es = embed_set(NAMESPACE, recognizer, ordered, sources, al.reasons, al.stages, al.ms, cache, NAMESPACE,
                   canonical_json(["distractor-list", lms.inputs_digest()]), batch_size, num_workers, tick=tick)
    idx = np.array([es.index[k] for k in keys], np.int64)
    ok = es.ok[idx]
    failed = [{"key": k, "stage": es.stages[i], "reason": es.reasons[i]} for k, i, o in zip(keys, idx, ok) if not o]
    emb = np.ascontiguousarray(es.emb[idx[ok]], dtype=np.float32)
    return DistractorSet(list_path, root, [k for k, o in zip(keys, ok) if o], emb, len(keys), failed, es.cached,
                         file_sha256(list_path))


def distractor_label(probe_labels) -> str:
    """A gallery label no probe carries (distractors are never anyone's mate)."""
    taken = set(map(str, probe_labels))
    label = "<distractor>"
    while label in taken:
        label += "_"
    return label


# ----------------------------------------------------------------------------------- sweep outputs


def sweep_frame(sweeps: dict):
    """{variant: distractor_sweep block} -> one table, units in the column names: rates in percent
    (``_pct``), thresholds in the model's score units (cosine similarity, ``_score``)."""
    import pandas as pd

    from ..metrics.names import far_key

    rows = []
    for name, b in sweeps.items():
        for p in b["points"]:
            row = {"variant": name, "n_distractors": p["n_distractors"], "gallery_size_images": p["gallery_size"],
                   "rank1_pct": 100 * p["rank1"]}
            ok = p.get("reachable") or [True] * len(p["tpir"])
            for t, tp, fp, th, r in zip(b["fpir_targets"], p["tpir"], p["fpir"], p["threshold"], ok):
                # unreachable (too few non-mated probes for the target): empty cells, as in the leaderboard
                row[f"{far_key('tpir_at_fpir', t)}_pct"] = 100 * tp if r else None
                row[f"{far_key('achieved_fpir_at_fpir', t)}_pct"] = 100 * fp if r else None
                row[f"{far_key('threshold_at_fpir', t)}_score"] = th if r else None
            rows.append(row)
    return pd.DataFrame(rows)


def first_reachable(block: dict) -> int | None:
    """Index of the first FPIR target every point of a sweep block can measure, or None."""
    for j in range(len(block.get("fpir_targets") or ())):
        if all((p.get("reachable") or [True] * len(p["tpir"]))[j] for p in block["points"]):
            return j
    return None


def plot_sweeps(sweeps: dict, path: Path, title: str) -> Path:
    """Rank-1 (solid) and TPIR at the lowest FPIR target that every point can measure (dashed) against
    the number of distractors, one colour per variant; symmetric-log x axis so that 0 distractors shows."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.get_cmap("tab10")
    for i, (name, b) in enumerate(sweeps.items()):
        pts = b["points"]
        x = [p["n_distractors"] for p in pts]
        ax.plot(x, [100 * p["rank1"] for p in pts], "o-", color=colors(i % 10), label=f"{name} rank-1")
        j = first_reachable(b)
        if j is not None:
            ax.plot(x, [100 * p["tpir"][j] for p in pts], "s--", color=colors(i % 10),
                    label=f"{name} TPIR@FPIR={b['fpir_targets'][j]:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("distractors added to the gallery (log scale)")
    ax.set_ylabel("identification rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
