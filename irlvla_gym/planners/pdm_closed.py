"""PDM-Closed: NAVSIM's rule-based reference planner and the EP normaliser of the EPDMS scorer.

Mirrors navsim/planning/simulation/planner/pdm_planner/pdm_closed_planner.py and
abstract_pdm_closed_planner.py (``_get_closed_loop_trajectory``), in numpy and vectorised over the proposals:

1. Centreline: the scene's route centreline (``Scene.route_centerline()``), extended straight beyond both ends so
   that every proposal has road to drive on, resampled every ``path_spacing`` m
   (PDMPath / ``_get_discrete_centerline``).
2. Proposals: 15 = lateral offsets {0, -1, +1} m of the centreline x IDM policies at fractions {0.2, .., 1.0} of the
   current lane's speed limit (15 m/s when unknown). Each proposal is a longitudinal IDM profile (min gap 1 m,
   headway 1.5 s, accel 1.5 m/s^2, decel 3 m/s^2) integrated at 0.1 s along its offset path
   (``BatchIDMPolicy.propagate``); poses lie on the offset path at the IDM progress, heading = path heading.
3. Leader (PDMObservation + ``_get_leading_object``): at every step, the nearest obstacle ahead of the front bumper in
   the proposal's corridor (the offset path widened to the ego width): agent boxes, and red on-route lane-connector
   polygons (stopped obstacles; a light that turns green later frees the way). The agents are what PDMObservation
   sees: the t0 boxes moved at their t0 velocity (static objects fixed) -- ``agent_forecast="constant_velocity"``,
   the default -- or, as an oracle variant, the log-replayed future boxes (``agent_forecast="log"``).
4. The 15 proposals (sampled at 0.5 s, 8 poses) are simulated with the LQR tracker and scored with the EPDMS scorer
   against the same agents the planner sees, with EP normalised among the proposals themselves (NAVSIM's PDMScorer
   inside the planner), no human filter; the best by score wins (``np.argmax``, ties to the first: centreline, then
   the slower policy, as NAVSIM's ordering).

Why the forecast matters: with the log-replayed future the planner is an oracle that never collides and always
finds the fastest safe proposal, so it scores ~0.99 EPDMS on the real samples and its progress (the EP normaliser)
pushes the logged human's EP down to ~0.72 (human EPDMS 0.889). With NAVSIM's own observation model it scores
~0.95, and the human ~0.91 -- the relation NAVSIM reports (human above or near PDM-Closed).

The EP normaliser of the scorer is the chosen proposal's progress x its multiplicative product
(:func:`pdm_reference_progress`; navsim/evaluate/pdm_score.py scores PDM-Closed alongside the agent).

Deviations (documented, small):
* The corridor test is done in the path's Frenet frame: a box intersects the corridor when its extent along the local
  path normal overlaps [offset - w/2, offset + w/2] (exact on straight paths; a shapely polygon intersection in
  NAVSIM). The box's along-path interval is its centre's arclength +- its extent along the local tangent.
* The proposals are scored from their 8 poses at 0.5 s (as any agent's plan), not from NAVSIM's 0.1 s proposal
  states, so re-scoring the returned plan reproduces the planner's own numbers exactly.
* Horizon 4 s (NAVSIM plans 5 s; only 4 s is scored).
* Red-light state follows the log over the horizon (held between 2 Hz samples), as the scorer's TLC does, in both
  forecast modes; NAVSIM's observation keeps the t0 state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from irlvla_gym.planners.base import PlannerBase
from irlvla_gym.scenes.scene import Scene
from irlvla_gym.sim.config import IDMParams
from irlvla_gym.sim.traffic import idm_acceleration

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
        path_spacing: resampling step of the centreline (m).
        path_extension: straight extension before the start and after the end of the route (m).
        path_length_ahead: how far ahead of the ego the path is kept (m); covers 4 s at ~35 m/s.
        red_light_entered_tolerance: a red connector whose entry lies more than this behind the front bumper at t0
            is considered already entered and ignored (m).
        agent_forecast: what the IDM leader search sees of the agents over the horizon: "log" (the log-replayed
            future boxes at each step; an oracle) or "constant_velocity" (the t0 boxes moved at their t0 velocity,
            static categories fixed: tuplan_garage / NAVSIM ``PDMObservation``, which forecasts the current
            detections with ``dynamic_object_dxy``). With "constant_velocity" the proposals are also *scored*
            against that forecast (NAVSIM's planner-internal PDMScorer sees only its own observation); the EP
            normaliser is then the chosen plan re-scored against the real agents (``traffic``).
        traffic: agents used to *score* the proposals: "log" (non-reactive replay) or "idm" (reactive).
        context_cache_size: scorer contexts kept per planner (``prepare_scene`` results, keyed by token).
    """

    speed_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    lateral_offsets: tuple[float, ...] = (0.0, -1.0, 1.0)
    default_speed_limit: float = 15.0
    idm: IDMParams = PDM_IDM_PARAMS
    dt: float = 0.1
    num_steps: int = 40
    path_spacing: float = 1.0
    path_extension: float = 200.0
    path_length_ahead: float = 160.0
    red_light_entered_tolerance: float = 1.0
    agent_forecast: str = "constant_velocity"
    traffic: str = "log"
    context_cache_size: int = 8

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


