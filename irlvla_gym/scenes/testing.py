"""Tiny hand-built scenes for unit tests and examples (no generator, no files)."""

from __future__ import annotations

import numpy as np

from irlvla_gym.scenes.scene import (
    NUM_TIMES, VEHICLE, Agents, EgoState, MapData, PolygonSet, Scene, SceneMetadata, route_command,
)


def straight_road_scene(
    *,
    speed: float = 10.0,
    num_lanes: int = 2,
    lane_width: float = 3.5,
    ego_lane: int = 0,
    length_behind: float = 60.0,
    length_ahead: float = 120.0,
    agents: list[dict] | None = None,
    token: str = "straight-road",
) -> Scene:
    """A straight road along +x with ``num_lanes`` same-direction lanes; lane 0 holds the ego, lane i is i widths to
    the right (y = -i * lane_width). The expert drives straight at constant ``speed`` (m/s).

    ``agents``: dicts with keys x, y, yaw (default 0), vx (default 0), vy (0), length (4.5), width (2.0), height
    (1.6), category (VEHICLE); they move at constant velocity over the 4 s.
    """
    hist = np.zeros((4, 3))
    hist[:, 0] = np.arange(-3, 1) * 0.5 * speed
    fut = np.zeros((8, 3))
    fut[:, 0] = np.arange(1, 9) * 0.5 * speed
    ego = EgoState(hist, np.tile([speed, 0.0], (4, 1)), np.zeros((4, 2)), fut)
    xs = np.array([-length_behind, length_ahead])
    centers, lefts, rights = [], [], []
    for i in range(num_lanes):
        yc = -(i - ego_lane) * lane_width
        centers.append(np.stack([xs, np.full(2, yc)], 1))
        lefts.append(np.stack([xs, np.full(2, yc + lane_width / 2)], 1))
        rights.append(np.stack([xs, np.full(2, yc - lane_width / 2)], 1))
    top = lane_width * (ego_lane + 0.5)
    bottom = top - num_lanes * lane_width
    drivable = PolygonSet.from_exteriors(
        [np.array([[xs[0], bottom], [xs[1], bottom], [xs[1], top], [xs[0], top]])])
    mp = MapData.from_lists(
        lane_ids=[f"lane{i}" for i in range(num_lanes)], centerlines=centers, left_boundaries=lefts,
        right_boundaries=rights, drivable_area=drivable, speed_limits=[15.0] * num_lanes,
        lane_group=[0] * num_lanes,
        left_neighbor=[i - 1 for i in range(num_lanes)],
        right_neighbor=[i + 1 if i + 1 < num_lanes else -1 for i in range(num_lanes)],
    )
    specs = agents or []
    n = len(specs)
    boxes = np.zeros((NUM_TIMES, n, 8))
    t = np.arange(NUM_TIMES) * 0.5
    for j, a in enumerate(specs):
        vx, vy = a.get("vx", 0.0), a.get("vy", 0.0)
        boxes[:, j, 0] = a["x"] + vx * t
        boxes[:, j, 1] = a["y"] + vy * t
        boxes[:, j, 2] = a.get("yaw", 0.0)
        boxes[:, j, 3:6] = a.get("length", 4.5), a.get("width", 2.0), a.get("height", 1.6)
        boxes[:, j, 6:8] = vx, vy
    ag = Agents(boxes, np.ones((NUM_TIMES, n), bool), np.array([a.get("category", VEHICLE) for a in specs], np.int8),
                np.array([f"agent{j}" for j in range(n)]) if n else np.zeros(0, "<U1"))
    return Scene(SceneMetadata(token, "handmade", map_name="straight"), ego, ag, mp,
                 np.array([ego_lane]), route_command(centers[ego_lane], max(4 * speed, 10.0)))
