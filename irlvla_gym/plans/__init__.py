"""Plans: the 4 s trajectories (8 poses) agents output, and how actions encode them.

* :mod:`irlvla_gym.plans.codec`: ``action_to_plan`` / ``plan_to_action`` (the normalised Box(24) action), the
  action types of the envs (``trajectory``, ``vocabulary``).
* :mod:`irlvla_gym.plans.vocabulary`: the k-means trajectory vocabulary (K = 256 shipped).
* :mod:`irlvla_gym.plans.exploration`: a smooth basis of plan changes (longitudinal / lateral acceleration, jerk).
* :mod:`irlvla_gym.plans.residual`: the ``residual`` action: those changes around a reference plan that drives.

Shared by the envs, the policies, the reward model, the leaderboard and the baselines, so it lives in the core.
"""

from irlvla_gym.plans.codec import (
    ACTION_DIM, PLAN_SCALE, ActionType, Decoded, TrajectoryAction, VocabularyAction, action_to_plan, make_action_type,
    plan_to_action,
)

__all__ = ["ACTION_DIM", "PLAN_SCALE", "ActionType", "Decoded", "TrajectoryAction", "VocabularyAction",
           "action_to_plan", "make_action_type", "plan_to_action"]
