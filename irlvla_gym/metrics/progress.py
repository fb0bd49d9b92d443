"""Ego progress (EP, NAVSIM ``PDMScorer._calculate_progress`` and ``_aggregate_pdm_scores``).

Raw progress: the arc length (m) the box centre advances along the route centreline from t = 0 to 4 s, clipped at 0
(:func:`route_progress`). EP: progress over a normaliser, the largest ``progress x multiplicative product`` of the
PDM-Closed reference and the plan itself (:func:`normalise_progress`, applied in the final aggregation
:func:`irlvla_gym.metrics.result.finalize_rows`).
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.metrics.config import ScorerConfig
from irlvla_gym.metrics.maps import MapPack
from irlvla_gym.metrics.route import route_arc_length


def route_progress(pack: MapPack, slot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(R,) progress (m) of the box centres (R, T, 2) along their row's route (row r in the scene ``slot[r]`` of
    ``pack``); 0 for rows without a route."""
    s = route_arc_length(pack, slot, centre[:, [0, -1]])
    return np.where(np.isnan(s[:, 0]), 0.0, np.maximum(s[:, 1] - s[:, 0], 0.0))


def normalise_progress(progress: np.ndarray, product: np.ndarray, reference: np.ndarray, cfg: ScorerConfig
                       ) -> tuple[np.ndarray, np.ndarray]:
    """EP (R,) in [0, 1] and its normaliser (R,) (m).

    Args:
        progress: (R,) raw progress (m); product: (R,) NC x DAC x DDC x TLC of the row's plan.
        reference: (R,) PDM-Closed progress x its product (m) per row (the batch's best when scoring K plans of
            one scene without a reference).
    """
    weighted = progress * product
    normaliser = np.maximum(reference, weighted)
    numerator = weighted if cfg.ep_numerator_times_product else progress
    with np.errstate(divide="ignore", invalid="ignore"):
        ep = np.where(normaliser > cfg.progress_distance_threshold,
                      np.clip(numerator / np.maximum(normaliser, 1e-12), 0.0, 1.0), 1.0)
    return ep, normaliser
