"""Reference EPDMS scorer: one plan at a time, one step at a time, with shapely geometry.

This module is the specification made executable: it favours the obvious loop over speed, and follows the control
flow of navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py (``_calculate_ego_area``,
``_calculate_no_at_fault_collision``, ``_calculate_ttc``, ...) and pdm_scorer_utils.py (``get_collision_type``).
The vectorised scorer (:mod:`irlvla_gym.metrics.vectorised`) must agree with it on every sub-score and per-step
flag (tests/metrics/test_agreement.py, tests/metrics/test_vectorised.py).

Point-in-polygon uses shapely ``within`` (boundary points are outside), as NAVSIM's
``PDMOccupancyMap.points_in_polygons`` uses ``contains``; polygon overlap uses ``intersects`` (touching counts), as
NAVSIM's STRtree ``query(..., predicate="intersects")``.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from irlvla_gym.metrics.config import ScorerConfig

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.comfort import extended_comfort, history_comfort
from irlvla_gym.metrics.context import AgentTracks, ScoringContext
from irlvla_gym.metrics.result import (
    ACTIVE_FRONT, ACTIVE_LATERAL, ACTIVE_REAR, STOPPED_EGO, STOPPED_TRACK, ScoreResult, empty_result,
)


class ShapelyMap:
    """Shapely objects of one scene: ``polygons`` (one per ``ctx.polygons``), their ``tree`` (STRtree), the
    ``route`` centreline (LineString, None without a route), and the polygon id sets ``lane_ids``, ``on_route``,
    ``intersection``."""

    def __init__(self, ctx: ScoringContext):
        self.polygons = [Polygon(rings[0], rings[1:]) for rings in ctx.polygons]
        self.tree = shapely.STRtree(self.polygons)
        self.route = LineString(ctx.route_centerline) if len(ctx.route_centerline) >= 2 else None
        P = len(ctx.polygons)
        self.lane_ids = set(range(ctx.num_lanes))
        self.on_route = {i for i in range(P) if ctx.polygon_is_on_route[i]}
        self.intersection = {i for i in range(P) if ctx.polygon_is_intersection[i]}

    def containing(self, point: np.ndarray) -> set[int]:
        """Indices of the map polygons that contain the point (2,) (m) (strictly: boundary points are outside)."""
        return set(int(i) for i in self.tree.query(Point(point), predicate="within"))


def shapely_map(ctx: ScoringContext) -> ShapelyMap:
    """The scene's :class:`ShapelyMap` (built once, cached in ``ctx.cache``)."""
    if "reference" not in ctx.cache:
        ctx.cache["reference"] = ShapelyMap(ctx)
    return ctx.cache["reference"]


def _collision_type(ego_state: np.ndarray, ego_polygon: Polygon, agent_polygon: Polygon, agent_box: np.ndarray,
                    agent_is_static: bool, config: ScorerConfig) -> int:
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


class _PlanAgents:
    """The agents one plan is scored against: boxes (T, N, 8), valid (T, N), their polygons per step (None where
    invalid) and each agent's box as first seen in the 41 steps (NAVSIM's ``PDMObservation.unique_objects``: its
    velocity decides "stopped track")."""

    def __init__(self, boxes: np.ndarray, valid: np.ndarray):
        T, N = valid.shape
        self.boxes, self.valid = boxes, valid
        self.polygons = [[Polygon(B.box_corners(boxes[t, n])) if valid[t, n] else None for n in range(N)]
                         for t in range(T)]
        self.first_box = [boxes[int(np.argmax(valid[:, n])), n] for n in range(N)]


