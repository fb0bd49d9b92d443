"""Batched kinematic bicycle model (rear-axle reference, forward Euler, first-order actuator lags), mirroring
NAVSIM's ``BatchKinematicBicycleModel`` (navsim/.../pdm_planner/simulation/batch_kinematic_bicycle.py)."""

from __future__ import annotations

import numpy as np

from irlvla_gym.scenes.scene import wrap_angle
from irlvla_gym.sim.config import SimConfig
from irlvla_gym.sim.state import StateIndex


def propagate_state(states: np.ndarray, commands: np.ndarray, config: SimConfig, dt: float | None = None) -> np.ndarray:
    """Advance states one step.

    Args:
        states: (K, 11) states at t.
        commands: (K, 11) command states; ``ACCELERATION_X`` [m/s^2] and ``STEERING_RATE`` [rad/s] are read.
        config: vehicle / lag parameters.
        dt: [s] step, defaults to ``config.dt``.

    Returns:
        (K, 11) states at t + dt. The lagged acceleration and steering rate actually applied are stored in
        ``ACCELERATION_X`` and ``STEERING_RATE``; ``VELOCITY_Y`` and ``ACCELERATION_Y`` are 0 (no lateral slip).
    """
    dt = config.dt if dt is None else dt
    accel = states[:, StateIndex.ACCELERATION_X]
    steering = states[:, StateIndex.STEERING_ANGLE]

    # _update_commands: first-order lags towards the ideal acceleration and steering angle (discretised as
    # x += dt / (dt + tau) * (ideal - x)).
    ideal_accel = commands[:, StateIndex.ACCELERATION_X]
    ideal_steering = steering + dt * commands[:, StateIndex.STEERING_RATE]
    applied_accel = accel + dt / (dt + config.accel_time_constant) * (ideal_accel - accel)
    updated_steering = steering + dt / (dt + config.steering_angle_time_constant) * (ideal_steering - steering)
    applied_steering_rate = (updated_steering - steering) / dt

    # get_state_dot on the propagating state (old pose, speed and steering angle), then forward Euler.
    velocity = states[:, StateIndex.VELOCITY_X]
    heading = states[:, StateIndex.HEADING]
    out = states.copy()
    out[:, StateIndex.X] = states[:, StateIndex.X] + dt * velocity * np.cos(heading)
    out[:, StateIndex.Y] = states[:, StateIndex.Y] + dt * velocity * np.sin(heading)
    out[:, StateIndex.HEADING] = wrap_angle(heading + dt * velocity * np.tan(steering) / config.wheelbase)
    out[:, StateIndex.VELOCITY_X] = velocity + dt * applied_accel
    out[:, StateIndex.VELOCITY_Y] = 0.0
    out[:, StateIndex.STEERING_ANGLE] = np.clip(steering + dt * applied_steering_rate, -config.max_steering_angle,
                                                config.max_steering_angle)
    out[:, StateIndex.ANGULAR_VELOCITY] = (out[:, StateIndex.VELOCITY_X] * np.tan(out[:, StateIndex.STEERING_ANGLE])
                                           / config.wheelbase)
    out[:, StateIndex.ACCELERATION_X] = applied_accel
    out[:, StateIndex.ACCELERATION_Y] = 0.0
    out[:, StateIndex.ANGULAR_ACCELERATION] = (out[:, StateIndex.ANGULAR_VELOCITY]
                                               - states[:, StateIndex.ANGULAR_VELOCITY]) / dt
    # NAVSIM stores the pre-clip lagged rate (state_dot of the steering angle), not the rate after clipping.
    out[:, StateIndex.STEERING_RATE] = applied_steering_rate
    return out
