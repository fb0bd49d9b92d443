"""Lane keeping (LK, NAVSIM ``PDMScorer._calculate_lane_keeping``).

The deviation of a step is the distance (m) of the ego box centre to the **route centreline** (the one progress is
measured on, so driving in a sibling lane counts; :func:`irlvla_gym.metrics.route.route_distance`). LK is 0 when the
deviation exceeds ``lk_max_deviation_m`` for ``lk_window_steps`` consecutive steps; steps with the centre in an
intersection neither count nor reset the run.
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.metrics.config import ScorerConfig


def score_lk(deviation: np.ndarray, in_intersection: np.ndarray, cfg: ScorerConfig) -> np.ndarray:
    """LK (R,) in {0, 1} from the per-step deviation (R, T) (m) and intersection flags (R, T).

    The run length with skipped steps is a cumulative count of deviating steps minus its value at the last reset.
    """
    deviating = (deviation > cfg.lk_max_deviation_m) & ~in_intersection
    reset = ~(deviation > cfg.lk_max_deviation_m) & ~in_intersection
    run_total = np.cumsum(deviating, axis=1)
    at_reset = np.maximum.accumulate(np.where(reset, run_total, 0), axis=1)
    return np.where((run_total - at_reset).max(axis=1) >= cfg.lk_window_steps, 0.0, 1.0)