def _ego_areas(res: ScoreResult, k: int, pts: np.ndarray, ego_polys: list[Polygon], smap: ShapelyMap,
               ctx: ScoringContext) -> None:
    """Ego-area flags (pdm_scorer._calculate_ego_area), the lane-keeping deviation (distance of the centre to the
    route centreline, _calculate_lane_keeping) and red-light steps of plan k (box points pts (T, 5, 2))."""
    for t in range(len(pts)):
        corner_sets = [smap.containing(pts[t, c]) for c in range(4)]
        centre_set = smap.containing(pts[t, B.CENTER])
        lanes_touched = set().union(*corner_sets) & smap.lane_ids
        one_lane_holds_all = any(all(l in s for s in corner_sets) for l in lanes_touched)
        res.multiple_lanes[k, t] = len(lanes_touched) > 1 and not one_lane_holds_all
        res.non_drivable[k, t] = any(len(s) == 0 for s in corner_sets)
        res.oncoming[k, t] = len(centre_set & smap.on_route) == 0
        res.in_intersection[k, t] = len(centre_set & smap.intersection) > 0
        res.lk_deviation[k, t] = (smap.route.distance(Point(pts[t, B.CENTER])) if smap.route is not None
                                  else np.inf)
        red = np.flatnonzero(ctx.red_connectors[t])
        res.red_light[k, t] = any(smap.polygons[l].intersects(ego_polys[t]) for l in red)


def _no_at_fault_collision(res: ScoreResult, k: int, states: np.ndarray, ego_polys: list[Polygon],
                           agents: _PlanAgents, tracks: AgentTracks, cfg: ScorerConfig) -> None:
    """NC of plan k (pdm_scorer._calculate_no_at_fault_collision); states (T, 11)."""
    collided: set[int] = set()  # agents already hit without fault are ignored afterwards
    at_fault: list[tuple[int, int, int, float]] = []  # (step, agent, collision type, score)
    static = tracks.is_static
    T, N = agents.valid.shape
    for t in range(T):
        for n in range(N):
            if not agents.valid[t, n] or n in collided:
                continue
            agent_poly = agents.polygons[t][n]
            if not agent_poly.intersects(ego_polys[t]):
                continue
            kind = _collision_type(states[t], ego_polys[t], agent_poly, agents.first_box[n], bool(static[n]), cfg)
            lateral_at_fault = kind == ACTIVE_LATERAL and (res.multiple_lanes[k, t] or res.non_drivable[k, t])
            if kind in (ACTIVE_FRONT, STOPPED_TRACK) or lateral_at_fault:
                at_fault.append((t, n, kind, cfg.static_collision_score if static[n] else 0.0))
                res.at_fault_collision[k, t] = True
            else:
                collided.add(n)
    if at_fault:
        res.nc[k] = min(e[3] for e in at_fault)
        # Report the earliest collision that set the score (lowest agent index on ties).
        t, n, kind, _ = min(e for e in at_fault if e[3] == res.nc[k])
        res.collision_step[k], res.collision_agent[k], res.collision_type[k] = t, n, kind
        res.collision_category[k] = int(tracks.category[n])


def _compliance(res: ScoreResult, k: int, pts: np.ndarray, cfg: ScorerConfig) -> None:
    """DAC, DDC (rolling window of oncoming centre displacement) and TLC of plan k from its step flags."""
    T = len(pts)
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


def _time_to_collision(res: ScoreResult, k: int, states: np.ndarray, pts: np.ndarray, agents: _PlanAgents,
                       smap: ShapelyMap, cfg: ScorerConfig) -> None:
    """TTC of plan k (pdm_scorer._calculate_ttc); states (T, 11), box points pts (T, 5, 2)."""
    T, N = agents.valid.shape
    ahead = np.deg2rad(cfg.ahead_angle_deg)
    behind = np.deg2rad(cfg.behind_angle_deg)
    ignored: set[int] = set()
    speed = np.hypot(states[:, B.VX], states[:, B.VY])
    for t in range(min(cfg.ttc_num_steps, T)):
        if speed[t] < cfg.ttc_stopped_speed:
            continue
        heading = states[t, B.YAW]
        velocity = speed[t] * np.array([np.cos(heading), np.sin(heading)])
        # NAVSIM tests "in intersection" at the rear axle here (centre in DDC / LK).
        rear_axle_in_intersection = len(smap.containing(states[t, :2]) & smap.intersection) > 0
        ego_area_flag = res.multiple_lanes[k, t] or res.non_drivable[k, t] or rear_axle_in_intersection
        for step in cfg.ttc_projection_steps:
            projected = Polygon(pts[t, :4] + velocity * step * cfg.dt)
            for n in range(N):
                if t + step >= T or not agents.valid[t + step, n] or n in ignored:
                    continue
                agent_poly = agents.polygons[t + step][n]
                if not agent_poly.intersects(projected):
                    continue
                centroid = np.array(agent_poly.centroid.coords[0])
                bearing = abs(B.relative_bearing(states[t, :2], heading, centroid))
                if bearing < ahead or (ego_area_flag and not bearing > behind):
                    res.ttc_infraction[k, t] = True
                    if res.ttc_step[k] < 0:
                        res.ttc_step[k], res.ttc_agent[k] = t, n
                    elif res.ttc_step[k] == t:
                        res.ttc_agent[k] = min(res.ttc_agent[k], n)
                    res.ttc[k] = 0.0
                else:
                    ignored.add(n)


