"""Metrics of the RWM report: rank correlation and Pearson (scipy.stats), ROC AUC, best-of-K selection."""

from __future__ import annotations

from typing import Any

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 0-based (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(x, np.float64), method="average") - 1.0


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (``scipy.stats.pearsonr``); NaN for fewer than 2 values or a constant input."""
    from scipy.stats import pearsonr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(pearsonr(a, b).statistic)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of average ranks (``scipy.stats.spearmanr``); NaN for a constant input."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``score`` for binary labels ``positive`` (Mann-Whitney U; NaN if one class is absent)."""
    score, positive = np.ravel(score), np.ravel(positive).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def best_of_k_gaps(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(N,) per-scene gap: true EPDMS of the oracle's best plan minus that of the plan the model ranks first."""
    return true.max(axis=1) - true[np.arange(len(true)), np.argmax(pred, axis=1)]


def bootstrap_mean_ci(values: np.ndarray, draws: int = 5000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (resampling scenes)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def best_of_k(pred: np.ndarray, true: np.ndarray, block: int = 100) -> dict[str, Any]:
    """Selection quality over scenes. pred / true (N, M) rewards and EPDMS of each scene's plans.

    Returns mean true EPDMS of the model's top plan (``rwm_pick``), of the oracle's (``oracle_pick``), the gap with
    its bootstrap 95 % interval (``gap_ci``) and its value on consecutive blocks of ``block`` scenes
    (``gap_blocks``), the fraction of scenes where the pick is within 0.01 of the oracle and the number of scenes
    where it is 0.2 or more below it (``blunders``).
    """
    gaps = best_of_k_gaps(pred, true)
    pick = true.max(axis=1) - gaps
    return {"rwm_pick": float(pick.mean()), "oracle_pick": float(true.max(axis=1).mean()),
            "gap": float(gaps.mean()), "gap_ci": bootstrap_mean_ci(gaps),
            "gap_blocks": [float(gaps[i:i + block].mean()) for i in range(0, len(gaps), block)],
            "within_0.01": float(np.mean(gaps <= 0.01)), "blunders": int(np.sum(gaps >= 0.2))}


__all__ = ["pearson", "spearman", "roc_auc", "best_of_k", "best_of_k_gaps", "bootstrap_mean_ci"]
