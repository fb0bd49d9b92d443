"""Multi-scene scorer: R rows, each (scoring context, simulated states, agents), scored in one vectorised pass.

:func:`irlvla_gym.metrics.fast.score_states_fast` is batched over K plans of *one* scene. A vector env steps N
envs in N different scenes, so calling it N times pays its fixed cost (~250 numpy calls, ~1 ms) N times. Here:

* **map queries** (drivable area, lanes, intersections, lane-keeping distances, red connectors, route progress) run
  once per *distinct* scene among the rows (all rows of a scene in one query), because each scene has its own
  polygon index;
* **agents** (NC, TTC) are *packed*: every row's agents are concatenated along one agent axis A = sum of N_r with a
  row id per agent, so each ego-agent pair test is one array operation over all rows (no padding to the largest
  N). The per-agent arrays a scene's log replay needs (centres, radii, stopped flags, TTC reach) are computed once
  and kept in ``AgentTracks.cache``;
* **DDC, LK, progress, HC, EC** are row-wise already and run over (R, 41) arrays.

Every number equals what ``score_states_fast`` gives for the row's scene and plan alone, bit for bit (same
element-wise operations, batch-invariant reductions; ``tests/metrics/test_multi.py`` checks every field). EP
normalisation, the human filter and the aggregates are applied per row by :func:`finalize_rows` (each row has
its own reference progress and human evaluation).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.comfort import extended_comfort, history_comfort
from irlvla_gym.metrics.config import MULTIPLICATIVE, SUB_SCORES, ScorerConfig
from irlvla_gym.metrics.context import AgentTracks, ScoringContext
from irlvla_gym.metrics.fast import (
    _fast_map, _first_fault_free, area_flags, boxes_overlap, distance_to_segments, first_seen_stopped,
    points_in_intersection, project_on_polyline, record_ttc_infractions, score_ddc_and_lk, segment_box_overlap,
    segment_distance,
)
from irlvla_gym.metrics.polyindex import _expand, _on_segment, _segments_cross
from irlvla_gym.metrics.result import (
    ACTIVE_FRONT, ACTIVE_LATERAL, ACTIVE_REAR, STOPPED_EGO, STOPPED_TRACK, ScoreResult, empty_result, epdms,
)


def _ego_offsets(ctx: ScoringContext) -> tuple[np.ndarray, np.ndarray, float]:
    """Body-frame longitudinal / lateral offsets (5,) of the box points and the bounding radius (as
    :func:`irlvla_gym.metrics.boxes.ego_box_points` and ``score_states_fast``)."""
    v = ctx.vehicle
    half_w = 0.5 * v.width
    lon = np.array([v.front_length, -v.rear_length, -v.rear_length, v.front_length, v.rear_axle_to_center])
    lat = np.array([half_w, half_w, -half_w, -half_w, 0.0])
    return lon, lat, 0.5 * np.hypot(v.length, v.width)


def _map_flags(ctx: ScoringContext, red: np.ndarray, pts: np.ndarray, res: ScoreResult, rows: np.ndarray) -> None:
    """Map-based per-step flags of the rows ``rows`` of one scene (``score_states_fast``'s first half).

    Args:
        ctx: the scene's context (polygons, lanes, route, fast-map cache).
        red: (Ru, T, L) red on-route connectors per row (rows may be at different times in a closed loop).
        pts: (Ru, T, 5, 2) ego box points of the rows.
        res: the R-row result; its rows ``rows`` (Ru,) get non_drivable, multiple_lanes, oncoming,
            in_intersection, lk_deviation, red_light and progress.
    """
    fmap = _fast_map(ctx)
    K, T = pts.shape[:2]
    KT = K * T
    area = area_flags(ctx, pts)
    kt, lane_pair, poly = area.kt, area.lane_pair, area.poly
    non_drivable, multiple_lanes, oncoming, in_inter = (area.non_drivable, area.multiple_lanes, area.oncoming,
                                                        area.in_intersection)
    res.non_drivable[rows] = non_drivable.reshape(K, T)
    res.multiple_lanes[rows] = multiple_lanes.reshape(K, T)
    res.oncoming[rows] = oncoming.reshape(K, T)
    res.in_intersection[rows] = in_inter.reshape(K, T)
    t_of_kt = np.tile(np.arange(T), K)
    row_of_kt = np.repeat(np.arange(K), T)

    res.lk_deviation[rows] = distance_to_segments(pts[..., B.CENTER, :].reshape(KT, 2), fmap.route_a,
                                                  fmap.route_b).reshape(K, T)

    red_step = np.zeros(KT, bool)
    rp = lane_pair.copy()
    lp_kt = kt[lane_pair]
    rp[lane_pair] = red[row_of_kt[lp_kt], t_of_kt[lp_kt], poly[lane_pair]]
    red_step[kt[rp]] = True
    if len(fmap.red_lanes):
        flat_corners = pts[..., :4, :].reshape(KT, 4, 2)
        bmin, bmax = flat_corners.min(axis=1), flat_corners.max(axis=1)
        for lane, (ea, eb, pmin, pmax) in fmap.red_edges.items():
            cand = np.flatnonzero(red[row_of_kt, t_of_kt, lane] & ~red_step & np.all(bmax >= pmin, axis=1)
                                  & np.all(bmin <= pmax, axis=1))
            if not len(cand):
                continue
            ci = np.repeat(cand, len(ea))
            ei = np.tile(np.arange(len(ea)), len(cand))
            hit = segment_box_overlap(ea[ei], eb[ei], flat_corners[ci])
            red_step[np.unique(ci[hit])] = True
    res.red_light[rows] = red_step.reshape(K, T)

    if len(ctx.route_centerline) >= 2:
        c = pts[..., B.CENTER, :]
        s = project_on_polyline(np.concatenate([c[:, 0], c[:, -1]]), ctx.route_centerline)
        res.progress[rows] = np.maximum(s[K:] - s[:K], 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Packed map index: the polygon indexes of many scenes concatenated, queried in one pass
# ---------------------------------------------------------------------------------------------------------------------

PACK_MAX_CELLS = 48_000_000
"""Budget of the packed index (grid cells over all packed scenes; ~4 bytes each plus ~15 bytes per entry): scenes
beyond it are queried one scene at a time (:func:`_map_flags`)."""


class PackedMaps:
    """The :class:`~irlvla_gym.metrics.polyindex.PolygonIndex` (polygon attributes,
    route polylines) of several scenes concatenated with per-scene offsets, so the containment query, lane-keeping
    distances and route progress of rows from all of them run as one vectorised pass (no loop over scenes).

    Built by :func:`packed_maps` for the scenes a process keeps scoring (the vector env's scene pool) and rebuilt
    when new scenes appear. Every number equals the per-scene query's.
    """

    def __init__(self, contexts: Sequence[ScoringContext]):
        fmaps = [_fast_map(c) for c in contexts]
        self.contexts = list(contexts)  # keeps the maps alive while packed
        self.slot = {id(f): m for m, f in enumerate(fmaps)}
        idx = [f.index for f in fmaps]
        M = len(fmaps)
        self.origin = np.stack([i.origin for i in idx]) if M else np.zeros((0, 2))
        self.res = np.array([i.resolution for i in idx], np.float64)
        self.nx = np.array([int(i.shape[0]) for i in idx], np.int64)
        self.ny = np.array([int(i.shape[1]) for i in idx], np.int64)
        cells = self.nx * self.ny
        self.cell_base = np.cumsum(cells) - cells
        n_entries = np.array([len(i.entry_polygon) for i in idx], np.int64)
        entry_base = np.cumsum(n_entries) - n_entries
        n_edges = np.array([len(i.edge_a) for i in idx], np.int64)
        edge_base = np.cumsum(n_edges) - n_edges
        n_entry_edges = np.array([len(i.entry_edges) for i in idx], np.int64)
        entry_edge_base = np.cumsum(n_entry_edges) - n_entry_edges
        n_poly = np.array([i.num_polygons for i in idx], np.int64)
        self.poly_base = np.cumsum(n_poly) - n_poly

        def cat(parts, dtype=None, empty=(0,)):
            parts = list(parts)
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty, dtype)

        total_entries = int(n_entries.sum())
        self.cell_start = cat([i.cell_start[:-1] + b for i, b in zip(idx, entry_base)] + [[total_entries]],
                              np.int64)
        self.entry_polygon = cat([i.entry_polygon + b for i, b in zip(idx, self.poly_base)], np.int64)
        self.entry_partial = cat([i.entry_partial for i in idx], bool)
        self.entry_centre_inside = cat([i.entry_centre_inside for i in idx], bool)
        self.entry_edge_start = cat([i.entry_edge_start[:-1] + b for i, b in zip(idx, entry_edge_base)]
                                    + [[int(n_entry_edges.sum())]], np.int64)
        self.entry_edges = cat([i.entry_edges + b for i, b in zip(idx, edge_base)], np.int64)
        self.edge_a = cat([i.edge_a for i in idx], np.float64, (0, 2))
        self.edge_b = cat([i.edge_b for i in idx], np.float64, (0, 2))
        self.num_lanes = np.array([c.num_lanes for c in contexts], np.int64)
        self.poly_is_lane = cat([np.arange(p) < c.num_lanes for p, c in zip(n_poly, contexts)], bool)
        self.poly_on_route = cat([c.polygon_is_on_route for c in contexts], np.float64)
        self.poly_intersection = cat([c.polygon_is_intersection for c in contexts], np.float64)
        self.poly_map = np.repeat(np.arange(M), n_poly)
        # Route polylines as segments (project_on_polyline's quantities, per scene).
        seg_a, seg_b, seg_len, cum, counts = [], [], [], [], []
        for c in contexts:
            line = c.route_centerline
            if len(line) < 2:
                counts.append(0)
                continue
            a, b = line[:-1], line[1:]
            d = b - a
            L2 = np.einsum("sd,sd->s", d, d)
            seg_a.append(a)
            seg_b.append(b)
            seg_len.append(L2)
            cum.append(np.r_[0.0, np.cumsum(np.sqrt(L2))][:-1])
            counts.append(len(a))
        self.route_count = np.array(counts, np.int64)
        self.route_start = np.cumsum(self.route_count) - self.route_count
        self.route_a = cat(seg_a, np.float64, (0, 2))
        self.route_b = cat(seg_b, np.float64, (0, 2))
        self.route_L2 = cat(seg_len, np.float64)
        self.route_cum = cat(cum, np.float64)
        self.cells = int(cells.sum())

    def __contains__(self, ctx: ScoringContext) -> bool:
        return id(_fast_map(ctx)) in self.slot

    def contains(self, points: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`PolygonIndex.contains` of points (Q, 2) each in the scene of packed slot ``slot`` (Q,):
        (point index, global polygon), sorted by point."""
        origin, res = self.origin[slot], self.res[slot]
        nx, ny = self.nx[slot], self.ny[slot]
        cxy = np.floor((points - origin) / res[:, None])
        ix, iy = cxy[:, 0], cxy[:, 1]
        in_grid = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        cell = np.where(in_grid, iy * nx + ix, 0).astype(np.int64) + self.cell_base[slot]
        start = self.cell_start[cell]
        count = np.where(in_grid, self.cell_start[cell + 1] - start, 0)
        point_of, entry = _expand(start, count)
        inside = ~self.entry_partial[entry]
        sel = np.flatnonzero(~inside)
        if len(sel):
            pe = entry[sel]
            pp = point_of[sel]
            e_start = self.entry_edge_start[pe]
            e_count = self.entry_edge_start[pe + 1] - e_start
            row, item = _expand(e_start, e_count)
            edge = self.entry_edges[item]
            p = points[pp[row]]
            q = pp[row]
            c = origin[q] + (cxy[q] + 0.5) * res[q][:, None]
            ea, eb = self.edge_a[edge], self.edge_b[edge]
            crosses = _segments_cross(c, p, ea, eb)
            parity = np.bincount(row, weights=crosses, minlength=len(sel)).astype(np.int64) & 1
            on_edge = np.bincount(row, weights=_on_segment(p, ea, eb), minlength=len(sel)) > 0
            inside[sel] = (self.entry_centre_inside[pe] ^ parity.astype(bool)) & ~on_edge
        return point_of[inside], self.entry_polygon[entry[inside]]


PACK_MIN_GROWTH = 8
"""New scenes collected before the pack is rebuilt with them (at least this many, or half the pack)."""
_PACK: list[PackedMaps | None] = [None]
_PENDING: dict[int, ScoringContext] = {}  # scenes scored since the last rebuild but not packed yet


def _cells(ctx: ScoringContext) -> int:
    return int(np.prod(_fast_map(ctx).index.shape))


def packed_maps(contexts: Sequence[ScoringContext]) -> PackedMaps | None:
    """The process's packed index for scoring ``contexts`` (rows whose scene it lacks go scene by scene).

    Growth is amortised: scenes not in the pack are collected, and the pack is rebuilt with them once they number
    at least half the pack (or :data:`PACK_MIN_GROWTH`), so a pool of S scenes costs O(S) packing in total however it is visited. When
    the union would exceed :data:`PACK_MAX_CELLS` the pack restarts from this call's scenes (if they fit)."""
    pack = _PACK[0]
    for c in contexts:
        key = id(_fast_map(c))
        if (pack is None or key not in pack.slot) and key not in _PENDING:
            _PENDING[key] = c
    if not _PENDING:
        return pack
    if pack is not None and len(_PENDING) < max(PACK_MIN_GROWTH, len(pack.contexts) // 2):
        return pack
    pending = list(_PENDING.values())
    _PENDING.clear()
    base = [] if pack is None else pack.contexts
    if (pack.cells if pack is not None else 0) + sum(_cells(c) for c in pending) <= PACK_MAX_CELLS:
        members = base + pending
    else:
        unique: dict[int, ScoringContext] = {}
        for c in contexts:
            unique.setdefault(id(_fast_map(c)), c)
        if sum(_cells(c) for c in unique.values()) > PACK_MAX_CELLS:
            _PACK[0] = None
            return None
        members = list(unique.values())
    _PACK[0] = PackedMaps(members)
    return _PACK[0]


def clear_packed_maps() -> None:
    """Drop the packed index (frees its memory; rebuilt on the next multi-scene call)."""
    _PACK[0] = None
    _PENDING.clear()


def _map_flags_packed(pack: PackedMaps, contexts: Sequence[ScoringContext], pts: np.ndarray, res: ScoreResult,
                      rows: np.ndarray) -> None:
    """:func:`_map_flags` for rows ``rows`` of any scenes in ``pack``, in one pass (same numbers)."""
    K, T = pts.shape[:2]
    KT = K * T
    slot_row = np.array([pack.slot[id(_fast_map(contexts[r]))] for r in rows], np.int64)
    flat = pts.reshape(-1, 2)
    point_idx, poly = pack.contains(flat, np.repeat(slot_row, T * 5))
    kt, which = point_idx // 5, point_idx % 5
    is_corner = which < B.CENTER
    corner_covered = np.zeros(KT * 4, bool)
    corner_covered[(kt * 4 + which)[is_corner]] = True
    non_drivable = ~corner_covered.reshape(KT, 4).all(axis=1)
    row_of_kt = kt // T
    lane_local = poly - pack.poly_base[slot_row[row_of_kt]]
    lane_pair = is_corner & pack.poly_is_lane[poly]
    Lmax = max(int(pack.num_lanes[slot_row].max()) if K else 1, 1)
    key = kt[lane_pair] * Lmax + lane_local[lane_pair]
    if KT * Lmax <= 4_000_000:
        counts = np.bincount(key, minlength=KT * Lmax)
        ukey = np.flatnonzero(counts)
        corners_per_lane = counts[ukey]
    else:
        ukey, corners_per_lane = np.unique(key, return_counts=True)
    ukt = ukey // Lmax
    lanes_touched = np.bincount(ukt, minlength=KT)
    one_lane_all = np.bincount(ukt[corners_per_lane == 4], minlength=KT) > 0
    multiple_lanes = (lanes_touched > 1) & ~one_lane_all
    is_centre = ~is_corner
    ckt, cpoly = kt[is_centre], poly[is_centre]
    oncoming = np.bincount(ckt, weights=pack.poly_on_route[cpoly], minlength=KT) == 0
    in_inter = np.bincount(ckt, weights=pack.poly_intersection[cpoly], minlength=KT) > 0
    res.non_drivable[rows] = non_drivable.reshape(K, T)
    res.multiple_lanes[rows] = multiple_lanes.reshape(K, T)
    res.oncoming[rows] = oncoming.reshape(K, T)
    res.in_intersection[rows] = in_inter.reshape(K, T)

    # Lane keeping: distance of each centre to its row's route centreline (segment by segment, as
    # fast.distance_to_segments, so the minimum is the same number).
    centre = pts[..., B.CENTER, :].reshape(KT, 2)
    deviation = np.full(KT, np.inf)
    kt_rows = np.repeat(np.arange(K), T)
    point_of, item = _expand(pack.route_start[slot_row[kt_rows]], pack.route_count[slot_row[kt_rows]])
    if len(item):
        a = pack.route_a[item]
        dist = segment_distance(centre[point_of, 0], centre[point_of, 1], a, pack.route_b[item] - a,
                                pack.route_L2[item])
        np.minimum.at(deviation, point_of, dist)
    res.lk_deviation[rows] = deviation.reshape(K, T)

    # Red connectors: each row's (41, L) table flattened and concatenated.
    red_tables = [contexts[r].red_connectors for r in rows]
    sizes = np.array([t.size for t in red_tables], np.int64)
    red_flat = np.concatenate([t.ravel() for t in red_tables])
    red_base = np.cumsum(sizes) - sizes
    t_of_kt = np.tile(np.arange(T), K)
    lanes_of_row = pack.num_lanes[slot_row]
    red_step = np.zeros(KT, bool)
    rp = lane_pair.copy()
    lp_kt = kt[lane_pair]
    rp[lane_pair] = red_flat[red_base[row_of_kt[lane_pair]] + t_of_kt[lp_kt] * lanes_of_row[row_of_kt[lane_pair]]
                             + lane_local[lane_pair]]
    red_step[kt[rp]] = True
    flat_corners = None
    for u in np.unique(slot_row):
        fmap = _fast_map(pack.contexts[u])
        if not len(fmap.red_lanes):
            continue
        if flat_corners is None:
            flat_corners = pts[..., :4, :].reshape(KT, 4, 2)
            bmin, bmax = flat_corners.min(axis=1), flat_corners.max(axis=1)
        mine = np.flatnonzero(slot_row == u)
        kts = (mine[:, None] * T + np.arange(T)[None, :]).ravel()
        L = int(pack.num_lanes[u])
        for lane, (ea, eb, pmin, pmax) in fmap.red_edges.items():
            red_now = red_flat[red_base[kts // T] + (kts % T) * L + lane]
            cand = kts[red_now & ~red_step[kts] & np.all(bmax[kts] >= pmin, axis=1)
                       & np.all(bmin[kts] <= pmax, axis=1)]
            if not len(cand):
                continue
            ci = np.repeat(cand, len(ea))
            ei = np.tile(np.arange(len(ea)), len(cand))
            hit = segment_box_overlap(ea[ei], eb[ei], flat_corners[ci])
            red_step[np.unique(ci[hit])] = True
    res.red_light[rows] = red_step.reshape(K, T)

    # Route progress (project_on_polyline per point, segments of the row's route).
    has_route = pack.route_count[slot_row] > 0
    if has_route.any():
        rr = np.flatnonzero(has_route)
        c = pts[rr][..., B.CENTER, :]
        points = np.concatenate([c[:, 0], c[:, -1]])  # (2 m, 2): starts then ends
        pslot = np.tile(slot_row[rr], 2)
        point_of, item = _expand(pack.route_start[pslot], pack.route_count[pslot])
        a, b = pack.route_a[item], pack.route_b[item]
        d = b - a
        L2 = pack.route_L2[item]
        rel = points[point_of] - a
        t = np.clip(np.einsum("sd,sd->s", rel, d) / np.where(L2 > 0, L2, 1.0), 0.0, 1.0)
        proj = a + t[:, None] * d
        dist = np.hypot(points[point_of, 0] - proj[:, 0], points[point_of, 1] - proj[:, 1])
        first = np.cumsum(pack.route_count[pslot]) - pack.route_count[pslot]
        best = np.minimum.reduceat(dist, first)
        # argmin: first segment reaching the minimum
        hit = np.flatnonzero(dist == best[point_of])
        _, pick = np.unique(point_of[hit], return_index=True)
        k = hit[pick]
        s = pack.route_cum[item[k]] + t[k] * np.sqrt(L2[k])
        m = len(rr)
        res.progress[rows[rr]] = np.maximum(s[m:] - s[:m], 0.0)


def _agent_arrays(agents: AgentTracks, cfg: ScorerConfig, T: int) -> dict[str, np.ndarray]:
    """Per-agent arrays in (N, T) layout, cached on the tracks (one scene's log replay is scored many times)."""
    key = ("multi", T, cfg.collision_stopped_speed, cfg.ttc_num_steps, tuple(cfg.ttc_projection_steps))
    out = agents.cache.get(key)
    if out is not None:
        return out
    boxes = np.asarray(agents.boxes, np.float64)
    valid = np.asarray(agents.valid, bool)
    if boxes.ndim == 4:  # per-plan tracks of one plan
        boxes, valid = boxes[0], valid[0]
    bt = np.ascontiguousarray(boxes.transpose(1, 0, 2))  # (N, T, 8)
    static = agents.is_static
    radius = 0.5 * np.hypot(bt[..., 3], bt[..., 4])
    # "Stopped track" is decided by the agent as first seen (fast.first_seen_stopped), the same at every step.
    stopped = np.repeat(first_seen_stopped(boxes, valid, static, cfg.collision_stopped_speed)[:, None], T, axis=1)
    Tt = min(cfg.ttc_num_steps, T)
    steps = np.asarray(cfg.ttc_projection_steps)
    later = np.minimum(np.arange(Tt)[:, None] + steps[None, :], T - 1)  # (Tt, S)
    cx, cy = bt[..., 0], bt[..., 1]
    travel = np.max(np.hypot(cx[:, later] - cx[:, :Tt, None], cy[:, later] - cy[:, :Tt, None]), axis=2)
    reach = np.max(radius[:, later], axis=2) + travel  # (N, Tt)
    vt = valid.T
    # Bounds over the valid steps, for the conservative ego-distance prefilter in score_rows.
    bbox = np.stack([np.where(vt, cx, np.inf).min(axis=1), np.where(vt, cy, np.inf).min(axis=1),
                     np.where(vt, cx, -np.inf).max(axis=1), np.where(vt, cy, -np.inf).max(axis=1)], axis=1)
    out = {"boxes": bt, "cx": np.ascontiguousarray(cx), "cy": np.ascontiguousarray(cy), "radius": radius,
           "valid": np.ascontiguousarray(vt), "stopped": stopped, "reach": reach, "static": static,
           "category": np.asarray(agents.category, np.int64), "bbox": bbox,
           "radius_max": np.where(vt, radius, 0.0).max(axis=1, initial=0.0)}
    agents.cache[key] = out
    return out


def score_rows(contexts: Sequence[ScoringContext], states: np.ndarray, agents: Sequence[AgentTracks],
               previous_states: Sequence[np.ndarray | None] | None = None, *,
               use_pack: bool = True) -> tuple[ScoreResult, np.ndarray]:
    """Raw evaluation (before EP normalisation / human filter) of R rows of possibly different scenes.

    Args:
        contexts: R scoring contexts (the same object may repeat; contexts made by ``dataclasses.replace`` from one
            scene share its map cache). All must share one :class:`ScorerConfig`.
        states: (R, 41, 11) simulated ego states, row r in the frame of ``contexts[r]``.
        agents: R agent tracks, boxes (41, N_r, 8) (or (1, 41, N_r, 8)): row r's agents (its scene's log replay,
            or the agents reacting to row r's plan).
        previous_states: None, or R entries (41, 11) / None: the previous plan's states for EC (closed loop).
        use_pack: query the map through the process's :class:`PackedMaps` (one pass for all scenes); False: one
            query per distinct scene (same numbers).

    Returns:
        (result, has_ec): a :class:`ScoreResult` with R rows, equal row by row to
        ``score_states_fast(contexts[r], states[r:r+1], agents[r], previous_states[r])``; and (R,) bool, rows
        scored with EC. Aggregate with :func:`finalize_rows`.
    """
    states = np.asarray(states, np.float64)
    R, T, _ = states.shape
    if len(contexts) != R or len(agents) != R:
        raise ValueError(f"need one context and one agent track per row: {len(contexts)}, {len(agents)} for {R}")
    cfg = contexts[0].config if R else None
    if any(c.config is not cfg and c.config != cfg for c in contexts):
        raise ValueError("all rows must share one ScorerConfig")
    res = empty_result(R, T)
    has_ec = np.zeros(R, bool)
    if R == 0:
        return res, has_ec
    res.dt = cfg.dt

    # ---- ego box points with per-row vehicle dimensions --------------------------------------------------------
    vehicles: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    lon, lat, e_radius = np.empty((R, 5)), np.empty((R, 5)), np.empty(R)
    for r, ctx in enumerate(contexts):
        key = id(ctx.vehicle)
        if key not in vehicles:
            vehicles[key] = _ego_offsets(ctx)
        lon[r], lat[r], e_radius[r] = vehicles[key]
    x, y, yaw = states[..., B.X], states[..., B.Y], states[..., B.YAW]
    c, s = np.cos(yaw), np.sin(yaw)
    px = x[..., None] + c[..., None] * lon[:, None, :] - s[..., None] * lat[:, None, :]
    py = y[..., None] + s[..., None] * lon[:, None, :] + c[..., None] * lat[:, None, :]
    pts = np.stack([px, py], axis=-1)  # (R, T, 5, 2)

    # ---- map queries: one packed pass over all scenes (or one pass per scene beyond the pack's budget) ---------
    pack = packed_maps(contexts) if use_pack else None
    groups: dict[int, list[int]] = {}
    packed_rows: list[int] = []
    for r, ctx in enumerate(contexts):
        if pack is not None and ctx in pack:
            packed_rows.append(r)
        else:
            groups.setdefault(id(_fast_map(ctx)), []).append(r)
    if packed_rows:
        rows = np.asarray(packed_rows)
        _map_flags_packed(pack, contexts, pts[rows], res, rows)
    for rows_list in groups.values():
        rows = np.asarray(rows_list)
        ctx0 = contexts[rows_list[0]]
        red = np.stack([contexts[r].red_connectors for r in rows_list])
        _map_flags(ctx0, red, pts[rows], res, rows)
    res.tlc[:] = np.where(res.red_light.any(axis=1), 0.0, 1.0)
    res.dac[:] = np.where(res.non_drivable.any(axis=1), 0.0, 1.0)

    # ---- agents, packed over rows ----------------------------------------------------------------------------------
    packs = [_agent_arrays(a, cfg, T) for a in agents]
    counts = np.array([len(p["static"]) for p in packs], np.int64)
    A = int(counts.sum())
    speed = np.hypot(states[..., B.VX], states[..., B.VY])  # (R, T)
    corners = pts[..., :4, :]
    Tt = min(cfg.ttc_num_steps, T)
    steps = np.asarray(cfg.ttc_projection_steps)
    max_step = int(steps.max())
    e_cx, e_cy = pts[..., B.CENTER, 0], pts[..., B.CENTER, 1]  # (R, T)
    keep = None
    if A:
        row_of = np.repeat(np.arange(R), counts)
        local = np.arange(A) - np.repeat(np.cumsum(counts) - counts, counts)
        # Conservative prefilter: an agent whose valid centres all stay farther from the row's ego centres than
        # ego radius + agent radius + the largest TTC projection (speed x 0.9 s) can neither collide (NC tests
        # valid steps only) nor be hit by a projected ego (TTC's exact tests use the agent's valid steps), so it
        # is dropped before the (agents x steps) arrays are formed. 1 m margin against rounding.
        a_bbox = np.concatenate([p["bbox"] for p in packs])
        bound = (e_radius + speed[:, :Tt].max(axis=1) * max_step * cfg.dt)[row_of] + np.concatenate(
            [p["radius_max"] for p in packs]) + 1.0
        gx = np.maximum(0.0, np.maximum(a_bbox[:, 0] - e_cx.max(axis=1)[row_of], e_cx.min(axis=1)[row_of]
                                        - a_bbox[:, 2]))
        gy = np.maximum(0.0, np.maximum(a_bbox[:, 1] - e_cy.max(axis=1)[row_of], e_cy.min(axis=1)[row_of]
                                        - a_bbox[:, 3]))
        keep = np.flatnonzero(gx * gx + gy * gy <= bound * bound)
        row_of, local = row_of[keep], local[keep]
        A = len(keep)
    if A:
        def cat(name: str) -> np.ndarray:
            return np.concatenate([p[name] for p in packs])[keep]

        a_boxes, a_cx, a_cy, a_radius = cat("boxes"), cat("cx"), cat("cy"), cat("radius")
        a_valid, a_stopped, a_reach, a_static, a_category = (cat("valid"), cat("stopped"), cat("reach"),
                                                             cat("static"), cat("category"))
        flag = res.multiple_lanes | res.non_drivable
        ahead = np.deg2rad(cfg.ahead_angle_deg)
        behind = np.deg2rad(cfg.behind_angle_deg)

        # ---- NC ---------------------------------------------------------------------------------------------------
        dx = e_cx[row_of] - a_cx
        dy = e_cy[row_of] - a_cy
        gap2 = dx * dx + dy * dy  # (A, T)
        near = (gap2 <= (e_radius[row_of][:, None] + a_radius) ** 2) & a_valid
        a_i, t_i = np.nonzero(near)
        k_i = row_of[a_i]
        a_corners = B.box_corners(a_boxes[a_i, t_i])
        hit = boxes_overlap(corners[k_i, t_i], a_corners)
        a_i, t_i, k_i, a_corners = a_i[hit], t_i[hit], k_i[hit], a_corners[hit]
        if len(a_i):
            kind = np.full(len(a_i), ACTIVE_LATERAL)
            bearing = np.abs(B.relative_bearing(states[k_i, t_i, :2], yaw[k_i, t_i], a_boxes[a_i, t_i, :2]))
            front = segment_box_overlap(corners[k_i, t_i, B.FRONT_LEFT], corners[k_i, t_i, B.FRONT_RIGHT],
                                        a_corners)
            kind[front] = ACTIVE_FRONT
            kind[bearing > behind] = ACTIVE_REAR
            kind[a_stopped[a_i, t_i]] = STOPPED_TRACK
            kind[speed[k_i, t_i] <= cfg.collision_stopped_speed] = STOPPED_EGO
            fault = (kind == ACTIVE_FRONT) | (kind == STOPPED_TRACK) | ((kind == ACTIVE_LATERAL) & flag[k_i, t_i])
            counted = _first_fault_free(t_i, a_i, fault, A) & fault
            if counted.any():
                ck, ct, ca, ckind = k_i[counted], t_i[counted], a_i[counted], kind[counted]
                score = np.where(a_static[ca], cfg.static_collision_score, 0.0)
                np.minimum.at(res.nc, ck, score)
                res.at_fault_collision[ck, ct] = True
                decisive = score == res.nc[ck]
                ck, ct, ca, ckind = ck[decisive], ct[decisive], ca[decisive], ckind[decisive]
                cn = local[ca]
                order = np.lexsort((cn, ct, ck))
                ck, ct, cn, ca, ckind = ck[order], ct[order], cn[order], ca[order], ckind[order]
                first = np.r_[True, ck[1:] != ck[:-1]]
                res.collision_step[ck[first]] = ct[first]
                res.collision_agent[ck[first]] = cn[first]
                res.collision_type[ck[first]] = ckind[first]
                res.collision_category[ck[first]] = a_category[ca[first]]

        # ---- TTC --------------------------------------------------------------------------------------------------
        active = speed[:, :Tt] >= cfg.ttc_stopped_speed
        reach = (e_radius[:, None] + speed[:, :Tt] * max_step * cfg.dt)[row_of] + a_reach
        coarse = gap2[:, :Tt] <= reach * reach
        coarse &= active[row_of]
        a_i, t_i = np.nonzero(coarse)
        S = len(steps)
        a_i, t_i = np.repeat(a_i, S), np.repeat(t_i, S)
        s_i = np.tile(np.arange(S), len(a_i) // S if S else 0)
        ta = t_i + steps[s_i]
        ok = ta < T
        a_i, t_i, s_i, ta = a_i[ok], t_i[ok], s_i[ok], ta[ok]
        ok = a_valid[a_i, ta]
        a_i, t_i, s_i, ta = a_i[ok], t_i[ok], s_i[ok], ta[ok]
        k_i = row_of[a_i]
        shift = (speed[k_i, t_i] * steps[s_i] * cfg.dt)[:, None] * np.stack(
            [np.cos(yaw[k_i, t_i]), np.sin(yaw[k_i, t_i])], axis=1)
        d0 = e_cx[k_i, t_i] + shift[:, 0] - a_cx[a_i, ta]
        d1 = e_cy[k_i, t_i] + shift[:, 1] - a_cy[a_i, ta]
        ok = np.hypot(d0, d1) <= e_radius[k_i] + a_radius[a_i, ta]
        a_i, t_i, s_i, ta, k_i, shift = a_i[ok], t_i[ok], s_i[ok], ta[ok], k_i[ok], shift[ok]
        ego_proj = corners[k_i, t_i] + shift[:, None, :]
        hit = boxes_overlap(ego_proj, B.box_corners(a_boxes[a_i, ta]))
        a_i, t_i, s_i, ta, k_i = a_i[hit], t_i[hit], s_i[hit], ta[hit], k_i[hit]
        if len(a_i):
            bearing = np.abs(B.relative_bearing(states[k_i, t_i, :2], yaw[k_i, t_i], a_boxes[a_i, ta, :2]))
            area = flag[k_i, t_i].copy()
            ask = np.flatnonzero(~area & ~(bearing < ahead) & ~(bearing > behind))
            for r in np.unique(k_i[ask]):  # rear axle in an intersection (few candidates; per scene)
                sel = ask[k_i[ask] == r]
                area[sel] = points_in_intersection(contexts[r], states[r, t_i[sel], :2])
            infraction = (bearing < ahead) | (area & ~(bearing > behind))
            counted = _first_fault_free(t_i * S + s_i, a_i, infraction, A) & infraction
            if counted.any():
                record_ttc_infractions(res, k_i[counted], t_i[counted], local[a_i[counted]])

    # ---- DDC and LK (shared with the single-scene path) -------------------------------------------------------
    score_ddc_and_lk(res, pts[..., B.CENTER, :], cfg)

    # ---- comfort ------------------------------------------------------------------------------------------------
    history = np.stack([ctx.history_states for ctx in contexts])
    d = np.array([ctx.vehicle.rear_axle_to_center for ctx in contexts])
    res.hc[:], res.comfort_ok[:], res.comfort_min[:], res.comfort_max[:] = history_comfort(states, history, cfg, d)
    if previous_states is not None:
        has_ec[:] = [p is not None for p in previous_states]
        if has_ec.any():
            rows = np.flatnonzero(has_ec)
            prev = np.stack([np.asarray(previous_states[r], np.float64).reshape(T, -1) for r in rows])
            res.ec[rows], res.ec_rms[rows] = extended_comfort(states[rows], prev, cfg)
    res.has_ec = bool(has_ec.all())
    return res, has_ec


def human_zero_mask(humans: Sequence[ScoreResult | None], config: ScorerConfig) -> np.ndarray:
    """(R, len(config.human_filtered)) bool: the row's human (expert) evaluation scored exactly 0 on that
    sub-score, so the filter sets it to 1 (all False for rows without a human)."""
    out = np.zeros((len(humans), len(config.human_filtered)), bool)
    for r, human in enumerate(humans):
        if human is not None:
            out[r] = [float(getattr(human, n)[0]) == 0.0 for n in config.human_filtered]
    return out


def finalize_rows(result: ScoreResult, config: ScorerConfig, reference_progress: np.ndarray,
                  human_zero: np.ndarray | None, has_ec: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row :func:`irlvla_gym.metrics.finalize`: EP against each row's reference, each row's human filter,
    EPDMS with or without EC per row, PDMS. Same arithmetic, row by row.

    Args:
        result: :func:`score_rows` output (R rows; ``ep`` is overwritten).
        reference_progress: (R,) EP reference (m) per row.
        human_zero: :func:`human_zero_mask` (R, F) or None (no filter).
        has_ec: (R,) rows with EC.

    Returns:
        name -> (R,) float64 arrays: the nine sub-scores (filtered), ``epdms``, ``pdms``, ``progress``.
    """
    product = result.nc * result.dac * result.ddc * result.tlc
    weighted_progress = result.progress * product
    normaliser = np.maximum(np.asarray(reference_progress, np.float64), weighted_progress)
    numerator = weighted_progress if config.ep_numerator_times_product else result.progress
    with np.errstate(divide="ignore", invalid="ignore"):
        ep = np.where(normaliser > config.progress_distance_threshold,
                      np.clip(numerator / np.maximum(normaliser, 1e-12), 0.0, 1.0), 1.0)
    result.ep = ep
    result.multiplicative = product
    result.ep_normaliser = normaliser
    unfiltered = {name: getattr(result, name).copy() for name in SUB_SCORES}
    sub = dict(unfiltered)
    if human_zero is not None:
        for j, name in enumerate(config.human_filtered):
            if human_zero[:, j].any():
                sub[name] = np.where(human_zero[:, j], 1.0, sub[name])
    total = np.empty(len(product))
    for flag in (False, True):
        rows = np.flatnonzero(has_ec == flag)
        if len(rows):
            total[rows] = epdms({n: v[rows] for n, v in sub.items()}, config, has_ec=flag)
    u = unfiltered
    out = {name: sub[name] for name in SUB_SCORES}
    out["epdms"] = total
    out["pdms"] = u["nc"] * u["dac"] * (5.0 * u["ep"] + 5.0 * u["ttc"] + 2.0 * u["hc"]) / 12.0
    out["progress"] = result.progress
    return out


assert MULTIPLICATIVE == ("nc", "dac", "ddc", "tlc")
