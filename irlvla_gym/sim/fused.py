"""Fused tracker loop: the LQR tracker + kinematic bicycle of :mod:`irlvla_gym.sim.lqr` /
:mod:`irlvla_gym.sim.bicycle` with every per-step quantity that does not depend on the simulated state hoisted out
of the 40-step loop.

Why: the step-by-step formulation (``lqr_commands`` + ``propagate_state``) spends ~100 small numpy calls per time
step (about 90 us), whatever K is; for the K = 1..8 plans an env steps this is ~75 % of an env step.

What is hoisted (see :class:`StepTables`):

* reference pose, its sine / cosine, and the reference velocity ``horizon`` steps ahead, per step;
* the lateral LQR's horizon composition. With the velocity profile ``v_t = v + alpha t`` (``alpha = dt * accel``,
  t = 0 .. N-1) every entry of the composed A_T, B_T and g_T is a polynomial of degree <= 2 in (v, alpha) whose
  coefficients are sums over the horizon: constants for A_T and B_T, and per-step weighted sums of the curvature
  window for g_T (``g0 = -dt^2 sum_s v_s kappa_s sum_{t>s} v_t``, ``g1 = -dt sum_t v_t kappa_t``). So one step needs
  ~60 scalar operations instead of cumulative sums over (K, N) arrays. Algebraically identical to
  :func:`irlvla_gym.sim.lqr._lateral_lqr`; rounding differs (tests: 1e-9 on states).

Two loops evaluate the *same* sequence of IEEE operations:

* :func:`run_python`: plain Python floats per plan (K <= :data:`PYTHON_LOOP_MAX_K`); ~2.5 us per step and plan;
* :func:`run_numpy`: numpy arrays over K (larger K); ~50 us per step for K up to a few hundred.

``+ - * /`` and ``%`` are correctly rounded in both; the transcendental functions use ``math`` only where it agrees
bit for bit with numpy's vectorised loops on this machine (checked at import, :func:`_scalar`), else numpy's own
scalar ufunc. So a plan simulated alone (single env) and in a batch of 256 (vector env) gives identical states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from irlvla_gym.geometry import wrap_angle
from irlvla_gym.sim.config import SimConfig
from irlvla_gym.sim.state import StateIndex

PYTHON_LOOP_MAX_K = 16
"""Up to this many plans the per-plan Python loop beats numpy's per-call overhead (measured crossover ~20 plans: 0.1 ms per plan vs ~2 ms per call)."""


def _scalar(name: str) -> Callable[[float], float]:
    """``math.<name>`` when it equals ``numpy.<name>`` bit for bit on a dense sample of [-4, 4] (so scalar and
    vectorised loops agree), else a wrapper around numpy's scalar ufunc (same inner loop as arrays, slower)."""
    x = np.linspace(-4.0, 4.0, 20001) + 1e-3 * np.sin(np.arange(20001))
    fn_np, fn_math = getattr(np, name), getattr(math, name)
    if np.array_equal(fn_np(x), np.array([fn_math(float(v)) for v in x])):
        return fn_math
    return lambda value: float(fn_np(value))


_sin, _cos, _tan = _scalar("sin"), _scalar("cos"), _scalar("tan")
_PI = float(np.pi)
_TWO_PI = 2.0 * _PI


