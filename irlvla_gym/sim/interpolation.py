"""Plan interpolation from 0.5 s poses to the 0.1 s simulation grid (NAVSIM ``InterpolatedTrajectory``)."""

from __future__ import annotations

import numpy as np

from irlvla_gym.scenes.scene import wrap_angle


def interpolate_plan(plans: np.ndarray, initial_pose: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 0.0),
                     plan_dt: float = 0.5, dt: float = 0.1) -> np.ndarray:
    """Prepend the initial pose to each plan and interpolate to the simulation grid.

    Mirrors NAVSIM's pdm_score: ``transform_trajectory`` prepends the initial ego state, and
    ``get_trajectory_as_array`` samples nuPlan's ``InterpolatedTrajectory`` every 0.1 s, which interpolates x, y
    linearly and the heading with ``AngularInterpolator`` (linear on the unwrapped angle, result wrapped).

    Args:
        plans: (K, T, 3) or (T, 3) poses [x, y, yaw] (m, rad) at t = plan_dt .. T * plan_dt, in the same frame as
            ``initial_pose`` (normally the t0 ego frame, where the initial pose is the origin).
        initial_pose: (3,) or (K, 3) pose at t = 0.
        plan_dt: [s] spacing of the plan poses.
        dt: [s] output spacing; ``plan_dt / dt`` must be an integer.

    Returns:
        (K, T * plan_dt / dt + 1, 3) float64 poses at t = 0, dt, .., T * plan_dt; for T = 8: (K, 41, 3). Rows
        ``5 * i`` equal the knots exactly (x, y bit-exact, yaw up to wrapping round-off).
    """
    plans = np.asarray(plans, dtype=np.float64)
    squeeze = plans.ndim == 2
    if squeeze:
        plans = plans[None]
    K, T, _ = plans.shape
    ratio = int(round(plan_dt / dt))
    if abs(ratio * dt - plan_dt) > 1e-9:
        raise ValueError(f"plan_dt {plan_dt} must be a multiple of dt {dt}")
    start = np.broadcast_to(np.asarray(initial_pose, dtype=np.float64), (K, 3))
    knots = np.concatenate([start[:, None, :], plans], axis=1)  # (K, T + 1, 3)
    knots = knots.copy()
    knots[..., 2] = np.unwrap(knots[..., 2], axis=1)

    fine = np.arange(T * ratio + 1)
    left = np.minimum(fine // ratio, T - 1)  # last fine step uses the last interval with alpha = 1
    alpha = ((fine - left * ratio) / ratio)[None, :, None]
    # (1 - a) * p + a * q returns q bit-exactly at a = 1 and p at a = 0.
    out = (1.0 - alpha) * knots[:, left] + alpha * knots[:, left + 1]
    out[..., 2] = wrap_angle(out[..., 2])
    return out[0] if squeeze else out
