"""Ego and agent boxes for scoring, with NAVSIM's corner order, and the box overlap tests the scorer uses.

The corner order matters: NC's "front bumper" test uses the segment between corner 0 (front left) and corner 3
(front right), as ``BBCoordsIndex`` in navsim/.../pdm_planner/utils/pdm_enums.py (FRONT_LEFT, REAR_LEFT, REAR_RIGHT,
FRONT_RIGHT, CENTER). Plain box geometry (corners of centre-based boxes, angle wrapping) is
:mod:`irlvla_gym.geometry`'s; ``box_corners`` and ``wrap`` are re-exported here for the scorer's callers.
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.geometry import box_corners, short_axis_max, short_axis_min, wrap_angle
from irlvla_gym.scenes.scene import EgoVehicle

__all__ = [
    "AX", "AY", "CENTER", "FRONT_LEFT", "FRONT_RIGHT", "NUM_STATE_COLUMNS", "REAR_LEFT", "REAR_RIGHT", "STEER",
    "STEER_RATE", "VX", "VY", "X", "Y", "YAW", "YAW_ACC", "YAW_RATE", "box_corners", "box_points", "boxes_overlap",
    "ego_box_points", "ego_offsets", "relative_bearing", "segment_box_overlap", "wrap",
]

# State columns of the simulator output (irlvla_gym.sim.state.StateIndex), repeated here so the scorer imports
# without the simulator; tests check they agree.
X, Y, YAW, VX, VY, AX, AY, STEER, STEER_RATE, YAW_RATE, YAW_ACC = range(11)
NUM_STATE_COLUMNS = 11

FRONT_LEFT, REAR_LEFT, REAR_RIGHT, FRONT_RIGHT, CENTER = range(5)

wrap = wrap_angle  # the scorer's historical name: angles (rad) wrapped to [-pi, pi)


def ego_offsets(vehicle: EgoVehicle) -> tuple[np.ndarray, np.ndarray, float]:
    """Body-frame offsets of the ego box points from the rear axle.

    Returns:
        lon (5,), lat (5,) (m) of [front-left, rear-left, rear-right, front-right, centre], and the radius (m) of
        the box's bounding circle around its centre (the scorer's ego-agent prefilters).
    """
    half_w = 0.5 * vehicle.width
    lon = np.array([vehicle.front_length, -vehicle.rear_length, -vehicle.rear_length, vehicle.front_length,
                    vehicle.rear_axle_to_center])
    lat = np.array([half_w, half_w, -half_w, -half_w, 0.0])
    return lon, lat, 0.5 * np.hypot(vehicle.length, vehicle.width)


def box_points(states: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Points at body-frame offsets from rear-axle poses.

    Args:
        states: (..., >=3) with [x, y, yaw] (m, m, rad) of the rear axle in the columns 0..2.
        lon, lat: (P,) offsets (m), or (R, 1, P) with one set per row of states (R, T, >=3).

    Returns:
        (..., P, 2) points (m).
    """
    x, y, yaw = states[..., X], states[..., Y], states[..., YAW]
    c, s = np.cos(yaw), np.sin(yaw)
    px = x[..., None] + c[..., None] * lon - s[..., None] * lat
    py = y[..., None] + s[..., None] * lon + c[..., None] * lat
    return np.stack([px, py], axis=-1)


def ego_box_points(states: np.ndarray, vehicle: EgoVehicle) -> np.ndarray:
    """Ego box corners and centre from rear-axle states.

    Args:
        states: (..., >=3) with [x, y, yaw] (m, m, rad) of the rear axle in the columns 0..2.
        vehicle: ego dimensions.

    Returns:
        (..., 5, 2) points [front-left, rear-left, rear-right, front-right, centre] (m).
    """
    lon, lat, _ = ego_offsets(vehicle)
    return box_points(states, lon, lat)


def relative_bearing(ego_xy: np.ndarray, ego_yaw: np.ndarray, target_xy: np.ndarray) -> np.ndarray:
    """Angle (rad, [-pi, pi)) of the direction ego -> target relative to the ego heading.

    This is the angle nuPlan's ``is_agent_ahead`` / ``is_agent_behind`` (nuplan/planning/metrics/utils/
    collision_utils.py) compare with 30 / 150 degrees. Broadcasts over leading axes; xy have a trailing axis of 2.
    """
    d = target_xy - ego_xy
    return wrap_angle(np.arctan2(d[..., 1], d[..., 0]) - ego_yaw)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test of rectangles, row-wise.

    Args:
        a, b: (M, 4, 2) corners (m) in ring order.

    Returns:
        (M,) bool, True where they overlap; touching counts (shapely ``intersects``, as NAVSIM's STRtree query).
    """
    axes = np.stack([a[:, 1] - a[:, 0], a[:, 2] - a[:, 1], b[:, 1] - b[:, 0], b[:, 2] - b[:, 1]], axis=1)  # (M,4,2)
    ux, uy = axes[:, :, 0:1], axes[:, :, 1:2]  # (M, 4, 1)
    pa = ux * a[:, None, :, 0] + uy * a[:, None, :, 1]  # (M, 4 axes, 4 corners)
    pb = ux * b[:, None, :, 0] + uy * b[:, None, :, 1]
    separated = (short_axis_max(pa, -1) < short_axis_min(pb, -1)) | (short_axis_max(pb, -1) < short_axis_min(pa, -1))
    return ~separated.any(axis=1)


def segment_box_overlap(p: np.ndarray, q: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Separating-axis test of segments against rectangles, row-wise.

    Args:
        p, q: (M, 2) segment end points (m).
        box: (M, 4, 2) rectangle corners (m) in ring order.

    Returns:
        (M,) bool, True where they overlap; touching counts.
    """
    d = q - p
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    axes = np.stack([box[:, 1] - box[:, 0], box[:, 2] - box[:, 1], normal], axis=1)  # (M, 3, 2)
    pb = np.einsum("mkd,mcd->mkc", axes, box)
    pp = np.einsum("mkd,md->mk", axes, p)
    pq = np.einsum("mkd,md->mk", axes, q)
    smin, smax = np.minimum(pp, pq), np.maximum(pp, pq)
    separated = (smax < short_axis_min(pb, -1)) | (short_axis_max(pb, -1) < smin)
    return ~separated.any(axis=1)
