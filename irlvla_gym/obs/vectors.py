"""``agents`` and ``map`` observations: padded vector sets with masks, for vector-based (transformer) policies.

Everything is in the *current* ego frame (pose and time of the observation), float32, nearest first, padded with
zeros where the mask is 0.

``agents`` (``max_agents`` = 32 slots, :data:`AGENT_FEATURES`, 14 values):
    x, y (m), cos yaw, sin yaw, vx, vy (m/s), length, width (m), one-hot over ``AGENT_CATEGORIES`` (vehicle,
    pedestrian, bicycle, traffic_cone, barrier, generic_object). Agents valid at the observed time within
    ``agents_radius`` m, sorted by distance. ``agents_mask``: (32,) uint8, 1 = real agent.

``agents_future`` (only with ``ObsConfig.agents_future = "logged"``; (``max_agents``, 8, 4) float32):
    the logged future of the same slots at 0.5, 1.0, .. 4.0 s after the observed time (clamped to the log's 4 s):
    x, y (m), vx, vy (m/s) in the observed ego frame. A slot whose agent is not logged at that time (it left) sits at
    (+bound, +bound) with zero velocity, far from every plan. Privileged: it is the log's answer, which the rule-based
    scorer reads too; for reward models and other teachers, never a policy input.

``map`` (``max_polylines`` = 64 slots x ``points_per_polyline`` = 20 points, :data:`MAP_FEATURES`, 11 values):
    x, y (m), unit tangent dx, dy, then per-polyline flags: lane, connector, crosswalk, on_route, light_red,
    light_yellow, light_green (lights at the observed time). Polylines: lane/connector centrelines cut into pieces of
    at most ``map_segment_length`` m, and closed crosswalk outlines, each resampled to 20 equally spaced points;
    the ones with a point within ``map_radius`` m are kept, sorted by their nearest point's distance.
    ``map_mask``: (64,) uint8, 1 = real polyline (all its 20 points are real).

Coordinates are clipped to +-``vector_coordinate_bound`` m so values always lie in the declared Box.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from irlvla_gym.cache import LRU
from irlvla_gym.geometry import arc_length, polyline_length
from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.common import EgoStatus, agents_at_time, as_pose, light_state_at_time, rotate_to_ego, world_to_ego
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW, MAX_BOX_SIZE, MAX_SPEED, Scene, wrap_angle,
)

AGENT_FEATURES = ("x", "y", "cos_yaw", "sin_yaw", "vx", "vy", "length", "width") + tuple(
    f"is_{c}" for c in AGENT_CATEGORIES)
MAP_FEATURES = ("x", "y", "dx", "dy", "is_lane", "is_connector", "is_crosswalk", "on_route", "light_red",
                "light_yellow", "light_green")
_LANE, _CONNECTOR, _CROSSWALK, _ROUTE = 4, 5, 6, 7
_LIGHT_COLUMN = {LIGHT_RED: 8, LIGHT_YELLOW: 9, LIGHT_GREEN: 10}
AGENTS_FUTURE_TIMES = np.arange(1, 9) * 0.5  # s after the observed time: the plan's pose times


def _resample(line: np.ndarray, num: int) -> np.ndarray:
    """(num, 2) points equally spaced by arc length along a (n, 2) polyline."""
    cum = arc_length(line)
    s = np.linspace(0.0, cum[-1], num)
    return np.stack([np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])], axis=-1)


def _split(line: np.ndarray, max_length: float) -> list[np.ndarray]:
    """Cut a polyline into consecutive pieces of at most ``max_length`` m (equal lengths), sharing end points."""
    cum = arc_length(line)
    count = max(1, int(np.ceil(cum[-1] / max_length - 1e-9)))
    if count == 1:
        return [line]
    cuts = np.linspace(0.0, cum[-1], count + 1)
    pieces = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        inner = (cum > a) & (cum < b)
        s = np.r_[a, cum[inner], b]
        pieces.append(np.stack([np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])], axis=-1))
    return pieces


@dataclass(frozen=True)
class PreparedMapVectors:
    """Map polylines of one scene, resampled, in the scene t0 frame.

    Attributes:
        points: (K, P, 2) float64 resampled points. tangents: (K, P, 2) unit tangents.
        static_flags: (K, 4) float32 [lane, connector, crosswalk, on_route]. lane: (K,) int64 lane index or -1.
    """

    points: np.ndarray
    tangents: np.ndarray
    static_flags: np.ndarray
    lane: np.ndarray

    @classmethod
    def from_scene(cls, scene: Scene, config: ObsConfig) -> "PreparedMapVectors":
        mp = scene.map
        num = config.points_per_polyline
        on_route = np.zeros(mp.num_lanes, bool)
        on_route[np.asarray(scene.route_lanes, np.int64)] = True
        points, flags, lanes = [], [], []
        for i in range(mp.num_lanes):
            line = mp.lane_centerlines[i].astype(np.float64)
            if polyline_length(line) < 1e-6:
                continue
            for piece in _split(line, config.map_segment_length):
                points.append(_resample(piece, num))
                connector = bool(mp.lane_is_connector[i])
                flags.append([not connector, connector, False, bool(on_route[i])])
                lanes.append(i)
        for c in range(mp.crosswalks.count):
            ring = mp.crosswalks.exterior(c).astype(np.float64)
            points.append(_resample(np.vstack([ring, ring[:1]]), num))
            flags.append([False, False, True, False])
            lanes.append(-1)
        pts = np.asarray(points, np.float64).reshape(-1, num, 2)
        tangents = np.gradient(pts, axis=1) if num > 1 else np.zeros_like(pts)
        tangents /= np.maximum(np.linalg.norm(tangents, axis=-1, keepdims=True), 1e-9)
        return cls(pts, tangents, np.asarray(flags, np.float32).reshape(-1, 4), np.asarray(lanes, np.int64))


class AgentsObservation(ObservationType):
    """Keys ``agents`` (max_agents, 14) float32 and ``agents_mask`` (max_agents,) uint8, and with
    ``ObsConfig.agents_future == "logged"`` also ``agents_future`` (max_agents, 8, 4) float32 (see module docs)."""

    key = "agents"

    def __init__(self, config: ObsConfig | None = None):
        super().__init__(config)
        n_cat, b = len(AGENT_CATEGORIES), self.config.vector_coordinate_bound
        self._low = np.array([-b, -b, -1, -1, -MAX_SPEED, -MAX_SPEED, 0, 0] + [0] * n_cat, np.float32)
        self._high = np.array([b, b, 1, 1, MAX_SPEED, MAX_SPEED, MAX_BOX_SIZE, MAX_BOX_SIZE] + [1] * n_cat,
                              np.float32)

    def space(self) -> gym.spaces.Dict:
        c = self.config
        low, high = self._low, self._high
        shape = (c.max_agents, len(AGENT_FEATURES))
        spaces = {
            "agents": gym.spaces.Box(np.broadcast_to(low, shape), np.broadcast_to(high, shape), shape, np.float32),
            "agents_mask": gym.spaces.Box(0, 1, (c.max_agents,), np.uint8),
        }
        if c.agents_future == "logged":
            b = c.vector_coordinate_bound
            f_shape = (c.max_agents, len(AGENTS_FUTURE_TIMES), 4)
            f_bound = np.broadcast_to(np.array([b, b, MAX_SPEED, MAX_SPEED], np.float32), f_shape)
            spaces["agents_future"] = gym.spaces.Box(-f_bound, f_bound, f_shape, np.float32)
        return gym.spaces.Dict(spaces)

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        c = self.config
        pose = as_pose(ego_pose)
        features = np.zeros((c.max_agents, len(AGENT_FEATURES)), np.float32)
        mask = np.zeros(c.max_agents, np.uint8)
        keep = np.zeros(0, np.int64)
        if len(scene.agents):
            boxes, valid = agents_at_time(scene, time)
            xy = world_to_ego(boxes[:, :2], pose)
            dist = np.hypot(xy[:, 0], xy[:, 1])
            keep = np.flatnonzero(valid & (dist <= c.agents_radius))
            keep = keep[np.argsort(dist[keep], kind="stable")][:c.max_agents]
            n = len(keep)
            yaw = wrap_angle(boxes[keep, 2] - pose[2])
            rows = np.zeros((n, len(AGENT_FEATURES)))
            rows[:, 0:2] = xy[keep]
            rows[:, 2], rows[:, 3] = np.cos(yaw), np.sin(yaw)
            rows[:, 4:6] = rotate_to_ego(boxes[keep, 6:8], pose[2])
            rows[:, 6:8] = boxes[keep, 3:5]
            rows[np.arange(n), 8 + scene.agents.category[keep].astype(np.int64)] = 1.0
            features[:n] = np.clip(rows, self._low, self._high)
            mask[:n] = 1
        out = {"agents": features, "agents_mask": mask}
        if c.agents_future == "logged":
            out["agents_future"] = self._logged_future(scene, pose, time, keep)
        return out

    def _logged_future(self, scene: Scene, pose: np.ndarray, time: float, keep: np.ndarray) -> np.ndarray:
        """(max_agents, 8, 4) logged [x, y, vx, vy] of the agents ``keep`` (scene indices, slot order) at the plan's
        pose times after ``time``, in the ego frame of ``pose``; unlogged times far away (module docs)."""
        c = self.config
        b = c.vector_coordinate_bound
        future = np.zeros((c.max_agents, len(AGENTS_FUTURE_TIMES), 4), np.float32)
        future[:, :, :2] = b
        if not len(keep):
            return future
        for k, dt in enumerate(AGENTS_FUTURE_TIMES):
            boxes, valid = agents_at_time(scene, time + float(dt))
            ok = valid[keep]
            rows = np.zeros((len(keep), 4))
            rows[:, :2] = np.clip(world_to_ego(boxes[keep, :2], pose), -b, b)
            rows[:, 2:] = np.clip(rotate_to_ego(boxes[keep, 6:8], pose[2]), -MAX_SPEED, MAX_SPEED)
            future[:len(keep), k][ok] = rows[ok]
        return future


class MapObservation(ObservationType):
    """Keys ``map`` (max_polylines, points_per_polyline, 11) float32 and ``map_mask`` (max_polylines,) uint8."""

    key = "map"

    def __init__(self, config: ObsConfig | None = None, cache: bool = True):
        super().__init__(config)
        self._prepared: LRU = LRU(4 * self.config.bev_cache_size if cache else 0)

    def space(self) -> gym.spaces.Dict:
        c = self.config
        b = c.vector_coordinate_bound
        low = np.array([-b, -b, -1, -1] + [0] * 7, np.float32)
        high = np.array([b, b, 1, 1] + [1] * 7, np.float32)
        shape = (c.max_polylines, c.points_per_polyline, len(MAP_FEATURES))
        return gym.spaces.Dict({
            "map": gym.spaces.Box(np.broadcast_to(low, shape), np.broadcast_to(high, shape), shape, np.float32),
            "map_mask": gym.spaces.Box(0, 1, (c.max_polylines,), np.uint8),
        })

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        c = self.config
        pose = as_pose(ego_pose)
        prepared = self._prepared.get(scene.metadata.token, lambda: PreparedMapVectors.from_scene(scene, c))
        features = np.zeros((c.max_polylines, c.points_per_polyline, len(MAP_FEATURES)), np.float32)
        mask = np.zeros(c.max_polylines, np.uint8)
        if len(prepared.points):
            local = world_to_ego(prepared.points, pose)  # (K, P, 2)
            nearest = np.sqrt((local ** 2).sum(-1).min(1))
            keep = np.flatnonzero(nearest <= c.map_radius)
            keep = keep[np.argsort(nearest[keep], kind="stable")][:c.max_polylines]
            n = len(keep)
            b = c.vector_coordinate_bound
            features[:n, :, 0:2] = np.clip(local[keep], -b, b)
            features[:n, :, 2:4] = rotate_to_ego(prepared.tangents[keep], pose[2])
            features[:n, :, _LANE:_ROUTE + 1] = prepared.static_flags[keep, None, :]
            lanes = prepared.lane[keep]
            lights = light_state_at_time(scene, time) if scene.map.num_lanes else np.zeros(1, np.int8)
            states = np.where(lanes >= 0, lights[np.maximum(lanes, 0)], 0)
            for state, column in _LIGHT_COLUMN.items():
                features[:n, :, column] = (states == state)[:, None]
            features[:n, :, 2:4] = np.clip(features[:n, :, 2:4], -1.0, 1.0)
            mask[:n] = 1
        return {"map": features, "map_mask": mask}
