"""Configuration dataclasses of the simulation (tracker, motion model, reactive traffic), with NAVSIM v2 defaults.

Every default is the value NAVSIM v2 uses (``../shared/docs/epdms.md``), and the NAVSIM file it mirrors is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimConfig:
    """LQR tracker + kinematic bicycle parameters.

    Tracker: navsim/.../pdm_planner/simulation/batch_lqr.py (``BatchLQRTracker.__init__`` defaults).
    Bicycle: navsim/.../pdm_planner/simulation/batch_kinematic_bicycle.py (``BatchKinematicBicycleModel``).
    """

    # Time grid.
    dt: float = 0.1  # [s] simulation / tracker discretisation
    plan_dt: float = 0.5  # [s] spacing of the plan poses
    # Longitudinal LQR (velocity error at the look-ahead).
    q_longitudinal: float = 10.0
    r_longitudinal: float = 1.0
    # Lateral LQR over [lateral error, heading error, steering angle].
    q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0)
    r_lateral: float = 1.0
    tracking_horizon: int = 10  # [steps]
    # Reference velocity / curvature least-squares fit (nuPlan tracker_utils).
    jerk_penalty: float = 1e-4
    curvature_rate_penalty: float = 1e-2
    initial_curvature_penalty: float = 1e-10  # nuPlan INITIAL_CURVATURE_PENALTY: keeps the fit well posed at v = 0
    # Stopping P-controller.
    stopping_proportional_gain: float = 0.5
    stopping_velocity: float = 0.2  # [m/s]
    # Kinematic bicycle.
    wheelbase: float = 3.089  # [m] nuPlan Pacifica
    max_steering_angle: float = float(np.pi / 3)  # [rad]
    accel_time_constant: float = 0.2  # [s] first-order lag on the acceleration command
    steering_angle_time_constant: float = 0.05  # [s] first-order lag on the steering command


@dataclass(frozen=True)
class IDMParams:
    """Intelligent Driver Model parameters (nuPlan ``IDMPolicy``; defaults = NAVSIM reactive traffic agents)."""

    target_velocity: float = 10.0  # [m/s] used where the lane speed limit is unknown (or not used)
    min_gap_to_lead_agent: float = 1.0  # [m]
    headway_time: float = 1.5  # [s]
    accel_max: float = 1.0  # [m/s^2]
    decel_max: float = 2.0  # [m/s^2] (positive number)
    exponent: float = 4.0  # IDM free-road exponent delta


@dataclass(frozen=True)
class TrafficConfig:
    """Reactive (IDM) traffic simulation settings (nuPlan ``IDMAgents`` as used by NAVSIM v2 reactive agents)."""

    idm: IDMParams = IDMParams()
    dt: float = 0.1  # [s]
    num_steps: int = 40  # 4 s horizon -> 41 states with t0
    use_lane_speed_limit: bool = True  # nuPlan IDMAgent.propagate: target = lane speed limit when known
    lane_match_max_distance: float = 2.5  # [m] centre-to-centreline distance for an agent to be put on a lane
    lane_match_max_heading: float = float(np.pi / 4)  # [rad] heading difference to the lane direction
    lane_match_heading_weight: float = 2.0  # [m/rad] position+heading matching cost = dist + w * |dyaw|
    path_spacing: float = 1.0  # [m] resampling step of the agent paths
    lateral_offset_decay: float = 30.0  # [m] an agent's t0 offset from its lane centre fades out over this distance
    lookahead: float = 60.0  # [m] corridor length searched for a leader ahead of the agent centre
    stop_at_red_lights: bool = True  # nuPlan IDM agents stop before red lane connectors
    prevent_overlap: bool = True  # clamp progress so an agent never drives into its leader's box (see traffic.py)
