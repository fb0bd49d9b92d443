"""Traffic light compliance (TLC, NAVSIM ``PDMScorer._calculate_traffic_light_compliance``).

A step is a red-light infraction when the ego polygon intersects (touching counts) an on-route connector whose
light is red at that step (``ScoringContext.red_connectors``, one (T, L) table per row: closed-loop rows of one
scene may sit at different times). Two exact tests cover "intersects":

* a corner of the box lies inside the connector (reusing the containment hits of :func:`area.area_flags`);
* otherwise an edge of the connector polygon overlaps the box (separating axes), tested only for boxes whose
  bounding box meets the connector's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from irlvla_gym.geometry import short_axis_max, short_axis_min
from irlvla_gym.metrics.area import AreaFlags
from irlvla_gym.metrics.boxes import segment_box_overlap
from irlvla_gym.metrics.maps import MapPack


def red_light_steps(pack: MapPack, slot: np.ndarray, corners: np.ndarray, area: AreaFlags,
                    tables: Sequence[np.ndarray], table_of_row: np.ndarray) -> np.ndarray:
    """Red-light infractions per step.

    Args:
        pack, slot: the rows' map pack and each row's scene in it (R,).
        corners: (R, T, 4, 2) ego box corners (m).
        area: the containment hits of the same boxes.
        tables: U distinct (T, L) bool red on-route connector tables; table_of_row: (R,) each row's table.

    Returns:
        (R * T,) bool.
    """
    R, T = corners.shape[:2]
    RT = R * T
    red_at = _red_lookup(tables, table_of_row, T)
    # Corners inside a red connector.
    red = np.zeros(RT, bool)
    lane_kt = area.kt[area.lane_pair]
    red[lane_kt[red_at(lane_kt, pack.poly_local[area.poly[area.lane_pair]])]] = True
    # Connector edges overlapping the box, scene by scene, red lane by red lane.
    flat = corners.reshape(RT, 4, 2)
    bmin = bmax = None
    for s in ([0] if len(pack.red) == 1 else np.unique(slot)):
        rows = np.arange(R) if len(pack.red) == 1 else np.flatnonzero(slot == s)
        used = [0] if len(tables) == 1 else np.unique(table_of_row[rows])
        lanes = np.flatnonzero(np.any([tables[u].any(axis=0) for u in used], axis=0))
        if not len(lanes):
            continue
        if bmin is None:
            bmin, bmax = short_axis_min(flat, 1), short_axis_max(flat, 1)
        kts = (rows[:, None] * T + np.arange(T)[None, :]).ravel()
        for lane in lanes:
            ea, eb, pmin, pmax = pack.red[s].edges(int(lane))
            cand = kts[red_at(kts, lane) & ~red[kts] & np.all(bmax[kts] >= pmin, axis=1)
                       & np.all(bmin[kts] <= pmax, axis=1)]
            if not len(cand):
                continue
            ci = np.repeat(cand, len(ea))
            ei = np.tile(np.arange(len(ea)), len(cand))
            hit = segment_box_overlap(ea[ei], eb[ei], flat[ci])
            red[np.unique(ci[hit])] = True
    return red


def _red_lookup(tables: Sequence[np.ndarray], table_of_row: np.ndarray, T: int):
    """(box indices kt = row * T + step (n,), lanes (n,) or int) -> (n,) bool: red in the row's table."""
    if len(tables) == 1:
        table = np.asarray(tables[0], bool)
        return lambda kt, lane: table[kt % T, lane]
    sizes = np.array([t.size for t in tables], np.int64)
    flat = np.concatenate([np.asarray(t, bool).ravel() for t in tables])
    row_base = (np.cumsum(sizes) - sizes)[table_of_row]  # (R,) offset of each row's table
    row_lanes = np.array([t.shape[1] for t in tables], np.int64)[table_of_row]  # (R,) its L

    def red_at(kt: np.ndarray, lane: np.ndarray | int) -> np.ndarray:
        r = kt // T
        return flat[row_base[r] + (kt % T) * row_lanes[r] + lane]

    return red_at


def score_tlc(red_light: np.ndarray) -> np.ndarray:
    """TLC (R,): 0 if any step (R, T) entered a red on-route connector, else 1."""
    return np.where(red_light.any(axis=1), 0.0, 1.0)
