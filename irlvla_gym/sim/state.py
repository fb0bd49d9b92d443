"""Ego state vector layout used by the tracking simulation, mirroring NAVSIM's ``StateIndex``
(navsim/planning/simulation/planner/pdm_planner/utils/pdm_enums.py).

A state is an ``(11,)`` float64 row; batches are ``(..., 11)``. Poses are in the scene's t0 ego frame with the rear
axle as reference point; velocities and accelerations are in the ego *body* frame (as nuPlan's
``DynamicCarState.rear_axle_velocity_2d`` / ``rear_axle_acceleration_2d``).
"""

from __future__ import annotations


class StateIndex:
    """Column indices of a simulated ego state (units in brackets)."""

    X = 0  # [m] rear-axle x, t0 ego frame
    Y = 1  # [m] rear-axle y, t0 ego frame
    HEADING = 2  # [rad] yaw, wrapped to [-pi, pi)
    VELOCITY_X = 3  # [m/s] longitudinal (body frame)
    VELOCITY_Y = 4  # [m/s] lateral (body frame); 0 in the kinematic bicycle
    ACCELERATION_X = 5  # [m/s^2] longitudinal (body frame)
    ACCELERATION_Y = 6  # [m/s^2] lateral (body frame); 0 in the kinematic bicycle
    STEERING_ANGLE = 7  # [rad] front tyre angle
    STEERING_RATE = 8  # [rad/s]
    ANGULAR_VELOCITY = 9  # [rad/s] yaw rate
    ANGULAR_ACCELERATION = 10  # [rad/s^2] yaw acceleration

    # Slices, as in NAVSIM.
    STATE_SE2 = slice(0, 3)
    POINT = slice(0, 2)
    VELOCITY_2D = slice(3, 5)
    ACCELERATION_2D = slice(5, 7)

    SIZE = 11

    @classmethod
    def size(cls) -> int:
        return cls.SIZE


STATE_FIELDS = ("x", "y", "yaw", "vx", "vy", "ax", "ay", "steer", "steer_rate", "yaw_rate", "yaw_acc")
"""Short names of the 11 state columns, in :class:`StateIndex` order."""
