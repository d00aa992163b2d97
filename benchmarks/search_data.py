"""Shared by bench_search.py and bench_faiss.py: the seeded synthetic gallery / probes, interleaved
timing of several steps (order alternating per repeat) and the ratio lines they print."""
from __future__ import annotations

import os
import time

import numpy as np


def make_gallery(n: int, dim: int, seed: int, chunk: int = 65536, out: np.ndarray | None = None) -> np.ndarray:
    """(n, dim) float32 unit rows, generated and normalised chunk by chunk in place (no 2x copy)."""
    g = np.empty((n, dim), np.float32) if out is None else out
    rng = np.random.default_rng(seed)
    for a in range(0, n, chunk):
        blk = g[a:a + chunk]
        rng.standard_normal(out=blk, dtype=np.float32)
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
    return g


def make_probes(gallery: np.ndarray, n: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Half the probes are noisy copies of random gallery rows (returned as source, else -1)."""
    rng = np.random.default_rng(seed + 1)
    dim = gallery.shape[1]
    src = np.where(np.arange(n) % 2 == 0, rng.integers(0, gallery.shape[0], size=n), -1)
    p = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    p[src >= 0] += gallery[src[src >= 0]]
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p, src


def wall_cpu(fn):
    """(result, wall seconds, process CPU seconds of all threads) of fn()."""
    c, t = time.process_time(), time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t, time.process_time() - c


def interleaved(steps: dict, repeats: int, timer) -> dict:
    """{name: [timer(step) per repeat]}, steps run in turn, the order reversed every other repeat so
    that other load hits all of them alike."""
    runs = {name: [] for name in steps}
    for rep in range(repeats):
        for name in (list(steps) if rep % 2 == 0 else list(steps)[::-1]):
            runs[name].append(timer(steps[name]))
    return runs


def ratio_line(what: str, ratios: list[float]) -> str:
    return f"{what}: median {np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} runs)"


def load_line(load0: float, load1: float) -> str:
    return f"(1-min load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs)"
