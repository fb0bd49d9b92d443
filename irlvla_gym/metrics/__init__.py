"""EPDMS scorer (NAVSIM v2 metric, ``../shared/docs/epdms.md``), batched over plans and scenes.

Entry points:
    :func:`score_plans` (scene + plans, simulation included), :func:`score_states` (simulated states),
    :func:`prepare_scene` (per-scene map precompute), :class:`ScoreResult`, :func:`two_stage_score`.
    Raw evaluation (before EP normalisation / human filter): :func:`score_scene` (K plans of one scene) and
    :func:`score_rows` (rows of many scenes), aggregated by :func:`finalize` / :func:`finalize_rows`.
One vectorised implementation (``vectorised.py`` and its sub-score family modules) and the spec it must agree with,
``reference.py`` (per plan/step shapely loops). Deviations from NAVSIM: README.md in this folder.
The names below load on first use (shapely and scipy stay out of ``import irlvla_gym.metrics.config`` and of
``irlvla --help``).
"""

from __future__ import annotations

from irlvla_gym.utils import lazy_exports

_NAMES = {  # module -> the public names it defines
    "api": ("agent_tracks", "previous_plan_states", "score_plans", "score_states"),
    "config": ("DEFAULT_CONFIG", "SUB_SCORES", "ScorerConfig"),
    "context": ("AgentTracks", "ScoringContext", "prepare_scene"),
    "maps": ("clear_packed_maps",),
    "result": ("COLLISION_TYPES", "ScoreResult", "epdms", "finalize", "finalize_rows", "human_zero_mask",
               "two_stage_score"),
    "route": ("project_on_polyline",),
    "vectorised": ("score_rows", "score_scene"),
}
_EXPORTS = {name: f"irlvla_gym.metrics.{module}" for module, names in _NAMES.items() for name in names}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