# --------------------------------------------------------------------------------------------------------------------
# Geometry of the proposal path
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Path:
    """The (extended, resampled) route centreline in the t0 ego frame.

    Attributes:
        xy: (J, 2) vertices every ``spacing`` m.
        s: (J,) arclength (m) of each vertex; 0 = start of the route centreline (negative on the back extension).
        heading: (J,) unwrapped heading (rad) of the path at each vertex (central differences).
        normal: (J, 2) unit left normal at each vertex.
    """

    xy: np.ndarray
    s: np.ndarray
    heading: np.ndarray
    normal: np.ndarray

    def at(self, s: np.ndarray, offset: np.ndarray | float = 0.0) -> np.ndarray:
        """(..., 3) poses [x, y, yaw] at arclengths ``s`` (...) on the path shifted by ``offset`` (m, +left)."""
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        h = np.interp(s, self.s, self.heading)
        nx, ny = -np.sin(h), np.cos(h)
        out = np.stack([x + offset * nx, y + offset * ny, h], axis=-1)
        out[..., 2] = (out[..., 2] + np.pi) % (2.0 * np.pi) - np.pi
        return out

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frenet coordinates of (M, 2) points: arclength s (M,), lateral offset d (M,, +left), path heading (M,).

        Nearest vertex first, then the offset along its tangent (exact to O(spacing^2 * curvature)).
        """
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if not len(pts):
            z = np.zeros(0)
            return z, z, z
        d2 = ((pts[:, None, :] - self.xy[None]) ** 2).sum(-1)  # (M, J)
        j = np.argmin(d2, axis=1)
        rel = pts - self.xy[j]
        h = self.heading[j]
        c, si = np.cos(h), np.sin(h)
        along = rel[:, 0] * c + rel[:, 1] * si
        lateral = -rel[:, 0] * si + rel[:, 1] * c
        return self.s[j] + along, lateral, h


def _build_path(scene: Scene, config: PDMClosedConfig) -> tuple[_Path, float, float]:
    """Route centreline as a :class:`_Path`, plus the ego's (rear axle, origin) arclength s0 and lateral offset d0.

    An empty or degenerate route falls back to the straight line along the ego's heading (x axis).
    """
    line = scene.route_centerline().astype(np.float64) if len(scene.route_lanes) else np.zeros((0, 2))
    if len(line) >= 2:
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        line = line[np.r_[True, seg > 1e-3]]
    if len(line) < 2:
        line = np.array([[0.0, 0.0], [1.0, 0.0]])
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.r_[0.0, np.cumsum(seg)]
    ext = config.path_extension
    d_start = (line[1] - line[0]) / seg[0]
    d_end = (line[-1] - line[-2]) / seg[-1]
    # Straight extensions: the ego may stand before the route start (adapter crop) or reach its end within 4 s.
    full = np.concatenate([(line[0] - ext * d_start)[None], line, (line[-1] + ext * d_end)[None]])
    full_s = np.r_[-ext, cum, cum[-1] + ext]
    s_grid = np.arange(full_s[0], full_s[-1] + 1e-9, config.path_spacing)
    xy = np.stack([np.interp(s_grid, full_s, full[:, 0]), np.interp(s_grid, full_s, full[:, 1])], axis=-1)
    # Keep the stretch around the ego (nearest vertex to the origin) so projections stay cheap.
    s_ego_rough = s_grid[int(np.argmin((xy ** 2).sum(-1)))]
    keep = (s_grid >= s_ego_rough - 30.0) & (s_grid <= s_ego_rough + config.path_length_ahead)
    xy, s_grid = xy[keep], s_grid[keep]
    diff = np.gradient(xy, axis=0)
    heading = np.unwrap(np.arctan2(diff[:, 1], diff[:, 0]))
    normal = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)
    path = _Path(xy, s_grid, heading, normal)
    s0, d0, _ = path.project(np.zeros((1, 2)))
    return path, float(s0[0]), float(d0[0])


def _route_lane_start_s(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Arclength (m) of the start of each route lane on ``scene.route_centerline()``, and the route lanes (R,)."""
    lanes = np.asarray(scene.route_lanes, np.int64)
    starts = np.zeros(len(lanes))
    total, prev_end = 0.0, None
    for i, lane in enumerate(lanes):
        line = np.asarray(scene.map.lane_centerlines[int(lane)], np.float64)
        if prev_end is not None:
            total += float(np.linalg.norm(line[0] - prev_end))  # concat_polylines joins lanes with a segment
        starts[i] = total
        total += float(np.linalg.norm(np.diff(line, axis=0), axis=1).sum())
        prev_end = line[-1]
    return starts, lanes


