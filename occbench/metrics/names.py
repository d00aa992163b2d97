"""The one list of metric names: unit, direction and short label of every number occbench reports.

Console summary, results JSON, leaderboard and plots all read this table, so a metric is named,
scaled and labelled the same way everywhere. Rates are stored as fractions in [0, 1] in the
results JSON (``unit="fraction"``) and shown as percent (the leaderboard CSV names the unit in the
column: ``accuracy_pct``).

Operating-point metrics carry their target in the name: ``tar_at_far_1e-3``, ``tpir_at_fpir_1e-2``
(see :func:`far_key`); :func:`metric` resolves any of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Metric", "METRICS", "metric", "far_key", "is_known", "VERIFICATION", "IDENTIFICATION", "pct_column",
           "op_target", "ATTRIBUTES"]


@dataclass(frozen=True)
class Metric:
    name: str  # key in results["variants"][v]["metrics"]
    label: str  # short label for tables and plot axes
    unit: str  # "fraction" (shown as percent) | "count"
    higher_is_better: bool
    what: str  # one line: what the number is

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def percent(self, value) -> float | None:
        """The value in percent (fractions), as is otherwise; None stays None."""
        if value is None:
            return None
        return 100.0 * float(value) if self.unit == "fraction" else value

    def format(self, value, digits: int = 2) -> str:
        v = self.percent(value)
        if v is None:
            return "-"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def far_key(prefix: str, rate: float) -> str:
    """``far_key("tar_at_far", 0.001) -> "tar_at_far_1e-3"`` (same as ``bench.protocols.far_key``)."""
    mant, _, exp = f"{float(rate):e}".partition("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{prefix}_{mant}e{int(exp)}"


def op_target(name: str) -> float | None:
    """The target rate of an operating-point metric ('tar_at_far_1e-3' -> 0.001), else None."""
    m = _OP_RE.match(name)
    return float(m.group(2)) if m else None


_BASE = {
    "accuracy": Metric("accuracy", "acc", "fraction", True,
                       "k-fold verification accuracy, thresholds from the other folds (mean over folds)"),
    "accuracy_std": Metric("accuracy_std", "acc std", "fraction", False,
                           "population standard deviation (ddof=0) of the per-fold accuracies"),
    "auc": Metric("auc", "AUC", "fraction", True, "area under the ROC curve"),
    "eer": Metric("eer", "EER", "fraction", False, "equal error rate"),
    "rank1": Metric("rank1", "rank-1", "fraction", True, "closed-set rank-1 identification rate of mated probes"),
    "rank5": Metric("rank5", "rank-5", "fraction", True, "closed-set rank-5 identification rate of mated probes"),
    "fte_rate": Metric("fte_rate", "FTE", "fraction", False,
                       "failure-to-enrol rate: pairs (1:1) or probes (1:N) with an image that has no embedding"),
    # face attributes (kind: attributes): means over the model's attributes matched to the labels
    "attr_accuracy": Metric("attr_accuracy", "attr acc", "fraction", True,
                            "mean over attributes of the accuracy of logit >= 0 on images with a known label"),
    "attr_balanced_accuracy": Metric("attr_balanced_accuracy", "attr bal acc", "fraction", True,
                                     "mean over attributes of the balanced accuracy (TPR + TNR) / 2 of logit >= 0"),
    "attr_ap": Metric("attr_ap", "attr AP", "fraction", True,
                      "mean over attributes of the average precision of the logits (sklearn's definition)"),
}
_OP = {
    "tar_at_far": ("TAR@FAR", True, "true accept rate at the strict false accept rate target (real FAR <= target)"),
    "tpir_at_fpir": ("TPIR@FPIR", True, "open-set true positive identification rate at the false positive "
                                        "identification rate target"),
}
_OP_RE = re.compile(r"^(tar_at_far|tpir_at_fpir)_(.+)$")

METRICS: dict[str, Metric] = dict(_BASE)
VERIFICATION = ("accuracy", "accuracy_std", "tar_at_far_1e-3", "eer", "auc")
IDENTIFICATION = ("rank1", "rank5", "tpir_at_fpir_1e-2", "tpir_at_fpir_1e-1")
ATTRIBUTES = ("attr_accuracy", "attr_balanced_accuracy", "attr_ap")


def metric(name: str) -> Metric:
    """The Metric for ``name`` (operating points like 'tar_at_far_1e-4' included)."""
    if name in METRICS:
        return METRICS[name]
    m = _OP_RE.match(name)
    if m:
        label, hib, what = _OP[m.group(1)]
        return Metric(name, f"{label}={m.group(2)}", "fraction", hib, what)
    raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}, tar_at_far_<rate>, tpir_at_fpir_<rate>")


def is_known(name: str) -> bool:
    try:
        metric(name)
    except ConfigError:
        return False
    return True


def pct_column(name: str) -> str:
    """Leaderboard CSV column of a metric: fractions are written in percent, '<name>_pct'."""
    return f"{name}_pct" if metric(name).unit == "fraction" else name
