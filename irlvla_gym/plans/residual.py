"""Residual plans: a few smooth coefficients around a reference plan that already drives.

Why: an RL library's default exploration (SB3: a std-1 Gaussian or uniform samples in [-1, 1]^D) on the 24 numbers
of the ``trajectory`` action makes plans that jump around: 95 % of them score EPDMS 0, and the zero action stands
still. Here the action is D = 4 coefficients of the smooth directions of :mod:`irlvla_gym.plans.exploration`
(longitudinal / lateral acceleration and jerk) applied *along a reference path* in its Frenet frame, so

* the action 0 is the reference plan: keep the current speed and follow the route's centreline
  (``reference="route"``), or NAVSIM's constant-velocity agent, straight on along the current heading
  (``reference="constant_velocity"``);
* every action in [-1, 1]^D is a drivable plan: it accelerates or brakes smoothly (never backwards: a plan that
  brakes to a stop stays there) and moves sideways relative to the path by at most 1.3 m in 4 s.

==============  =============================================  ======================  ===========
direction       change at time t along the path                 at action -1 / +1       unit
==============  =============================================  ======================  ===========
``lon_acc``     distance travelled  p += a t^2 / 2              -3.0 / +1.0             m/s^2
``lon_jerk``    p += j t^3 / 6                                  -1.0 / +0.3             m/s^3
``lat_acc``     lateral offset  d += a tau^2 / 2                -0.1 / +0.1             m/s^2
``lat_jerk``    d += j tau^3 / 6                                -0.05 / +0.05           m/s^3
==============  =============================================  ======================  ===========

(:data:`RESIDUAL_RANGE`; linear on each side of 0, braking reaches further than speeding up.)

The distance travelled is ``p(t) = v t + a t^2 / 2 + j t^3 / 6`` (v: the current speed), made non-decreasing (a
plan that would reverse stops instead). The lateral offset grows with distance, not time: ``tau = min(p / max(v,
1 m/s), 4 s)`` (equal to t at constant speed), so a plan that stops does not slide sideways. The path (the route's
centreline, or the straight line ahead) is followed at ``p``; the pose is that path point moved ``d`` to the left
along the path's normal, its yaw the path's heading plus ``atan(dd/dp)``.

**The route reference** starts where the ego is: its lateral offset ``d0`` from the centreline and heading error
``e0`` blend into the centreline along a quintic over ``max(4 s x v, 8 m)`` of travel (zero lateral velocity and
acceleration at the end). When there is no route, or the ego is more than :data:`MAX_ROUTE_OFFSET` m off it or
heads more than :data:`MAX_ROUTE_HEADING` rad away from it, the reference is the constant-velocity one.

The scales (:data:`RESIDUAL_RANGE`) were chosen with ``python -m benchmarks.residual_scales``: uniform and SB3-style
clipped std-1 samples score EPDMS > 0 in most scenes, while the expert plans' least-squares coefficients mostly lie
inside [-1, 1] (numbers in :mod:`irlvla_gym.envs.residual`).

A :class:`ResidualFrame` holds what a row's reference depends on (speed, route in the current ego frame);
:func:`residual_to_plan` and :func:`plan_to_residual` (least squares, approximate) convert between actions and
plans; :class:`ResidualAction` is the env's action type (``action_type="residual"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import gymnasium as gym
import numpy as np

from irlvla_gym.geometry import wrap_angle
from irlvla_gym.plans.codec import ActionType, Decoded
from irlvla_gym.plans.exploration import SMOOTH_DIRECTIONS
from irlvla_gym.scenes.scene import FUTURE_TIMES, NUM_FUTURE

RESIDUAL_DIRECTIONS = SMOOTH_DIRECTIONS
"""(lon_acc, lon_jerk, lat_acc, lat_jerk): the action's entries, in order."""
RESIDUAL_DIM = len(RESIDUAL_DIRECTIONS)
RESIDUAL_RANGE = ((-3.0, 1.0), (-1.0, 0.3), (-0.1, 0.1), (-0.05, 0.05))
"""Coefficient of each direction at action -1 and at action +1 (m/s^2, m/s^3, m/s^2, m/s^3); in between linear on
each side of 0. Braking reaches further than speeding up (comfort allows -4.05 .. +2.40 m/s^2)."""
RangeSpec = Union[Sequence[Sequence[float]], np.ndarray]
REFERENCES = ("route", "constant_velocity")
MAX_ROUTE_OFFSET = 4.0
"""m: farther from the route centreline than this, the route reference falls back to constant velocity."""
MAX_ROUTE_HEADING = np.pi / 3
"""rad: heading error to the route beyond which the route reference falls back to constant velocity."""
MIN_BLEND_DISTANCE = 8.0
"""m: the shortest distance over which the route reference blends from the ego's offset into the centreline."""
MIN_TAU_SPEED = 1.0
"""m/s: the speed below which the lateral directions' ``tau = p / v`` uses this speed."""
HORIZON = float(FUTURE_TIMES[-1])
FINE_DT = 0.1
_FINE_T = np.arange(0, int(round(HORIZON / FINE_DT)) + 1) * FINE_DT  # 0 .. 4 s
_SAMPLE = np.rint(FUTURE_TIMES / FINE_DT).astype(np.int64)  # fine indices of t = 0.5 .. 4 s
_STRAIGHT = np.array([[-1.0, 0.0], [1.0, 0.0]])


