"""Action types of the IRL-VLA envs: how an action becomes a 4 s plan of 8 poses.

A *plan* is an (8, 3) float64 array of poses ``[x, y, yaw]`` (m, m, rad) at t = 0.5, 1.0, .., 4.0 s in the ego frame
at planning time (rear axle, x forward, y left, yaw counter-clockwise), exactly NAVSIM's trajectory format.

``action_type="trajectory"`` (default): ``Box(-1, 1, (24,), float32)``, the plan flattened row by row
(``x0, y0, yaw0, x1, ...``) and divided by a fixed per-step scale (:data:`PLAN_SCALE`, shape (8, 3)):

=======  ===================================  =========================  =====================================
column   scale at step i (i = 0..7)            range at 0.5 s / 4.0 s      why
=======  ===================================  =========================  =====================================
x        ``20 m/s * 0.5 s * (i + 1)``          +-10 m / +-80 m             20 m/s (72 km/h) covers the fastest
                                                                           synthetic-train expert (15.8 m/s)
y        ``3 m * (i + 1)``                     +-3 m / +-24 m              expert lateral max 0.2 m / 11 m
yaw      ``min(pi, 0.4 rad * (i + 1))``        +-0.4 rad / +-pi            expert yaw max 0.12 / 1.4 rad
=======  ===================================  =========================  =====================================

So the action 0 is "stay where you are" and the largest actions still cover the expert plans of the train split
(maxima measured on 300 synthetic-train scenes) with a 25-100 % margin. :func:`action_to_plan` and
:func:`plan_to_action` are exact inverses inside the box (plan_to_action clips outside it).

``action_type="vocabulary"``: ``Discrete(K)``, index into a trajectory vocabulary (``irlvla_gym.plans.vocabulary``).

Invalid actions never raise: a finite trajectory action outside [-1, 1] is clipped (``info["clipped_action"]``);
an action with NaN/inf or complex entries, or a vocabulary index outside [0, K) or not a whole number (1.7), is
*invalid* (never truncated or cast): it gets reward 0 and zero
sub-scores with ``info["invalid_action"] = True`` (the closed-loop env then executes the "stay" plan, non-finite
entries replaced by 0, so the episode can continue).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from irlvla_gym.scenes.scene import NUM_FUTURE

ACTION_DIM = NUM_FUTURE * 3
"""24 = 8 poses x (x, y, yaw)."""
MAX_SPEED_SCALE = 20.0  # m/s
LATERAL_STEP_SCALE = 3.0  # m per 0.5 s step
YAW_STEP_SCALE = 0.4  # rad per 0.5 s step


def _plan_scale() -> np.ndarray:
    steps = np.arange(1, NUM_FUTURE + 1, dtype=np.float64)
    scale = np.empty((NUM_FUTURE, 3))
    scale[:, 0] = MAX_SPEED_SCALE * 0.5 * steps
    scale[:, 1] = LATERAL_STEP_SCALE * steps
    scale[:, 2] = np.minimum(np.pi, YAW_STEP_SCALE * steps)
    return scale


PLAN_SCALE: np.ndarray = _plan_scale()
"""(8, 3) metres / radians represented by an action value of 1 at each step and column (see module docs)."""
PLAN_SCALE.setflags(write=False)


def action_to_plan(action: np.ndarray) -> np.ndarray:
    """Map a trajectory action (..., 24) in [-1, 1] to plans (..., 8, 3) (values outside [-1, 1] are clipped)."""
    a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    return a.reshape(*a.shape[:-1], NUM_FUTURE, 3) * PLAN_SCALE


def plan_to_action(plan: np.ndarray) -> np.ndarray:
    """Inverse of :func:`action_to_plan`: plans (..., 8, 3) to float32 actions (..., 24), clipped to [-1, 1]."""
    p = np.asarray(plan, np.float64)
    a = np.clip(p / PLAN_SCALE, -1.0, 1.0)
    return a.reshape(*p.shape[:-2], ACTION_DIM).astype(np.float32)


@dataclass
class Decoded:
    """An action decoded to a plan.

    Attributes:
        plan: (8, 3) float64 plan (finite; the zero "stay" plan for an invalid action).
        invalid: the action had NaN/inf entries or an out-of-range index (zero-scored).
        clipped: a finite trajectory action had entries outside [-1, 1] that were clipped.
    """

    plan: np.ndarray
    invalid: bool = False
    clipped: bool = False


class ActionType:
    """Base of the action types (highway-env style: ``space()`` and ``decode()``)."""

    name = ""

    def space(self) -> gym.spaces.Space:
        raise NotImplementedError

    def decode(self, action) -> Decoded:
        raise NotImplementedError

    def encode(self, plan: np.ndarray):
        """The action closest to ``plan`` (8, 3) (for experts / behaviour cloning)."""
        raise NotImplementedError


class TrajectoryAction(ActionType):
    """``Box(-1, 1, (24,), float32)`` scaled by :data:`PLAN_SCALE`."""

    name = "trajectory"

    def space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def decode(self, action) -> Decoded:
        if np.iscomplexobj(action):  # casting would silently drop the imaginary part
            return Decoded(np.zeros((NUM_FUTURE, 3)), invalid=True)
        try:
            a = np.asarray(action, np.float64).reshape(ACTION_DIM)
        except (TypeError, ValueError):
            return Decoded(np.zeros((NUM_FUTURE, 3)), invalid=True)
        finite = np.isfinite(a)
        if not finite.all():
            return Decoded(action_to_plan(np.where(finite, a, 0.0)), invalid=True)
        clipped = bool(np.any(np.abs(a) > 1.0))
        return Decoded(action_to_plan(a), clipped=clipped)

    def encode(self, plan: np.ndarray) -> np.ndarray:
        return plan_to_action(plan)


class VocabularyAction(ActionType):
    """``Discrete(K)``: index into a (K, 8, 3) trajectory vocabulary."""

    name = "vocabulary"

    def __init__(self, vocabulary: np.ndarray):
        self.vocabulary = np.asarray(vocabulary, np.float64)
        if self.vocabulary.ndim != 3 or self.vocabulary.shape[1:] != (NUM_FUTURE, 3):
            raise ValueError(f"vocabulary must be (K, 8, 3), got {self.vocabulary.shape}")

    def space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(len(self.vocabulary))

    def decode(self, action) -> Decoded:
        try:
            value = np.asarray(action).reshape(())
            # an index, or a float holding a whole number (SB3 may hand over float arrays); 1.7 or 1+2j is invalid,
            # not truncated
            whole = value.dtype.kind in "iu" or (value.dtype.kind == "f" and np.isfinite(value) and value == np.floor(value))
            index = int(value) if whole else -1
        except (TypeError, ValueError, OverflowError):
            index = -1
        if not 0 <= index < len(self.vocabulary):
            return Decoded(np.zeros((NUM_FUTURE, 3)), invalid=True)
        return Decoded(self.vocabulary[index].copy())

    def encode(self, plan: np.ndarray) -> int:
        d = np.linalg.norm(self.vocabulary[..., :2] - np.asarray(plan)[None, :, :2], axis=-1).mean(axis=-1)
        return int(np.argmin(d))


def make_action_type(name: str, vocabulary_size: int = 256) -> ActionType:
    """``"trajectory"`` or ``"vocabulary"`` (loads / builds the K-entry vocabulary)."""
    if name == "trajectory":
        return TrajectoryAction()
    if name == "vocabulary":
        from irlvla_gym.plans.vocabulary import load_vocabulary

        return VocabularyAction(load_vocabulary(vocabulary_size))
    raise ValueError(f"action_type must be 'trajectory' or 'vocabulary', got {name!r}")


__all__ = ["ACTION_DIM", "LATERAL_STEP_SCALE", "MAX_SPEED_SCALE", "PLAN_SCALE", "YAW_STEP_SCALE", "ActionType",
           "Decoded", "TrajectoryAction", "VocabularyAction", "action_to_plan", "make_action_type", "plan_to_action"]
