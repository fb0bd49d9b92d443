"""Tracking simulation of K candidate plans: interpolation, LQR tracker and kinematic bicycle
(NAVSIM ``PDMSimulator.simulate_proposals``, navsim/.../pdm_planner/simulation/pdm_simulator.py)."""

from __future__ import annotations

import numpy as np

from irlvla_gym.scenes.scene import DT as SCENE_DT
from irlvla_gym.scenes.scene import Scene, wrap_angle
from irlvla_gym.sim.bicycle import propagate_state
from irlvla_gym.sim.config import SimConfig
from irlvla_gym.sim.fused import PYTHON_LOOP_MAX_K, StepTables, run_numpy, run_python
from irlvla_gym.sim.interpolation import interpolate_plan
from irlvla_gym.sim.lqr import ReferenceProfiles, lqr_commands
from irlvla_gym.sim.state import StateIndex

MIN_SPEED_FOR_STEERING = 0.5
"""[m/s] below this speed the steering angle cannot be inferred from the yaw rate (kappa = omega / v blows up)."""


def initial_state(scene: Scene, config: SimConfig = SimConfig(), estimate_steering: bool = False) -> np.ndarray:
    """The ego state at t0 as an (11,) float64 :class:`StateIndex` row.

    Pose (0, 0, 0) (t0 ego frame); velocity and acceleration from the scene ego (body frame, as NAVSIM's
    ``ego_state_to_state_array``). As NAVSIM (``ego_status_to_ego_state`` builds the start state with
    ``tire_steering_angle=0`` and nuPlan's default ``angular_vel=0``), steering angle, steering rate, yaw rate and
    yaw acceleration are 0.

    ``estimate_steering=True`` (not NAVSIM): the yaw rate is the 3-point backward difference of the history
    headings at t0 and the steering angle follows from ``tan(steer) = L * omega / v`` (clipped to
    ``max_steering_angle``; 0 below :data:`MIN_SPEED_FOR_STEERING`). That removes the heading-error transient a zero
    steering angle causes in curves, but plans then simulate up to ~1 m apart from NAVSIM's.
    """
    ego = scene.ego
    state = np.zeros(StateIndex.SIZE)
    state[StateIndex.VELOCITY_2D] = ego.velocity
    state[StateIndex.ACCELERATION_2D] = ego.acceleration
    if not estimate_steering:
        return state
    headings = np.unwrap(ego.history[:, 2])
    # Second-order one-sided difference at t0: (3 h0 - 4 h-1 + h-2) / (2 dt).
    yaw_rate = (3.0 * headings[-1] - 4.0 * headings[-2] + headings[-3]) / (2.0 * SCENE_DT)
    state[StateIndex.ANGULAR_VELOCITY] = yaw_rate
    speed = float(ego.velocity[0])
    if abs(speed) >= MIN_SPEED_FOR_STEERING:
        steering = np.arctan(config.wheelbase * yaw_rate / speed)
        state[StateIndex.STEERING_ANGLE] = np.clip(steering, -config.max_steering_angle, config.max_steering_angle)
    return state


def _prepare(scene_or_initial_state: Scene | np.ndarray, plans: np.ndarray, config: SimConfig
             ) -> tuple[np.ndarray, bool, int, np.ndarray]:
    """Validated (K, T, 3) plans, whether the input was one plan, K and the (K, 11) start states."""
    plans = np.asarray(plans, dtype=np.float64)
    squeeze = plans.ndim == 2
    if squeeze:
        plans = plans[None]
    if plans.ndim != 3 or plans.shape[-1] != 3:
        raise ValueError(f"plans must have shape (K, T, 3), got {plans.shape}")
    K = plans.shape[0]
    if isinstance(scene_or_initial_state, Scene):
        start = initial_state(scene_or_initial_state, config)
    else:
        start = np.asarray(scene_or_initial_state, dtype=np.float64)
    if start.shape not in ((StateIndex.SIZE,), (K, StateIndex.SIZE)):
        raise ValueError(f"initial state must be (11,) or ({K}, 11), got {start.shape}")
    start = np.broadcast_to(start, (K, StateIndex.SIZE))
    return plans, squeeze, K, start


def simulate_plans(scene_or_initial_state: Scene | np.ndarray, plans: np.ndarray,
                   config: SimConfig = SimConfig()) -> np.ndarray:
    """Simulate K plans with the LQR tracker and the kinematic bicycle.

    Args:
        scene_or_initial_state: a :class:`Scene` (its :func:`initial_state` is used) or initial states (11,) / (K, 11).
        plans: (K, T, 3) or (T, 3) plan poses [x, y, yaw] (m, rad) at t = 0.5 .. T * 0.5 s, in the frame of the
            initial pose (the t0 ego frame for a scene), rear-axle reference. T = 8 gives 4 s.
        config: tracker / bicycle parameters.

    Returns:
        (K, S + 1, 11) float64 simulated states at t = 0, 0.1, .., T * 0.5 s (S = T * 5 steps; (K, 41, 11) for 4 s),
        :class:`StateIndex` columns; row 0 is the initial state. A (T, 3) input returns (S + 1, 11).

    NAVSIM refits the reference profiles at every step from unchanged poses; they are fitted once here (same
    numbers). Everything that does not depend on the simulated state is then tabulated for all steps at once and the
    loop over the S time steps runs fused (:mod:`irlvla_gym.sim.fused`): Python floats per plan for K <= 16, numpy
    arrays over K beyond (identical arithmetic, so a plan gives the same states alone or in any batch).
    """
    plans, squeeze, K, start = _prepare(scene_or_initial_state, plans, config)
    reference_poses = interpolate_plan(plans, start[:, StateIndex.STATE_SE2], config.plan_dt, config.dt)
    reference = ReferenceProfiles.fit(reference_poses, config)
    tables = StepTables.build(reference.poses, reference.velocity, reference.curvature, config)
    start = np.ascontiguousarray(start)
    run = run_python if K <= PYTHON_LOOP_MAX_K else run_numpy
    states = run(start, tables, config)
    return states[0] if squeeze else states


def simulate_plans_stepwise(scene_or_initial_state: Scene | np.ndarray, plans: np.ndarray,
                            config: SimConfig = SimConfig()) -> np.ndarray:
    """:func:`simulate_plans` evaluated the way NAVSIM does it, one ``lqr_commands`` + ``propagate_state`` call per
    step (the formulation the fused loop of :mod:`irlvla_gym.sim.fused` is derived from; kept as its reference).
    Same arguments and result (equal to ~1e-12)."""
    plans, squeeze, K, start = _prepare(scene_or_initial_state, plans, config)
    reference_poses = interpolate_plan(plans, start[:, StateIndex.STATE_SE2], config.plan_dt, config.dt)
    reference = ReferenceProfiles.fit(reference_poses, config)
    num_steps = reference_poses.shape[1] - 1
    states = np.empty((K, num_steps + 1, StateIndex.SIZE))
    states[:, 0] = start
    states[:, 0, StateIndex.HEADING] = wrap_angle(start[:, StateIndex.HEADING])
    for step in range(num_steps):
        commands = lqr_commands(states[:, step], reference, step, config)
        states[:, step + 1] = propagate_state(states[:, step], commands, config)
    return states[0] if squeeze else states
