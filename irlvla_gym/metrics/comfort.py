"""History comfort (HC) and two-frame extended comfort (EC), batched over plans.

Mirrors navsim/planning/simulation/planner/pdm_planner/scoring/pdm_comfort_metrics.py (itself nuPlan's
ego_*_metrics), including its details:

* longitudinal / lateral acceleration are moved from the rear axle to the box centre first
  (``state_array_to_center_state_array``: ``a_x + d (yaw_rate^2 + yaw_accel)`` with d the rear-axle-to-centre
  distance; the lateral component is unchanged because the displacement is along x); the acceleration magnitude
  (for jerk and EC) stays at the rear axle;
* accelerations: Savitzky-Golay window 8, order 2; jerk: derivative window 15, order 2;
* yaw rate and yaw acceleration: window **5** (``_extract_ego_yaw_rate`` does not forward its window of 15),
  order 2 and 3 (HC), order 2 for EC's yaw acceleration;
* values rounded to 8 decimals, bounds strict (``lower < value < upper``);
* EC: the quantities are computed over the *overlapping parts only* (current states 0..35, previous 5..40), as
  ``SceneAggregator._compute_two_frame_comfort`` slices the states before extracting features.

The arithmetic is already vectorised in NAVSIM, so the vectorised scorer and the reference share this module (the
reference calls it one plan at a time).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import savgol_filter

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.config import COMFORT_NAMES, EC_NAMES, ScorerConfig

_DECIMALS = 8


@functools.lru_cache(maxsize=64)
def _savgol_matrix(n: int, window: int, order: int, deriv: int, delta: float) -> np.ndarray:
    """(n, n) matrix M with ``savgol_filter(x, ...) == M @ x`` for series of length n (mode "interp").

    scipy's filter is linear in x, so applying it to the identity gives its matrix once; a batch of K series is
    then one (K, n) @ (n, n) product instead of a scipy call per quantity.
    """
    eye = np.eye(n)
    return savgol_filter(eye, window_length=window, polyorder=order, deriv=deriv, delta=delta, axis=0)


def _smooth(values: np.ndarray, window: int, order: int, deriv: int = 0, delta: float = 1.0) -> np.ndarray:
    """Savitzky-Golay along the last axis (scipy ``savgol_filter``, mode "interp"); the window shrinks to the series
    length as nuPlan does."""
    n = values.shape[-1]
    window = min(window, n)
    order = min(order, window - 1)
    # A stack of (1, n) @ (n, n) products: BLAS rounds a (K, n) @ (n, n) product differently for different K, and
    # a plan must score the same alone (single env) as in a batch (vector env, rows of many scenes).
    return np.matmul(values[..., None, :], _savgol_matrix(n, window, order, deriv, float(delta)).T)[..., 0, :]


def comfort_series(states: np.ndarray, config: ScorerConfig, rear_axle_to_center: float | np.ndarray = 0.0,
                   yaw_accel_poly_order: int | None = None) -> dict[str, np.ndarray]:
    """Per-step comfort quantities.

    Args:
        states: (K, T, 11) simulator states at ``config.dt``.
        config: windows and orders.
        rear_axle_to_center: d (m); with ``config.lon_accel_at_centre`` the longitudinal acceleration is taken at
            the box centre, ``a_x + d (yaw_rate^2 + yaw_accel)`` from the state's yaw-rate / yaw-acceleration
            columns (NAVSIM ``get_acceleration_shifted``).
        yaw_accel_poly_order: polynomial order of the yaw acceleration (default ``config.yaw_accel_poly_order``).

    Returns:
        dict name -> (K, T): ``lon_accel``, ``lat_accel`` (centre), ``accel`` (magnitude, rear axle), ``jerk`` (of
        the magnitude), ``lon_jerk``, ``yaw_rate``, ``yaw_accel`` (m/s^2, m/s^3, rad/s, rad/s^2).
    """
    dt = config.dt
    aw, order = config.accel_window, config.accel_poly_order
    dw, yw = config.derivative_window, config.yaw_derivative_window
    ax, ay = states[..., B.AX], states[..., B.AY]
    ax_centre = ax
    d = np.asarray(rear_axle_to_center, np.float64)
    if config.lon_accel_at_centre and np.any(d):
        d = d[:, None] if d.ndim else d  # (K,) one vehicle per row (rows of different scenes)
        ax_centre = ax + d * (states[..., B.YAW_RATE] ** 2 + states[..., B.YAW_ACC])
    lon = np.round(_smooth(ax_centre, aw, order), _DECIMALS)
    lat = np.round(_smooth(ay, aw, order), _DECIMALS)
    mag = np.round(_smooth(np.hypot(ax, ay), aw, order), _DECIMALS)
    jerk = np.round(_smooth(mag, dw, order, deriv=1, delta=dt), _DECIMALS)
    lon_jerk = np.round(_smooth(lon, dw, order, deriv=1, delta=dt), _DECIMALS)
    heading = np.unwrap(states[..., B.YAW], axis=-1)
    yaw_rate = np.round(_smooth(heading, yw, order, deriv=1, delta=dt), _DECIMALS)
    yaw_order = config.yaw_accel_poly_order if yaw_accel_poly_order is None else yaw_accel_poly_order
    yaw_accel = np.round(_smooth(heading, yw, yaw_order, deriv=2, delta=dt), _DECIMALS)
    return {"lon_accel": lon, "lat_accel": lat, "accel": mag, "jerk": jerk, "lon_jerk": lon_jerk,
            "yaw_rate": yaw_rate, "yaw_accel": yaw_accel}


def history_comfort(states: np.ndarray, history: np.ndarray, config: ScorerConfig,
                    rear_axle_to_center: float | np.ndarray = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HC: comfort bounds over the logged history (the first ``config.hc_history_steps`` states) followed by the
    simulated 4 s.

    Args:
        states: (K, 41, 11) simulated states.
        history: (H, 11) logged states at t = -1.5 .. -0.1 s, or (K, H, 11) one history per plan (plans of
            different scenes, :func:`irlvla_gym.metrics.score_rows`). The last one (-0.1 s) is not used, as in NAVSIM.
        config: thresholds and windows.
        rear_axle_to_center: d (m) of the ego vehicle, or (K,) one per row, for the longitudinal acceleration at
            the box centre. NAVSIM always uses the Pacifica's 1.461 m; we use the scene's vehicle.

    Returns:
        hc (K,) in {0, 1}; ok (K, 6) bool per bound (:data:`COMFORT_NAMES`); value_min, value_max (K, 6).
    """
    K = states.shape[0]
    history = history[..., :config.hc_history_steps, :]
    full = np.concatenate([np.broadcast_to(history, (K,) + history.shape[-2:]), states], axis=1)
    s = comfort_series(full, config, rear_axle_to_center)
    lo = np.array([config.min_lon_accel, -config.max_abs_lat_accel, -config.max_abs_jerk, -config.max_abs_lon_jerk,
                   -config.max_abs_yaw_accel, -config.max_abs_yaw_rate])
    hi = np.array([config.max_lon_accel, config.max_abs_lat_accel, config.max_abs_jerk, config.max_abs_lon_jerk,
                   config.max_abs_yaw_accel, config.max_abs_yaw_rate])
    vals = np.stack([s["lon_accel"], s["lat_accel"], s["jerk"], s["lon_jerk"], s["yaw_accel"], s["yaw_rate"]],
                    axis=1)  # (K, 6, T)
    vmin, vmax = vals.min(axis=-1), vals.max(axis=-1)
    ok = (vmin > lo) & (vmax < hi)
    return ok.all(axis=1).astype(np.float64), ok, vmin, vmax


