"""Tracker (LQR + kinematic bicycle), interpolation and box geometry."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.scenes.geometry import project_to_polyline
from irlvla_gym.scenes.scene import PACIFICA
from irlvla_gym.scenes.testing import straight_road_scene
from irlvla_gym.sim import (
    SimConfig, StateIndex, agent_corners, ego_centers, ego_corners, initial_state, interpolate_plan, simulate_plans,
)
from irlvla_gym.sim.bicycle import propagate_state
from irlvla_gym.sim.lqr import _lateral_lqr, velocity_curvature_profiles

PLAN_TIMES = np.arange(1, 9) * 0.5


def _clothoid_left(speed: float, radius: float, ramp_s: float, horizon_s: float = 4.0, dt: float = 0.005):
    """Finely sampled left curve: curvature ramps linearly 0 -> 1/radius over ramp_s, then constant.
    Returns (plan (8, 3) at 0.5 s, fine polyline (n, 2))."""
    t = np.arange(0.0, horizon_s + dt / 2, dt)
    curvature = np.minimum(t / ramp_s, 1.0) / radius
    heading = np.r_[0.0, np.cumsum(speed * curvature[:-1] * dt)]
    x = np.r_[0.0, np.cumsum(speed * np.cos(heading[:-1]) * dt)]
    y = np.r_[0.0, np.cumsum(speed * np.sin(heading[:-1]) * dt)]
    knots = np.round(PLAN_TIMES / dt).astype(int)
    return np.stack([x[knots], y[knots], heading[knots]], -1), np.stack([x, y], -1)


def test_shapes_and_dtype():
    scene = straight_road_scene(speed=10.0)
    states = simulate_plans(scene, np.repeat(scene.ego.future[None], 3, 0))
    assert states.shape == (3, 41, 11) and states.dtype == np.float64
    single = simulate_plans(scene, scene.ego.future)
    assert single.shape == (41, 11)
    np.testing.assert_array_equal(states[:, 0], np.broadcast_to(initial_state(scene), (3, 11)))


def test_straight_constant_speed_tracked():
    scene = straight_road_scene(speed=10.0)
    states = simulate_plans(scene, scene.ego.future)
    reference = interpolate_plan(scene.ego.future)
    assert np.abs(states[:, :2] - reference[:, :2]).max() < 0.1
    assert np.abs(states[:, StateIndex.VELOCITY_X] - 10.0).max() < 0.05
    assert np.abs(states[:, StateIndex.HEADING]).max() < 1e-9


def test_stopping_plan_stops():
    scene = straight_road_scene(speed=4.0)
    # Brake at 2 m/s^2 to standstill at t = 2 s (4 m), then hold for 2 s.
    x = np.where(PLAN_TIMES < 2.0, 4.0 * PLAN_TIMES - PLAN_TIMES**2, 4.0)
    plan = np.stack([x, np.zeros(8), np.zeros(8)], -1)
    states = simulate_plans(scene, plan)
    speed = states[:, StateIndex.VELOCITY_X]
    assert speed[-1] < 0.1
    assert np.all(np.diff(speed) <= 1e-9)  # never re-accelerates, never reverses
    assert speed.min() >= 0.0
    # The NAVSIM LQR looks 1 s ahead and the acceleration lags 0.2 s: a small overshoot of the stop point is expected.
    assert states[-1, StateIndex.X] < 4.0 + 1.6
    # The last second runs under the stopping P-controller (speed <= 0.2 m/s): it commands zero steering rate and
    # a deceleration proportional to the speed (a_cmd = -0.5 v), so the applied deceleration shrinks with v.
    tail = states[-10:]
    assert np.all(tail[:, StateIndex.VELOCITY_X] <= 0.2)
    assert np.all(tail[:, StateIndex.STEERING_RATE] == 0.0)
    assert np.all(np.diff(tail[:, StateIndex.ACCELERATION_X]) > 0)


def test_smooth_left_curve_tracked():
    scene = straight_road_scene(speed=8.0)
    plan, fine = _clothoid_left(speed=8.0, radius=40.0, ramp_s=2.0)
    states = simulate_plans(scene, plan)
    _, lateral = project_to_polyline(states[:, :2], fine)
    assert np.abs(lateral).max() < 0.3
    assert states[-1, StateIndex.HEADING] > 0.5  # it did turn left
    assert abs(states[-1, StateIndex.HEADING] - plan[-1, 2]) < 0.05


def test_batch_equals_single_runs():
    scene = straight_road_scene(speed=8.0)
    braking = np.where(PLAN_TIMES < 3.0, 6.0 * PLAN_TIMES - PLAN_TIMES**2, 9.0)
    plans = [scene.ego.future, _clothoid_left(8.0, 40.0, 2.0)[0], _clothoid_left(5.0, -25.0, 1.0)[0],
             np.stack([braking, np.zeros(8), np.zeros(8)], -1)]
    batch = simulate_plans(scene, np.stack(plans))
    for k, plan in enumerate(plans):
        np.testing.assert_allclose(batch[k], simulate_plans(scene, plan), rtol=0, atol=1e-9)


def test_initial_states_per_plan():
    start = np.zeros((2, 11))
    start[:, StateIndex.VELOCITY_X] = [5.0, 10.0]
    plans = np.zeros((2, 8, 3))
    plans[:, :, 0] = np.array([5.0, 10.0])[:, None] * PLAN_TIMES
    states = simulate_plans(start, plans)
    np.testing.assert_allclose(states[:, -1, StateIndex.VELOCITY_X], [5.0, 10.0], atol=0.05)


def test_interpolation_hits_plan_poses():
    rng = np.random.default_rng(0)
    plans = np.cumsum(rng.normal(size=(5, 8, 3)), axis=1)
    plans[..., 2] = (plans[..., 2] + np.pi) % (2 * np.pi) - np.pi
    out = interpolate_plan(plans)
    assert out.shape == (5, 41, 3)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_array_equal(out[:, 5::5, :2], plans[..., :2])
    dyaw = (out[:, 5::5, 2] - plans[..., 2] + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(dyaw).max() < 1e-12


def test_interpolation_yaw_across_pi():
    plan = np.zeros((8, 3))
    plan[:, 0] = PLAN_TIMES
    plan[:, 2] = np.pi - 0.1
    plan[1:, 2] = -np.pi + 0.1  # crosses the +-pi seam between knots 1 and 2
    out = interpolate_plan(plan, initial_pose=(0.0, 0.0, np.pi - 0.1))
    mid = out[7, 2]  # halfway between knot 1 (t = 0.5) and knot 2 (t = 1.0) is 0.6 * ... past pi
    assert abs(abs(mid) - np.pi) < 0.1  # stays near pi, never swings through 0


def test_bicycle_lags_and_steering_limit():
    config = SimConfig()
    state = np.zeros((1, 11))
    state[0, StateIndex.VELOCITY_X] = 5.0
    command = np.zeros((1, 11))
    command[0, StateIndex.ACCELERATION_X] = 1.0
    command[0, StateIndex.STEERING_RATE] = 1.0
    accel_factor = config.dt / (config.dt + config.accel_time_constant)
    steer_factor = config.dt / (config.dt + config.steering_angle_time_constant)
    accels, steers = [], []
    for _ in range(30):
        state = propagate_state(state, command, config)
        accels.append(state[0, StateIndex.ACCELERATION_X])
        steers.append(state[0, StateIndex.STEERING_ANGLE])
    k = np.arange(1, 31)
    # Discrete first-order lag: a_k = a_cmd (1 - (1 - dt / (dt + tau))^k); tau = 0.2 s -> 1/3 of the gap per step.
    np.testing.assert_allclose(accels, 1.0 - (1.0 - accel_factor) ** k, atol=1e-12)
    # Steering: each step moves 2/3 (tau = 0.05 s) of the commanded increment, clipped at pi / 3.
    np.testing.assert_allclose(steers, np.minimum(k * config.dt * steer_factor, np.pi / 3), atol=1e-12)
    assert max(steers) == pytest.approx(np.pi / 3)
    assert state[0, StateIndex.VELOCITY_Y] == 0.0 and state[0, StateIndex.ACCELERATION_Y] == 0.0
    expected_yaw_rate = state[0, StateIndex.VELOCITY_X] * np.tan(np.pi / 3) / config.wheelbase
    assert state[0, StateIndex.ANGULAR_VELOCITY] == pytest.approx(expected_yaw_rate)


def test_velocity_profile_fit_constant_acceleration():
    t = np.arange(41) * 0.1
    x = 5.0 * t + 0.5 * 1.0 * t**2
    poses = np.stack([x, np.zeros_like(x), np.zeros_like(x)], -1)[None]
    velocity, curvature = velocity_curvature_profiles(poses, 0.1, 1e-4, 1e-2)
    assert velocity.shape == (1, 40)
    # The fit models displacement k as v_k dt (forward Euler), so v_k = 5 + a t_k + a dt / 2 -- away from the start:
    # NAVSIM's regulariser penalises the accelerations themselves (not their differences), which pulls the first and
    # the last few away (start speed 5.11 instead of 5.05).
    np.testing.assert_allclose(velocity[0, 10:30], 5.0 + t[10:30] + 0.05, atol=5e-5)
    assert velocity[0, 0] == pytest.approx(5.1118, abs=1e-4)
    np.testing.assert_allclose(curvature, 0.0, atol=1e-12)


def test_velocity_fit_regulariser_is_navsims():
    """NAVSIM's batch_lqr_utils._make_banded_difference_matrix overwrites its +1 band with the -eye assignment except in
    the last row; the reference speeds follow from that (0.07 m/s off on an AV2 plan with nuPlan's true jerk band)."""
    from irlvla_gym.sim.lqr import jerk_regulariser

    R = jerk_regulariser(6)
    expected = np.zeros((4, 6))
    expected[np.arange(4), np.arange(1, 5)] = -1.0
    expected[3, 5] = 1.0
    np.testing.assert_array_equal(R, expected)
    # NAVSIM's profiles of a curving, accelerating reference (values from navsim batch_lqr_utils
    # get_velocity_curvature_profiles_with_derivatives_from_poses @ 0a380a90).
    t = np.arange(41) * 0.1
    x = 5.0 * t + 0.5 * t**2
    poses = np.stack([x, 0.02 * x**2 / 10, np.arctan(0.04 * x / 10)], -1)[None]
    velocity, curvature = velocity_curvature_profiles(poses, 0.1, 1e-4, 1e-2)
    idx = [0, 1, 2, 5, 10, 20, 39]
    np.testing.assert_allclose(velocity[0, idx], [5.111826226744, 5.173652453488, 5.259109911632, 5.550908344605,
                                                  6.051681417508, 7.058691297595, 9.013802948343], atol=1e-9)
    np.testing.assert_allclose(curvature[0, idx], [0.003975076734, 0.003981207296, 0.003987212748, 0.003996134872,
                                                   0.003996352687, 0.003985107314, 0.003934070652], atol=1e-11)


def test_initial_state_steering_from_yaw_rate():
    scene = straight_road_scene(speed=10.0)
    R = 50.0
    history = scene.ego.history.copy()
    times = np.array([-1.5, -1.0, -0.5, 0.0])
    history[:, 2] = 10.0 * times / R
    history[:, 0] = R * np.sin(history[:, 2])
    history[:, 1] = R * (1 - np.cos(history[:, 2]))
    history[-1] = 0.0
    from dataclasses import replace
    curved = scene.replace(ego=replace(scene.ego, history=history))
    state = initial_state(curved, estimate_steering=True)
    assert state[StateIndex.ANGULAR_VELOCITY] == pytest.approx(10.0 / R)
    assert state[StateIndex.STEERING_ANGLE] == pytest.approx(np.arctan(PACIFICA.wheelbase / R))
    # NAVSIM's default: the start state has zero steering angle and zero yaw rate.
    navsim = initial_state(curved)
    assert navsim[StateIndex.STEERING_ANGLE] == 0.0 and navsim[StateIndex.ANGULAR_VELOCITY] == 0.0


def test_ego_and_agent_corners():
    state = np.zeros(11)
    state[StateIndex.HEADING] = np.pi / 2
    corners = ego_corners(state, PACIFICA)
    w = PACIFICA.width / 2
    expected = np.array([[-w, PACIFICA.front_length], [w, PACIFICA.front_length],
                         [w, -PACIFICA.rear_length], [-w, -PACIFICA.rear_length]])
    np.testing.assert_allclose(corners, expected, atol=1e-12)
    np.testing.assert_allclose(ego_centers(state), [0.0, PACIFICA.rear_axle_to_center], atol=1e-12)
    assert ego_corners(np.zeros((2, 41, 11))).shape == (2, 41, 4, 2)
    box = np.array([10.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0])
    np.testing.assert_allclose(agent_corners(box), [[12, 3], [12, 1], [8, 1], [8, 3]], atol=1e-12)
    assert agent_corners(np.zeros((3, 7, 8))).shape == (3, 7, 4, 2)


def _lateral_lqr_matrix_form(x0, velocity, curvature, config):
    """NAVSIM's loop of 3x3 products (batch_lqr._lateral_lqr_controller), as the reference for the closed form."""
    K, N = velocity.shape
    dt, L = config.dt, config.wheelbase
    A_T, B_T, g_T = np.tile(np.eye(3), (K, 1, 1)), np.zeros((K, 3, 1)), np.zeros((K, 3))
    B = np.array([[0.0], [0.0], [dt]])
    for t in range(N):
        A = np.tile(np.eye(3), (K, 1, 1))
        A[:, 0, 1] = velocity[:, t] * dt
        A[:, 1, 2] = velocity[:, t] * dt / L
        g = np.zeros((K, 3))
        g[:, 1] = -velocity[:, t] * curvature[:, t] * dt
        A_T, B_T, g_T = A @ A_T, A @ B_T + B, (A @ g_T[..., None])[..., 0] + g
    e = (A_T @ x0[..., None])[..., 0] + g_T
    e[:, 1:] = (e[:, 1:] + np.pi) % (2 * np.pi) - np.pi
    Q = np.diag(config.q_lateral)
    BtQ = B_T.transpose(0, 2, 1) @ Q
    return (-(BtQ @ e[..., None])[..., 0, 0] / ((BtQ @ B_T)[..., 0, 0] + config.r_lateral))


def test_lateral_lqr_closed_form_matches_matrix_loop():
    rng = np.random.default_rng(1)
    config = SimConfig()
    x0 = rng.normal(0.0, [1.0, 0.2, 0.1], (50, 3))
    velocity = rng.uniform(0.0, 15.0, (50, 1)) + rng.normal(0, 0.5, (50, 10)).cumsum(1)
    curvature = rng.normal(0.0, 0.05, (50, 10))
    np.testing.assert_allclose(_lateral_lqr(x0, velocity, curvature, config),
                               _lateral_lqr_matrix_form(x0, velocity, curvature, config), rtol=1e-10, atol=1e-12)


def test_curvature_fit_solve_matches_navsim_pinv():
    from irlvla_gym.sim.lqr import _integration_matrix
    rng = np.random.default_rng(2)
    plans = np.zeros((40, 8, 3))
    speed = rng.uniform(0.0, 15.0, (40, 1))
    speed[:5] = 0.0
    plans[..., 0] = speed * PLAN_TIMES
    plans[..., 1] = rng.normal(0.0, 1.0, (40, 1)) * PLAN_TIMES**2 / 16
    plans[..., 2] = rng.normal(0.0, 0.1, (40, 1)) * PLAN_TIMES / 4
    plans[5:10, 4:] = plans[5:10, 3:4]  # stop half-way
    poses = interpolate_plan(plans)
    velocity, curvature = velocity_curvature_profiles(poses, 0.1, 1e-4, 1e-2)
    A = velocity[:, :, None] * _integration_matrix(40, 0.1)[None]
    Q = 1e-2 * np.eye(40)
    Q[0, 0] = 1e-10
    heading_steps = np.diff(poses[..., 2], axis=1)
    x = np.linalg.pinv(A.transpose(0, 2, 1) @ A + Q) @ (A.transpose(0, 2, 1) @ heading_steps[..., None])
    reference = x[:, :1, 0] + np.concatenate([np.zeros((40, 1)), np.cumsum(x[:, 1:, 0] * 0.1, axis=1)], axis=1)
    np.testing.assert_allclose(curvature, reference, atol=1e-9)


def test_fused_loop_matches_stepwise_navsim_formulation():
    """The fused loop (hoisted tables, closed-form horizon sums) equals the per-step lqr_commands + propagate_state."""
    from irlvla_gym.sim.tracker import simulate_plans_stepwise

    rng = np.random.default_rng(3)
    plans = np.zeros((40, 8, 3))
    speed = rng.uniform(0.0, 15.0, (40, 1))
    plans[..., 0] = speed * PLAN_TIMES
    plans[..., 1] = rng.normal(0.0, 2.0, (40, 1)) * PLAN_TIMES**2 / 16
    plans[..., 2] = rng.normal(0.0, 0.3, (40, 1)) * PLAN_TIMES / 4
    plans[:5] = 0.0  # stopping controller
    starts = np.zeros((40, 11))
    starts[:, 3] = rng.uniform(0.0, 12.0, 40)
    starts[:3, 3] = 0.1
    starts[:, 7] = rng.normal(0.0, 0.05, 40)
    for K in (1, 3, 40):  # Python-float loop and numpy loop
        np.testing.assert_allclose(simulate_plans(starts[:K], plans[:K]), simulate_plans_stepwise(starts[:K], plans[:K]),
                                   rtol=0, atol=1e-9)


def test_plan_alone_equals_plan_in_any_batch_bitwise():
    """Python-float loop (small K) and numpy loop (large K) run the same IEEE operations: a plan simulated alone (a
    single env) and inside a batch of 64 (a vector env) gives identical states, bit for bit."""
    from irlvla_gym.sim.fused import PYTHON_LOOP_MAX_K

    rng = np.random.default_rng(4)
    K = 4 * PYTHON_LOOP_MAX_K
    plans = np.zeros((K, 8, 3))
    plans[..., 0] = rng.uniform(0.0, 15.0, (K, 1)) * PLAN_TIMES
    plans[..., 1] = rng.normal(0.0, 2.0, (K, 1)) * PLAN_TIMES**2 / 16
    plans[..., 2] = rng.normal(0.0, 0.3, (K, 1)) * PLAN_TIMES / 4
    starts = np.zeros((K, 11))
    starts[:, 3] = rng.uniform(0.0, 12.0, K)
    batch = simulate_plans(starts, plans)
    for k in range(0, K, 7):
        np.testing.assert_array_equal(simulate_plans(starts[k], plans[k]), batch[k])
