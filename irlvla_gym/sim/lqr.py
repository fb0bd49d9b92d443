"""Batched LQR trajectory tracker, mirroring NAVSIM's ``BatchLQRTracker``
(navsim/planning/simulation/planner/pdm_planner/simulation/batch_lqr.py and utils/pdm_... batch_lqr_utils.py, which
vectorise nuPlan's ``LQRTracker`` / tracker_utils.py over proposals).

The tracker turns a reference trajectory (K plans, interpolated to 0.1 s) and the current simulated states into one
command per plan per step: a longitudinal acceleration and a steering rate.

* Reference velocity and curvature profiles come from a regularised least-squares fit of the reference poses
  (NAVSIM's "jerk" penalty on the velocity fit, which is in fact an acceleration penalty, see
  :func:`jerk_regulariser`; curvature-rate penalty on the curvature fit).
* Longitudinal: a one-step LQR that picks the constant acceleration that best reaches the reference velocity
  ``tracking_horizon`` steps ahead.
* Lateral: a one-step LQR over [lateral error, heading error, steering angle] with the dynamics linearised along the
  velocity profile implied by that acceleration, a constant steering rate held over the horizon.
* Near standstill (reference and current speed <= ``stopping_velocity``) a P-controller on speed replaces both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from irlvla_gym.scenes.scene import wrap_angle
from irlvla_gym.sim.config import SimConfig
from irlvla_gym.sim.state import StateIndex


@lru_cache(maxsize=16)
def _integration_matrix(num_displacements: int, dt: float) -> np.ndarray:
    """(M, M) matrix C with C[k, 0] = dt and C[k, j] = dt^2 for 1 <= j <= k: row k maps [x0, rate_0 .. rate_{M-2}] to
    ``dt * (x0 + dt * sum_{j<k} rate_j)``, i.e. the displacement over step k of an integrated profile."""
    C = np.tril(np.full((num_displacements, num_displacements), dt * dt))
    C[:, 0] = dt
    return C


def jerk_regulariser(num_displacements: int) -> np.ndarray:
    """(M - 2, M) regulariser R of the velocity fit, over [v0, a_0 .. a_{M-2}], **as NAVSIM builds it**.

    nuPlan's ``tracker_utils._make_banded_difference_matrix`` is the banded difference [-1, 1] (a jerk penalty).
    NAVSIM's batched port (``batch_lqr_utils._make_banded_difference_matrix``) writes ``+eye`` into the columns
    1.. and then ``-eye`` into the columns ..-1, which also zeroes the +1 entries of every row but the last: its
    matrix is ``-I`` with a single +1 in the last row. So NAVSIM penalises the accelerations a_0 .. a_{M-4} themselves
    and only the last difference a_{M-2} - a_{M-3}; the tracker's reference speeds (and so every simulated state)
    follow from that. We mirror NAVSIM (its scorer is the reference), not nuPlan.
    """
    M = num_displacements
    R = np.zeros((M - 2, M))
    R[np.arange(M - 2), np.arange(1, M - 1)] = -1.0  # column 0 is v0 (unpenalised)
    R[M - 3, M - 1] = 1.0
    return R


@lru_cache(maxsize=16)
def _velocity_fit_operator(num_displacements: int, dt: float, jerk_penalty: float) -> np.ndarray:
    """(M, M) linear map from projected displacements u (M,) to [v0, a_0 .. a_{M-2}].

    NAVSIM ``_fit_initial_velocity_and_acceleration_profile`` solves ``x = pinv(A^T A + l R^T R) A^T y`` where the
    rows of A for displacement k are [cos h_k, sin h_k]^T * C[k]. Because cos^2 + sin^2 = 1, A^T A = C^T C and
    A^T y = C^T u with u_k = cos h_k dx_k + sin h_k dy_k, so the whole fit is one fixed matrix, identical for all plans.
    R is NAVSIM's (:func:`jerk_regulariser`).
    """
    C = _integration_matrix(num_displacements, dt)
    R = jerk_regulariser(num_displacements)
    return np.linalg.pinv(C.T @ C + jerk_penalty * R.T @ R) @ C.T


def _integrate_profile(initial: np.ndarray, derivatives: np.ndarray, dt: float) -> np.ndarray:
    """(B, M) profile ``initial + [0, cumsum(derivatives * dt)]`` from (B,) initial values and (B, M - 1) rates
    (nuPlan ``_generate_profile_from_initial_condition_and_derivatives``)."""
    cumulative = np.cumsum(derivatives * dt, axis=-1)
    return initial[:, None] + np.concatenate([np.zeros_like(cumulative[:, :1]), cumulative], axis=-1)


def velocity_curvature_profiles(poses: np.ndarray, dt: float, jerk_penalty: float, curvature_rate_penalty: float,
                                initial_curvature_penalty: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Reference velocity and curvature profiles of reference poses (nuPlan
    ``get_velocity_curvature_profiles_with_derivatives_from_poses``, batched as in NAVSIM batch_lqr_utils).

    Args:
        poses: (B, N, 3) reference poses [x, y, yaw] every ``dt`` seconds (m, rad).

    Returns:
        velocity (B, N - 1) [m/s] and curvature (B, N - 1) [1/m], one value per displacement (per step start).
    """
    poses = np.asarray(poses, dtype=np.float64)
    B, N, _ = poses.shape
    M = N - 1
    differences = np.diff(poses, axis=1)
    heading_displacements = wrap_angle(differences[..., 2])  # (B, M)
    headings = poses[:, :-1, 2]
    projected = np.cos(headings) * differences[..., 0] + np.sin(headings) * differences[..., 1]  # (B, M)

    # Velocity: v0 and M - 1 accelerations with a jerk penalty.
    # A stack of (1, M) @ (M, M) products, not one (B, M) @ (M, M): BLAS picks different kernels (and rounding) for
    # different B, and a plan must get the same profile alone as in a batch (single env == vector env).
    solution = np.matmul(projected[:, None, :], _velocity_fit_operator(M, dt, jerk_penalty).T)[:, 0]  # (B, M)
    velocity = _integrate_profile(solution[:, 0], solution[:, 1:], dt)  # (B, M)

    # Curvature: kappa0 and M - 1 curvature rates with a curvature-rate penalty; A = diag(v) C depends on the plan.
    C = _integration_matrix(M, dt)
    A = velocity[:, :, None] * C[None]  # (B, M, M)
    Q = curvature_rate_penalty * np.eye(M)
    Q[0, 0] = initial_curvature_penalty  # nuPlan: tiny weight on kappa0 so v0 = 0 stays well posed
    At = A.transpose(0, 2, 1)
    # nuPlan/NAVSIM use pinv; the normal matrix is symmetric positive definite (Q > 0), its condition number stays far
    # below pinv's 1e15 cut-off, so a direct solve gives the same solution (to rounding) about 10x faster.
    coeffs = np.linalg.solve(At @ A + Q, At @ heading_displacements[..., None])
    curvature = _integrate_profile(coeffs[:, 0, 0], coeffs[:, 1:, 0], dt)
    return velocity, curvature


