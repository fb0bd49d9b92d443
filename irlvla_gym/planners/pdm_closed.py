"""PDM-Closed: NAVSIM's rule-based reference planner and the EP normaliser of the EPDMS scorer.

Follows navsim/planning/simulation/planner/pdm_planner (``PDMClosedPlanner`` as ``MetricCacheProcessor`` configures
it) and navsim/evaluate/pdm_score.py, in the t0 ego frame:

1. Centreline (``_get_discrete_centerline`` / ``PDMPath``): the route lanes' centrelines concatenated, joint vertices
   kept twice, vertex headings towards the next vertex of the same lane (nuPlan ``compute_linestring_heading``); no
   extension. Offset paths shift every vertex by -1 / +1 m along its own normal (``parallel_discrete_path``) and
   have their own arclength.
2. Proposals: 3 paths (centreline, -1 m, +1 m) x 5 IDM policies at {0.2, .., 1.0} x the speed limit of NAVSIM's
   starting lane (on-route lane under the rear axle with the lowest heading error; 15 m/s when unknown).
   ``BatchIDMPolicy``: forward Euler at 0.1 s for 40 steps, exponent 10, min gap 1 m, headway 1.5 s, accel 1.5,
   decel 3 m/s^2, no speed clamp. Poses are interpolated on the path at the IDM arclength (pose 0: the ego's
   projection on the path).
3. Leader (``PDMGenerator._update_leading_agents``), searched at even steps and held at odd ones (step 1 keeps the
   zero-initialised leader: progress 0, speed 0, so every moving proposal brakes at -3 m/s^2 for 0.1 s): objects
   whose polygon intersects the corridor (the path from the ego over max target speed x 5 s, buffered by half the
   ego width, square caps) and whose centroid projects ahead of the ego's arclength; the nearest by polygon distance
   from the ego box sets the leader at ego arclength + distance with its t0 speed projected on the ego heading
   (0 for static objects and red lights); none: the path end, with rear length = half the ego length. One scratch
   array is reused across the proposals of a path, so stale fields carry over exactly as in NAVSIM.
   Objects (``PDMObservation``): t0 detections within 100 m of the ego centre (nearest 50 vehicles / 25 pedestrians
   / 10 bicycles / 50 static), dynamic ones moved at their t0 speed along their heading, sampled every 0.2 s; red
   on-route connectors at t0; objects overlapping the ego at t0 (red connectors: containing it) are ignored.
4. The 15 proposals' 41 states are tracked by the LQR + bicycle simulation from the ego's t0 state and scored against
   the planner's own view (EP normalised among the proposals, history comfort 1: the planner's scorer has no past
   trajectory); the best by score wins (``np.argmax``, ties to the first).
5. EP normaliser (:func:`pdm_reference_progress`): pdm_score.py re-simulates PDM-Closed's 0.1 s trajectory -- the
   same reference and start, so the chosen proposal's simulated states -- and scores it with the agent's plan;
   the normaliser is its progress x multiplicative product against the logged agents.

Checked against the official NAVSIM v2 on 30 exported synthetic scenes with intact routes: identical proposals
(to 1e-4 m), same choice, normaliser within 0.02 m (the remainder is the LQR tracking simulation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from irlvla_gym.cache import LRU
from irlvla_gym.planners.base import PlannerBase
from irlvla_gym.scenes.scene import BICYCLE, PEDESTRIAN, VEHICLE, Scene
from irlvla_gym.sim.config import IDMParams

PDM_IDM_PARAMS = IDMParams(target_velocity=15.0, min_gap_to_lead_agent=1.0, headway_time=1.5, accel_max=1.5,
                           decel_max=3.0, exponent=4.0)
"""IDM of the PDM-Closed proposals (navsim/.../pdm_planner config: ``idm_policies``)."""


@dataclass(frozen=True)
class PDMClosedConfig:
    """PDM-Closed parameters (NAVSIM defaults). Units: m, s, m/s.

    Attributes:
        speed_fractions: IDM target speed as fractions of the lane speed limit.
        lateral_offsets: centreline offsets (m, +left); order decides ties (centreline first, as NAVSIM).
        default_speed_limit: used where the lane has no speed limit (AV2, ScenarioNet without one).
        idm: IDM parameters of the proposals.
        dt: IDM integration step (s).
        num_steps: IDM steps (40 x 0.1 s = 4 s, the scored horizon).
        agent_forecast: what the planner sees of the agents: "constant_velocity" (NAVSIM's ``PDMObservation``: the
            t0 detections within 100 m, dynamic ones moved at their t0 speed along their heading, sampled every
            0.2 s) or "log" (an oracle variant: the same objects' log-replayed boxes). The proposals are selected
            by scoring them against this view (NAVSIM's planner-internal PDMScorer); the EP normaliser is the chosen
            trajectory re-scored against the real agents (``traffic``).
        traffic: agents of that final re-scoring: "log" (non-reactive replay, NAVSIM) or "idm" (reactive).
        context_cache_size: scorer contexts kept per planner (``prepare_scene`` results, keyed by content).
        idm_exponent: free-road exponent of the IDM (NAVSIM's ``BatchIDMPolicy`` hard-codes 10).
        leading_agent_update_rate: the leader is searched every this many steps and held in between; at the first
            step it is NAVSIM's zero-initialised leader (a brief brake), reproduced on purpose.
        trajectory_poses: 0.1 s poses of NAVSIM's final trajectory (4 s + 1 s for TTC); sets the length of the
            leader-search corridor (max target speed x this x dt).
        estimate_steering: start state of the tracking simulation: None follows
            :func:`irlvla_gym.sim.tracker.initial_state`'s default (as the scored plans), else forces it.
    """

    speed_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    lateral_offsets: tuple[float, ...] = (0.0, -1.0, 1.0)
    default_speed_limit: float = 15.0
    idm: IDMParams = PDM_IDM_PARAMS
    dt: float = 0.1
    num_steps: int = 40
    agent_forecast: str = "constant_velocity"
    traffic: str = "log"
    context_cache_size: int = 8
    idm_exponent: float = 10.0
    leading_agent_update_rate: int = 2
    trajectory_poses: int = 50
    estimate_steering: bool | None = None

    @property
    def num_proposals(self) -> int:
        return len(self.speed_fractions) * len(self.lateral_offsets)


@dataclass
class PDMClosedOutput:
    """Everything one PDM-Closed call computed, for inspection.

    Attributes:
        plan: (8, 3) chosen poses [x, y, yaw] at t = 0.5 .. 4 s (t0 ego frame, rear axle).
        proposals: (P, 8, 3) all proposals (P = 15), offset-major (``offsets[p]``, ``fractions[p]``).
        proposal_poses: (P, 41, 3) the proposals at 0.1 s (t = 0 .. 4 s), pose 0 = the start on the offset path.
        speeds: (P, 41) IDM speed profiles (m/s).
        offsets / fractions: (P,) lateral offset (m) and speed fraction of each proposal.
        target_speed: (P,) IDM target speed (m/s).
        best: index of the chosen proposal.
        scores: the scorer's :class:`~irlvla_gym.metrics.result.ScoreResult` over the P proposals (EP normalised
            among them).
        reference_progress: chosen proposal's progress x multiplicative product (m): the EP normaliser.
        states: (P, 41, 11) the proposals tracked by the LQR + bicycle simulation.
        centerline: (J, 3) the route centreline [x, y, heading] of the proposals.
    """

    plan: np.ndarray
    proposals: np.ndarray
    proposal_poses: np.ndarray
    speeds: np.ndarray
    offsets: np.ndarray
    fractions: np.ndarray
    target_speed: np.ndarray
    best: int
    scores: object
    reference_progress: float
    states: np.ndarray | None = None
    centerline: np.ndarray | None = None


# --------------------------------------------------------------------------------------------------------------------
# Geometry of the proposal paths (navsim/.../pdm_planner/utils/pdm_path.py, pdm_geometry_utils.py)
# --------------------------------------------------------------------------------------------------------------------


class _PDMPath:
    """A discrete path (NAVSIM ``PDMPath``): vertices with headings, cumulative progress, shapely linestring.

    Attributes:
        xy: (J, 2) vertices (t0 ego frame); consecutive duplicates (lane joints) are kept, as NAVSIM does.
        heading: (J,) unwrapped vertex headings (rad).
        progress: (J,) cumulative arclength (m), 0 at the first vertex.
    """

    def __init__(self, xy: np.ndarray, heading: np.ndarray):
        import shapely

        self.xy = np.asarray(xy, np.float64)
        self.heading = np.unwrap(np.asarray(heading, np.float64))
        self.progress = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(self.xy, axis=0), axis=1))]
        self.linestring = shapely.LineString(self.xy)

    @property
    def length(self) -> float:
        return float(self.progress[-1])

    def interpolate(self, distances: np.ndarray) -> np.ndarray:
        """(..., 3) poses at arclengths ``distances``, clipped to [1e-5, length] (``PDMPath.interpolate``)."""
        d = np.clip(np.asarray(distances, np.float64), 1e-5, self.length)
        out = np.stack([np.interp(d, self.progress, self.xy[:, 0]), np.interp(d, self.progress, self.xy[:, 1]),
                        np.interp(d, self.progress, self.heading)], axis=-1)
        out[..., 2] = np.arctan2(np.sin(out[..., 2]), np.cos(out[..., 2]))
        return out

    def project(self, points) -> np.ndarray:
        """Arclength of the nearest point of the linestring (shapely ``project``) of (M, 2) points or geometries."""
        import shapely

        if isinstance(points, np.ndarray) and points.dtype != object:
            points = shapely.points(points)
        return np.asarray(shapely.line_locate_point(self.linestring, points), np.float64)

    def substring(self, start: float, end: float):
        """Linestring between two arclengths: the vertices inside [start, end] if there are at least two, else
        shapely's exact substring (``PDMPath.substring``)."""
        import shapely
        from shapely.ops import substring

        start = float(np.clip(start, 0.0, self.length))
        end = float(np.clip(end, 0.0, self.length))
        inside = (start <= self.progress) & (self.progress <= end)
        if inside.sum() > 1:
            return shapely.LineString(self.xy[inside])
        return substring(self.linestring, start, end)

    def parallel(self, offset: float) -> "_PDMPath":
        """The path shifted by ``offset`` (m, +left) along each vertex's normal (``parallel_discrete_path``)."""
        h = self.heading + 0.5 * np.pi
        return _PDMPath(self.xy + offset * np.stack([np.cos(h), np.sin(h)], axis=-1), self.heading)


def _centerline(scene: Scene) -> _PDMPath:
    """The route centreline as NAVSIM's planner builds it: the centrelines of the lanes of its route search
    (:func:`irlvla_gym.scenes.routing.navsim_route_lanes`) concatenated (joint vertices kept twice), each vertex's
    heading towards its successor within its lane (last one repeated: nuPlan's ``compute_linestring_heading``). An
    empty route falls back to a straight line along the ego heading."""
    from irlvla_gym.scenes.routing import navsim_route_lanes

    xy, heading = [], []
    for lane in navsim_route_lanes(scene):
        line = np.asarray(scene.map.lane_centerlines[int(lane)], np.float64)
        if len(line) < 2:
            continue
        h = np.arctan2(np.diff(line[:, 1]), np.diff(line[:, 0]))
        xy.append(line)
        heading.append(np.r_[h, h[-1]])
    if not xy:
        return _PDMPath(np.array([[-100.0, 0.0], [200.0, 0.0]]), np.zeros(2))
    return _PDMPath(np.concatenate(xy), np.concatenate(heading))


def _box_polygons(xy: np.ndarray, yaw: np.ndarray, front: np.ndarray, rear: np.ndarray, half_width: np.ndarray):
    """Shapely polygons of oriented boxes: reference points (M, 2), yaw (M,), extents ahead of / behind the
    reference point and half width (M,) each."""
    import shapely

    c, s = np.cos(yaw), np.sin(yaw)
    lon = np.stack([front, front, -rear, -rear], axis=-1)  # (M, 4) FL, FR, RR, RL
    lat = np.stack([half_width, -half_width, -half_width, half_width], axis=-1)
    x = xy[:, 0, None] + lon * c[:, None] - lat * s[:, None]
    y = xy[:, 1, None] + lon * s[:, None] + lat * c[:, None]
    return shapely.polygons(np.stack([x, y], axis=-1))


def _current_speed_limit(scene: Scene, config: PDMClosedConfig) -> float | None:
    """Speed limit (m/s) of NAVSIM's starting lane, None when unknown (the IDM then uses its fallback)."""
    from irlvla_gym.scenes.routing import starting_lane

    lane = starting_lane(scene)
    if lane < 0:
        return None
    limit = float(scene.map.lane_speed_limits[lane])
    return limit if np.isfinite(limit) and limit > 0 else None


# --------------------------------------------------------------------------------------------------------------------
# The planner's observation (navsim/.../pdm_planner/observation/pdm_observation.py, pdm_object_manager.py)
# --------------------------------------------------------------------------------------------------------------------

_MAX_OBJECTS = {VEHICLE: 50, PEDESTRIAN: 25, BICYCLE: 10}
_MAX_STATIC_OBJECTS = 50


@dataclass
class _Observation:
    """PDMObservation: object polygons at t = 0, 0.2, .. s (constant-velocity forecast of the t0 detections, red
    on-route connectors as static obstacles).

    Attributes:
        polygons: list over samples of (M,) shapely polygon arrays (M objects, the same order every sample).
        is_red: (M,) bool, object is a red-light polygon.
        heading: (M,) t0 heading (rad) of the object; speed: (M,) t0 speed (m/s), 0 for static objects and red
            lights (the leader velocity uses both).
        collided: (M,) bool, objects already overlapping the ego at t0 (ignored as leaders).
        boxes / valid: (S + 1, N, 8) / (S + 1, N) the agents' forecast at every 0.1 s step as seen by the scorer
            (boxes held between the 0.2 s samples, as ``PDMObservation.__getitem__``).
    """

    polygons: list
    is_red: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    collided: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray

    def at(self, time_idx: int):
        return self.polygons[time_idx // 2]


def _observation(scene: Scene, config: PDMClosedConfig, num_steps: int, map_radius: float = 100.0) -> _Observation:
    import shapely

    vehicle = scene.ego.vehicle
    start = scene.agents.boxes[0]  # (N, 8) t0 ego frame
    valid0 = np.asarray(scene.agents.valid[0], bool)
    category = np.asarray(scene.agents.category, np.int64)
    center = np.array([0.5 * (vehicle.front_length - vehicle.rear_length), 0.0])
    dist = np.linalg.norm(start[:, :2] - center, axis=1)
    keep = valid0 & (dist <= map_radius)
    # nearest objects per category (PDMObjectManager.get_nearest_objects)
    selected = []
    for cat, cap in _MAX_OBJECTS.items():
        idx = np.flatnonzero(keep & (category == cat))
        selected.append(idx[np.argsort(dist[idx], kind="stable")][:cap])
    dynamic = np.concatenate(selected) if selected else np.zeros(0, np.int64)
    idx = np.flatnonzero(keep & ~np.isin(category, list(_MAX_OBJECTS)))
    static = idx[np.argsort(dist[idx], kind="stable")][:_MAX_STATIC_OBJECTS]
    order = np.r_[static, dynamic].astype(np.int64)
    b = start[order]
    speed = np.hypot(b[:, 6], b[:, 7])
    is_dyn = np.r_[np.zeros(len(static), bool), np.ones(len(dynamic), bool)]
    speed = np.where(is_dyn, speed, 0.0)
    vel_angle = np.arctan2(b[:, 7], b[:, 6])
    forward = np.abs(np.arctan2(np.sin(b[:, 2] - vel_angle), np.cos(b[:, 2] - vel_angle))) < 0.5 * np.pi
    track_heading = np.where(forward, b[:, 2], b[:, 2] + np.pi)
    dxy = speed[:, None] * np.stack([np.cos(track_heading), np.sin(track_heading)], axis=-1)

    # red on-route connectors at t0 (``_get_traffic_light_geometries``)
    from irlvla_gym.metrics.context import on_route_lane_mask
    from irlvla_gym.scenes.scene import LIGHT_RED

    mp = scene.map
    red = np.flatnonzero((mp.lane_light_state[0] == LIGHT_RED) & on_route_lane_mask(scene) & mp.lane_is_connector)
    red_polys = np.array([shapely.Polygon(mp.lane_polygons.exterior(int(i))) for i in red], dtype=object)

    half_l, half_w = 0.5 * b[:, 3], 0.5 * b[:, 4]
    samples = np.arange(0, num_steps + 3, 2)  # NAVSIM: observation_samples (+ res) at resolution 2
    log_boxes = log_valid = None
    if config.agent_forecast == "log":  # oracle variant: the log-replayed future boxes of the same objects
        log_boxes, log_valid = _forecast_agents(scene, int(samples[-1]), config)
    polygons = []
    for sample in samples:
        if log_boxes is None:
            xy, yaw = b[:, :2] + sample * config.dt * dxy, b[:, 2]
        else:
            lb = log_boxes[sample, order]
            xy = np.where(log_valid[sample, order, None], lb[:, :2], 1e6)  # gone: far away
            yaw = lb[:, 2]
        polys = _box_polygons(xy, yaw, half_l, half_l, half_w) if len(b) else np.zeros(0, object)
        polygons.append(np.concatenate([polys, red_polys]))
    M = len(order) + len(red)
    is_red = np.r_[np.zeros(len(order), bool), np.ones(len(red), bool)]
    ego_poly = _box_polygons(np.zeros((1, 2)), np.zeros(1), np.array([vehicle.front_length]),
                             np.array([vehicle.rear_length]), np.array([0.5 * vehicle.width]))[0]
    collided = np.zeros(M, bool)
    if M:
        hits = shapely.intersects(polygons[0], ego_poly)
        within = shapely.within(ego_poly, polygons[0])
        collided = hits & (~is_red | within)

    # the same forecast as agent boxes for the planner's own scorer (constant-velocity mode)
    N = start.shape[0]
    t_held = 2 * (np.arange(num_steps + 1) // 2) * config.dt
    boxes = np.repeat(start[None], num_steps + 1, axis=0)
    valid = np.zeros((num_steps + 1, N), bool)
    full_dxy = np.zeros((N, 2))
    full_dxy[order] = dxy
    boxes[..., :2] += t_held[:, None, None] * full_dxy[None]
    valid[:, order] = True
    return _Observation(polygons, is_red, np.r_[b[:, 2], np.zeros(len(red))], np.r_[speed, np.zeros(len(red))],
                        collided, boxes, valid)


def _idm_step(progress, velocity, lead_progress, lead_velocity, lead_rear, target, cfg: PDMClosedConfig):
    """One forward-Euler step of NAVSIM's ``BatchIDMPolicy.propagate`` (exponent 10, no clipping of the speed)."""
    p = cfg.idm
    s_star = p.min_gap_to_lead_agent + velocity * p.headway_time + velocity * (velocity - lead_velocity) / (
        2.0 * np.sqrt(p.accel_max * p.decel_max))
    s_alpha = np.maximum(lead_progress - progress - lead_rear, p.min_gap_to_lead_agent)
    with np.errstate(divide="ignore", invalid="ignore"):
        accel = p.accel_max * (1.0 - (velocity / target) ** cfg.idm_exponent - (s_star / s_alpha) ** 2)
    accel = np.clip(accel, -p.decel_max, p.accel_max)
    return progress + cfg.dt * velocity, velocity + cfg.dt * accel


# --------------------------------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------------------------------


class PDMClosedPlanner(PlannerBase):
    """NAVSIM's PDM-Closed (see the module docstring). Usable as a planner and as the scorer's EP reference.

    Results are cached per scene content (:func:`scene_cache_key`; the last ``cache_size`` scenes), so planning and
    :meth:`reference_progress` on the same scene cost one run.
    """

    name = "pdm_closed"

    def __init__(self, config: PDMClosedConfig = PDMClosedConfig(), cache_size: int = 4096):
        self.config = config
        self._outputs: LRU[PDMClosedOutput] = LRU(cache_size)
        self._contexts: LRU[object] = LRU(config.context_cache_size)

    # ---- caches --------------------------------------------------------------------------------------------------

    def context(self, scene: Scene):
        """The scorer's :func:`~irlvla_gym.metrics.prepare_scene` for ``scene``, cached by token (the fast scorer's
        polygon index in it is expensive to build the first time)."""
        from irlvla_gym.metrics import prepare_scene

        return self._contexts.get(scene_cache_key(scene), lambda: prepare_scene(scene))

    def clear_cache(self) -> None:
        self._outputs.clear()
        self._contexts.clear()

    # ---- API -----------------------------------------------------------------------------------------------------

    def plan(self, scene: Scene) -> np.ndarray:
        """(8, 3) chosen poses [x, y, yaw] (m, rad) at t = 0.5 .. 4 s, t0 ego frame, rear axle."""
        return self.run(scene).plan.copy()

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        return np.stack([self.plan(s) for s in scenes]) if len(scenes) else np.zeros((0, 8, 3))

    def reference_progress(self, scene: Scene) -> float:
        """The EP normaliser of ``scene`` (m): chosen proposal's progress x its multiplicative product."""
        return self.run(scene).reference_progress

    def run(self, scene: Scene, context=None) -> PDMClosedOutput:
        """Plan ``scene`` (cached by content, :func:`scene_cache_key`) and return all intermediate results.

        Args:
            scene: the scene.
            context: a ``prepare_scene(scene)`` result to reuse (else the planner's own cache is used).
        """
        return self._outputs.get(scene_cache_key(scene), lambda: self._run(scene, context))

    # ---- the algorithm -------------------------------------------------------------------------------------------

    def proposals(self, scene: Scene) -> dict[str, np.ndarray]:
        """Build the IDM proposals of ``scene`` without scoring them (NAVSIM ``PDMGenerator.generate_proposals``).
        The planner sees the red lights at t0, as NAVSIM's ``PDMObservation``.

        Returns:
            dict with ``poses`` (P, S + 1, 3) at 0.1 s (t = 0 .. 4 s; pose 0 = the ego's projection on the proposal
            path, as NAVSIM's trajectory), ``plans`` (P, 8, 3) at 0.5 s, ``speeds`` (P, S + 1), ``progress``
            (P, S + 1) IDM arclength on each proposal's own path, ``offsets`` (P,), ``fractions`` (P,),
            ``target_speed`` (P,), ``centerline`` (J, 3) the route centreline [x, y, heading] (t0 ego frame).
        """
        import shapely
        from shapely.geometry.base import CAP_STYLE

        cfg = self.config
        vehicle = scene.ego.vehicle
        S = cfg.num_steps
        centre = _centerline(scene)
        paths = [centre] + [centre.parallel(o) for o in cfg.lateral_offsets if o != 0.0]
        offsets_u = np.r_[0.0, [o for o in cfg.lateral_offsets if o != 0.0]]
        O, F = len(paths), len(cfg.speed_fractions)
        fractions_u = np.asarray(cfg.speed_fractions, np.float64)
        offsets = np.repeat(offsets_u, F)
        fractions = np.tile(fractions_u, O)
        limit = _current_speed_limit(scene, cfg)
        target_u = fractions_u * (limit if limit is not None else cfg.default_speed_limit)
        target = np.tile(target_u, O)
        obs = _observation(scene, cfg, max(S, cfg.trajectory_poses))
        max_target = float(np.max(target_u))
        ego_length = vehicle.front_length + vehicle.rear_length

        P = O * F
        prog = np.zeros((P, S + 1))
        vel = np.zeros((P, S + 1))
        poses = np.zeros((P, S + 1, 3))
        v0 = float(scene.ego.velocity[0])
        for o, path in enumerate(paths):
            rows = np.arange(o * F, (o + 1) * F)
            p0 = float(path.project(np.zeros((1, 2)))[0])
            prog[rows, 0], vel[rows, 0] = p0, v0
            poses[rows, 0] = path.interpolate(p0)
            corridor = path.substring(p0, p0 + abs(max_target) * cfg.trajectory_poses * cfg.dt).buffer(
                0.5 * vehicle.width, cap_style=CAP_STYLE.square)
            lead = np.zeros((F, 3))  # progress, velocity, rear length (time_idx 0: zeros, as NAVSIM)
            for t in range(1, S + 1):
                if t % cfg.leading_agent_update_rate == 0:
                    polys = obs.at(t)
                    hit = np.flatnonzero(shapely.intersects(polys, corridor) & ~obs.collided) if len(polys) else []
                    obj_prog = path.project(shapely.centroid(polys[hit])) if len(hit) else np.zeros(0)
                    scratch = np.zeros(3)  # NAVSIM reuses one array across the batch: stale fields carry over
                    new = np.zeros((F, 3))
                    for k, row in enumerate(rows):
                        ego_prog = prog[row, t - 1]
                        ahead = hit[obj_prog > ego_prog] if len(hit) else []
                        if len(ahead):
                            x, y, h = poses[row, t - 1]
                            ego_poly = _box_polygons(np.array([[x, y]]), np.array([h]),
                                                     np.array([vehicle.front_length]),
                                                     np.array([vehicle.rear_length]), np.array([0.5 * vehicle.width]))[0]
                            d = shapely.distance(ego_poly, polys[ahead])
                            j = int(np.argmin(d))
                            nearest = ahead[j]
                            scratch[0] = ego_prog + d[j]
                            if not obs.is_red[nearest]:
                                rel = obs.heading[nearest] - h
                                scratch[1] = obs.speed[nearest] * np.cos(rel)
                        else:
                            scratch[0] = path.length
                            scratch[2] = 0.5 * ego_length
                        new[k] = scratch
                    lead = new
                prog[rows, t], vel[rows, t] = _idm_step(prog[rows, t - 1], vel[rows, t - 1], lead[:, 0], lead[:, 1],
                                                        lead[:, 2], target[rows], cfg)
                poses[rows, t] = path.interpolate(prog[rows, t])
        ratio = int(round(0.5 / cfg.dt))
        plans = poses[:, ratio::ratio][:, :8]
        cl = np.concatenate([centre.xy, centre.heading[:, None]], axis=1)
        return {"poses": poses, "plans": plans, "speeds": vel, "progress": prog, "offsets": offsets,
                "fractions": fractions, "target_speed": target, "centerline": cl, "observation": obs}

    def simulate(self, scene: Scene, poses: np.ndarray) -> np.ndarray:
        """Track (K, S + 1, 3) reference poses at 0.1 s (pose 0 included, as NAVSIM's ``PDMSimulator`` tracks the
        proposal states) with the LQR tracker + bicycle from the ego's t0 state. Returns (K, S + 1, 11)."""
        from irlvla_gym.sim.config import SimConfig
        from irlvla_gym.sim.fused import PYTHON_LOOP_MAX_K, StepTables, run_numpy, run_python
        from irlvla_gym.sim.lqr import ReferenceProfiles
        from irlvla_gym.sim.tracker import initial_state

        sim_cfg = SimConfig()
        if self.config.estimate_steering is None:
            start = initial_state(scene, sim_cfg)
        else:
            start = initial_state(scene, sim_cfg, estimate_steering=self.config.estimate_steering)
        poses = np.asarray(poses, np.float64)
        K = poses.shape[0]
        start = np.ascontiguousarray(np.broadcast_to(start, (K, start.shape[-1])))
        reference = ReferenceProfiles.fit(poses, sim_cfg)
        tables = StepTables.build(reference.poses, reference.velocity, reference.curvature, sim_cfg)
        run = run_python if K <= PYTHON_LOOP_MAX_K else run_numpy
        return run(start, tables, sim_cfg)

    def _run(self, scene: Scene, context=None) -> PDMClosedOutput:
        from irlvla_gym.metrics.api import agent_tracks, score_states
        from irlvla_gym.metrics.config import DEFAULT_CONFIG
        from irlvla_gym.metrics.context import AgentTracks
        from irlvla_gym.metrics.result import epdms

        cfg = self.config
        ctx = context if context is not None else self.context(scene)
        prop = self.proposals(scene)
        plans = prop["plans"]
        states = self.simulate(scene, prop["poses"])
        if cfg.agent_forecast == "log":
            seen = agent_tracks(scene, cfg.traffic, states)
        elif cfg.agent_forecast == "constant_velocity":
            # NAVSIM's planner scores its proposals in its own world model (PDMObservation forecasts).
            obs = prop["observation"]
            seen = AgentTracks(obs.boxes[: cfg.num_steps + 1], obs.valid[: cfg.num_steps + 1],
                               np.asarray(scene.agents.category, np.int64))
        else:
            raise ValueError(f"agent_forecast must be 'log' or 'constant_velocity', got {cfg.agent_forecast!r}")
        # NAVSIM's PDMScorer inside the planner: EP normalised among the proposals, no human filter.
        result = score_states(ctx, states, seen, reference_progress=None)
        # The planner's PDMScorer gets no past human trajectory, so its history comfort is 1 for every proposal.
        sub = dict(result.subscores())
        sub["hc"] = np.ones_like(sub["hc"])
        selection = epdms(sub, DEFAULT_CONFIG, has_ec=False)
        best = int(np.argmax(selection))
        # The EP normaliser: navsim/evaluate/pdm_score.py re-simulates PDM-Closed's 0.1 s trajectory (the chosen
        # proposal's states, the same reference and start as above) and scores it against the logged agents.
        chosen = states[best:best + 1]
        real = score_states(ctx, chosen, agent_tracks(scene, cfg.traffic, chosen), reference_progress=None)
        reference = float(real.progress[0] * real.multiplicative[0])
        return PDMClosedOutput(plan=plans[best].copy(), proposals=plans, proposal_poses=prop["poses"],
                               speeds=prop["speeds"], offsets=prop["offsets"], fractions=prop["fractions"],
                               target_speed=prop["target_speed"], best=best, scores=result,
                               reference_progress=reference, states=states, centerline=prop["centerline"])


def _forecast_agents(scene: Scene, num_steps: int, config: PDMClosedConfig) -> tuple[np.ndarray, np.ndarray]:
    """Agent boxes (S + 1, N, 8) and valid mask (S + 1, N) the leader search sees at t = 0 .. S * dt."""
    from irlvla_gym.sim.traffic import log_replay

    if config.agent_forecast == "log":
        track = log_replay(scene, config.dt)
        idx = np.minimum(np.arange(num_steps + 1), track.boxes.shape[0] - 1)
        return track.boxes[idx], track.valid[idx]
    if config.agent_forecast != "constant_velocity":
        raise ValueError(f"agent_forecast must be 'log' or 'constant_velocity', got {config.agent_forecast!r}")
    start = scene.agents.boxes[0]  # (N, 8) at t0
    velocity = np.where(scene.agents.is_static[:, None], 0.0, start[:, 6:8])  # (N, 2)
    t = np.arange(num_steps + 1) * config.dt
    boxes = np.repeat(start[None], num_steps + 1, axis=0)
    boxes[..., :2] += t[:, None, None] * velocity[None]
    valid = np.repeat(scene.agents.valid[:1], num_steps + 1, axis=0)
    return boxes, valid


def scene_cache_key(scene: Scene) -> tuple[str, str]:
    """Cache key of a scene: its token and a digest of all its arrays (``Scene.to_arrays``), so that a scene
    changed under the same token (an edited map, agents, route or ego state) is planned again."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, value in sorted(scene.to_arrays().items()):
        arr = np.ascontiguousarray(value)
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return scene.token, h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Module-level reference planner (the EP normaliser)
# --------------------------------------------------------------------------------------------------------------------

_DEFAULT_PLANNERS: dict[str, PDMClosedPlanner] = {}


def default_planner(traffic: str = "log") -> PDMClosedPlanner:
    """The shared PDM-Closed instance (one per traffic mode) behind :func:`pdm_reference_progress`."""
    planner = _DEFAULT_PLANNERS.get(traffic)
    if planner is None:
        planner = _DEFAULT_PLANNERS[traffic] = PDMClosedPlanner(PDMClosedConfig(traffic=traffic))
    return planner


def pdm_reference_progress(scene: Scene, *, traffic: str = "log", context=None) -> float:
    """EP normaliser of ``scene`` (m): PDM-Closed's chosen proposal's progress x its multiplicative product.

    Cached per scene content (:func:`scene_cache_key`) and traffic mode: a scene edited under the same token gets
    a fresh normaliser. Pass it as ``reference_progress`` to
    :func:`irlvla_gym.metrics.score_plans`.
    """
    return default_planner(traffic).run(scene, context).reference_progress
