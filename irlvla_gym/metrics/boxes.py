"""Ego and agent box corners for scoring, with NAVSIM's corner order.

The corner order matters: NC's "front bumper" test uses the segment between corner 0 (front left) and corner 3
(front right), as ``BBCoordsIndex`` in navsim/.../pdm_planner/utils/pdm_enums.py (FRONT_LEFT, REAR_LEFT, REAR_RIGHT,
FRONT_RIGHT, CENTER).
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.scenes.scene import EgoVehicle

# State columns of the simulator output (irlvla_gym.sim.state.StateIndex), repeated here so the scorer imports
# without the simulator; tests check they agree.
X, Y, YAW, VX, VY, AX, AY, STEER, STEER_RATE, YAW_RATE, YAW_ACC = range(11)
NUM_STATE_COLUMNS = 11

FRONT_LEFT, REAR_LEFT, REAR_RIGHT, FRONT_RIGHT, CENTER = range(5)


def ego_box_points(states: np.ndarray, vehicle: EgoVehicle) -> np.ndarray:
    """Ego box corners and centre from rear-axle states.

    Args:
        states: (..., >=3) with [x, y, yaw] (m, m, rad) of the rear axle in the columns 0..2.
        vehicle: ego dimensions.

    Returns:
        (..., 5, 2) points [front-left, rear-left, rear-right, front-right, centre] (m).
    """
    x, y, yaw = states[..., X], states[..., Y], states[..., YAW]
    c, s = np.cos(yaw), np.sin(yaw)
    half_w = 0.5 * vehicle.width
    # (5,) longitudinal / lateral offsets in the body frame (rear-axle origin).
    lon = np.array([vehicle.front_length, -vehicle.rear_length, -vehicle.rear_length, vehicle.front_length,
                    vehicle.rear_axle_to_center])
    lat = np.array([half_w, half_w, -half_w, -half_w, 0.0])
    px = x[..., None] + c[..., None] * lon - s[..., None] * lat
    py = y[..., None] + s[..., None] * lon + c[..., None] * lat
    return np.stack([px, py], axis=-1)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners of centre-based oriented boxes.

    Args:
        boxes: (..., >=5) [x, y, yaw, length, width, ...] (m, rad).

    Returns:
        (..., 4, 2) corners [front-left, rear-left, rear-right, front-right] (m).
    """
    x, y, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 2]
    hl, hw = 0.5 * boxes[..., 3], 0.5 * boxes[..., 4]
    c, s = np.cos(yaw), np.sin(yaw)
    lon = np.stack([hl, -hl, -hl, hl], axis=-1)
    lat = np.stack([hw, hw, -hw, -hw], axis=-1)
    px = x[..., None] + c[..., None] * lon - s[..., None] * lat
    py = y[..., None] + s[..., None] * lon + c[..., None] * lat
    return np.stack([px, py], axis=-1)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) to [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def relative_bearing(ego_xy: np.ndarray, ego_yaw: np.ndarray, target_xy: np.ndarray) -> np.ndarray:
    """Angle (rad, [-pi, pi)) of the direction ego -> target relative to the ego heading.

    This is the angle nuPlan's ``is_agent_ahead`` / ``is_agent_behind`` (nuplan/planning/metrics/utils/
    collision_utils.py) compare with 30 / 150 degrees. Broadcasts over leading axes; xy have a trailing axis of 2.
    """
    d = target_xy - ego_xy
    return wrap(np.arctan2(d[..., 1], d[..., 0]) - ego_yaw)