@dataclass
class StepTables:
    """Per-step quantities of K plans that do not depend on the simulated state.

    Attributes:
        ref_x, ref_y, ref_h: (K, S) reference pose at step i (m, rad); ``ref_sin``, ``ref_cos``: of ref_h.
        ref_v: (K, S) reference velocity at ``min(i + horizon, S - 1)`` (m/s).
        g1_v, g1_a: (K, S) curvature sums so that ``g1 = g1_v * v + g1_a * alpha``.
        g0_vv, g0_va, g0_aa: (K, S) so that ``g0 = g0_vv v^2 + g0_va v alpha + g0_aa alpha^2``.
        S is the number of simulated steps (40 for 4 s).
    """

    ref_x: np.ndarray
    ref_y: np.ndarray
    ref_h: np.ndarray
    ref_sin: np.ndarray
    ref_cos: np.ndarray
    ref_v: np.ndarray
    g1_v: np.ndarray
    g1_a: np.ndarray
    g0_vv: np.ndarray
    g0_va: np.ndarray
    g0_aa: np.ndarray

    @classmethod
    def build(cls, poses: np.ndarray, velocity: np.ndarray, curvature: np.ndarray, config: SimConfig) -> "StepTables":
        """From reference poses (K, S + 1, 3) and fitted profiles (K, S)."""
        K, S = velocity.shape
        N, dt = config.tracking_horizon, config.dt
        steps = np.arange(S)
        ref_index = np.minimum(steps + N, S - 1)
        # Curvature window of step i (batch_lqr pads with the value at the reference index): kappa[min(i + t, S - 1)].
        window = np.minimum(steps[:, None] + np.arange(N)[None, :], S - 1)  # (S, N)
        kappa = curvature[:, window]  # (K, S, N)
        w = _horizon_weights(N)
        # Fixed-order sums over t (elementwise, not BLAS), so every row gets the same arithmetic for any K.
        sums = []
        for weights in (w["one"], w["t"], w["n"], w["m_sn"], w["sm"]):
            acc = weights[0] * kappa[..., 0]
            for t in range(1, N):
                acc = acc + weights[t] * kappa[..., t]
            sums.append(acc)
        k_one, k_t, k_n, k_msn, k_sm = sums
        h = poses[:, :S, 2]
        return cls(
            ref_x=np.ascontiguousarray(poses[:, :S, 0]), ref_y=np.ascontiguousarray(poses[:, :S, 1]),
            ref_h=np.ascontiguousarray(h), ref_sin=np.sin(h), ref_cos=np.cos(h),
            ref_v=np.ascontiguousarray(velocity[:, ref_index]),
            g1_v=-dt * k_one, g1_a=-dt * k_t,
            g0_vv=-(dt * dt) * k_n, g0_va=-(dt * dt) * k_msn, g0_aa=-(dt * dt) * k_sm,
        )


def _horizon_weights(N: int) -> dict[str, np.ndarray]:
    """Weights over the horizon t = 0 .. N-1: n_s = N-1-s (later steps), m_s = sum_{t>s} t, and products."""
    s = np.arange(N, dtype=np.float64)
    n = (N - 1) - s
    m = np.array([float(np.arange(k + 1, N).sum()) for k in range(N)])
    return {"one": np.ones(N), "t": s, "n": n, "m_sn": m + s * n, "sm": s * m}


@dataclass(frozen=True)
class _Constants:
    """Scalars of one tracker configuration (Python floats)."""

    dt: float
    H: float  # horizon N as a float
    T1: float  # sum t
    T2: float  # sum t^2
    A0: float  # a02 = dt^2 / L (A0 v^2 + A1 v alpha + A2 alpha^2)
    A1: float
    A2: float
    B0: float  # b0 = dt^3 / L (B0 v^2 + B1 v alpha + B2 alpha^2)
    B1: float
    B2: float
    c2L: float
    c3L: float
    b2: float
    k_lon: float  # numerator factor of the longitudinal LQR
    d_lon: float  # its denominator
    q0: float
    q1: float
    q2: float
    den_r: float
    stop_v: float
    stop_kp: float
    f_accel: float  # dt / (dt + tau_accel)
    f_steer: float
    wheelbase: float
    max_steer: float

    @classmethod
    def of(cls, config: SimConfig) -> "_Constants":
        N, dt, L = config.tracking_horizon, config.dt, config.wheelbase
        w = _horizon_weights(N)
        s = np.arange(N, dtype=np.float64)
        b = N * dt
        q0, q1, q2 = (float(q) for q in config.q_lateral)
        return cls(
            dt=dt, H=float(N), T1=float(s.sum()), T2=float((s * s).sum()),
            A0=float(w["n"].sum()), A1=float(w["m_sn"].sum()), A2=float(w["sm"].sum()),
            B0=float((s * w["n"]).sum()), B1=float((s * w["m_sn"]).sum()), B2=float((s * w["sm"]).sum()),
            c2L=dt * dt / L, c3L=dt * dt * dt / L, b2=b,
            k_lon=b * config.q_longitudinal, d_lon=b * config.q_longitudinal * b + config.r_longitudinal,
            q0=q0, q1=q1, q2=q2, den_r=float(config.r_lateral),
            stop_v=config.stopping_velocity, stop_kp=config.stopping_proportional_gain,
            f_accel=dt / (dt + config.accel_time_constant), f_steer=dt / (dt + config.steering_angle_time_constant),
            wheelbase=L, max_steer=config.max_steering_angle,
        )