def _current_speed_limit(scene: Scene, s0: float, config: PDMClosedConfig) -> float:
    """Speed limit (m/s) of the route lane under the ego (NAVSIM: the current lane's ``speed_limit_mps``)."""
    starts, lanes = _route_lane_start_s(scene)
    if not len(lanes):
        return config.default_speed_limit
    i = int(np.clip(np.searchsorted(starts, s0, side="right") - 1, 0, len(lanes) - 1))
    limit = float(scene.map.lane_speed_limits[lanes[i]])
    return limit if np.isfinite(limit) and limit > 0 else config.default_speed_limit


# --------------------------------------------------------------------------------------------------------------------
# Obstacles in the proposal corridors
# --------------------------------------------------------------------------------------------------------------------


def _agent_intervals(path: _Path, boxes: np.ndarray, valid: np.ndarray, offsets: np.ndarray, half_width: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along-path intervals of agent boxes that intrude into each offset corridor.

    Args:
        path: the centreline.
        boxes: (T, N, 8) agent boxes [x, y, yaw, length, width, height, vx, vy] per 0.1 s step (t0 ego frame).
        valid: (T, N) bool.
        offsets: (O,) corridor offsets (m, +left).
        half_width: half the ego width (m).

    Returns:
        s_lo, s_hi: (O, T, N) arclength interval (m) of the box along the path; +inf / -inf where the box is invalid
        or misses the corridor. speed: (T, N) agent velocity along the path (m/s).
    """
    T, N = valid.shape
    O = len(offsets)
    s_lo = np.full((O, T, N), np.inf)
    s_hi = np.full((O, T, N), -np.inf)
    speed = np.zeros((T, N))
    if N == 0:
        return s_lo, s_hi, speed
    # Cheap prefilter: agents that never come near the path (bounding box of the path + margin) are dropped.
    lo, hi = path.xy.min(0), path.xy.max(0)
    reach = 0.5 * np.hypot(boxes[..., 3], boxes[..., 4]) + half_width + np.abs(offsets).max() + 2.0
    xy = boxes[..., :2]
    near = valid & np.all(xy > lo - reach[..., None], -1) & np.all(xy < hi + reach[..., None], -1)
    t_idx, n_idx = np.nonzero(near)
    if not len(t_idx):
        return s_lo, s_hi, speed
    b = boxes[t_idx, n_idx]  # (M, 8)
    s, d, h = path.project(b[:, :2])
    rel_yaw = b[:, 2] - h
    cos, sin = np.abs(np.cos(rel_yaw)), np.abs(np.sin(rel_yaw))
    half_l, half_w = 0.5 * b[:, 3], 0.5 * b[:, 4]
    extent_normal = half_l * sin + half_w * cos
    extent_tangent = half_l * cos + half_w * sin
    speed[t_idx, n_idx] = b[:, 6] * np.cos(h) + b[:, 7] * np.sin(h)
    hits = np.abs(d[None, :] - offsets[:, None]) < extent_normal[None, :] + half_width  # (O, M)
    for o in range(O):
        m = hits[o]
        s_lo[o, t_idx[m], n_idx[m]] = s[m] - extent_tangent[m]
        s_hi[o, t_idx[m], n_idx[m]] = s[m] + extent_tangent[m]
    return s_lo, s_hi, speed


def _red_light_entries(scene: Scene, path: _Path, red: np.ndarray, offsets: np.ndarray, half_width: float,
                       s_front0: float, tolerance: float) -> np.ndarray:
    """Arclength (m) where each offset corridor enters a red on-route connector, per 0.1 s step.

    Args:
        red: (T, L) bool, on-route connector red at that step (the scorer's ``ScoringContext.red_connectors``).
        s_front0: front bumper arclength at t0 (m); connectors entered more than ``tolerance`` before it are ignored
            (the ego is already inside: stopping there helps nobody).

    Returns:
        (O, T) entry arclength, +inf where no red connector blocks the corridor.
    """
    T = red.shape[0]
    out = np.full((len(offsets), T), np.inf)
    lanes = np.flatnonzero(red.any(axis=0))
    for lane in lanes:
        ring = np.asarray(scene.map.lane_polygons.exterior(int(lane)), np.float64)
        s, d, _ = path.project(ring)
        if s.max() <= s_front0 or s.min() < s_front0 - tolerance:
            continue
        crosses = (d.min() < offsets + half_width) & (d.max() > offsets - half_width)  # (O,)
        entry = np.where(crosses, s.min(), np.inf)  # (O,)
        out = np.where(red[None, :, lane], np.minimum(out, entry[:, None]), out)
    return out


# --------------------------------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------------------------------


class PDMClosedPlanner(PlannerBase):
    """NAVSIM's PDM-Closed (see the module docstring). Usable as a planner and as the scorer's EP reference.

    Results are cached per scene token (the last ``cache_size`` scenes), so planning and
    :meth:`reference_progress` on the same scene cost one run.
    """

    name = "pdm_closed"

    def __init__(self, config: PDMClosedConfig = PDMClosedConfig(), cache_size: int = 4096):
        self.config = config
        self._outputs: OrderedDict[str, PDMClosedOutput] = OrderedDict()
        self._contexts: OrderedDict[str, object] = OrderedDict()
        self._cache_size = cache_size

    # ---- caches --------------------------------------------------------------------------------------------------

    def context(self, scene: Scene):
        """The scorer's :func:`~irlvla_gym.metrics.prepare_scene` for ``scene``, cached by token (the fast scorer's
        polygon index in it is expensive to build the first time)."""
        from irlvla_gym.metrics import prepare_scene

        ctx = self._contexts.get(scene.token)
        if ctx is None:
            ctx = prepare_scene(scene)
            self._contexts[scene.token] = ctx
            while len(self._contexts) > self.config.context_cache_size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(scene.token)
        return ctx

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
        """Plan ``scene`` (cached by token) and return all intermediate results.

        Args:
            scene: the scene.
            context: a ``prepare_scene(scene)`` result to reuse (else the planner's own cache is used).
        """
        out = self._outputs.get(scene.token)
        if out is not None:
            self._outputs.move_to_end(scene.token)
            return out
        out = self._run(scene, context)
        self._outputs[scene.token] = out
        while len(self._outputs) > self._cache_size:
            self._outputs.popitem(last=False)
        return out

    # ---- the algorithm -------------------------------------------------------------------------------------------

    def proposals(self, scene: Scene, red_connectors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Build the IDM proposals of ``scene`` without scoring them.

        Args:
            red_connectors: (41, L) bool red on-route connectors per 0.1 s step (the scorer context's); computed
                from the scene when None.

        Returns:
            dict with ``poses`` (P, S + 1, 3) at 0.1 s (t = 0 .. 4 s), ``plans`` (P, 8, 3) at 0.5 s, ``speeds``
            (P, S + 1), ``offsets`` (P,), ``fractions`` (P,), ``target_speed`` (P,).
        """
        cfg = self.config
        vehicle = scene.ego.vehicle
        half_width = 0.5 * vehicle.width
        path, s0, _ = _build_path(scene, cfg)
        offsets_u = np.asarray(cfg.lateral_offsets, np.float64)  # (O,)
        fractions_u = np.asarray(cfg.speed_fractions, np.float64)  # (F,)
        O, F = len(offsets_u), len(fractions_u)
        # Offset-major order, as NAVSIM enumerates (path, policy) pairs: ties go to the centreline.
        off_idx = np.repeat(np.arange(O), F)  # (P,)
        offsets = offsets_u[off_idx]
        fractions = np.tile(fractions_u, O)
        limit = _current_speed_limit(scene, s0, cfg)
        target = fractions * limit  # (P,)

        S = cfg.num_steps
        boxes, valid = _forecast_agents(scene, S, cfg)
        s_lo, s_hi, agent_speed = _agent_intervals(path, boxes, valid, offsets_u, half_width)  # (O, T, N)
        if red_connectors is None:
            red_connectors = _red_connectors(scene, S + 1, cfg.dt)
        red_entry = _red_light_entries(scene, path, red_connectors[: S + 1], offsets_u, half_width,
                                       s0 + vehicle.front_length, cfg.red_light_entered_tolerance)  # (O, T)

        P = len(offsets)
        s = np.full(P, s0)
        v = np.full(P, max(float(scene.ego.velocity[0]), 0.0))
        s_hist = np.empty((P, S + 1))
        v_hist = np.empty((P, S + 1))
        s_hist[:, 0], v_hist[:, 0] = s, v
        rows = np.arange(P)
        for t in range(S):
            front = s + vehicle.front_length  # (P,) front bumper arclength
            rear = s - vehicle.rear_length
            lo, hi = s_lo[off_idx, t], s_hi[off_idx, t]  # (P, N)
            # Obstacles ahead: some part beyond the front bumper, and starting ahead of the ego's rear (an agent
            # level with the ego only grazing the widened corridor is not a leader).
            ahead = (hi > front[:, None]) & (lo > rear[:, None])
            gap_agents = np.where(ahead, lo - front[:, None], np.inf)
            if gap_agents.shape[1]:
                lead = np.argmin(gap_agents, axis=1)
                gap = gap_agents[rows, lead]
                lead_speed = np.maximum(agent_speed[t][lead], 0.0)
            else:
                gap = np.full(P, np.inf)
                lead_speed = np.zeros(P)
            red_gap = red_entry[off_idx, t] - front
            red_gap = np.where(red_gap > -cfg.red_light_entered_tolerance, np.maximum(red_gap, 0.0), np.inf)
            use_red = red_gap < gap
            gap = np.where(use_red, red_gap, np.maximum(gap, 0.0))
            lead_speed = np.where(use_red, 0.0, lead_speed)
            accel = idm_acceleration(v, gap, lead_speed, target, cfg.idm)
            # Forward Euler: progress with the old speed, then the speed (nuPlan / PDM BatchIDMPolicy).
            s = s + v * cfg.dt
            v = np.maximum(v + accel * cfg.dt, 0.0)
            s_hist[:, t + 1], v_hist[:, t + 1] = s, v
        poses = path.at(s_hist, offsets[:, None])  # (P, S + 1, 3)
        ratio = int(round(0.5 / cfg.dt))
        plans = poses[:, ratio::ratio][:, :8]
        return {"poses": poses, "plans": plans, "speeds": v_hist, "offsets": offsets, "fractions": fractions,
                "target_speed": target}

    def _run(self, scene: Scene, context=None) -> PDMClosedOutput:
        from irlvla_gym.metrics.api import agent_tracks, score_states
        from irlvla_gym.metrics.context import AgentTracks
        from irlvla_gym.sim import simulate_plans

        cfg = self.config
        ctx = context if context is not None else self.context(scene)
        prop = self.proposals(scene, ctx.red_connectors)
        plans = prop["plans"]
        states = simulate_plans(scene, plans)
        if cfg.agent_forecast == "log":
            seen = agent_tracks(scene, cfg.traffic, states)
        else:
            # NAVSIM's planner scores its proposals in its own world model (PDMObservation forecasts).
            boxes, valid = _forecast_agents(scene, cfg.num_steps, cfg)
            seen = AgentTracks(boxes, valid, np.asarray(scene.agents.category, np.int64))
        # NAVSIM's PDMScorer inside the planner: EP normalised among the proposals, no human filter.
        result = score_states(ctx, states, seen, reference_progress=None)
        best = int(np.argmax(result.epdms))
        if cfg.agent_forecast == "log":
            reference = float(result.progress[best] * result.multiplicative[best])
        else:
            # The EP normaliser is the chosen plan as the real scorer sees it (navsim/evaluate/pdm_score.py scores
            # the PDM-Closed trajectory against the logged agents).
            chosen = states[best:best + 1]
            real = score_states(ctx, chosen, agent_tracks(scene, cfg.traffic, chosen), reference_progress=None)
            reference = float(real.progress[0] * real.multiplicative[0])
        return PDMClosedOutput(plan=plans[best].copy(), proposals=plans, proposal_poses=prop["poses"],
                               speeds=prop["speeds"], offsets=prop["offsets"], fractions=prop["fractions"],
                               target_speed=prop["target_speed"], best=best, scores=result,
                               reference_progress=reference)


def _forecast_agents(scene: Scene, num_steps: int, config: PDMClosedConfig) -> tuple[np.ndarray, np.ndarray]:
    """Agent boxes (S + 1, N, 8) and valid mask (S + 1, N) the leader search sees at t = 0 .. S * dt."""
    from irlvla_gym.sim.traffic import log_replay

    if config.agent_forecast == "log":
        track = log_replay(scene, config.dt)
        return track.boxes[: num_steps + 1], track.valid[: num_steps + 1]
    if config.agent_forecast != "constant_velocity":
        raise ValueError(f"agent_forecast must be 'log' or 'constant_velocity', got {config.agent_forecast!r}")
    start = scene.agents.boxes[0]  # (N, 8) at t0
    velocity = np.where(scene.agents.is_static[:, None], 0.0, start[:, 6:8])  # (N, 2)
    t = np.arange(num_steps + 1) * config.dt
    boxes = np.repeat(start[None], num_steps + 1, axis=0)
    boxes[..., :2] += t[:, None, None] * velocity[None]
    valid = np.repeat(scene.agents.valid[:1], num_steps + 1, axis=0)
    return boxes, valid


def _red_connectors(scene: Scene, num_states: int, dt: float) -> np.ndarray:
    """(T, L) bool red on-route connectors per step, the scorer's rule (``metrics.context.prepare_scene``)."""
    from irlvla_gym.metrics.context import on_route_lane_mask
    from irlvla_gym.scenes.scene import LIGHT_RED

    mp = scene.map
    sample = np.minimum(np.arange(num_states) * dt / 0.5 + 1e-9, mp.lane_light_state.shape[0] - 1).astype(np.int64)
    return (mp.lane_light_state[sample] == LIGHT_RED) & (on_route_lane_mask(scene) & mp.lane_is_connector)[None]


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

    Cached per scene token (and traffic mode). Pass it as ``reference_progress`` to
    :func:`irlvla_gym.metrics.score_plans`.
    """
    return default_planner(traffic).run(scene, context).reference_progress
