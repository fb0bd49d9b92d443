"""Builders for scorer tests and benchmarks: hand-made states, agent tracks and an intersection scene.

States are made from poses with finite differences (no tracker), so a test controls exactly where the ego is.
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.context import AgentTracks
from irlvla_gym.scenes.scene import (
    LIGHT_GREEN, LIGHT_RED, NUM_TIMES, VEHICLE, Agents, EgoState, MapData, PolygonSet, Scene, SceneMetadata,
    route_command,
)

DT = 0.1
T = 41


def states_from_poses(poses: np.ndarray, dt: float = DT) -> np.ndarray:
    """(K, T, 3) rear-axle poses -> (K, T, 11) states: body-frame velocity and acceleration and yaw rate from
    central finite differences (np.gradient)."""
    poses = np.asarray(poses, np.float64)
    poses = poses[None] if poses.ndim == 2 else poses
    K, n, _ = poses.shape
    out = np.zeros((K, n, 11))
    out[..., :3] = poses
    yaw = np.unwrap(poses[..., 2], axis=1)
    vx_w = np.gradient(poses[..., 0], dt, axis=1)
    vy_w = np.gradient(poses[..., 1], dt, axis=1)
    c, s = np.cos(yaw), np.sin(yaw)
    out[..., B.VX] = c * vx_w + s * vy_w
    out[..., B.VY] = -s * vx_w + c * vy_w
    out[..., B.AX] = np.gradient(out[..., B.VX], dt, axis=1)
    out[..., B.AY] = np.gradient(out[..., B.VY], dt, axis=1)
    out[..., B.YAW_RATE] = np.gradient(yaw, dt, axis=1)
    out[..., B.YAW_ACC] = np.gradient(out[..., B.YAW_RATE], dt, axis=1)
    out[..., B.YAW] = B.wrap(yaw)
    return out


def line_states(speed: float | np.ndarray, *, x0: float = 0.0, y0: float = 0.0, yaw: float = 0.0,
                accel: float = 0.0, num: int = T) -> np.ndarray:
    """(K, T, 11) straight-line states from (x0, y0) along ``yaw`` at ``speed`` (m/s, one per plan) with constant
    ``accel`` (speed clipped at 0). Velocity and acceleration columns are exact, not differenced."""
    speeds = np.atleast_1d(np.asarray(speed, np.float64))
    t = np.arange(num) * DT
    v = np.maximum(speeds[:, None] + accel * t[None], 0.0)
    dist = np.concatenate([np.zeros((len(speeds), 1)), np.cumsum(0.5 * (v[:, 1:] + v[:, :-1]) * DT, axis=1)], 1)
    out = np.zeros((len(speeds), num, 11))
    out[..., B.X] = x0 + np.cos(yaw) * dist
    out[..., B.Y] = y0 + np.sin(yaw) * dist
    out[..., B.YAW] = yaw
    out[..., B.VX] = v
    out[..., B.AX] = np.where(v > 0, accel, 0.0)
    return out


def constant_velocity_tracks(specs: list[dict], num: int = T) -> AgentTracks:
    """Agents moving at constant velocity over ``num`` 0.1 s steps. Spec keys: x, y, yaw (0), vx (0), vy (0),
    length (4.5), width (2.0), category (VEHICLE)."""
    n = len(specs)
    boxes = np.zeros((num, n, 8))
    t = np.arange(num) * DT
    for j, a in enumerate(specs):
        vx, vy = a.get("vx", 0.0), a.get("vy", 0.0)
        boxes[:, j, 0] = a["x"] + vx * t
        boxes[:, j, 1] = a["y"] + vy * t
        boxes[:, j, 2] = a.get("yaw", 0.0)
        boxes[:, j, 3] = a.get("length", 4.5)
        boxes[:, j, 4] = a.get("width", 2.0)
        boxes[:, j, 5] = 1.6
        boxes[:, j, 6:8] = vx, vy
    return AgentTracks(boxes, np.ones((num, n), bool), np.array([a.get("category", VEHICLE) for a in specs], np.int64))


def intersection_scene(*, light: int = LIGHT_RED, speed: float = 10.0, agents: list[dict] | None = None,
                       token: str = "intersection") -> Scene:
    """A four-way crossing with a traffic light on the ego's straight connector.

    Geometry (ego frame, lanes 3.5 m wide): the ego road runs along x with the ego lane (y = 0, driving +x) and an
    oncoming lane (y = +3.5, driving -x); the intersection box spans x in [20, 40], y in [-10, 10]; a crossing road
    runs along y at x = 30. Lanes: 0 ego approach (x -60..20), 1 connector straight through (20..40, red by
    default, on route), 2 exit (40..120), 3 oncoming approach (120..40, driving -x), 4 oncoming connector,
    5 oncoming exit (20..-60), 6 crossing road northbound (x = 28.25, y -60..60), 7 southbound (x = 31.75).
    Route: 0 -> 1 -> 2. Lane groups: 0 {0}, 1 {1}, 2 {2}, 3 {3}, 4 {4}, 5 {5}, 6 {6}, 7 {7}.
    """
    w = 3.5
    hw = w / 2

    def lane(x0: float, x1: float, yc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs = np.array([x0, x1])
        sign = 1.0 if x1 > x0 else -1.0
        centre = np.stack([xs, np.full(2, yc)], 1)
        left = np.stack([xs, np.full(2, yc + sign * hw)], 1)
        right = np.stack([xs, np.full(2, yc - sign * hw)], 1)
        return centre, left, right

    def vlane(y0: float, y1: float, xc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ys = np.array([y0, y1])
        sign = 1.0 if y1 > y0 else -1.0
        centre = np.stack([np.full(2, xc), ys], 1)
        left = np.stack([np.full(2, xc - sign * hw), ys], 1)
        right = np.stack([np.full(2, xc + sign * hw), ys], 1)
        return centre, left, right

    lanes = [lane(-60, 20, 0), lane(20, 40, 0), lane(40, 120, 0), lane(120, 40, w), lane(40, 20, w),
             lane(20, -60, w), vlane(-60, 60, 30 - hw), vlane(60, -60, 30 + hw)]
    L = len(lanes)
    is_conn = [False, True, False, False, True, False, False, False]
    is_inter = [False, True, False, False, True, False, False, False]
    lights = np.zeros((NUM_TIMES, L), np.int8)
    lights[:, 1] = light
    lights[:, 4] = LIGHT_GREEN
    road = np.array([[-60, -hw], [120, -hw], [120, w + hw], [-60, w + hw]])
    cross = np.array([[30 - w, -60], [30 + w, -60], [30 + w, 60], [30 - w, 60]])
    box = np.array([[20, -10], [40, -10], [40, 10], [20, 10]], np.float64)
    mp = MapData.from_lists(
        lane_ids=[f"l{i}" for i in range(L)], centerlines=[c for c, _, _ in lanes],
        left_boundaries=[lb for _, lb, _ in lanes], right_boundaries=[rb for _, _, rb in lanes],
        drivable_area=PolygonSet.from_exteriors([road, cross, box]), speed_limits=[15.0] * L,
        is_connector=is_conn, is_intersection=is_inter, lane_group=list(range(L)),
        successors=[(0, 1), (1, 2), (3, 4), (4, 5)], light_state=lights,
        intersections=PolygonSet.from_exteriors([box]))
    hist = np.zeros((4, 3))
    hist[:, 0] = np.arange(-3, 1) * 0.5 * speed
    fut = np.zeros((8, 3))
    fut[:, 0] = np.arange(1, 9) * 0.5 * speed
    if light == LIGHT_RED:  # the expert stops before the stop line at x = 20 (front bumper ~ x + 4.05)
        fut[:, 0] = np.minimum(fut[:, 0], 15.0)
    ego = EgoState(hist, np.tile([speed, 0.0], (4, 1)), np.zeros((4, 2)), fut)
    specs = agents or []
    n = len(specs)
    boxes = np.zeros((NUM_TIMES, n, 8))
    t = np.arange(NUM_TIMES) * 0.5
    for j, a in enumerate(specs):
        vx, vy = a.get("vx", 0.0), a.get("vy", 0.0)
        boxes[:, j, 0], boxes[:, j, 1] = a["x"] + vx * t, a["y"] + vy * t
        boxes[:, j, 2] = a.get("yaw", 0.0)
        boxes[:, j, 3:6] = a.get("length", 4.5), a.get("width", 2.0), 1.6
        boxes[:, j, 6:8] = vx, vy
    ag = Agents(boxes, np.ones((NUM_TIMES, n), bool), np.array([a.get("category", VEHICLE) for a in specs], np.int8),
                np.array([f"agent{j}" for j in range(n)]) if n else np.zeros(0, "<U1"))
    return Scene(SceneMetadata(token, "handmade", map_name="intersection"), ego, ag, mp, np.array([0, 1, 2]),
                 route_command(np.array([[-60.0, 0.0], [120.0, 0.0]]), 40.0))


def random_states(rng: np.random.Generator, K: int, *, speed: tuple[float, float] = (0.0, 15.0),
                  lateral: float = 3.0, yaw_spread: float = 0.4) -> np.ndarray:
    """(K, 41, 11) smooth random ego motions from the origin: random speed, acceleration, curvature drift and
    lateral wiggle (finite-difference states)."""
    t = np.arange(T) * DT
    v0 = rng.uniform(*speed, (K, 1))
    acc = rng.uniform(-3, 2, (K, 1))
    v = np.maximum(v0 + acc * t, 0.0)
    yaw_rate = rng.normal(0, yaw_spread / 4, (K, 1)) + rng.normal(0, yaw_spread / 8, (K, 1)) * np.sin(t)
    yaw = np.cumsum(np.concatenate([np.zeros((K, 1)), yaw_rate[:, :-1] * DT], 1), axis=1)
    yaw += rng.normal(0, yaw_spread / 4, (K, 1))
    x = np.cumsum(np.concatenate([np.zeros((K, 1)), (v * np.cos(yaw))[:, :-1] * DT], 1), axis=1)
    y = np.cumsum(np.concatenate([np.zeros((K, 1)), (v * np.sin(yaw))[:, :-1] * DT], 1), axis=1)
    y += rng.uniform(-lateral, lateral, (K, 1)) * np.clip(t / 2.0, 0, 1)
    return states_from_poses(np.stack([x, y, yaw], -1))
