"""Shared helpers for observation builders: ego poses, frame transforms, agents and lights at an arbitrary time.

Every builder observes a scene from an *ego pose* ``(x, y, yaw)`` given in the scene's t0 frame (rear axle, x
forward, y left, m and rad) at a *time* ``t`` in seconds after t0 (0 <= t <= 4). The plan-once env observes at the
origin and t = 0; the closed-loop env at the simulated pose every 0.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from irlvla_gym.geometry import arc_length
from irlvla_gym.geometry import box_corners  # noqa: F401  (re-exported: (N, >=5) boxes -> (N, 4, 2), CCW from FL)
from irlvla_gym.scenes.scene import DT, NUM_TIMES, Scene, wrap_angle

MAX_TIME = DT * (NUM_TIMES - 1)
"""Last time (s) at which agents and lights are known (4.0 s)."""


def as_pose(ego_pose: np.ndarray | Sequence[float] | None) -> np.ndarray:
    """(3,) float64 pose [x, y, yaw]; None means the scene origin (0, 0, 0)."""
    if ego_pose is None:
        return np.zeros(3)
    pose = np.asarray(ego_pose, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(pose)):
        raise ValueError(f"ego pose must be finite, got {pose}")
    return pose


def as_pose_batch(ego_poses: np.ndarray | None, n: int) -> np.ndarray:
    """(n, 3) float64 poses; None means n origins."""
    if ego_poses is None:
        return np.zeros((n, 3))
    poses = np.asarray(ego_poses, dtype=np.float64).reshape(-1, 3)
    if len(poses) != n:
        raise ValueError(f"got {len(poses)} ego poses for {n} scenes")
    return poses


def as_time_batch(times: np.ndarray | float | None, n: int) -> np.ndarray:
    """(n,) float64 times (s); a scalar is broadcast, None means t = 0."""
    if times is None:
        return np.zeros(n)
    t = np.broadcast_to(np.asarray(times, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    return t


def world_to_ego(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Transform (..., 2) scene-frame points into the frame of ``pose`` (3,). Returns float64 (..., 2)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    dx = points[..., 0] - pose[0]
    dy = points[..., 1] - pose[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


def rotate_to_ego(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate (..., 2) scene-frame direction vectors (velocities) into a frame with heading ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * vectors[..., 0] + s * vectors[..., 1], -s * vectors[..., 0] + c * vectors[..., 1]], axis=-1)


def agents_at_time(scene: Scene, time: float) -> tuple[np.ndarray, np.ndarray]:
    """Agent boxes at ``time`` (s after t0), interpolated between the 0.5 s samples.

    Between two samples where the agent is valid at both, position, size and velocity are interpolated linearly and
    yaw along the shorter arc. Where only the nearer sample is valid its values are used; validity follows the
    nearer sample. Times after 4 s are clamped to 4 s. Times before t0 (for the faded past in the BEV) extrapolate
    the t0 box back at its t0 velocity.

    Returns:
        boxes: (N, 8) float64 [x, y, yaw, length, width, height, vx, vy] in the scene t0 frame.
        valid: (N,) bool.
    """
    boxes_all, valid_all = scene.agents.boxes, scene.agents.valid
    if time < 0.0:
        boxes = boxes_all[0].copy()
        boxes[:, 0:2] += boxes[:, 6:8] * time
        return boxes, valid_all[0].copy()
    u = min(time, MAX_TIME) / DT
    i0 = min(int(np.floor(u)), NUM_TIMES - 1)
    i1 = min(i0 + 1, NUM_TIMES - 1)
    w = u - i0
    if w < 1e-9 or i0 == i1:
        return boxes_all[i0].copy(), valid_all[i0].copy()
    b0, b1 = boxes_all[i0], boxes_all[i1]
    v0, v1 = valid_all[i0], valid_all[i1]
    both = v0 & v1
    nearer_is_0 = w < 0.5
    boxes = np.where(nearer_is_0, np.where(v0[:, None], b0, b1), np.where(v1[:, None], b1, b0))
    valid = v0 if nearer_is_0 else v1
    if both.any():
        lerp = b0 + w * (b1 - b0)
        lerp[:, 2] = wrap_angle(b0[:, 2] + w * wrap_angle(b1[:, 2] - b0[:, 2]))
        boxes = np.where(both[:, None], lerp, boxes)
    return boxes, valid.copy()


def light_state_at_time(scene: Scene, time: float) -> np.ndarray:
    """(L,) int8 traffic-light state of every lane at ``time``: the last 0.5 s sample at or before it (held)."""
    k = int(np.clip(np.floor(max(time, 0.0) / DT + 1e-9), 0, NUM_TIMES - 1))
    return scene.map.lane_light_state[k]


def thick_polyline_ring(line: np.ndarray, half_width: float) -> np.ndarray:
    """Closed ring (2n, 2) of a (n, 2) polyline thickened by ``half_width`` (m) on both sides (vertex normals)."""
    line = np.asarray(line, np.float64)
    d = np.gradient(line, axis=0) if len(line) > 2 else np.repeat(np.diff(line, axis=0), 2, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    return np.concatenate([line + half_width * normal, (line - half_width * normal)[::-1]])


def polyline_piece(line: np.ndarray, length: float, from_start: bool = True) -> np.ndarray:
    """The first (or last) ``length`` metres of a (n, 2) polyline, (m, 2) with interpolated end point."""
    line = np.asarray(line, np.float64)
    if not from_start:
        return polyline_piece(line[::-1], length)[::-1]
    cum = arc_length(line)
    if cum[-1] <= length:
        return line
    k = int(np.searchsorted(cum, length))
    end = np.array([np.interp(length, cum, line[:, 0]), np.interp(length, cum, line[:, 1])])
    return np.vstack([line[:k], end])


@dataclass(frozen=True)
class EgoStatus:
    """The ego's kinematic state at the observed time, as the simulator knows it.

    Attributes:
        velocity: (2,) [vx, vy] m/s in the current ego (body) frame.
        acceleration: (2,) [ax, ay] m/s^2 in the current ego frame.
        history: (4, 3) poses [x, y, yaw] in the scene t0 frame at t - 1.5, t - 1.0, t - 0.5, t; the last row is the
            current pose.
        command: driving command index into ``COMMANDS``.
    """

    velocity: np.ndarray
    acceleration: np.ndarray
    history: np.ndarray
    command: int

    @classmethod
    def from_scene(cls, scene: Scene, ego_pose: np.ndarray | None = None) -> "EgoStatus":
        """The logged status at t0 (velocity, acceleration, history, command); the last history row is replaced by
        ``ego_pose`` when given. Envs that simulate the ego pass their own status instead."""
        history = scene.ego.history.copy()
        if ego_pose is not None:
            history[-1] = as_pose(ego_pose)
        return cls(scene.ego.velocity.copy(), scene.ego.acceleration.copy(), history, int(scene.command))