@dataclass(frozen=True)
class ResidualFrame:
    """What the reference plan of one planning step depends on (all in the current ego frame).

    Attributes:
        speed: current speed |v| (m/s).
        path: (n >= 2, 2) the reference path (the route centreline, or the straight line along x).
        cum: (n,) arc length of the path's vertices (m). headings: (n - 1,) unwrapped segment headings (rad).
        mid: (n - 1,) arc length of the segment midpoints (heading interpolation).
        s0: arc length of the ego's projection. d0: ego's lateral offset (m, +left). e0: heading error (rad).
        on_route: the reference follows the route (False: constant velocity).
    """

    speed: float
    path: np.ndarray
    cum: np.ndarray
    headings: np.ndarray
    mid: np.ndarray
    s0: float
    d0: float
    e0: float
    on_route: bool

    @property
    def blend_distance(self) -> float:
        """m of travel over which the route reference blends into the centreline."""
        return max(self.speed * HORIZON, MIN_BLEND_DISTANCE)


def _clean(line: np.ndarray) -> np.ndarray:
    line = np.asarray(line, np.float64).reshape(-1, 2)
    if len(line) < 2:
        return line
    keep = np.r_[True, np.linalg.norm(np.diff(line, axis=0), axis=1) > 1e-6]
    return line[keep]


def _frame_on(path: np.ndarray, speed: float, on_route: bool) -> ResidualFrame:
    seg = np.diff(path, axis=0)
    length = np.linalg.norm(seg, axis=1)
    cum = np.r_[0.0, np.cumsum(length)]
    headings = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
    # projection of the origin (the ego) onto each segment; the first nearest segment wins
    t = np.clip(np.einsum("ij,ij->i", -path[:-1], seg) / np.maximum(length**2, 1e-12), 0.0, 1.0)
    proj = path[:-1] + t[:, None] * seg
    k = int(np.argmin(np.linalg.norm(proj, axis=1)))
    s0 = float(cum[k] + t[k] * length[k])
    heading = float(np.interp(s0, cum[:-1] + length / 2, headings))
    normal = np.array([-np.sin(heading), np.cos(heading)])
    d0 = float(-proj[k] @ normal)
    e0 = float(wrap_angle(-heading))
    return ResidualFrame(float(speed), path, cum, headings, cum[:-1] + length / 2, s0, d0, e0, on_route)