_CONSTANTS: dict[SimConfig, _Constants] = {}


def constants(config: SimConfig) -> _Constants:
    if config not in _CONSTANTS:
        _CONSTANTS[config] = _Constants.of(config)
    return _CONSTANTS[config]


def run_python(start: np.ndarray, tables: StepTables, config: SimConfig) -> np.ndarray:
    """Simulate with Python floats, one plan at a time. start (K, 11); returns (K, S + 1, 11)."""
    c = constants(config)
    K, S = tables.ref_v.shape
    out = np.empty((K, S + 1, StateIndex.SIZE))
    dt, L, pi, two_pi = c.dt, c.wheelbase, _PI, _TWO_PI
    sin, cos, tan = _sin, _cos, _tan
    cols = (tables.ref_x, tables.ref_y, tables.ref_h, tables.ref_sin, tables.ref_cos, tables.ref_v, tables.g1_v,
            tables.g1_a, tables.g0_vv, tables.g0_va, tables.g0_aa)
    for k in range(K):
        rx, ry, rh, rs, rc, rv, g1v, g1a, g0vv, g0va, g0aa = (col[k].tolist() for col in cols)
        s0 = start[k].tolist()
        x, y, h, v = s0[0], s0[1], (s0[2] + pi) % two_pi - pi, s0[3]
        acc, steer, yaw_rate = s0[5], s0[7], s0[9]
        rows = [[x, y, h, v, s0[4], acc, s0[6], steer, s0[8], yaw_rate, s0[10]]]
        for i in range(S):
            # ---- tracker (lqr_commands) ----
            dx = x - rx[i]
            dy = y - ry[i]
            lateral = dy * rc[i] - dx * rs[i]
            heading = (h - rh[i] + pi) % two_pi - pi
            vref = rv[i]
            accel = -(c.k_lon * (v - vref)) / c.d_lon
            alpha = dt * accel
            vv, va, aa = v * v, v * alpha, alpha * alpha
            a01 = dt * (c.H * v + c.T1 * alpha)
            a12 = a01 / L
            a02 = c.c2L * (vv * c.A0 + va * c.A1 + aa * c.A2)
            b1 = c.c2L * (v * c.T1 + alpha * c.T2)
            b0 = c.c3L * (vv * c.B0 + va * c.B1 + aa * c.B2)
            g1 = g1v[i] * v + g1a[i] * alpha
            g0 = g0vv[i] * vv + g0va[i] * va + g0aa[i] * aa
            e0 = lateral + a01 * heading + a02 * steer + g0
            e1 = (heading + a12 * steer + g1 + pi) % two_pi - pi
            e2 = (steer + pi) % two_pi - pi
            numerator = c.q0 * b0 * e0 + c.q1 * b1 * e1 + c.q2 * c.b2 * e2
            denominator = c.q0 * b0 * b0 + c.q1 * b1 * b1 + c.q2 * c.b2 * c.b2 + c.den_r
            rate = -numerator / denominator
            if vref <= c.stop_v and v <= c.stop_v:
                accel = -c.stop_kp * (v - vref)
                rate = 0.0
            # ---- kinematic bicycle (propagate_state) ----
            applied_accel = acc + c.f_accel * (accel - acc)
            ideal_steer = steer + dt * rate
            updated = steer + c.f_steer * (ideal_steer - steer)
            applied_rate = (updated - steer) / dt
            dv = dt * v
            x_new = x + dv * cos(h)
            y_new = y + dv * sin(h)
            h_new = (h + dv * tan(steer) / L + pi) % two_pi - pi
            v_new = v + dt * applied_accel
            steer_new = min(max(steer + dt * applied_rate, -c.max_steer), c.max_steer)
            yaw_rate_new = v_new * tan(steer_new) / L
            rows.append([x_new, y_new, h_new, v_new, 0.0, applied_accel, 0.0, steer_new, applied_rate, yaw_rate_new,
                         (yaw_rate_new - yaw_rate) / dt])
            x, y, h, v, acc, steer, yaw_rate = x_new, y_new, h_new, v_new, applied_accel, steer_new, yaw_rate_new
        out[k] = rows
    return out


