"""EPDMS scorer (NAVSIM v2 metric, ``../shared/docs/epdms.md``), batched over K plans.

Entry points:
    :func:`score_plans` (scene + plans, simulation included), :func:`score_states` (simulated states),
    :func:`prepare_scene` (per-scene map precompute), :class:`ScoreResult`, :func:`two_stage_score`.
Two implementations that must agree: ``reference`` (per plan/step shapely loops, the spec) and ``fast`` (numpy).
Deviations from NAVSIM: README.md in this folder.
"""

from irlvla_gym.metrics.api import agent_tracks, previous_plan_states, score_plans, score_states
from irlvla_gym.metrics.config import DEFAULT_CONFIG, SUB_SCORES, ScorerConfig
from irlvla_gym.metrics.context import AgentTracks, ScoringContext, prepare_scene
from irlvla_gym.metrics.result import COLLISION_TYPES, ScoreResult, epdms, finalize, two_stage_score

__all__ = [
    "AgentTracks", "COLLISION_TYPES", "DEFAULT_CONFIG", "SUB_SCORES", "ScoreResult", "ScorerConfig",
    "ScoringContext", "agent_tracks", "epdms", "finalize", "prepare_scene", "previous_plan_states", "score_plans",
    "score_states", "two_stage_score",
]
