"""Vectorised EPDMS scorer: numpy over K plans x 41 steps x N agents, no Python loop over plans, steps or agents.

Same rules as :mod:`irlvla_gym.metrics.reference` (the spec made executable); the two must agree on every
sub-score. The geometry differs only in technique:

* ego-area flags and red-light entry by corner: one batched point-in-polygon query of all
  K x 41 x 5 box points (:class:`PolygonIndex`: raster + exact crossing-parity fallback near edges);
* ego-agent overlap: bounding-circle prefilter, then the separating-axis theorem on the surviving pairs;
* NC's / TTC's "an agent handled without fault is ignored afterwards" (pdm_scorer.py keeps a per-proposal list of
  collided track ids): per (plan, agent), events before the first no-fault event count; found with a sort, not a
  loop;
* DDC's rolling window: cumulative sums; LK's run length with skipped steps: cumulative sums with resets.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.comfort import extended_comfort, history_comfort
from irlvla_gym.metrics.context import AgentTracks, ScoringContext
from irlvla_gym.metrics.polyindex import PolygonIndex
from irlvla_gym.metrics.result import (
    ACTIVE_FRONT, ACTIVE_LATERAL, ACTIVE_REAR, STOPPED_EGO, STOPPED_TRACK, ScoreResult, empty_result,
)


class _FastMap:
    """Numpy precompute of one scene (cached in ``ScoringContext.cache``)."""

    def __init__(self, ctx: ScoringContext):
        self.index = PolygonIndex(ctx.polygons)
        # Route centreline as segments, for the lane-keeping deviation of every step.
        line = ctx.route_centerline
        self.route_a = np.ascontiguousarray(line[:-1]) if len(line) >= 2 else np.zeros((0, 2))
        self.route_b = np.ascontiguousarray(line[1:]) if len(line) >= 2 else np.zeros((0, 2))
        # Red connector polygons: their edges, for box-edge overlap tests.
        self.red_lanes = np.flatnonzero(ctx.red_connectors.any(axis=0))
        self.red_edges = {}
        for lane in self.red_lanes:
            rings = ctx.polygons[int(lane)]
            a = np.concatenate([np.asarray(r, np.float64) for r in rings])
            b = np.concatenate([np.roll(np.asarray(r, np.float64), -1, axis=0) for r in rings])
            self.red_edges[int(lane)] = (a, b, a.min(axis=0), a.max(axis=0))


def _fast_map(ctx: ScoringContext) -> _FastMap:
    if "fast" not in ctx.cache:
        ctx.cache["fast"] = _FastMap(ctx)
    return ctx.cache["fast"]


# ----------------------------------------------------------------------------------------------------------------
# Geometry kernels (row-wise over M pairs)
# ----------------------------------------------------------------------------------------------------------------


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test of rectangles. a, b: (M, 4, 2) corners in ring order. (M,) bool, touching counts."""
    axes = np.stack([a[:, 1] - a[:, 0], a[:, 2] - a[:, 1], b[:, 1] - b[:, 0], b[:, 2] - b[:, 1]], axis=1)  # (M,4,2)
    ux, uy = axes[:, :, 0:1], axes[:, :, 1:2]  # (M, 4, 1)
    pa = ux * a[:, None, :, 0] + uy * a[:, None, :, 1]  # (M, 4 axes, 4 corners)
    pb = ux * b[:, None, :, 0] + uy * b[:, None, :, 1]
    separated = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
    return ~separated.any(axis=1)


