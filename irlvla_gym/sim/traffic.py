"""Traffic models: non-reactive log replay and reactive IDM agents, batched over K ego rollouts.

Log replay (NAVSIM non-reactive agents): the 2 Hz scene boxes interpolated to the 0.1 s simulation grid.

Reactive agents (NAVSIM v2 reactive traffic = nuPlan ``IDMAgents`` / ``IDMAgentManager`` / ``IDMPolicy``):

* Vehicles observed at t0 and matched to a lane (nearest centreline by position + heading) drive along that lane's
  centreline and on through successor lanes (route lanes preferred, else the straightest successor), longitudinally
  controlled by the Intelligent Driver Model. Their leader is the nearest obstacle ahead in their lane corridor:
  another agent (reactive, at its simulated pose, or replayed), the ego box of that rollout, or the stop line of a red
  lane ahead. Everything is vectorised over agents and K rollouts; the loop is over the 40 time steps.
* Pedestrians, bicycles, static objects, unmatched vehicles and vehicles that appear after t0 are replayed from the
  log. NAVSIM/nuPlan replay pedestrians and static objects; nuPlan's IDM agents ignore bicycles (they are neither IDM
  agents nor in its open-loop list, so they vanish) - we replay them instead, which keeps them visible to collision
  checks. nuPlan drops vehicles it cannot put on a lane; we replay them.

Known differences to nuPlan's IDM agents (all deliberate; also listed in irlvla_gym/sim/README.md):
* nuPlan snaps agents onto the lane centreline; here an agent keeps its t0 lateral offset, fading out linearly over
  ``TrafficConfig.lateral_offset_decay`` metres, so no box jumps sideways at the first step.
* The IDM desired gap uses Treiber's ``s* = s0 + max(0, v T + v dv / (2 sqrt(a b)))``; nuPlan omits the max(0, .), which
  makes a much faster leader *repel* the follower.
* With ``prevent_overlap`` an agent's progress is clamped so it never drives into its physical leader's box (it can
  only happen when the bounded IDM deceleration is not enough, e.g. after an ego cut-in); nuPlan lets it pass through.
* The leader search is a corridor of the agent's width along its path, ``TrafficConfig.lookahead`` metres long, with
  obstacle boxes tested in the path frame at their nearest path point (nuPlan intersects a projected path polygon with
  an STR-tree of boxes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irlvla_gym.geometry import arc_length, polyline_length, segment_lengths
from irlvla_gym.scenes.scene import DT as SCENE_DT
from irlvla_gym.scenes.scene import LIGHT_RED, VEHICLE, Scene, wrap_angle
from irlvla_gym.sim.config import IDMParams, TrafficConfig
from irlvla_gym.sim.geometry import agent_corners, ego_boxes
from irlvla_gym.sim.state import StateIndex


@dataclass
class AgentTrack:
    """Agent boxes on the simulation grid.

    Attributes:
        boxes: (T, N, 8) for log replay, (K, T, N, 8) for reactive traffic: columns [x, y, yaw, length, width, height,
            vx, vy] (box centre, m / rad, velocity in the t0 ego frame, m/s) at t = 0, dt, .., (T - 1) dt; T = 41.
            Rows where ``valid`` is False are zero-filled.
        valid: (T, N) or (K, T, N) bool, same leading shape as ``boxes[..., 0]``.
        category: (N,) int8 scene agent categories.
        reactive: (N,) bool, True for agents driven by the IDM (always False for log replay).
        dt: [s] time step.
    """

    boxes: np.ndarray
    valid: np.ndarray
    category: np.ndarray
    reactive: np.ndarray
    dt: float = 0.1

    @property
    def num_agents(self) -> int:
        return self.boxes.shape[-2]


def log_replay(scene: Scene, dt: float = 0.1, hold_single_samples: bool = True) -> AgentTrack:
    """Non-reactive agents: the scene's 2 Hz boxes interpolated to ``dt``, as NAVSIM's metric cache does
    (``MetricCacheProcessor._interpolate_gt_observation``).

    An agent is present from its first to its last valid sample; in between, positions, velocities and the yaw
    (along the shortest arc) are interpolated linearly between the neighbouring *valid* samples (a gap in the log is
    bridged, as NAVSIM's interpolator over the observed samples does); sizes are those of the first valid sample.
    At a valid sample time the box equals that sample bit for bit. An agent seen in exactly one sample is held there
    (box and velocity) at every step when ``hold_single_samples`` (NAVSIM appends its one detection at every step);
    False shows it at its sample time only.

    Returns:
        :class:`AgentTrack` with boxes (T, N, 8), valid (T, N), T = 8 * 0.5 / dt + 1 (41 for dt = 0.1).
    """
    boxes, valid = scene.agents.boxes, scene.agents.valid  # (9, N, 8), (9, N)
    ratio = int(round(SCENE_DT / dt))
    if abs(ratio * dt - SCENE_DT) > 1e-9:
        raise ValueError(f"dt {dt} must divide the scene step {SCENE_DT}")
    S, n = boxes.shape[:2]
    fine = np.arange((S - 1) * ratio + 1)
    sample = np.arange(S)
    # Last valid sample at or before each sample index, first valid one at or after (-1 / S where none).
    prev_valid = np.maximum.accumulate(np.where(valid, sample[:, None], -1), axis=0)  # (S, N)
    next_valid = np.minimum.accumulate(np.where(valid, sample[:, None], S)[::-1], axis=0)[::-1]
    pos = fine / ratio  # fine step in sample units
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + (fine % ratio > 0), S - 1)
    left = prev_valid[lo]  # (T, N)
    right = next_valid[hi]
    present = (left >= 0) & (right < S)
    left_c, right_c = np.clip(left, 0, S - 1), np.clip(right, 0, S - 1)
    span = np.maximum(right_c - left_c, 1)
    alpha = np.where(right_c > left_c, (pos[:, None] - left_c) / span, 0.0)  # 0 at a valid sample
    cols = np.arange(n)[None, :]
    b0, b1 = boxes[left_c, cols], boxes[right_c, cols]  # (T, N, 8)
    a = alpha[..., None]
    out = (1.0 - a) * b0 + a * b1  # bit-exact at alpha in {0, 1}
    yaw_step = wrap_angle(b1[..., 2] - b0[..., 2])
    between = wrap_angle(b0[..., 2] + alpha * yaw_step)
    out[..., 2] = np.where(alpha == 1.0, b1[..., 2], np.where(alpha == 0.0, b0[..., 2], between))
    count = valid.sum(axis=0)
    first = np.argmax(valid, axis=0)
    out[..., 3:6] = boxes[first, np.arange(n), 3:6][None]  # sizes of the first detection
    single = count == 1
    if hold_single_samples and single.any():
        out[:, single] = boxes[first[single], np.flatnonzero(single)][None]
        present[:, single] = True
    out[~present] = 0.0
    return AgentTrack(out, present, scene.agents.category.copy(), np.zeros(n, bool), dt)


def idm_acceleration(speed: np.ndarray, lead_distance: np.ndarray, lead_speed: np.ndarray,
                     target_speed: np.ndarray | float, params: IDMParams = IDMParams()) -> np.ndarray:
    """Intelligent Driver Model acceleration (nuPlan ``IDMPolicy``, Treiber's eq. 11.14 / 11.18), elementwise.

    Args:
        speed: (...) follower speed [m/s], >= 0.
        lead_distance: (...) bumper-to-bumper gap to the leader [m]; ``np.inf`` for a free road.
        lead_speed: (...) leader speed along the follower's path [m/s].
        target_speed: (...) or scalar desired speed [m/s].
        params: IDM parameters.

    Returns:
        (...) acceleration [m/s^2], clipped to [-decel_max, accel_max].
    """
    speed = np.asarray(speed, dtype=np.float64)
    a, b = params.accel_max, params.decel_max
    desired_gap = params.min_gap_to_lead_agent + np.maximum(
        0.0, speed * params.headway_time + speed * (speed - lead_speed) / (2.0 * np.sqrt(a * b)))
    # nuPlan clamps the gap to the minimum gap to avoid dividing by ~0 when already too close.
    gap = np.maximum(lead_distance, params.min_gap_to_lead_agent)
    free_road = (speed / np.maximum(target_speed, 1e-3)) ** params.exponent
    accel = a * (1.0 - free_road - (desired_gap / gap) ** 2)
    return np.clip(accel, -b, a)


# ----------------------------------------------------------------------------------------------------------------
# Reactive traffic
# ----------------------------------------------------------------------------------------------------------------


def _lane_segments(scene: Scene):
    """All centreline segments of the map: start (S, 2), direction (S, 2), length (S,), lane (S,), s at start (S,)."""
    lines = scene.map.lane_centerlines
    points = lines.points.astype(np.float64)
    owner = lines.owner
    same_lane = owner[:-1] == owner[1:]
    start, end = points[:-1][same_lane], points[1:][same_lane]
    lane = owner[:-1][same_lane]
    vec = end - start
    length = np.linalg.norm(vec, axis=1)
    cum = np.cumsum(length)
    # Arc length at each segment start within its lane: cumulative length minus the lane's first cumulative value.
    first = np.r_[True, lane[1:] != lane[:-1]]
    lane_base = np.maximum.accumulate(np.where(first, cum - length, 0.0))
    return start, vec, length, lane, cum - length - lane_base


def _match_lanes(scene: Scene, xy: np.ndarray, yaw: np.ndarray, config: TrafficConfig):
    """Lane index (n,) (-1 if none) and arc length on it (n,) for agents at xy (n, 2) with heading yaw (n,)."""
    n = len(xy)
    if scene.map.num_lanes == 0 or n == 0:
        return -np.ones(n, np.int64), np.zeros(n)
    start, vec, length, lane, s_start = _lane_segments(scene)
    length2 = np.maximum(length**2, 1e-12)
    rel = xy[:, None, :] - start[None]  # (n, S, 2)
    t = np.clip(np.einsum("nsc,sc->ns", rel, vec) / length2, 0.0, 1.0)
    dist = np.linalg.norm(rel - t[..., None] * vec[None], axis=-1)
    heading_diff = np.abs(wrap_angle(yaw[:, None] - np.arctan2(vec[:, 1], vec[:, 0])[None]))
    cost = dist + config.lane_match_heading_weight * heading_diff
    cost[(dist > config.lane_match_max_distance) | (heading_diff > config.lane_match_max_heading)] = np.inf
    best = np.argmin(cost, axis=1)
    rows = np.arange(n)
    matched = np.isfinite(cost[rows, best])
    lanes = np.where(matched, lane[best], -1)
    s = s_start[best] + t[rows, best] * length[best]
    return lanes, np.where(matched, s, 0.0)


def _lane_chain(scene: Scene, first_lane: int, min_length: float, route: set[int]) -> list[int]:
    """Lanes from ``first_lane`` on through successors until ``min_length`` metres: a route successor if any, else the
    one whose direction changes least (no revisits)."""
    mp = scene.map
    chain = [first_lane]
    total = polyline_length(mp.lane_centerlines[first_lane])
    while total < min_length:
        current = mp.lane_centerlines[chain[-1]].astype(np.float64)
        successors = [int(s) for s in mp.successors(chain[-1]) if int(s) not in chain]
        if not successors:
            break
        on_route = [s for s in successors if s in route]
        if on_route:
            nxt = on_route[0]
        else:
            end_heading = np.arctan2(*(current[-1] - current[-2])[::-1])
            turns = []
            for s in successors:
                line = mp.lane_centerlines[s].astype(np.float64)
                chord = line[-1] - line[0]
                turns.append(abs(wrap_angle(np.arctan2(chord[1], chord[0]) - end_heading)))
            nxt = successors[int(np.argmin(turns))]
        chain.append(nxt)
        total += polyline_length(mp.lane_centerlines[nxt])
    return chain


def _resample(line: np.ndarray, spacing: float, num: int) -> tuple[np.ndarray, np.ndarray]:
    """``num`` points every ``spacing`` m along a polyline (n, 2), extrapolated straight past its end.
    Returns points (num, 2) and the fractional index of each into the input vertices (num,)."""
    seg = segment_lengths(line)
    keep = np.r_[True, seg > 1e-6]
    line = line[keep]
    cum = arc_length(line)
    s = np.arange(num) * spacing
    xy = np.stack([np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])], -1)
    direction = line[-1] - line[-2]
    direction /= max(np.linalg.norm(direction), 1e-9)
    beyond = s > cum[-1]
    xy[beyond] = line[-1] + (s[beyond] - cum[-1])[:, None] * direction
    vertex = np.interp(s, cum, np.flatnonzero(keep).astype(np.float64))
    return xy, vertex


class IDMTraffic:
    """Reactive traffic for one scene; :meth:`simulate` runs it against K ego rollouts.

    Construction (once per scene) matches vehicles to lanes and builds their paths; ``simulate`` is the vectorised
    time loop. See the module docstring for the behaviour and its differences to nuPlan.

    Args:
        scene: the scene (t0 ego frame).
        config: traffic settings (IDM parameters, matching thresholds, look-ahead).
    """

    def __init__(self, scene: Scene, config: TrafficConfig = TrafficConfig()):
        self.scene = scene
        self.config = config
        self.replay = log_replay(scene, config.dt)
        self.num_times = config.num_steps + 1
        if self.replay.boxes.shape[0] < self.num_times:
            raise ValueError(f"the log covers {self.replay.boxes.shape[0]} steps, {self.num_times} requested")
        agents = scene.agents
        t0_boxes = agents.boxes[0]
        candidates = np.flatnonzero((agents.category == VEHICLE) & agents.valid[0])
        lanes, s_on_lane = _match_lanes(scene, t0_boxes[candidates, :2], t0_boxes[candidates, 2], config)
        matched = lanes >= 0
        self.reactive_index = candidates[matched]  # (R,) indices into the scene agents
        self.reactive = np.zeros(len(agents), bool)
        self.reactive[self.reactive_index] = True
        self._build_paths(lanes[matched], s_on_lane[matched])
        self._build_candidates()

    # ---- setup ---------------------------------------------------------------------------------------------------

    def _build_paths(self, lanes: np.ndarray, s_on_lane: np.ndarray) -> None:
        cfg, idm, mp = self.config, self.config.idm, self.scene.map
        R = len(self.reactive_index)
        boxes0 = self.scene.agents.boxes[0, self.reactive_index]  # (R, 8)
        self.length = boxes0[:, 3].copy()
        self.box_size = boxes0[:, 3:6].copy()
        self.initial_speed = np.hypot(boxes0[:, 6], boxes0[:, 7])
        horizon = cfg.num_steps * cfg.dt
        # Upper bound on the distance an agent can travel, plus the corridor it looks into.
        self.reach = (self.initial_speed + idm.accel_max * horizon) * horizon
        need = s_on_lane + self.reach + cfg.lookahead + self.length + 10.0
        ds = cfg.path_spacing
        num = int(np.ceil((need.max() if R else 0.0) / ds)) + 2
        self.path_xy = np.zeros((R, num, 2))
        self.path_target_speed = np.full((R, num), idm.target_velocity)
        route = {int(i) for i in self.scene.route_lanes}
        stop_lanes, stop_s = [], []
        self.s0 = np.zeros(R)
        for r in range(R):
            chain = _lane_chain(self.scene, int(lanes[r]), need[r], route)
            lines = [mp.lane_centerlines[l].astype(np.float64) for l in chain]
            line = np.concatenate(lines)
            # Arc length (along the centreline chain) where each lane of the chain starts.
            lane_start = np.cumsum([0.0] + [polyline_length(l) for l in lines[:-1]])
            centre, _ = _resample(line, ds, num)
            # Keep the t0 lateral offset, fading it out ahead of the agent (no sideways jump at the first step).
            tangent = np.gradient(centre, axis=0)
            tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
            normal = np.stack([-tangent[:, 1], tangent[:, 0]], -1)
            s_grid = np.arange(num) * ds
            k = int(np.clip(np.round(s_on_lane[r] / ds), 0, num - 1))
            offset0 = float(np.dot(boxes0[r, :2] - centre[k], normal[k]))
            along = s_grid - s_on_lane[r]
            fade = np.clip(1.0 - along / max(cfg.lateral_offset_decay, 1e-6), 0.0, 1.0)
            shifted = centre + (offset0 * fade)[:, None] * normal
            xy, centre_index = _resample(shifted, ds, num)
            centre_s = centre_index * ds  # centreline arc length of each path point
            self.path_xy[r] = xy
            lane_here = np.asarray(chain)[np.clip(np.searchsorted(lane_start, centre_s, side="right") - 1, 0,
                                                  len(chain) - 1)]
            if cfg.use_lane_speed_limit:
                limit = mp.lane_speed_limits[lane_here].astype(np.float64)
                self.path_target_speed[r] = np.where(np.isfinite(limit) & (limit > 0), limit, idm.target_velocity)
            # Agent's progress on its (shifted) path: nearest point, refined on the segment.
            d = np.linalg.norm(xy - boxes0[r, :2], axis=1)
            j = int(np.argmin(d[:-1]))
            seg = xy[j + 1] - xy[j]
            t = np.clip(np.dot(boxes0[r, :2] - xy[j], seg) / max(np.dot(seg, seg), 1e-12), 0.0, 1.0)
            self.s0[r] = (j + t) * ds
            # Stop lines: start of each later lane of the chain, in path arc length.
            starts = np.interp(lane_start[1:], centre_s, s_grid) if len(chain) > 1 else np.zeros(0)
            stop_lanes.append(np.asarray(chain[1:], np.int64))
            stop_s.append(starts)
        Q = max([len(x) for x in stop_lanes], default=0)
        self.stop_lane = -np.ones((R, Q), np.int64)
        self.stop_s = np.full((R, Q), np.inf)
        for r in range(R):
            self.stop_lane[r, :len(stop_lanes[r])] = stop_lanes[r]
            self.stop_s[r, :len(stop_s[r])] = stop_s[r]
        diff = np.diff(self.path_xy, axis=1)
        diff = np.concatenate([diff, diff[:, -1:]], axis=1) if num > 1 else np.zeros_like(self.path_xy)
        self.path_heading = np.arctan2(diff[..., 1], diff[..., 0])  # (R, P) heading of the segment from each point
        self.path_tangent = np.stack([np.cos(self.path_heading), np.sin(self.path_heading)], -1)
        self.window = int(np.ceil(cfg.lookahead / ds)) + 2

    def _build_candidates(self) -> None:
        """(R, C) indices of obstacles (scene agents 0..N-1, ego = N) that can ever be in agent r's corridor, padded
        with -1. Axis-aligned bounding boxes of the swept regions are compared (cheap, conservative)."""
        R, N = len(self.reactive_index), len(self.scene.agents)
        if R == 0:
            self.candidates = -np.ones((0, 1), np.int64)
            return
        ds, margin = self.config.path_spacing, 2.0
        diag = np.hypot(self.scene.agents.boxes[0, :, 3], self.scene.agents.boxes[0, :, 4])
        lo = np.full((N, 2), np.inf)
        hi = np.full((N, 2), -np.inf)
        replay = self.replay
        for n in range(N):  # replayed extents (all agents; reactive ones overwritten below)
            pts = replay.boxes[:self.num_times, n, :2][replay.valid[:self.num_times, n]]
            if len(pts):
                lo[n], hi[n] = pts.min(0) - diag[n] / 2, pts.max(0) + diag[n] / 2
        corridor_lo, corridor_hi = np.zeros((R, 2)), np.zeros((R, 2))
        for r, n in enumerate(self.reactive_index):
            a = int(max(self.s0[r] - self.length[r], 0) / ds)
            b = int(np.ceil((self.s0[r] + self.reach[r] + self.length[r]) / ds)) + 1
            swept = self.path_xy[r, a:b]
            lo[n], hi[n] = swept.min(0) - diag[n] / 2, swept.max(0) + diag[n] / 2
            c = int(np.ceil((self.s0[r] + self.reach[r] + self.config.lookahead + self.length[r]) / ds)) + 1
            ahead = self.path_xy[r, int(self.s0[r] / ds):c]
            corridor_lo[r], corridor_hi[r] = ahead.min(0) - margin, ahead.max(0) + margin
        overlap = np.all((corridor_lo[:, None] <= hi[None]) & (lo[None] <= corridor_hi[:, None]), axis=-1)  # (R, N)
        overlap[np.arange(R), self.reactive_index] = False
        lists = [np.r_[np.flatnonzero(row), N] for row in overlap]  # the ego (index N) is always a candidate
        C = max(len(x) for x in lists)
        self.candidates = -np.ones((R, C), np.int64)
        for r, lst in enumerate(lists):
            self.candidates[r, :len(lst)] = lst

    # ---- simulation ----------------------------------------------------------------------------------------------

    def simulate(self, ego_states: np.ndarray | None = None) -> AgentTrack:
        """Run the reactive traffic against K ego rollouts.

        Args:
            ego_states: (K, 41, 11) simulated ego states (rear axle, :class:`StateIndex`), or None for traffic that
                ignores the ego (K = 1).

        Returns:
            :class:`AgentTrack` with boxes (K, 41, N, 8) and valid (K, 41, N); reactive agents are valid at every
            step, replayed ones follow the log. Row t = 0 is the logged t0 box for every agent.
        """
        cfg = self.config
        T, N = self.num_times, len(self.scene.agents)
        ego, ego_valid = self._ego_obstacle(ego_states)
        K = ego.shape[0]
        boxes = np.broadcast_to(self.replay.boxes[:T], (K, T, N, 8)).copy()
        valid = np.broadcast_to(self.replay.valid[:T], (K, T, N)).copy()
        R = len(self.reactive_index)
        if R == 0:
            return AgentTrack(boxes, valid, self.scene.agents.category.copy(), self.reactive.copy(), cfg.dt)

        ridx = self.reactive_index
        valid[:, :, ridx] = True
        s = np.broadcast_to(self.s0, (K, R)).copy()
        v = np.broadcast_to(self.initial_speed, (K, R)).copy()
        for t in range(T - 1):
            # Obstacles at time t: all agents (reactive at their simulated pose) and the ego box: (K, N + 1, 8).
            obstacles = np.concatenate([boxes[:, t], ego[:, t, None]], axis=1)
            obstacle_valid = np.concatenate([valid[:, t], ego_valid[:, t, None]], axis=1)
            base = np.floor(s / cfg.path_spacing).astype(np.int64)  # (K, R) path index at the agent centre
            lead_gap, lead_speed = self._leaders(obstacles, obstacle_valid, boxes[:, t, ridx], s, base)
            distance, speed_ahead = self._red_light_stops(t, s, lead_gap, lead_speed)
            s, v = self._idm_step(s, v, base, distance, speed_ahead, lead_gap, lead_speed)
            boxes[:, t + 1, ridx] = self._path_boxes(s, v)
        # Row 0 stays the logged box (the replay at t = 0).
        return AgentTrack(boxes, valid, self.scene.agents.category.copy(), self.reactive.copy(), cfg.dt)

    def _ego_obstacle(self, ego_states: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The ego as an obstacle: boxes (K, T, 8) (centre pose, size, velocity; m, rad, m/s) and valid (K, T) from
        (K, >=T, 11) simulated states; for None, K = 1 with no valid ego box."""
        T = self.num_times
        if ego_states is None:
            return np.zeros((1, T, 8)), np.zeros((1, T), bool)
        ego_states = np.asarray(ego_states, dtype=np.float64)
        if ego_states.ndim != 3 or ego_states.shape[1] < T or ego_states.shape[2] != StateIndex.SIZE:
            raise ValueError(f"ego_states must be (K, {T}, 11), got {ego_states.shape}")
        K = ego_states.shape[0]
        return ego_boxes(ego_states[:, :T], self.scene.ego.vehicle), np.ones((K, T), bool)

    def _leaders(self, obstacles: np.ndarray, obstacle_valid: np.ndarray, agent_box: np.ndarray, s: np.ndarray,
                 base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The leading obstacle of each reactive agent in each rollout at one time step.

        Args:
            obstacles: (K, N + 1, 8) boxes of all agents and the ego (index N); obstacle_valid: (K, N + 1).
            agent_box: (K, R) current boxes (K, R, 8) of the reactive agents.
            s: (K, R) arc length (m) of the agents' centres along their paths; base: (K, R) its path index.

        Returns:
            lead_gap (K, R): front bumper to the nearest point of the nearest obstacle in the agent's corridor ahead
            (m, inf if none within the look-ahead); lead_speed (K, R): that obstacle's speed along the path (m/s, >= 0;
            0 without a leader).
        """
        cfg = self.config
        ds, P = cfg.path_spacing, self.path_xy.shape[1]
        half_length = 0.5 * self.length
        cand = self.candidates  # (R, C)
        cand_ok = cand >= 0
        cand_safe = np.where(cand_ok, cand, 0)
        obs = obstacles[:, cand_safe]  # (K, R, C, 8)
        obs_ok = obstacle_valid[:, cand_safe] & cand_ok[None]

        # Cheap pre-test on (rollout, agent, candidate) triples: the obstacle centre is within reach of the corridor
        # and not far behind the agent. Only the surviving triples get the path-frame test (work ~ nearby pairs).
        rel = obs[..., :2] - agent_box[:, :, None, :2]
        obs_half_diag = 0.5 * np.hypot(obs[..., 3], obs[..., 4])
        reach = cfg.lookahead + half_length[None, :, None] + obs_half_diag + 2.0 * ds
        forward = (rel[..., 0] * np.cos(agent_box[:, :, None, 2]) + rel[..., 1] * np.sin(agent_box[:, :, None, 2]))
        near = obs_ok & (rel[..., 0] ** 2 + rel[..., 1] ** 2 < reach**2) & (forward > -obs_half_diag)
        kk, rr, cc = np.nonzero(near)
        gap = np.full(near.shape, np.inf)
        speed_along = np.zeros(near.shape)
        if len(kk):
            o = obs[kk, rr, cc]  # (E, 8)
            s_agent = s[kk, rr]
            idx = np.minimum(base[kk, rr, None] + np.arange(self.window), P - 1)  # (E, W) path window ahead
            win = self.path_xy[rr[:, None], idx]  # (E, W, 2)
            d2 = (win[..., 0] - o[:, None, 0]) ** 2 + (win[..., 1] - o[:, None, 1]) ** 2
            near_idx = idx[np.arange(len(kk)), np.argmin(d2, axis=1)]  # (E,) nearest path point to the centre
            anchor = self.path_xy[rr, near_idx]
            tangent = self.path_tangent[rr, near_idx]
            # The box in the path frame at that point: arc length along, offset across.
            corners = agent_corners(o) - anchor[:, None, :]  # (E, 4, 2)
            along = (near_idx[:, None] * ds + corners[..., 0] * tangent[:, None, 0]
                     + corners[..., 1] * tangent[:, None, 1])
            lateral = tangent[:, None, 0] * corners[..., 1] - tangent[:, None, 1] * corners[..., 0]
            centre_rel = o[:, :2] - anchor
            centre_along = near_idx * ds + centre_rel[:, 0] * tangent[:, 0] + centre_rel[:, 1] * tangent[:, 1]
            hw = 0.5 * self.box_size[rr, 1]
            in_corridor = (lateral.max(-1) >= -hw) & (lateral.min(-1) <= hw)
            gap_e = along.min(-1) - (s_agent + half_length[rr])  # front bumper to the nearest box point
            ahead = in_corridor & (centre_along > s_agent) & (gap_e <= cfg.lookahead)
            gap[kk, rr, cc] = np.where(ahead, gap_e, np.inf)
            speed_along[kk, rr, cc] = np.maximum(o[:, 6] * tangent[:, 0] + o[:, 7] * tangent[:, 1], 0.0)
        lead = np.argmin(gap, axis=-1)  # (K, R)
        lead_gap = np.take_along_axis(gap, lead[..., None], -1)[..., 0]
        lead_speed = np.where(np.isfinite(lead_gap), np.take_along_axis(speed_along, lead[..., None], -1)[..., 0],
                              0.0)
        return lead_gap, lead_speed

    def _red_light_stops(self, t: int, s: np.ndarray, distance: np.ndarray, speed_ahead: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Treat the stop line of the next red lane on each agent's path (at step ``t``) as a standing obstacle
        where it is nearer than the leader: (K, R) distance (m) and speed ahead (m/s) to drive by."""
        cfg = self.config
        if not (cfg.stop_at_red_lights and self.stop_lane.shape[1]):
            return distance, speed_ahead
        # Light states are 0.5 s samples: hold the last one.
        light_step = min(int(np.floor(t * cfg.dt / SCENE_DT + 1e-9)), self.scene.map.lane_light_state.shape[0] - 1)
        light = self.scene.map.lane_light_state[light_step]
        red = (self.stop_lane >= 0) & (light[np.maximum(self.stop_lane, 0)] == LIGHT_RED)  # (R, Q)
        front = (s + 0.5 * self.length)[..., None]
        line_gap = np.where(red[None] & (self.stop_s[None] > front), self.stop_s[None] - front, np.inf)
        light_gap = line_gap.min(-1)
        use_light = light_gap < distance
        return np.where(use_light, light_gap, distance), np.where(use_light, 0.0, speed_ahead)

    def _idm_step(self, s: np.ndarray, v: np.ndarray, base: np.ndarray, distance: np.ndarray,
                  speed_ahead: np.ndarray, lead_gap: np.ndarray, lead_speed: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """One forward-Euler IDM step of the (K, R) path positions ``s`` (m) and speeds ``v`` (m/s) towards the path's
        target speed at ``base``, behind ``distance`` / ``speed_ahead``; with ``prevent_overlap`` an agent never
        advances past its leader's gap ``lead_gap`` and then drives no faster than ``lead_speed``."""
        cfg = self.config
        P = self.path_xy.shape[1]
        agent_rows = np.arange(len(self.reactive_index))[None, :]
        target = self.path_target_speed[agent_rows, np.minimum(base, P - 1)]
        accel = idm_acceleration(v, distance, speed_ahead, target, cfg.idm)
        # nuPlan IDMPolicy.solve_forward_euler_idm_policy: progress with the old speed, then the speed.
        advance = v * cfg.dt
        v_next = np.maximum(v + accel * cfg.dt, 0.0)
        if cfg.prevent_overlap:
            limit = np.maximum(lead_gap, 0.0)
            blocked = advance > limit
            advance = np.where(blocked, limit, advance)
            v_next = np.where(blocked, np.minimum(v_next, lead_speed), v_next)
        return s + advance, v_next

    def _path_boxes(self, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(K, R, 8) boxes of the reactive agents at path arc lengths ``s`` (K, R) (m) with speeds ``v`` (m/s):
        position interpolated on the path, heading of the path segment, logged size, velocity along the heading."""
        ds, P = self.config.path_spacing, self.path_xy.shape[1]
        agent_rows = np.arange(len(self.reactive_index))[None, :]
        f = s / ds
        i0 = np.clip(np.floor(f).astype(np.int64), 0, P - 2)
        frac = (f - i0)[..., None]
        xy = (1.0 - frac) * self.path_xy[agent_rows, i0] + frac * self.path_xy[agent_rows, i0 + 1]
        heading = self.path_heading[agent_rows, i0]
        new = np.empty(s.shape + (8,))
        new[..., 0:2] = xy
        new[..., 2] = heading
        new[..., 3:6] = self.box_size[None]
        new[..., 6] = v * np.cos(heading)
        new[..., 7] = v * np.sin(heading)
        return new


def simulate_idm_agents(scene: Scene, ego_states: np.ndarray | None = None,
                        config: TrafficConfig = TrafficConfig()) -> AgentTrack:
    """Reactive traffic for K ego rollouts in one call (``IDMTraffic(scene, config).simulate(ego_states)``).

    Args:
        scene: the scene.
        ego_states: (K, 41, 11) simulated ego states or None (agents ignore the ego; K = 1).
        config: traffic settings.

    Returns:
        :class:`AgentTrack`, boxes (K, 41, N, 8), valid (K, 41, N), ``reactive`` (N,) marks IDM-driven agents.
    """
    return IDMTraffic(scene, config).simulate(ego_states)
