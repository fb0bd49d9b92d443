"""``compact`` observation: one short float32 vector of hand-made driving features, for MLP policies.

Why: SB3's off-policy algorithms keep a replay buffer of 1M observations (x 2, next observations) by default; the
(8, 128, 128) uint8 BEV makes that 122 GiB, and MLPs learn poorly from raw rasters and polylines in small budgets.
This vector (:data:`COMPACT_DIM` = 126 values, 504 bytes) holds what planning along the route needs, roughly
unit-scaled (divided by the scale in brackets) and clipped to [-10, 10]. Everything is in the *current* ego frame
(rear axle, x forward, y left) at the observed time; the route is NAVSIM's route centreline
(:func:`irlvla_gym.scenes.routing.navsim_route_lanes`), the one the scorer's progress and lane keeping use.

=======  ====================================================================================================
index    features
=======  ====================================================================================================
0-7      ego: speed [10 m/s], lateral velocity vy [10 m/s], acceleration ax, ay [3 m/s^2], command one-hot (4)
8-27     route: has route (1 if the route exists and the ego is within 4 m / 60 deg of it), lateral offset of the
         ego from the centreline [2 m, +left], heading error ego - route [rad], route left ahead [100 m], then
         (x, y) [20 m] of the centreline at 5, 10, 15, 20, 30, 40, 60, 80 m ahead (without a route: straight on)
28-29    speed limit of the ego's route lane [20 m/s] and whether it is known
30-33    distance along the route to the next on-route lane whose light is red [50 m, 2 = none within 100 m]
         and a red-ahead flag; the same for yellow
34-37    lead agent (nearest agent ahead along the route whose centre is within 2 m of the centreline): gap from
         the ego's front to the agent's rear [50 m, 2 = none], its speed along the route [10 m/s], its speed minus
         the ego's [10 m/s], present flag
38-125   the 8 nearest agents within 50 m (nearest first, zeros when absent), 11 values each: x, y [20 m],
         cos yaw, sin yaw, vx, vy [10 m/s], length, width [5 m], distance along the route from the ego [20 m],
         lateral offset from the centreline [5 m], present flag
=======  ====================================================================================================

Lights are the ones at the observed time only (no look-ahead into the log).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from irlvla_gym.cache import LRU
from irlvla_gym.geometry import wrap_angle
from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.common import EgoStatus, agents_at_time, as_pose, light_state_at_time, rotate_to_ego, world_to_ego
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import COMMANDS, LIGHT_RED, LIGHT_YELLOW, Scene

ROUTE_AHEAD = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0)
"""m ahead along the route at which the centreline is sampled."""
NUM_AGENTS = 8
AGENT_RADIUS = 50.0
LEAD_CORRIDOR = 2.0
"""m: an agent is the lead when its centre lies within this distance of the route centreline."""
LIGHT_HORIZON = 100.0
ROUTE_MAX_OFFSET = 4.0
ROUTE_MAX_HEADING = np.pi / 3
BOUND = 10.0
EGO, ROUTE, LIMIT, LIGHTS, LEAD = slice(0, 8), slice(8, 28), slice(28, 30), slice(30, 34), slice(34, 38)
AGENT_VALUES = 11
AGENTS = slice(38, 38 + NUM_AGENTS * AGENT_VALUES)
COMPACT_DIM = AGENTS.stop


@dataclass(frozen=True)
class RouteGeometry:
    """A scene's route centreline in the t0 frame with the lane of each segment.

    Attributes:
        points: (n, 2) centreline (m), n >= 2, or (0, 2) without a route. cum: (n,) arc length.
        segment_lane: (n - 1,) lane index of each segment. lanes: (R,) the route lanes in order.
        lane_start / lane_end: (R,) arc length where each route lane starts / ends.
    """

    points: np.ndarray
    cum: np.ndarray
    segment_lane: np.ndarray
    lanes: np.ndarray
    lane_start: np.ndarray
    lane_end: np.ndarray

    @classmethod
    def from_scene(cls, scene: Scene) -> RouteGeometry:
        from irlvla_gym.scenes.routing import navsim_route_lanes

        lanes = np.asarray(navsim_route_lanes(scene), np.int64) if len(scene.route_lanes) else np.zeros(0, np.int64)
        points: list[np.ndarray] = []
        seg_lane: list[int] = []
        starts, ends, kept = [], [], []
        total = 0.0
        for lane in lanes:
            line = np.asarray(scene.map.lane_centerlines[int(lane)], np.float64)[:, :2]
            if points and len(line) and np.linalg.norm(line[0] - points[-1][-1]) < 1e-2:
                line = line[1:]
            if not len(line):
                continue
            start = total
            if points:  # the segment joining the previous lane's end to this lane's start belongs to this lane
                total += float(np.linalg.norm(line[0] - points[-1][-1]))
                seg_lane.append(int(lane))
            step = np.linalg.norm(np.diff(line, axis=0), axis=1)
            total += float(step.sum())
            seg_lane += [int(lane)] * (len(line) - 1)
            points.append(line)
            starts.append(start)
            ends.append(total)
            kept.append(int(lane))
        pts = np.concatenate(points) if points else np.zeros((0, 2))
        if len(pts) < 2:
            z = np.zeros(0)
            return cls(np.zeros((0, 2)), z, np.zeros(0, np.int64), np.zeros(0, np.int64), z, z)
        cum = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        return cls(pts, cum, np.asarray(seg_lane, np.int64), np.asarray(kept, np.int64), np.asarray(starts),
                   np.asarray(ends))


def project(points: np.ndarray, line: np.ndarray, cum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc length, signed lateral offset (+left) and segment index of (M, 2) points on a (n >= 2, 2) polyline."""
    a, d = line[:-1], np.diff(line, axis=0)
    L2 = np.maximum((d**2).sum(-1), 1e-12)
    rel = points[:, None, :] - a[None]
    t = np.clip((rel * d[None]).sum(-1) / L2, 0.0, 1.0)
    foot = a[None] + t[..., None] * d[None]
    k = np.argmin(((points[:, None] - foot) ** 2).sum(-1), axis=1)
    rows = np.arange(len(points))
    dk = d[k] / np.sqrt(L2[k])[:, None]
    off = points - foot[rows, k]
    return cum[k] + t[rows, k] * np.sqrt(L2[k]), dk[:, 0] * off[:, 1] - dk[:, 1] * off[:, 0], k


