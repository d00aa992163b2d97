"""Pure evaluation metrics: 1:1 verification and 1:N identification (streamed top-k search)."""
from .identification import (
    CMCResult,
    MateRanks,
    OpenSetPoint,
    TopK,
    cmc,
    cmc_from_ranks,
    mate_ranks,
    rank_of_mate,
    topk_search,
    tpir_at_fpir,
    tpir_at_fpir_from_scores,
)
from .verification import (
    KFoldResult,
    TarAtFar,
    best_accuracy_threshold,
    eer,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    strict_operating_point,
    tar_at_far,
)

__all__ = [
    "CMCResult", "MateRanks", "OpenSetPoint", "TopK", "cmc", "cmc_from_ranks", "mate_ranks", "rank_of_mate",
    "topk_search", "tpir_at_fpir", "tpir_at_fpir_from_scores",
    "KFoldResult", "TarAtFar", "best_accuracy_threshold", "eer", "kfold_accuracy", "roc_auc", "roc_curve",
    "strict_operating_point", "tar_at_far",
]