def _lane_keeping(res: ScoreResult, k: int, cfg: ScorerConfig) -> None:
    """LK of plan k: > 0.5 m for 20 consecutive steps; intersection steps are skipped without resetting."""
    run = 0
    for t in range(res.lk_deviation.shape[1]):
        if res.in_intersection[k, t]:
            continue
        run = run + 1 if res.lk_deviation[k, t] > cfg.lk_max_deviation_m else 0
        if run >= cfg.lk_window_steps:
            res.lk[k] = 0.0


def _comfort(res: ScoreResult, ctx: ScoringContext, states: np.ndarray, previous_states: np.ndarray | None) -> None:
    """HC and EC (shared arithmetic, :mod:`irlvla_gym.metrics.comfort`), one plan at a time."""
    K = len(states)
    for k in range(K):
        hc, ok, vmin, vmax = history_comfort(states[k:k + 1], ctx.history_states, ctx.config,
                                               ctx.vehicle.rear_axle_to_center)
        res.hc[k], res.comfort_ok[k], res.comfort_min[k], res.comfort_max[k] = hc[0], ok[0], vmin[0], vmax[0]
        if previous_states is not None:
            prev = previous_states[k:k + 1] if len(previous_states) == K else previous_states[:1]
            ec, rms = extended_comfort(states[k:k + 1], prev, ctx.config)
            res.ec[k], res.ec_rms[k] = ec[0], rms[0]


def score_states_reference(ctx: ScoringContext, states: np.ndarray, agents: AgentTracks,
                           previous_states: np.ndarray | None = None) -> ScoreResult:
    """Score simulated ego states (before EP normalisation and aggregation; see :func:`result.finalize`).

    Args:
        ctx: scene precompute from :func:`prepare_scene`.
        states: (K, 41, 11) simulated ego states (rear axle, t0 ego frame).
        agents: agent boxes over the 41 steps ((41, N, 8) shared, or (K, 41, N, 8) per plan).
        previous_states: (K or 1, 41, 11) states of the plan made 0.5 s earlier (in this frame), or None.

    Returns:
        A :class:`ScoreResult` with every sub-score except EP filled, EP = 1 and ``progress`` set.
    """
    cfg = ctx.config
    smap = shapely_map(ctx)
    K, T, _ = states.shape
    res = empty_result(K, T)
    res.dt = cfg.dt
    per_plan = agents.boxes.ndim == 4  # reactive traffic: the agents differ per plan
    plan_agents = None
    for k in range(K):
        if plan_agents is None or per_plan:
            plan_agents = _PlanAgents(agents.boxes[k] if per_plan else agents.boxes,
                                      agents.valid[k] if per_plan else agents.valid)
        pts = B.ego_box_points(states[k], ctx.vehicle)  # (T, 5, 2)
        ego_polys = [Polygon(pts[t, :4]) for t in range(T)]
        _ego_areas(res, k, pts, ego_polys, smap, ctx)
        _no_at_fault_collision(res, k, states[k], ego_polys, plan_agents, agents, cfg)
        _compliance(res, k, pts, cfg)
        if smap.route is not None:  # progress along the route centreline (pdm_scorer._calculate_progress)
            start = smap.route.project(Point(pts[0, B.CENTER]))
            end = smap.route.project(Point(pts[-1, B.CENTER]))
            res.progress[k] = max(end - start, 0.0)
        _time_to_collision(res, k, states[k], pts, plan_agents, smap, cfg)
        _lane_keeping(res, k, cfg)
    _comfort(res, ctx, states, previous_states)
    res.has_ec = previous_states is not None
    return res