def run_numpy(start: np.ndarray, tables: StepTables, config: SimConfig) -> np.ndarray:
    """Simulate with numpy arrays over K (same arithmetic as :func:`run_python`). start (K, 11) -> (K, S + 1, 11)."""
    c = constants(config)
    K, S = tables.ref_v.shape
    dt, L = c.dt, c.wheelbase
    # Column-major histories (column, step, plan), written row by row and transposed once at the end.
    hist = np.zeros((StateIndex.SIZE, S + 1, K))
    hist[:, 0] = start.T
    hist[StateIndex.HEADING, 0] = wrap_angle(start[:, StateIndex.HEADING])
    X, Y, HD, V, A, ST, RT, YR, YA = (hist[j] for j in (
        StateIndex.X, StateIndex.Y, StateIndex.HEADING, StateIndex.VELOCITY_X, StateIndex.ACCELERATION_X,
        StateIndex.STEERING_ANGLE, StateIndex.STEERING_RATE, StateIndex.ANGULAR_VELOCITY,
        StateIndex.ANGULAR_ACCELERATION))
    rx, ry, rh, rs, rc, rv = (t.T.copy() for t in (tables.ref_x, tables.ref_y, tables.ref_h, tables.ref_sin,
                                                   tables.ref_cos, tables.ref_v))
    g1v, g1a, g0vv, g0va, g0aa = (t.T.copy() for t in (tables.g1_v, tables.g1_a, tables.g0_vv, tables.g0_va,
                                                       tables.g0_aa))
    x, y, h, v, acc, steer, yaw_rate = X[0], Y[0], HD[0], V[0], A[0], ST[0], YR[0]
    for i in range(S):
        lateral = (y - ry[i]) * rc[i] - (x - rx[i]) * rs[i]
        heading = wrap_angle(h - rh[i])
        vref = rv[i]
        accel = -(c.k_lon * (v - vref)) / c.d_lon
        alpha = dt * accel
        vv, va, aa = v * v, v * alpha, alpha * alpha
        a01 = dt * (c.H * v + c.T1 * alpha)
        a12 = a01 / L
        a02 = c.c2L * (vv * c.A0 + va * c.A1 + aa * c.A2)
        b1 = c.c2L * (v * c.T1 + alpha * c.T2)
        b0 = c.c3L * (vv * c.B0 + va * c.B1 + aa * c.B2)
        g1 = g1v[i] * v + g1a[i] * alpha
        g0 = g0vv[i] * vv + g0va[i] * va + g0aa[i] * aa
        e0 = lateral + a01 * heading + a02 * steer + g0
        e1 = wrap_angle(heading + a12 * steer + g1)
        e2 = wrap_angle(steer)
        numerator = c.q0 * b0 * e0 + c.q1 * b1 * e1 + c.q2 * c.b2 * e2
        denominator = c.q0 * b0 * b0 + c.q1 * b1 * b1 + c.q2 * c.b2 * c.b2 + c.den_r
        rate = -numerator / denominator
        stopping = (vref <= c.stop_v) & (v <= c.stop_v)
        if stopping.any():
            accel = np.where(stopping, -c.stop_kp * (v - vref), accel)
            rate = np.where(stopping, 0.0, rate)
        applied_accel = acc + c.f_accel * (accel - acc)
        ideal_steer = steer + dt * rate
        updated = steer + c.f_steer * (ideal_steer - steer)
        applied_rate = (updated - steer) / dt
        dv = dt * v
        np.add(x, dv * np.cos(h), out=X[i + 1])
        np.add(y, dv * np.sin(h), out=Y[i + 1])
        HD[i + 1] = wrap_angle(h + dv * np.tan(steer) / L)
        np.add(v, dt * applied_accel, out=V[i + 1])
        A[i + 1] = applied_accel
        np.minimum(np.maximum(steer + dt * applied_rate, -c.max_steer), c.max_steer, out=ST[i + 1])
        RT[i + 1] = applied_rate
        np.divide(V[i + 1] * np.tan(ST[i + 1]), L, out=YR[i + 1])
        np.divide(YR[i + 1] - yaw_rate, dt, out=YA[i + 1])
        x, y, h, v, acc, steer, yaw_rate = X[i + 1], Y[i + 1], HD[i + 1], V[i + 1], A[i + 1], ST[i + 1], YR[i + 1]
    # VELOCITY_Y and ACCELERATION_Y stay 0 after the first row (no lateral slip), as in propagate_state.
    return np.ascontiguousarray(hist.transpose(2, 1, 0))