def segment_box_overlap(p: np.ndarray, q: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Separating-axis test of segments p-q (M, 2) against rectangles (M, 4, 2). (M,) bool, touching counts."""
    d = q - p
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    axes = np.stack([box[:, 1] - box[:, 0], box[:, 2] - box[:, 1], normal], axis=1)  # (M, 3, 2)
    pb = np.einsum("mkd,mcd->mkc", axes, box)
    pp = np.einsum("mkd,md->mk", axes, p)
    pq = np.einsum("mkd,md->mk", axes, q)
    smin, smax = np.minimum(pp, pq), np.maximum(pp, pq)
    separated = (smax < pb.min(-1)) | (pb.max(-1) < smin)
    return ~separated.any(axis=1)


def segment_distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, d: np.ndarray, L2: np.ndarray) -> np.ndarray:
    """Distance (m) of points (px, py) to segments starting at ``a`` with direction ``d`` and squared length ``L2``
    (broadcasting; the one formula both the single- and the multi-scene scorer use, so they agree bit for bit)."""
    rx, ry = px - a[..., 0], py - a[..., 1]
    t = np.clip((rx * d[..., 0] + ry * d[..., 1]) / np.where(L2 > 0, L2, 1.0), 0.0, 1.0)
    return np.hypot(rx - t * d[..., 0], ry - t * d[..., 1])


def distance_to_segments(points: np.ndarray, seg_a: np.ndarray, seg_b: np.ndarray) -> np.ndarray:
    """Distance (m) of each point to the nearest of S segments (a polyline's ``distance``). (M, 2) -> (M,); inf when
    S = 0. One vectorised pass per segment (route centrelines have few segments, the points are K x 41 steps),
    nearest segments first; a segment whose bounding box lies farther from every point than the largest distance
    found so far cannot lower any point's minimum and ends the loop (exact: the result is the plain minimum)."""
    out = np.full(len(points), np.inf)
    if not len(seg_a) or not len(points):
        return out
    px, py = points[:, 0], points[:, 1]
    d = seg_b - seg_a
    L2 = np.einsum("sd,sd->s", d, d)
    lo, hi = points.min(axis=0), points.max(axis=0)
    smin, smax = np.minimum(seg_a, seg_b), np.maximum(seg_a, seg_b)
    gap = np.maximum(0.0, np.maximum(smin - hi, lo - smax))  # (S, 2) box-to-box separation
    bound = np.hypot(gap[:, 0], gap[:, 1])  # <= distance of the segment to any point
    for i in np.argsort(bound, kind="stable"):
        if bound[i] > out.max():
            break
        np.minimum(out, segment_distance(px, py, seg_a[i], d[i], L2[i]), out=out)
    return out


def points_in_intersection(ctx: ScoringContext, points: np.ndarray) -> np.ndarray:
    """(M,) bool: the points (M, 2) lie strictly inside an intersection polygon of the scene."""
    point_idx, poly = _fast_map(ctx).index.contains(points)
    return np.bincount(point_idx, weights=ctx.polygon_is_intersection[poly], minlength=len(points)) > 0


def first_seen_stopped(boxes: np.ndarray, valid: np.ndarray, is_static: np.ndarray, threshold: float) -> np.ndarray:
    """NC's "stopped track" per agent: static objects always; others when the speed at the agent's first valid step
    is <= ``threshold`` (NAVSIM classifies with ``PDMObservation.unique_objects``, the track as first seen).

    Args:
        boxes: (..., T, N, 8); valid: (..., T, N); is_static: (N,).

    Returns:
        (..., N) bool.
    """
    first = np.argmax(valid, axis=-2)  # (..., N)
    v = np.take_along_axis(boxes[..., 6:8], first[..., None, :, None], axis=-3)[..., 0, :, :]  # (..., N, 2)
    return is_static | (np.hypot(v[..., 0], v[..., 1]) <= threshold)


def project_on_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Arc length (m) of the nearest point of a polyline (shapely ``LineString.project``). (M, 2) -> (M,)."""
    a, b = line[:-1], line[1:]
    d = b - a
    L2 = np.einsum("sd,sd->s", d, d)
    rel = points[:, None, :] - a[None]
    t = np.clip(np.einsum("msd,sd->ms", rel, d) / np.where(L2 > 0, L2, 1.0), 0.0, 1.0)
    proj = a[None] + t[..., None] * d[None]
    dist = np.hypot(points[:, None, 0] - proj[..., 0], points[:, None, 1] - proj[..., 1])
    k = np.argmin(dist, axis=1)
    cum = np.r_[0.0, np.cumsum(np.sqrt(L2))]
    rows = np.arange(len(points))
    return cum[k] + t[rows, k] * np.sqrt(L2[k])


def _first_fault_free(order: np.ndarray, group: np.ndarray, fault: np.ndarray, num_groups: int) -> np.ndarray:
    """For events with a sort ``order`` inside ``group``, whether each event precedes the group's first
    fault-free event (those are the events NAVSIM still looks at; an agent handled without fault is skipped
    afterwards). Returns (E,) bool."""
    first_free = np.full(num_groups, np.iinfo(np.int64).max)
    free = ~fault
    np.minimum.at(first_free, group[free], order[free])
    return order < first_free[group]


# ----------------------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------------------


def score_states_fast(ctx: ScoringContext, states: np.ndarray, agents: AgentTracks,
                      previous_states: np.ndarray | None = None) -> ScoreResult:
    """Vectorised twin of :func:`irlvla_gym.metrics.reference.score_states_reference` (same arguments/result)."""
    cfg = ctx.config
    fmap = _fast_map(ctx)
    K, T, _ = states.shape
    res = empty_result(K, T)
    res.dt = cfg.dt
    pts = B.ego_box_points(states, ctx.vehicle)  # (K, T, 5, 2)
    KT = K * T

    # ---- one containment query for all corners and centres ------------------------------------------------------
    area = area_flags(ctx, pts)
    kt, lane_pair, poly = area.kt, area.lane_pair, area.poly
    non_drivable, multiple_lanes, oncoming, in_inter = (area.non_drivable, area.multiple_lanes, area.oncoming,
                                                        area.in_intersection)
    res.non_drivable[:] = non_drivable.reshape(K, T)
    res.multiple_lanes[:] = multiple_lanes.reshape(K, T)
    res.oncoming[:] = oncoming.reshape(K, T)
    res.in_intersection[:] = in_inter.reshape(K, T)
    t_of_kt = np.tile(np.arange(T), K)

    # ---- lane-keeping deviation: distance of the centre to the route centreline ----------------------------------
    res.lk_deviation[:] = distance_to_segments(pts[..., B.CENTER, :].reshape(KT, 2), fmap.route_a,
                                               fmap.route_b).reshape(K, T)

    # ---- red lights: a corner inside a red connector, or a connector edge overlapping the box ------------------
    corners = pts[..., :4, :]  # (K, T, 4, 2)
    red = np.zeros(KT, bool)
    rp = lane_pair.copy()
    rp[lane_pair] = ctx.red_connectors[t_of_kt[kt[lane_pair]], poly[lane_pair]]
    red[kt[rp]] = True
    if len(fmap.red_lanes):
        flat_corners = corners.reshape(KT, 4, 2)
        bmin, bmax = flat_corners.min(axis=1), flat_corners.max(axis=1)
        for lane, (ea, eb, pmin, pmax) in fmap.red_edges.items():
            cand = np.flatnonzero(ctx.red_connectors[t_of_kt, lane] & ~red & np.all(bmax >= pmin, axis=1)
                                  & np.all(bmin <= pmax, axis=1))
            if not len(cand):
                continue
            ci = np.repeat(cand, len(ea))
            ei = np.tile(np.arange(len(ea)), len(cand))
            hit = segment_box_overlap(ea[ei], eb[ei], flat_corners[ci])
            red[np.unique(ci[hit])] = True
    res.red_light[:] = red.reshape(K, T)
    res.tlc[:] = np.where(res.red_light.any(axis=1), 0.0, 1.0)
    res.dac[:] = np.where(res.non_drivable.any(axis=1), 0.0, 1.0)

    # ---- agents: corners, centres, bounding circles -------------------------------------------------------------
    N = agents.num_agents
    speed = np.hypot(states[..., B.VX], states[..., B.VY])  # (K, T)
    yaw = states[..., B.YAW]
    if N:
        # Agent arrays get a leading plan axis: 1 for log replay (shared), K for reactive traffic (per plan).
        per_plan = agents.boxes.ndim == 4
        boxes = agents.boxes if per_plan else agents.boxes[None]  # (Kp, T, N, 8)
        valid = agents.valid if per_plan else agents.valid[None]  # (Kp, T, N)
        a_corners = B.box_corners(boxes)  # (Kp, T, N, 4, 2)
        a_centre = boxes[..., :2]
        a_radius = 0.5 * np.hypot(boxes[..., 3], boxes[..., 4])  # (Kp, T, N)
        a_stopped = first_seen_stopped(boxes, valid, agents.is_static, cfg.collision_stopped_speed)  # (Kp, N)
        e_centre = pts[..., B.CENTER, :]  # (K, T, 2)
        e_radius = 0.5 * np.hypot(ctx.vehicle.length, ctx.vehicle.width)
        flag = res.multiple_lanes | res.non_drivable  # (K, T)
        ahead = np.deg2rad(cfg.ahead_angle_deg)
        behind = np.deg2rad(cfg.behind_angle_deg)

        def plan_of(k: np.ndarray) -> np.ndarray:
            return k if per_plan else np.zeros_like(k)

        # ---- NC -------------------------------------------------------------------------------------------------
        dx = e_centre[:, :, None, 0] - a_centre[..., 0]
        dy = e_centre[:, :, None, 1] - a_centre[..., 1]
        gap2 = dx * dx + dy * dy  # (K, T, N) squared centre distance
        near = (gap2 <= (e_radius + a_radius) ** 2) & valid
        k_i, t_i, n_i = np.nonzero(near)
        p_i = plan_of(k_i)
        hit = boxes_overlap(corners[k_i, t_i], a_corners[p_i, t_i, n_i])
        k_i, t_i, n_i, p_i = k_i[hit], t_i[hit], n_i[hit], p_i[hit]
        if len(k_i):
            kind = np.full(len(k_i), ACTIVE_LATERAL)
            bearing = np.abs(B.relative_bearing(states[k_i, t_i, :2], yaw[k_i, t_i], a_centre[p_i, t_i, n_i]))
            front = segment_box_overlap(corners[k_i, t_i, B.FRONT_LEFT], corners[k_i, t_i, B.FRONT_RIGHT],
                                        a_corners[p_i, t_i, n_i])
            kind[front] = ACTIVE_FRONT
            kind[bearing > behind] = ACTIVE_REAR
            kind[a_stopped[p_i, n_i]] = STOPPED_TRACK
            kind[speed[k_i, t_i] <= cfg.collision_stopped_speed] = STOPPED_EGO
            fault = (kind == ACTIVE_FRONT) | (kind == STOPPED_TRACK) | ((kind == ACTIVE_LATERAL) & flag[k_i, t_i])
            counted = _first_fault_free(t_i, k_i * N + n_i, fault, K * N) & fault
            if counted.any():
                ck, ct, cn, ckind = k_i[counted], t_i[counted], n_i[counted], kind[counted]
                score = np.where(agents.is_static[cn], cfg.static_collision_score, 0.0)
                np.minimum.at(res.nc, ck, score)
                res.at_fault_collision[ck, ct] = True
                # Earliest collision that set the score, lowest agent index on ties.
                decisive = score == res.nc[ck]
                ck, ct, cn, ckind = ck[decisive], ct[decisive], cn[decisive], ckind[decisive]
                order = np.lexsort((cn, ct, ck))
                ck, ct, cn, ckind = ck[order], ct[order], cn[order], ckind[order]
                first = np.r_[True, ck[1:] != ck[:-1]]
                res.collision_step[ck[first]] = ct[first]
                res.collision_agent[ck[first]] = cn[first]
                res.collision_type[ck[first]] = ckind[first]
                res.collision_category[ck[first]] = agents.category[cn[first]]

        # ---- TTC --------------------------------------------------------------------------------------------------
        Tt = min(cfg.ttc_num_steps, T)
        steps = np.asarray(cfg.ttc_projection_steps)
        max_step = int(steps.max())
        # Coarse filter per (k, t, n): the projected ego stays within speed * max_step * dt of its centre, the agent
        # within its largest displacement over the next max_step steps.
        later = np.minimum(np.arange(Tt)[:, None] + steps[None, :], T - 1)  # (Tt, S)
        ax_, ay_ = a_centre[..., 0], a_centre[..., 1]  # (Kp, T, N)
        a_travel = np.max(np.hypot(ax_[:, later] - ax_[:, :Tt, None], ay_[:, later] - ay_[:, :Tt, None]),
                          axis=2)  # (Kp, Tt, N)
        a_reach = np.max(a_radius[:, later], axis=2) + a_travel
        active = speed[:, :Tt] >= cfg.ttc_stopped_speed
        reach = (e_radius + speed[:, :Tt] * max_step * cfg.dt)[..., None] + a_reach
        coarse = gap2[:, :Tt] <= reach * reach
        coarse &= active[..., None]
        k_i, t_i, n_i = np.nonzero(coarse)
        S = len(steps)
        k_i, t_i, n_i = np.repeat(k_i, S), np.repeat(t_i, S), np.repeat(n_i, S)
        s_i = np.tile(np.arange(S), len(k_i) // S if S else 0)
        ta = t_i + steps[s_i]
        ok = (ta < T)
        k_i, t_i, n_i, s_i, ta = k_i[ok], t_i[ok], n_i[ok], s_i[ok], ta[ok]
        ok = valid[plan_of(k_i), ta, n_i]
        k_i, t_i, n_i, s_i, ta = k_i[ok], t_i[ok], n_i[ok], s_i[ok], ta[ok]
        shift = (speed[k_i, t_i] * steps[s_i] * cfg.dt)[:, None] * np.stack(
            [np.cos(yaw[k_i, t_i]), np.sin(yaw[k_i, t_i])], axis=1)
        p_i = plan_of(k_i)
        d = e_centre[k_i, t_i] + shift - a_centre[p_i, ta, n_i]
        ok = np.hypot(d[:, 0], d[:, 1]) <= e_radius + a_radius[p_i, ta, n_i]
        k_i, t_i, n_i, s_i, ta, shift = k_i[ok], t_i[ok], n_i[ok], s_i[ok], ta[ok], shift[ok]
        ego_proj = corners[k_i, t_i] + shift[:, None, :]
        hit = boxes_overlap(ego_proj, a_corners[plan_of(k_i), ta, n_i])
        k_i, t_i, n_i, s_i, ta = k_i[hit], t_i[hit], n_i[hit], s_i[hit], ta[hit]
        if len(k_i):
            bearing = np.abs(B.relative_bearing(states[k_i, t_i, :2], yaw[k_i, t_i], a_centre[plan_of(k_i), ta, n_i]))
            area = flag[k_i, t_i].copy()
            ask = ~area & ~(bearing < ahead) & ~(bearing > behind)  # the intersection test decides these only
            if ask.any():  # NAVSIM tests the rear axle here (the box centre in DDC / LK)
                area[ask] = points_in_intersection(ctx, states[k_i[ask], t_i[ask], :2])
            infraction = (bearing < ahead) | (area & ~(bearing > behind))
            counted = _first_fault_free(t_i * S + s_i, k_i * N + n_i, infraction, K * N) & infraction
            if counted.any():
                record_ttc_infractions(res, k_i[counted], t_i[counted], n_i[counted])

    # ---- DDC (rolling 1 s oncoming displacement) and LK (deviation runs) ------------------------------------------
    centre = pts[..., B.CENTER, :]
    score_ddc_and_lk(res, centre, cfg)

    # ---- progress ----------------------------------------------------------------------------------------------
    if len(ctx.route_centerline) >= 2:
        s = project_on_polyline(np.concatenate([centre[:, 0], centre[:, -1]]), ctx.route_centerline)
        res.progress[:] = np.maximum(s[K:] - s[:K], 0.0)

    # ---- comfort -----------------------------------------------------------------------------------------------
    res.hc[:], res.comfort_ok[:], res.comfort_min[:], res.comfort_max[:] = history_comfort(
        states, ctx.history_states, cfg, ctx.vehicle.rear_axle_to_center)
    if previous_states is not None:
        prev = previous_states if len(previous_states) == K else np.broadcast_to(previous_states[:1], states.shape)
        res.ec[:], res.ec_rms[:] = extended_comfort(states, prev, cfg)
    res.has_ec = previous_states is not None
    return res


def record_ttc_infractions(res, plan: np.ndarray, step: np.ndarray, agent: np.ndarray) -> None:
    """Write counted TTC infractions (parallel index arrays) into ``res``: TTC 0, the per-step flags, and for each
    plan its earliest infraction (step, then agent index) as ``ttc_step`` / ``ttc_agent``."""
    res.ttc[plan] = 0.0
    res.ttc_infraction[plan, step] = True
    order = np.lexsort((agent, step, plan))
    plan, step, agent = plan[order], step[order], agent[order]
    first = np.r_[True, plan[1:] != plan[:-1]]
    res.ttc_step[plan[first]] = step[first]
    res.ttc_agent[plan[first]] = agent[first]


def score_ddc_and_lk(res, centre: np.ndarray, cfg) -> None:
    """DDC and LK from per-step flags already in ``res`` (needs ``oncoming``, ``in_intersection``, ``lk_deviation``).

    Args:
        res: the result being filled (rows = plans).
        centre: (rows, T, 2) ego box centres.
        cfg: scorer config (DDC window and thresholds, LK deviation and window).
    """
    rows, T = centre.shape[:2]
    # DDC: centre displacement while oncoming (outside intersections), summed over a rolling 1 s window.
    step_len = np.zeros((rows, T))
    step_len[:, 1:] = np.hypot(*(centre[:, 1:] - centre[:, :-1]).transpose(2, 0, 1))
    step_len *= res.oncoming & ~res.in_intersection
    step_len[:, 0] = 0.0
    W = cfg.ddc_window_steps
    cs = np.cumsum(step_len, axis=1)
    window = cs.copy()
    window[:, W:] -= cs[:, :-W]
    worst = window[:, 1:].max(axis=1) if T > 1 else np.zeros(rows)
    res.oncoming_progress[:] = worst
    res.ddc[:] = np.where(worst < cfg.ddc_compliance_m, 1.0, np.where(worst < cfg.ddc_violation_m, 0.5, 0.0))
    # LK: a run of > 0.5 m deviation for lk_window_steps; intersection steps neither count nor reset the run.
    deviating = (res.lk_deviation > cfg.lk_max_deviation_m) & ~res.in_intersection
    reset = ~(res.lk_deviation > cfg.lk_max_deviation_m) & ~res.in_intersection
    run_total = np.cumsum(deviating, axis=1)
    at_reset = np.maximum.accumulate(np.where(reset, run_total, 0), axis=1)
    res.lk[:] = np.where((run_total - at_reset).max(axis=1) >= cfg.lk_window_steps, 0.0, 1.0)


class AreaFlags(NamedTuple):
    """Ego-area flags of K x T ego boxes from one containment query of their 4 corners + centre.

    ``kt``, ``poly``: the (point, polygon) hits (point = kt * 5 + corner index); ``lane_pair`` marks corner hits in
    lane polygons (the red-light test reuses them). Flags are (K * T,) bool.
    """

    kt: np.ndarray
    lane_pair: np.ndarray
    poly: np.ndarray
    non_drivable: np.ndarray
    multiple_lanes: np.ndarray
    oncoming: np.ndarray
    in_intersection: np.ndarray


def area_flags(ctx: ScoringContext, pts: np.ndarray) -> AreaFlags:
    """Non-drivable, multiple-lanes, oncoming and in-intersection flags (epdms.md "Ego-area flags") of ego box
    points ``pts`` (K, T, 5, 2), from one containment query against the scene's packed polygon index."""
    K, T = pts.shape[:2]
    KT, L = K * T, ctx.num_lanes
    point_idx, poly = _fast_map(ctx).index.contains(pts.reshape(-1, 2))
    kt, which = point_idx // 5, point_idx % 5
    is_corner = which < B.CENTER
    # Non-drivable: a corner inside no polygon (every polygon in the index is drivable).
    corner_covered = np.zeros(KT * 4, bool)
    corner_covered[(kt * 4 + which)[is_corner]] = True
    non_drivable = ~corner_covered.reshape(KT, 4).all(axis=1)
    # Multiple lanes: > 1 lane holds some corner, and no lane holds all 4 corners.
    lane_pair = is_corner & (poly < L)
    key = kt[lane_pair] * max(L, 1) + poly[lane_pair]
    if KT * max(L, 1) <= 4_000_000:  # counting sort beats np.unique's sort for moderate lane counts
        counts = np.bincount(key, minlength=KT * max(L, 1))
        ukey = np.flatnonzero(counts)
        corners_per_lane = counts[ukey]
    else:
        ukey, corners_per_lane = np.unique(key, return_counts=True)
    ukt = ukey // max(L, 1)
    lanes_touched = np.bincount(ukt, minlength=KT)
    one_lane_all = np.bincount(ukt[corners_per_lane == 4], minlength=KT) > 0
    multiple_lanes = (lanes_touched > 1) & ~one_lane_all
    # Centre: on-route, intersection.
    is_centre = ~is_corner
    ckt, cpoly = kt[is_centre], poly[is_centre]
    oncoming = np.bincount(ckt, weights=ctx.polygon_is_on_route[cpoly], minlength=KT) == 0
    in_inter = np.bincount(ckt, weights=ctx.polygon_is_intersection[cpoly], minlength=KT) > 0
    return AreaFlags(kt, lane_pair, poly, non_drivable, multiple_lanes, oncoming, in_inter)
