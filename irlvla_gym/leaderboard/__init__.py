"""The leaderboard: agents evaluated on a fixed scene list with the rule-based EPDMS scorer (one-stage, or NAVSIM
v2's two-stage pseudo-simulation), written as markdown / CSV / JSON. See README.md in this folder.

Entry points: :func:`run_leaderboard` with a :class:`LeaderboardConfig`; ``irlvla leaderboard`` on the command line.
Agents and algorithms (the plug-in protocol): :mod:`irlvla_gym.agents`.
"""

from irlvla_gym.leaderboard.runner import (
    BACKENDS, LeaderboardConfig, LeaderboardResult, MissingExtraError, SceneEvaluator, run_leaderboard, scene_indices,
)
from irlvla_gym.leaderboard.two_stage import (
    DEFAULT_PERTURBATIONS, StageTwoScene, StartPerturbation, aggregate_two_stage, stage_two_scenes, stage_two_weights,
)

__all__ = [
    "BACKENDS", "DEFAULT_PERTURBATIONS", "LeaderboardConfig", "LeaderboardResult", "MissingExtraError",
    "SceneEvaluator", "StageTwoScene", "StartPerturbation", "aggregate_two_stage", "run_leaderboard",
    "scene_indices", "stage_two_scenes", "stage_two_weights",
]