def extended_comfort(states: np.ndarray, previous_states: np.ndarray, config: ScorerConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """EC: RMS difference of comfort quantities between this plan and the plan made 0.5 s earlier.

    The previous plan's steps 5..40 overlap the current plan's steps 0..35 (36 states); as in NAVSIM both are cut
    to the overlap first and the quantities computed over those 36 states.

    Args:
        states: (K, 41, 11) current simulated states.
        previous_states: (K, 41, 11) or (1, 41, 11) the previous plan's simulated states, in the current ego frame.

    Returns:
        ec (K,) in {0, 1}; rms (K, 4) for :data:`EC_NAMES` (accel, jerk, yaw_rate, yaw_accel).
    """
    shift = config.ec_shift_steps
    n = states.shape[1] - shift
    order = config.ec_yaw_accel_poly_order
    cur = comfort_series(states[:, :n], config, yaw_accel_poly_order=order)
    prev = comfort_series(previous_states[:, shift:shift + n], config, yaw_accel_poly_order=order)
    rms = np.stack([np.sqrt(np.mean((cur[name] - prev[name]) ** 2, axis=-1)) for name in EC_NAMES], axis=1)
    limits = np.array([config.ec_max_accel_rms, config.ec_max_jerk_rms, config.ec_max_yaw_rate_rms,
                       config.ec_max_yaw_accel_rms])
    return np.all(rms <= limits, axis=1).astype(np.float64), rms


assert COMFORT_NAMES == ("lon_accel", "lat_accel", "jerk", "lon_jerk", "yaw_accel", "yaw_rate")