def point_at(line: np.ndarray, cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(M, 2) points at arc lengths s along the polyline, extended straight beyond both ends."""
    seg = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(line) - 2)
    d = line[seg + 1] - line[seg]
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return line[seg] + (s - cum[seg])[:, None] * d


class CompactObservation(ObservationType):
    """Key ``compact``: (126,) float32 driving features (see module docs)."""

    key = "compact"

    def __init__(self, config: ObsConfig | None = None, cache: bool = True):
        super().__init__(config)
        self._routes: LRU = LRU(4 * self.config.bev_cache_size if cache else 0)

    def space(self) -> gym.spaces.Dict:
        return gym.spaces.Dict({"compact": gym.spaces.Box(-BOUND, BOUND, (COMPACT_DIM,), np.float32)})

    def route(self, scene: Scene) -> RouteGeometry:
        """The scene's route geometry (cached per scene token)."""
        return self._routes.get(scene.metadata.token, lambda: RouteGeometry.from_scene(scene))

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        pose = as_pose(ego_pose)
        status = ego_status if ego_status is not None else EgoStatus.from_scene(scene, pose)
        out = np.zeros(COMPACT_DIM)
        speed = float(np.hypot(*status.velocity))
        out[EGO] = [speed / 10, status.velocity[1] / 10, status.acceleration[0] / 3, status.acceleration[1] / 3,
                    *np.eye(len(COMMANDS))[int(status.command)]]
        geo = self.route(scene)
        line = world_to_ego(geo.points, pose) if len(geo.points) else geo.points
        s0, on_route = 0.0, False
        if len(line) >= 2:
            s, d, k = project(np.zeros((1, 2)), line, geo.cum)
            seg = line[k[0] + 1] - line[k[0]]
            e0 = float(wrap_angle(-np.arctan2(seg[1], seg[0])))
            on_route = abs(d[0]) <= ROUTE_MAX_OFFSET and abs(e0) <= ROUTE_MAX_HEADING
            s0 = float(s[0])
        if on_route:
            ahead = point_at(line, geo.cum, s0 + np.asarray(ROUTE_AHEAD))
            out[ROUTE] = [1.0, -d[0] / 2, e0, (geo.cum[-1] - s0) / 100, *(ahead / 20).reshape(-1)]
            self._route_features(out, scene, geo, line, s0, int(k[0]), pose, time, speed)
        else:
            ahead = np.stack([np.asarray(ROUTE_AHEAD), np.zeros(len(ROUTE_AHEAD))], 1)
            out[ROUTE] = [0.0, 0.0, 0.0, 0.0, *(ahead / 20).reshape(-1)]
            out[LIGHTS] = [2.0, 0.0, 2.0, 0.0]
            out[LEAD] = [2.0, 0.0, 0.0, 0.0]
        self._agents(out, scene, geo, line if on_route else None, s0, pose, time)
        return {"compact": np.clip(out, -BOUND, BOUND).astype(np.float32)}

    def _route_features(self, out: np.ndarray, scene: Scene, geo: RouteGeometry, line: np.ndarray, s0: float,
                        seg: int, pose: np.ndarray, time: float, speed: float) -> None:
        """Speed limit, lights and lead agent along the route (``out`` filled in place)."""
        limit = float(scene.map.lane_speed_limits[geo.segment_lane[seg]])
        out[LIMIT] = [limit / 20, 1.0] if np.isfinite(limit) else [0.0, 0.0]
        lights = light_state_at_time(scene, time)[geo.lanes]
        ahead = geo.lane_end > s0
        values = []
        for state in (LIGHT_RED, LIGHT_YELLOW):
            hit = np.flatnonzero(ahead & (lights == state) & (geo.lane_start - s0 <= LIGHT_HORIZON))
            dist = max(float(geo.lane_start[hit[0]] - s0), 0.0) if len(hit) else 2 * 50.0
            values += [dist / 50, float(len(hit) > 0)]
        out[LIGHTS] = values
        boxes, valid = agents_at_time(scene, time)
        out[LEAD] = [2.0, 0.0, 0.0, 0.0]
        if not valid.any():
            return
        b = boxes[valid]
        xy = world_to_ego(b[:, :2], pose)
        s, d, k = project(xy, line, geo.cum)
        gap = s - s0 - scene.ego.vehicle.front_length - b[:, 3] / 2
        lead = np.flatnonzero((s > s0) & (np.abs(d) <= LEAD_CORRIDOR))
        if not len(lead):
            return
        j = lead[np.argmin(s[lead])]
        tangent = line[k[j] + 1] - line[k[j]]
        tangent = tangent / max(float(np.linalg.norm(tangent)), 1e-12)
        v_along = float(rotate_to_ego(b[j:j + 1, 6:8], pose[2])[0] @ tangent)
        out[LEAD] = [max(float(gap[j]), 0.0) / 50, v_along / 10, (v_along - speed) / 10, 1.0]

    def _agents(self, out: np.ndarray, scene: Scene, geo: RouteGeometry, line: np.ndarray | None, s0: float,
                pose: np.ndarray, time: float) -> None:
        """The nearest agents (``out`` filled in place)."""
        if not len(scene.agents):
            return
        boxes, valid = agents_at_time(scene, time)
        xy = world_to_ego(boxes[:, :2], pose)
        dist = np.hypot(xy[:, 0], xy[:, 1])
        keep = np.flatnonzero(valid & (dist <= AGENT_RADIUS))
        keep = keep[np.argsort(dist[keep], kind="stable")][:NUM_AGENTS]
        if not len(keep):
            return
        yaw = wrap_angle(boxes[keep, 2] - pose[2])
        vel = rotate_to_ego(boxes[keep, 6:8], pose[2])
        rows = np.zeros((len(keep), AGENT_VALUES))
        rows[:, 0:2] = xy[keep] / 20
        rows[:, 2], rows[:, 3] = np.cos(yaw), np.sin(yaw)
        rows[:, 4:6] = vel / 10
        rows[:, 6:8] = boxes[keep, 3:5] / 5
        if line is not None:
            s, d, _ = project(xy[keep], line, geo.cum)
            rows[:, 8], rows[:, 9] = (s - s0) / 20, d / 5
        else:
            rows[:, 8], rows[:, 9] = xy[keep, 0] / 20, xy[keep, 1] / 5
        rows[:, 10] = 1.0
        out[AGENTS].reshape(NUM_AGENTS, AGENT_VALUES)[:len(keep)] = rows


__all__ = ["COMPACT_DIM", "CompactObservation", "ROUTE_AHEAD", "RouteGeometry", "point_at", "project"]
