"""Ego-area flags and the compliance scores built on them: drivable area (DAC) and driving direction (DDC).

epdms.md "Ego-area flags" (NAVSIM ``PDMScorer._calculate_ego_area``): per step, from the four corners and the centre
of the ego box,

* non-drivable: some corner lies in no drivable polygon (every polygon of the map index is drivable);
* multiple lanes: corners lie in more than one lane and no single lane holds all four;
* oncoming: the centre lies in no on-route polygon; in intersection: the centre lies in an intersection polygon.

All five points of all rows x steps are answered by one containment query of the rows' :class:`MapPack`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.config import ScorerConfig
from irlvla_gym.metrics.maps import MapPack


class AreaFlags(NamedTuple):
    """Ego-area flags of R x T ego boxes, and the containment hits behind them.

    Attributes:
        kt: (Q,) box of each (point, polygon) hit (row * T + step); poly: (Q,) global polygon id.
        lane_pair: (Q,) bool, the hit is a corner inside a lane polygon (the red-light test reuses these).
        non_drivable, multiple_lanes, oncoming, in_intersection: (R * T,) bool.
    """

    kt: np.ndarray
    poly: np.ndarray
    lane_pair: np.ndarray
    non_drivable: np.ndarray
    multiple_lanes: np.ndarray
    oncoming: np.ndarray
    in_intersection: np.ndarray


def area_flags(pack: MapPack, slot: np.ndarray, pts: np.ndarray) -> AreaFlags:
    """Flags (module docs) of ego box points ``pts`` (R, T, 5, 2) (m), row r in the scene ``slot[r]`` of
    ``pack``."""
    R, T = pts.shape[:2]
    RT = R * T
    point_idx, poly = pack.contains(pts.reshape(-1, 2), np.repeat(slot, T * 5))
    kt, which = point_idx // 5, point_idx % 5
    is_corner = which < B.CENTER
    corner_covered = np.zeros(RT * 4, bool)
    corner_covered[(kt * 4 + which)[is_corner]] = True
    non_drivable = ~corner_covered.reshape(RT, 4).all(axis=1)
    lane_pair = is_corner & pack.poly_is_lane[poly]
    multiple_lanes = _multiple_lanes(kt[lane_pair], pack.poly_local[poly[lane_pair]],
                                     max(int(pack.num_lanes[slot].max()) if R else 1, 1), RT)
    centre = ~is_corner
    ckt, cpoly = kt[centre], poly[centre]
    oncoming = np.bincount(ckt, weights=pack.poly_on_route[cpoly], minlength=RT) == 0
    in_intersection = np.bincount(ckt, weights=pack.poly_intersection[cpoly], minlength=RT) > 0
    return AreaFlags(kt, poly, lane_pair, non_drivable, multiple_lanes, oncoming, in_intersection)


def _multiple_lanes(kt: np.ndarray, lane: np.ndarray, num_lanes: int, num_boxes: int) -> np.ndarray:
    """(num_boxes,) bool: corners in > 1 lane and no lane holding all 4, from the (box, lane) corner hits."""
    key = kt * num_lanes + lane
    if num_boxes * num_lanes <= 4_000_000:  # a counting sort beats np.unique's sort for moderate lane counts
        counts = np.bincount(key, minlength=num_boxes * num_lanes)
        ukey = np.flatnonzero(counts)
        corners_per_lane = counts[ukey]
    else:
        ukey, corners_per_lane = np.unique(key, return_counts=True)
    ukt = ukey // num_lanes
    lanes_touched = np.bincount(ukt, minlength=num_boxes)
    one_lane_all = np.bincount(ukt[corners_per_lane == 4], minlength=num_boxes) > 0
    return (lanes_touched > 1) & ~one_lane_all


def score_dac(non_drivable: np.ndarray) -> np.ndarray:
    """DAC (R,): 0 if any step (R, T) has a corner off the drivable area, else 1."""
    return np.where(non_drivable.any(axis=1), 0.0, 1.0)


def score_ddc(oncoming: np.ndarray, in_intersection: np.ndarray, centre: np.ndarray, cfg: ScorerConfig
              ) -> tuple[np.ndarray, np.ndarray]:
    """DDC (NAVSIM ``_calculate_driving_direction_compliance``): centre displacement per step while oncoming and
    outside intersections, summed over a rolling window of ``cfg.ddc_window_steps`` increments.

    Args:
        oncoming, in_intersection: (R, T) bool step flags.
        centre: (R, T, 2) ego box centres (m).

    Returns:
        ddc (R,) in {0, 0.5, 1} and the worst window sum (R,) (m).
    """
    rows, T = centre.shape[:2]
    step_len = np.zeros((rows, T))
    step_len[:, 1:] = np.hypot(*(centre[:, 1:] - centre[:, :-1]).transpose(2, 0, 1))
    step_len *= oncoming & ~in_intersection
    step_len[:, 0] = 0.0
    W = cfg.ddc_window_steps
    cs = np.cumsum(step_len, axis=1)  # window sums as differences of cumulative sums
    window = cs.copy()
    window[:, W:] -= cs[:, :-W]
    worst = window[:, 1:].max(axis=1) if T > 1 else np.zeros(rows)
    ddc = np.where(worst < cfg.ddc_compliance_m, 1.0, np.where(worst < cfg.ddc_violation_m, 0.5, 0.0))
    return ddc, worst
