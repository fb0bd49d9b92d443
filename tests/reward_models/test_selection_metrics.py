"""Best-of-K selection figures of the RWM report (reward_models.metrics)."""

from __future__ import annotations

import numpy as np

from reward_models.metrics import best_of_k, best_of_k_gaps, bootstrap_mean_ci


def test_best_of_k_figures():
    true = np.array([[0.2, 1.0, 0.5], [0.9, 0.0, 0.8], [0.3, 0.4, 0.6]])
    pred = np.array([[0.1, 0.9, 0.2], [0.1, 0.9, 0.5], [0.5, 0.2, 0.4]])  # right, blunder (0.9), 0.3 short
    np.testing.assert_allclose(best_of_k_gaps(pred, true), [0.0, 0.9, 0.3])
    r = best_of_k(pred, true, block=2)
    assert abs(r["gap"] - 0.4) < 1e-12 and r["blunders"] == 2 and r["within_0.01"] == 1 / 3
    np.testing.assert_allclose(r["gap_blocks"], [0.45, 0.3])
    np.testing.assert_allclose([r["rwm_pick"], r["oracle_pick"]], [(1.0 + 0.0 + 0.3) / 3, (1.0 + 0.9 + 0.6) / 3])
    lo, hi = r["gap_ci"]
    assert 0.0 <= lo < r["gap"] < hi <= 0.9


def test_bootstrap_interval_narrows_with_more_scenes():
    rng = np.random.default_rng(1)
    small, large = rng.exponential(0.03, 50), rng.exponential(0.03, 5000)
    w_small = np.subtract(*bootstrap_mean_ci(small)[::-1])
    w_large = np.subtract(*bootstrap_mean_ci(large)[::-1])
    assert w_large < 0.2 * w_small
    assert bootstrap_mean_ci(large)[0] < large.mean() < bootstrap_mean_ci(large)[1]
