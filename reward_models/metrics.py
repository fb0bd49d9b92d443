"""Small numpy metrics for the RWM report: rank correlation, Pearson, ROC AUC, best-of-K selection."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 0-based."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j)
        i = j + 1
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(_ranks(np.ravel(a)), _ranks(np.ravel(b)))


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``score`` for binary labels ``positive`` (Mann-Whitney U; NaN if one class is absent)."""
    score, positive = np.ravel(score), np.ravel(positive).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def best_of_k(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Selection quality over scenes. pred / true (N, M) rewards and EPDMS of each scene's plans.

    Returns mean true EPDMS of the model's top plan (``rwm_pick``), of the oracle's (``oracle_pick``), the gap, and
    the fraction of scenes where the pick is within 0.01 of the oracle.
    """
    pick = true[np.arange(len(true)), np.argmax(pred, axis=1)]
    best = true.max(axis=1)
    return {"rwm_pick": float(pick.mean()), "oracle_pick": float(best.mean()), "gap": float((best - pick).mean()),
            "within_0.01": float(np.mean(best - pick <= 0.01))}


__all__ = ["pearson", "spearman", "roc_auc", "best_of_k"]
