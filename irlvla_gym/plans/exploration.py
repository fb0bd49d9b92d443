"""Smooth plan perturbations: a low-dimensional basis of physically meaningful changes to a plan.

Exploring a 4 s plan by adding independent noise to each of its 24 normalised numbers (SB3's diagonal Gaussian)
makes jerky plans: at the std the VLA recipes use (0.018) half of the samples already fail history comfort (HC), and
the learned reward ranks them poorly (within-scene Spearman 0.40 against the scorer on 150 synthetic-val scenes, K =
16, vs 0.79 for the smooth samples below). Perturbing along a few smooth directions that start at zero displacement,
velocity and acceleration keeps the plan drivable (HC ~1) while still moving it where the sub-scores change: earlier
or later braking, a lateral nudge. Measured with ``benchmarks/exploration.py``.

A direction is a pose offset (8, 3) in metres / radians, divided by :data:`~irlvla_gym.plans.codec.PLAN_SCALE` so it
lives in the env's normalised action space; its coefficient has the physical unit of its name:

==============  ===================================  ===============
name            offset at time t (s)                  coefficient
==============  ===================================  ===============
``lon_acc``     x += a t^2 / 2                        m/s^2
``lon_jerk``    x += j t^3 / 6                        m/s^3
``lat_acc``     y += a t^2 / 2, yaw += atan(a t / v)  m/s^2
``lat_jerk``    y += j t^3 / 6, yaw += atan(j t^2/2v) m/s^3
==============  ===================================  ===============

The yaw terms use a nominal speed ``v`` (:data:`NOMINAL_SPEED`) so a lateral perturbation turns the heading with the
path instead of crabbing sideways (a fixed basis cannot know each plan's speed; the tracker absorbs the rest).

A fixed lateral std moves a plan sideways by the same metres whatever the ego's speed, so a car waiting at a junction
explores (and PPO can learn) lateral offsets it cannot drive. :func:`direction_speed_factors` scales the lateral stds
with the ego's speed (``v / NOMINAL_SPEED``, clipped to :data:`LATERAL_FACTOR_RANGE`): at speed the lateral directions
are a curvature change, at a standstill they nearly vanish (``exploration="smooth-speed"`` of the VLA policy).
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.plans.codec import ACTION_DIM, PLAN_SCALE
from irlvla_gym.scenes.scene import NUM_FUTURE

SMOOTH_DIRECTIONS = ("lon_acc", "lon_jerk", "lat_acc", "lat_jerk")
"""Names of the smooth directions, in basis row order."""
SMOOTH_STD = (0.5, 0.25, 0.08, 0.05)
"""Default std of each direction's coefficient (m/s^2, m/s^3, m/s^2, m/s^3): samples keep HC ~1 and lose ~10 EPDMS
points on average against the mean plan (synthetic-val, ``python -m benchmarks.exploration``)."""
NOMINAL_SPEED = 8.0
"""m/s, the speed that converts lateral velocity into the heading change of the lateral directions."""
STEP_SECONDS = 0.5
LATERAL_DIRECTIONS = ("lat_acc", "lat_jerk")
LATERAL_FACTOR_RANGE = (0.1, 2.0)
"""Bounds of the lateral std factor ``speed / NOMINAL_SPEED``: a standing ego keeps 10 % of the lateral std (a plan
may still start to move and steer), a fast one at most twice the nominal."""


def smooth_basis(directions: tuple[str, ...] = SMOOTH_DIRECTIONS) -> np.ndarray:
    """(D, 24) float64 rows = the named directions with unit coefficient, in normalised action units.

    Raises:
        ValueError: naming the unknown direction.
    """
    t = STEP_SECONDS * np.arange(1, NUM_FUTURE + 1, dtype=np.float64)
    rows = []
    for name in directions:
        offset = np.zeros((NUM_FUTURE, 3))
        if name == "lon_acc":
            offset[:, 0] = t**2 / 2
        elif name == "lon_jerk":
            offset[:, 0] = t**3 / 6
        elif name == "lat_acc":
            offset[:, 1] = t**2 / 2
            offset[:, 2] = np.arctan(t / NOMINAL_SPEED)
        elif name == "lat_jerk":
            offset[:, 1] = t**3 / 6
            offset[:, 2] = np.arctan(t**2 / 2 / NOMINAL_SPEED)
        else:
            raise ValueError(f"directions: unknown smooth direction {name!r}; choose from {SMOOTH_DIRECTIONS}")
        rows.append((offset / PLAN_SCALE).reshape(ACTION_DIM))
    return np.stack(rows)


def direction_speed_factors(speed, directions: tuple[str, ...] = SMOOTH_DIRECTIONS):
    """Per-direction std factors (B, D) for egos at ``speed`` (B,) m/s: 1 for longitudinal directions,
    ``clip(speed / NOMINAL_SPEED, *LATERAL_FACTOR_RANGE)`` for lateral ones.

    Works on numpy arrays and torch tensors alike (returns the input's type and dtype; no torch import here).
    """
    mask = np.array([name in LATERAL_DIRECTIONS for name in directions], np.float64)
    if hasattr(speed, "new_tensor"):  # a torch tensor
        mask = speed.new_tensor(mask)
    else:
        speed = np.asarray(speed, np.float64)
    lateral = (speed / NOMINAL_SPEED).clip(*LATERAL_FACTOR_RANGE)
    return (lateral[..., None] - 1) * mask + 1


def perturb_actions(actions: np.ndarray, num: int, rng: np.random.Generator,
                    std: tuple[float, ...] | np.ndarray = SMOOTH_STD,
                    directions: tuple[str, ...] = SMOOTH_DIRECTIONS) -> np.ndarray:
    """``num`` smooth perturbations of one normalised action.

    Args:
        actions: (24,) normalised action (the mean plan). num: samples. rng: the generator.
        std: (D,) coefficient stds in the directions' units, or (num, D) one row per sample.

    Returns:
        (num, 24) float64, not clipped to the action box.
    """
    std = np.asarray(std, np.float64)
    basis = smooth_basis(directions)
    if std.shape not in ((basis.shape[0],), (int(num), basis.shape[0])):
        raise ValueError(f"std: expected shape ({basis.shape[0]},) or ({num}, {basis.shape[0]}) (one per direction), "
                         f"got {std.shape}")
    coeff = rng.standard_normal((int(num), basis.shape[0])) * std
    return np.asarray(actions, np.float64).reshape(1, ACTION_DIM) + coeff @ basis


__all__ = ["LATERAL_DIRECTIONS", "LATERAL_FACTOR_RANGE", "NOMINAL_SPEED", "SMOOTH_DIRECTIONS", "SMOOTH_STD",
           "direction_speed_factors", "perturb_actions", "smooth_basis"]