def make_frame(speed: float, route: np.ndarray | None = None, reference: str = "route") -> ResidualFrame:
    """The frame of one planning step.

    Args:
        speed: current speed (m/s).
        route: (n, 2) route centreline in the current ego frame (m), or None / fewer than 2 points.
        reference: ``"route"`` or ``"constant_velocity"`` (see module docs).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    speed = float(speed) if np.isfinite(speed) else 0.0
    if reference == "route" and route is not None:
        line = _clean(route)
        if len(line) >= 2:
            frame = _frame_on(line, speed, True)
            if abs(frame.d0) <= MAX_ROUTE_OFFSET and abs(frame.e0) <= MAX_ROUTE_HEADING:
                return frame
    return _frame_on(_STRAIGHT, speed, False)


def _quintic_blend(u: np.ndarray, d0: float, slope: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """d(p) and dd/dp of the quintic from (d0, slope, 0) at p = 0 to (0, 0, 0) at p = length; u = p / length."""
    u = np.clip(u, 0.0, 1.0)
    # d(u) = d0 (1 - 10u^3 + 15u^4 - 6u^5) + slope*length (u - 6u^3 + 8u^4 - 3u^5)
    m = slope * length
    d = d0 * (1 - 10 * u**3 + 15 * u**4 - 6 * u**5) + m * (u - 6 * u**3 + 8 * u**4 - 3 * u**5)
    dd_du = d0 * (-30 * u**2 + 60 * u**3 - 30 * u**4) + m * (1 - 18 * u**2 + 32 * u**3 - 15 * u**4)
    inside = u < 1.0
    return d, np.where(inside, dd_du / length, 0.0)


def travelled(speed: float, coeffs: np.ndarray) -> np.ndarray:
    """(K, 41) non-decreasing distance travelled (m) at t = 0, 0.1, .., 4 s for coefficients (K, 4) (metric)."""
    t = _FINE_T[None]
    p = speed * t + coeffs[:, :1] * t**2 / 2 + coeffs[:, 1:2] * t**3 / 6
    return np.maximum.accumulate(np.maximum(p, 0.0), axis=1)


def _tau(p: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """tau (s) of distances p and dtau/dp."""
    v = max(speed, MIN_TAU_SPEED)
    tau = p / v
    return np.minimum(tau, HORIZON), np.where(tau < HORIZON, 1.0 / v, 0.0)


def coeffs_to_plans(frame: ResidualFrame, coeffs: np.ndarray) -> np.ndarray:
    """Plans (K, 8, 3) of metric coefficients (K, 4) (lon_acc m/s^2, lon_jerk m/s^3, lat_acc m/s^2, lat_jerk
    m/s^3) in the frame (see module docs)."""
    c = np.asarray(coeffs, np.float64).reshape(-1, RESIDUAL_DIM)
    p = travelled(frame.speed, c)[:, _SAMPLE]  # (K, 8)
    tau, dtau = _tau(p, frame.speed)
    d = c[:, 2:3] * tau**2 / 2 + c[:, 3:4] * tau**3 / 6
    slope = (c[:, 2:3] * tau + c[:, 3:4] * tau**2 / 2) * dtau
    if frame.on_route:
        ref, ref_slope = _quintic_blend(p / frame.blend_distance, frame.d0, float(np.tan(frame.e0)),
                                        frame.blend_distance)
        d, slope = d + ref, slope + ref_slope
    s = frame.s0 + p
    path, cum = frame.path, frame.cum
    seg = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(path) - 2)
    heading = np.interp(s, frame.mid, frame.headings)
    along = s - cum[seg]
    seg_dir = path[seg + 1] - path[seg]
    seg_dir = seg_dir / np.maximum(np.linalg.norm(seg_dir, axis=-1, keepdims=True), 1e-12)
    centre = path[seg] + along[..., None] * seg_dir  # continuous, extrapolated beyond both ends
    plans = np.empty((len(c), NUM_FUTURE, 3))
    plans[..., 0] = centre[..., 0] - np.sin(heading) * d
    plans[..., 1] = centre[..., 1] + np.cos(heading) * d
    plans[..., 2] = wrap_angle(heading + np.arctan(slope))
    return plans


def coefficient_range(scale: RangeSpec = RESIDUAL_RANGE) -> np.ndarray:
    """(4, 2) float64 [coefficient at action -1, at action +1] per direction (checked: -1 side < 0 < +1 side)."""
    r = np.asarray(scale, np.float64)
    if r.shape != (RESIDUAL_DIM, 2) or not np.all(r[:, 0] < 0) or not np.all(r[:, 1] > 0):
        raise ValueError(f"scale must be {RESIDUAL_DIM} pairs (negative, positive), got {r.tolist()}")
    return r


def actions_to_coeffs(actions: np.ndarray, scale: RangeSpec = RESIDUAL_RANGE) -> np.ndarray:
    """Metric coefficients (..., 4) of actions (..., 4) (clipped to [-1, 1]): piecewise linear, 0 -> 0."""
    r = coefficient_range(scale)
    a = np.clip(np.asarray(actions, np.float64), -1.0, 1.0)
    return np.where(a >= 0, a * r[:, 1], -a * r[:, 0])


def coeffs_to_actions(coeffs: np.ndarray, scale: RangeSpec = RESIDUAL_RANGE) -> np.ndarray:
    """Inverse of :func:`actions_to_coeffs` (unclipped)."""
    r = coefficient_range(scale)
    c = np.asarray(coeffs, np.float64)
    return np.where(c >= 0, c / r[:, 1], -c / r[:, 0])


def residual_to_plan(actions: np.ndarray, frame: ResidualFrame, scale: RangeSpec = RESIDUAL_RANGE) -> np.ndarray:
    """Plans (..., 8, 3) of residual actions (..., 4) in [-1, 1] (clipped) in one frame."""
    a = np.asarray(actions, np.float64)
    lead = a.shape[:-1]
    plans = coeffs_to_plans(frame, actions_to_coeffs(a.reshape(-1, RESIDUAL_DIM), scale))
    return plans.reshape(*lead, NUM_FUTURE, 3)


def reference_plan(frame: ResidualFrame) -> np.ndarray:
    """(8, 3) the reference plan (the action 0)."""
    return coeffs_to_plans(frame, np.zeros((1, RESIDUAL_DIM)))[0]


def plan_to_coeffs(plan: np.ndarray, frame: ResidualFrame) -> np.ndarray:
    """Least-squares metric coefficients (4,) of a plan (8, 3) in the frame (ignores the no-reversing clamp)."""
    xy = np.asarray(plan, np.float64).reshape(NUM_FUTURE, 3)[:, :2]
    path, cum = frame.path, frame.cum
    seg_vec = np.diff(path, axis=0)
    length = np.diff(cum)
    # project each plan point onto the (extended) path: nearest segment, unclamped on the end segments
    rel = xy[:, None, :] - path[None, :-1]
    t = np.einsum("kij,ij->ki", rel, seg_vec) / np.maximum(length**2, 1e-12)
    lo = np.where(np.arange(len(length)) == 0, -np.inf, 0.0)
    hi = np.where(np.arange(len(length)) == len(length) - 1, np.inf, 1.0)
    t = np.clip(t, lo, hi)
    foot = path[None, :-1] + t[..., None] * seg_vec[None]
    k = np.argmin(np.linalg.norm(xy[:, None] - foot, axis=-1), axis=1)
    rows = np.arange(NUM_FUTURE)
    s = cum[k] + t[rows, k] * length[k]
    heading = np.interp(s, frame.mid, frame.headings)
    offset = xy - foot[rows, k]
    d = -np.sin(heading) * offset[:, 0] + np.cos(heading) * offset[:, 1]
    p = s - frame.s0
    t_s = FUTURE_TIMES
    lon = np.linalg.lstsq(np.stack([t_s**2 / 2, t_s**3 / 6], 1), p - frame.speed * t_s, rcond=None)[0]
    tau, _ = _tau(np.maximum.accumulate(np.maximum(p, 0.0)), frame.speed)
    if frame.on_route:
        d = d - _quintic_blend(np.maximum(p, 0.0) / frame.blend_distance, frame.d0, float(np.tan(frame.e0)),
                               frame.blend_distance)[0]
    lat_basis = np.stack([tau**2 / 2, tau**3 / 6], 1)
    lat = np.linalg.lstsq(lat_basis, d, rcond=None)[0] if np.any(tau > 0) else np.zeros(2)
    return np.r_[lon, lat]


def plan_to_residual(plan: np.ndarray, frame: ResidualFrame, scale: RangeSpec = RESIDUAL_RANGE) -> np.ndarray:
    """The residual action (4,) float32 closest to a plan (8, 3) (least squares, clipped to [-1, 1])."""
    return np.clip(coeffs_to_actions(plan_to_coeffs(plan, frame), scale), -1.0, 1.0).astype(np.float32)


class ResidualAction(ActionType):
    """``Box(-1, 1, (4,), float32)``: smooth residual coefficients around a reference plan (module docs).

    Decoding needs the row's :class:`ResidualFrame` (the env makes it from the ego's speed and the route);
    ``decode(action)`` without one uses a standing ego with no route (only for shape checks).
    """

    name = "residual"

    def __init__(self, reference: str = "route", scale: RangeSpec = RESIDUAL_RANGE):
        if reference not in REFERENCES:
            raise ValueError(f"residual reference must be one of {REFERENCES}, got {reference!r}")
        self.reference = reference
        self.scale = coefficient_range(scale)

    def space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (RESIDUAL_DIM,), np.float32)

    def frame(self, speed: float, route: np.ndarray | None) -> ResidualFrame:
        """The frame of one planning step with this action type's reference."""
        return make_frame(speed, route, self.reference)

    def decode(self, action, frame: ResidualFrame | None = None) -> Decoded:
        frame = frame if frame is not None else make_frame(0.0, None, "constant_velocity")
        try:
            a = np.asarray(action, np.float64).reshape(RESIDUAL_DIM)
        except (TypeError, ValueError):
            return Decoded(reference_plan(frame), invalid=True)
        finite = np.isfinite(a)
        plan = residual_to_plan(np.where(finite, a, 0.0), frame, self.scale)
        if not finite.all():
            return Decoded(plan, invalid=True)
        return Decoded(plan, clipped=bool(np.any(np.abs(a) > 1.0)))

    def encode(self, plan: np.ndarray, frame: ResidualFrame | None = None) -> np.ndarray:
        frame = frame if frame is not None else make_frame(0.0, None, "constant_velocity")
        return plan_to_residual(plan, frame, self.scale)


__all__ = [
    "MAX_ROUTE_HEADING", "MAX_ROUTE_OFFSET", "REFERENCES", "RESIDUAL_DIM", "RESIDUAL_DIRECTIONS", "RESIDUAL_RANGE",
    "ResidualAction", "ResidualFrame", "actions_to_coeffs", "coefficient_range", "coeffs_to_actions",
    "coeffs_to_plans", "make_frame", "plan_to_coeffs", "plan_to_residual",
    "reference_plan", "residual_to_plan", "travelled",
]