@dataclass
class ReferenceProfiles:
    """Fitted reference of K plans. velocity, curvature: (K, 40) [m/s], [1/m]; poses: (K, 41, 3) reference poses."""

    poses: np.ndarray
    velocity: np.ndarray
    curvature: np.ndarray

    @classmethod
    def fit(cls, reference_poses: np.ndarray, config: SimConfig) -> "ReferenceProfiles":
        """NAVSIM refits the profiles at every step from the same poses; the result is identical, so fit once."""
        velocity, curvature = velocity_curvature_profiles(reference_poses, config.dt, config.jerk_penalty,
                                                          config.curvature_rate_penalty,
                                                          config.initial_curvature_penalty)
        return cls(np.asarray(reference_poses, dtype=np.float64), velocity, curvature)

    def at(self, index: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Reference velocity (K,) at ``index + horizon`` (clipped to the profile end) and curvature profile
        (K, horizon) from ``index`` on, padded with its last value
        (batch_lqr ``_compute_reference_velocity_and_curvature_profile``)."""
        num_profile = self.velocity.shape[1]
        reference_index = min(index + horizon, num_profile - 1)
        reference_velocity = self.velocity[:, reference_index]
        length = reference_index - index
        curvature = np.empty((self.velocity.shape[0], horizon))
        curvature[:, :length] = self.curvature[:, index:reference_index]
        if length < horizon:
            curvature[:, length:] = self.curvature[:, reference_index, None]
        return reference_velocity, curvature


def lqr_commands(states: np.ndarray, reference: ReferenceProfiles, index: int, config: SimConfig) -> np.ndarray:
    """One tracker step (``BatchLQRTracker.track_trajectory``).

    Args:
        states: (K, 11) current simulated states (:class:`StateIndex` columns).
        reference: fitted reference of the K plans.
        index: current step (0-based) on the 0.1 s grid.

    Returns:
        (K, 11) command states: only ``ACCELERATION_X`` [m/s^2] and ``STEERING_RATE`` [rad/s] are non-zero.
    """
    dt, horizon = config.dt, config.tracking_horizon
    K = states.shape[0]

    # Initial velocity and lateral error state w.r.t. the reference pose at the current index.
    ref_pose = reference.poses[:, index]
    dx = states[:, StateIndex.X] - ref_pose[:, 0]
    dy = states[:, StateIndex.Y] - ref_pose[:, 1]
    ref_heading = ref_pose[:, 2]
    lateral_error = -dx * np.sin(ref_heading) + dy * np.cos(ref_heading)
    heading_error = wrap_angle(states[:, StateIndex.HEADING] - ref_heading)
    velocity = states[:, StateIndex.VELOCITY_X]
    lateral_state = np.stack([lateral_error, heading_error, states[:, StateIndex.STEERING_ANGLE]], axis=-1)

    reference_velocity, curvature_profile = reference.at(index, horizon)

    # Longitudinal one-step LQR: v_N = v_0 + (N dt) a, minimise q (v_N - v_ref)^2 + r a^2.
    b = horizon * dt
    accel = -(b * config.q_longitudinal * (velocity - reference_velocity)) / (
        b * config.q_longitudinal * b + config.r_longitudinal)

    # Lateral one-step LQR, linearised along v_k = v_0 + k dt a, k = 0 .. N - 1.
    velocity_profile = velocity[:, None] + dt * np.arange(horizon)[None, :] * accel[:, None]  # (K, N)
    steering_rate = _lateral_lqr(lateral_state, velocity_profile, curvature_profile, config)

    # Stopping controller (P on speed, zero steering rate) near standstill.
    stopping = (reference_velocity <= config.stopping_velocity) & (velocity <= config.stopping_velocity)
    accel = np.where(stopping, -config.stopping_proportional_gain * (velocity - reference_velocity), accel)
    steering_rate = np.where(stopping, 0.0, steering_rate)

    commands = np.zeros((K, StateIndex.SIZE))
    commands[:, StateIndex.ACCELERATION_X] = accel
    commands[:, StateIndex.STEERING_RATE] = steering_rate
    return commands


def _lateral_lqr(initial_state: np.ndarray, velocity_profile: np.ndarray, curvature_profile: np.ndarray,
                 config: SimConfig) -> np.ndarray:
    """Steering rate (K,) [rad/s] minimising the lateral cost at the horizon end
    (``_lateral_lqr_controller`` + ``_solve_one_step_lateral_lqr``).

    Per step t the error dynamics over [lateral error, heading error, steering angle] are
    x_{t+1} = A_t x_t + B u + g_t with A_t = [[1, p_t, 0], [0, 1, q_t], [0, 0, 1]], p_t = v_t dt, q_t = v_t dt / L,
    B = [0, 0, dt] and g_t = [0, c_t, 0], c_t = -v_t kappa_t dt. NAVSIM composes them with a loop of 3x3 products into
    x_N = A_T x_0 + B_T u + g_T; because every A_t is unit upper triangular the composition has the closed form below
    (exclusive cumulative sums over the horizon), which is what is evaluated here - same numbers, no inner loop.
    """
    dt = config.dt
    K, horizon = velocity_profile.shape
    p = velocity_profile * dt  # (K, N)
    q = p / config.wheelbase
    c = -velocity_profile * curvature_profile * dt
    steps = np.arange(horizon) * dt  # steering after t steps of unit rate (B part of the state before step t)

    def exclusive_cumsum(x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        np.cumsum(x[:, :-1], axis=1, out=out[:, 1:])
        return out

    # A_T entries.
    a01 = p.sum(axis=1)
    a12 = q.sum(axis=1)
    a02 = (p * exclusive_cumsum(q)).sum(axis=1)
    # B_T = sum over steps of the input's propagated effect.
    qb = q * steps
    b2 = horizon * dt
    b1 = qb.sum(axis=1)
    b0 = (p * exclusive_cumsum(qb)).sum(axis=1)
    # g_T (curvature feed-forward).
    g1 = c.sum(axis=1)
    g0 = (p * exclusive_cumsum(c)).sum(axis=1)

    lateral, heading, steering = initial_state[:, 0], initial_state[:, 1], initial_state[:, 2]
    e0 = lateral + a01 * heading + a02 * steering + g0
    e1 = wrap_angle(heading + a12 * steering + g1)  # NAVSIM normalises the angle components of the error
    e2 = wrap_angle(steering)
    q0, q1, q2 = config.q_lateral
    numerator = q0 * b0 * e0 + q1 * b1 * e1 + q2 * b2 * e2
    denominator = q0 * b0 * b0 + q1 * b1 * b1 + q2 * b2 * b2 + config.r_lateral
    return -numerator / denominator
