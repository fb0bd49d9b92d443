"""Reference EPDMS scorer: one plan at a time, one step at a time, with shapely geometry.

This module is the specification made executable: it favours the obvious loop over speed, and follows the control
flow of navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py (``_calculate_ego_area``,
``_calculate_no_at_fault_collision``, ``_calculate_ttc``, ...) and pdm_scorer_utils.py (``get_collision_type``).
:mod:`irlvla_gym.metrics.fast` must agree with it on every sub-score (tests/metrics/test_agreement.py).

Point-in-polygon uses shapely ``within`` (boundary points are outside), as NAVSIM's
``PDMOccupancyMap.points_in_polygons`` uses ``contains``; polygon overlap uses ``intersects`` (touching counts), as
NAVSIM's STRtree ``query(..., predicate="intersects")``.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.comfort import extended_comfort, history_comfort
from irlvla_gym.metrics.context import AgentTracks, ScoringContext
from irlvla_gym.metrics.result import (
    ACTIVE_FRONT, ACTIVE_LATERAL, ACTIVE_REAR, STOPPED_EGO, STOPPED_TRACK, ScoreResult, empty_result,
)


class _ShapelyMap:
    """Shapely objects of one scene (built once, cached in ``ScoringContext.cache``)."""

    def __init__(self, ctx: ScoringContext):
        self.polygons = [Polygon(rings[0], rings[1:]) for rings in ctx.polygons]
        self.tree = shapely.STRtree(self.polygons)
        self.route = LineString(ctx.route_centerline) if len(ctx.route_centerline) >= 2 else None


def _shapely_map(ctx: ScoringContext) -> _ShapelyMap:
    if "reference" not in ctx.cache:
        ctx.cache["reference"] = _ShapelyMap(ctx)
    return ctx.cache["reference"]


def _containing(smap: _ShapelyMap, point: np.ndarray) -> set[int]:
    """Indices of the map polygons that contain the point (strictly: boundary points are outside)."""
    return set(int(i) for i in smap.tree.query(Point(point), predicate="within"))


def _collision_type(ego_state: np.ndarray, ego_polygon: Polygon, agent_polygon: Polygon, agent_box: np.ndarray,
                    agent_is_static: bool, config) -> int:
    """pdm_scorer_utils.get_collision_type: classify an ego/agent overlap. ``agent_box`` is the agent as first
    seen (its velocity decides "stopped"), ``agent_polygon`` the one at the step (its centroid decides "behind")."""
    ego_speed = np.hypot(ego_state[B.VX], ego_state[B.VY])
    if ego_speed <= config.collision_stopped_speed:
        return STOPPED_EGO
    # nuPlan is_track_stopped: non-agents (static objects) always count as stopped.
    if agent_is_static or np.hypot(agent_box[6], agent_box[7]) <= config.collision_stopped_speed:
        return STOPPED_TRACK
    centroid = np.array(agent_polygon.centroid.coords[0])
    bearing = B.relative_bearing(ego_state[:2], ego_state[B.YAW], centroid)
    if abs(bearing) > np.deg2rad(config.behind_angle_deg):
        return ACTIVE_REAR
    coords = np.asarray(ego_polygon.exterior.coords)
    front_bumper = LineString([coords[B.FRONT_LEFT], coords[B.FRONT_RIGHT]])
    if front_bumper.intersects(agent_polygon):
        return ACTIVE_FRONT
    return ACTIVE_LATERAL


def score_states_reference(ctx: ScoringContext, states: np.ndarray, agents: AgentTracks,
                           previous_states: np.ndarray | None = None) -> ScoreResult:
    """Score simulated ego states (before EP normalisation and aggregation; see :func:`result.finalize`).

    Args:
        ctx: scene precompute from :func:`prepare_scene`.
        states: (K, 41, 11) simulated ego states (rear axle, t0 ego frame).
        agents: agent boxes over the 41 steps.
        previous_states: (K or 1, 41, 11) states of the plan made 0.5 s earlier (in this frame), or None.

    Returns:
        A :class:`ScoreResult` with every sub-score except EP filled, EP = 1 and ``progress`` set.
    """
    cfg = ctx.config
    smap = _shapely_map(ctx)
    K, T, _ = states.shape
    res = empty_result(K, T)
    res.dt = cfg.dt
    P = len(ctx.polygons)
    lane_ids = set(range(ctx.num_lanes))
    on_route = {i for i in range(P) if ctx.polygon_is_on_route[i]}
    inter = {i for i in range(P) if ctx.polygon_is_intersection[i]}
    ahead = np.deg2rad(cfg.ahead_angle_deg)
    behind = np.deg2rad(cfg.behind_angle_deg)
    agent_is_static = agents.is_static
    N = agents.num_agents

    for k in range(K):
        # Agents of this plan: log replay is shared by all plans, reactive traffic differs per plan.
        boxes = agents.boxes[k] if agents.boxes.ndim == 4 else agents.boxes  # (T, N, 8)
        valid = agents.valid[k] if agents.valid.ndim == 3 else agents.valid  # (T, N)
        if k == 0 or agents.boxes.ndim == 4:
            agent_polys = [[Polygon(B.box_corners(boxes[t, n])) if valid[t, n] else None for n in range(N)]
                           for t in range(T)]
            # NAVSIM classifies a collision with the tracked object as first seen in the 41 steps
            # (PDMObservation.unique_objects): its velocity there decides "stopped track".
            first_box = [boxes[int(np.argmax(valid[:, n])), n] for n in range(N)]
        pts = B.ego_box_points(states[k], ctx.vehicle)  # (T, 5, 2)
        ego_polys = [Polygon(pts[t, :4]) for t in range(T)]

        # ---- ego areas (pdm_scorer._calculate_ego_area) and lane keeping deviation -------------------------------
        for t in range(T):
            corner_sets = [_containing(smap, pts[t, c]) for c in range(4)]
            centre_set = _containing(smap, pts[t, B.CENTER])
            lanes_touched = set().union(*corner_sets) & lane_ids
            one_lane_holds_all = any(all(l in s for s in corner_sets) for l in lanes_touched)
            res.multiple_lanes[k, t] = len(lanes_touched) > 1 and not one_lane_holds_all
            res.non_drivable[k, t] = any(len(s) == 0 for s in corner_sets)
            res.oncoming[k, t] = len(centre_set & on_route) == 0
            res.in_intersection[k, t] = len(centre_set & inter) > 0
            # LK: distance to the route centreline (pdm_scorer._calculate_lane_keeping).
            res.lk_deviation[k, t] = (smap.route.distance(Point(pts[t, B.CENTER])) if smap.route is not None
                                      else np.inf)
            red = np.flatnonzero(ctx.red_connectors[t])
            res.red_light[k, t] = any(smap.polygons[l].intersects(ego_polys[t]) for l in red)

        # ---- NC (pdm_scorer._calculate_no_at_fault_collision) --------------------------------------------------
        collided: set[int] = set()  # agents already hit without fault are ignored afterwards
        at_fault: list[tuple[int, int, int, float]] = []  # (step, agent, collision type, score)
        for t in range(T):
            for n in range(N):
                if not valid[t, n] or n in collided:
                    continue
                agent_poly = agent_polys[t][n]
                if not agent_poly.intersects(ego_polys[t]):
                    continue
                kind = _collision_type(states[k, t], ego_polys[t], agent_poly, first_box[n],
                                       bool(agent_is_static[n]), cfg)
                lateral_at_fault = kind == ACTIVE_LATERAL and (res.multiple_lanes[k, t] or res.non_drivable[k, t])
                if kind in (ACTIVE_FRONT, STOPPED_TRACK) or lateral_at_fault:
                    score = cfg.static_collision_score if agent_is_static[n] else 0.0
                    at_fault.append((t, n, kind, score))
                    res.at_fault_collision[k, t] = True
                else:
                    collided.add(n)
        if at_fault:
            res.nc[k] = min(e[3] for e in at_fault)
            # Report the earliest collision that set the score (lowest agent index on ties).
            t, n, kind, _ = min(e for e in at_fault if e[3] == res.nc[k])
            res.collision_step[k], res.collision_agent[k], res.collision_type[k] = t, n, kind
            res.collision_category[k] = int(agents.category[n])

        # ---- DAC, DDC, TLC ---------------------------------------------------------------------------------------
        res.dac[k] = 0.0 if res.non_drivable[k].any() else 1.0
        displacement = np.zeros(T)
        for t in range(1, T):
            if res.oncoming[k, t] and not res.in_intersection[k, t]:
                displacement[t] = np.linalg.norm(pts[t, B.CENTER] - pts[t - 1, B.CENTER])
        window = cfg.ddc_window_steps
        worst = max((displacement[max(1, t - window + 1):t + 1].sum() for t in range(1, T)), default=0.0)
        res.oncoming_progress[k] = worst
        res.ddc[k] = 1.0 if worst < cfg.ddc_compliance_m else (0.5 if worst < cfg.ddc_violation_m else 0.0)
        res.tlc[k] = 0.0 if res.red_light[k].any() else 1.0

        # ---- progress along the route centreline (pdm_scorer._calculate_progress) --------------------------------
        if smap.route is not None:
            start = smap.route.project(Point(pts[0, B.CENTER]))
            end = smap.route.project(Point(pts[-1, B.CENTER]))
            res.progress[k] = max(end - start, 0.0)

        # ---- TTC (pdm_scorer._calculate_ttc) ----------------------------------------------------------------------
        ignored: set[int] = set()
        speed = np.hypot(states[k, :, B.VX], states[k, :, B.VY])
        for t in range(min(cfg.ttc_num_steps, T)):
            if speed[t] < cfg.ttc_stopped_speed:
                continue
            heading = states[k, t, B.YAW]
            velocity = speed[t] * np.array([np.cos(heading), np.sin(heading)])
            # NAVSIM tests "in intersection" at the rear axle here (centre in DDC / LK).
            rear_axle_in_intersection = len(_containing(smap, states[k, t, :2]) & inter) > 0
            ego_area_flag = res.multiple_lanes[k, t] or res.non_drivable[k, t] or rear_axle_in_intersection
            for step in cfg.ttc_projection_steps:
                projected = Polygon(pts[t, :4] + velocity * step * cfg.dt)
                for n in range(N):
                    if t + step >= T or not valid[t + step, n] or n in ignored:
                        continue
                    agent_poly = agent_polys[t + step][n]
                    if not agent_poly.intersects(projected):
                        continue
                    centroid = np.array(agent_poly.centroid.coords[0])
                    bearing = abs(B.relative_bearing(states[k, t, :2], heading, centroid))
                    if bearing < ahead or (ego_area_flag and not bearing > behind):
                        res.ttc_infraction[k, t] = True
                        if res.ttc_step[k] < 0:
                            res.ttc_step[k], res.ttc_agent[k] = t, n
                        elif res.ttc_step[k] == t:
                            res.ttc_agent[k] = min(res.ttc_agent[k], n)
                        res.ttc[k] = 0.0
                    else:
                        ignored.add(n)

        # ---- LK: > 0.5 m for 20 consecutive steps, intersection steps skipped without resetting -----------------
        run = 0
        for t in range(T):
            if res.in_intersection[k, t]:
                continue
            run = run + 1 if res.lk_deviation[k, t] > cfg.lk_max_deviation_m else 0
            if run >= cfg.lk_window_steps:
                res.lk[k] = 0.0

    # ---- comfort (shared arithmetic, one plan at a time) ---------------------------------------------------------
    for k in range(K):
        hc, ok, vmin, vmax = history_comfort(states[k:k + 1], ctx.history_states, cfg,
                                               ctx.vehicle.rear_axle_to_center)
        res.hc[k], res.comfort_ok[k], res.comfort_min[k], res.comfort_max[k] = hc[0], ok[0], vmin[0], vmax[0]
        if previous_states is not None:
            prev = previous_states[k:k + 1] if len(previous_states) == K else previous_states[:1]
            ec, rms = extended_comfort(states[k:k + 1], prev, cfg)
            res.ec[k], res.ec_rms[k] = ec[0], rms[0]
    res.has_ec = previous_states is not None
    return res
