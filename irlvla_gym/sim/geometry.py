"""Box geometry of the simulated ego and of agents, vectorised over any leading batch shape.

The scorer builds collision / drivable-area polygons from these corners, so the corner order is fixed:
``[front-left, front-right, rear-right, rear-left]`` (a closed, clockwise ring when x is forward and y left).
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.geometry import oriented_box_corners
from irlvla_gym.scenes.scene import PACIFICA, EgoVehicle
from irlvla_gym.sim.state import StateIndex

def ego_corners(states: np.ndarray, vehicle: EgoVehicle = PACIFICA) -> np.ndarray:
    """Ego box corners.

    Args:
        states: (..., 11) simulated states (or (..., 3) poses [x, y, yaw]): rear-axle pose, m / rad.
        vehicle: ego dimensions (rear axle to front / rear bumper, width).

    Returns:
        (..., 4, 2) float64 corners [front-left, front-right, rear-right, rear-left] in m, same frame as ``states``.
    """
    states = np.asarray(states, dtype=np.float64)
    return oriented_box_corners(states[..., StateIndex.X], states[..., StateIndex.Y], states[..., StateIndex.HEADING],
                                vehicle.front_length, vehicle.rear_length, 0.5 * vehicle.width, clockwise=True)


def ego_centers(states: np.ndarray, vehicle: EgoVehicle = PACIFICA) -> np.ndarray:
    """Ego box centres (..., 2) in m: the rear axle moved ``vehicle.rear_axle_to_center`` forward along the heading
    (nuPlan ``CarFootprint.center``). ``states`` is (..., 11) or (..., 3)."""
    states = np.asarray(states, dtype=np.float64)
    yaw = states[..., StateIndex.HEADING]
    d = vehicle.rear_axle_to_center
    return np.stack([states[..., StateIndex.X] + d * np.cos(yaw), states[..., StateIndex.Y] + d * np.sin(yaw)], -1)


def ego_boxes(states: np.ndarray, vehicle: EgoVehicle = PACIFICA) -> np.ndarray:
    """The ego as agent-style boxes (..., 8) [x, y, yaw, length, width, height, vx, vy]: centre pose, size, and the
    velocity rotated into the frame of the poses (so it is comparable to ``Agents.boxes`` columns 6:8)."""
    states = np.asarray(states, dtype=np.float64)
    out = np.empty(states.shape[:-1] + (8,))
    out[..., 0:2] = ego_centers(states, vehicle)
    yaw = states[..., StateIndex.HEADING]
    out[..., 2] = yaw
    out[..., 3] = vehicle.length
    out[..., 4] = vehicle.width
    out[..., 5] = vehicle.height
    vx, vy = states[..., StateIndex.VELOCITY_X], states[..., StateIndex.VELOCITY_Y]
    c, s = np.cos(yaw), np.sin(yaw)
    out[..., 6] = c * vx - s * vy
    out[..., 7] = s * vx + c * vy
    return out


def agent_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners (..., 4, 2) [front-left, front-right, rear-right, rear-left] (m) of agent boxes (..., 8) with columns
    [x, y, yaw, length, width, height, vx, vy] (centre pose). Invalid (zero-filled) boxes give degenerate corners."""
    boxes = np.asarray(boxes, dtype=np.float64)
    half_length = 0.5 * boxes[..., 3]
    return oriented_box_corners(boxes[..., 0], boxes[..., 1], boxes[..., 2], half_length, half_length,
                                0.5 * boxes[..., 4], clockwise=True)
