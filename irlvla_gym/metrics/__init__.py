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

import importlib
from typing import Any

_EXPORTS = {
    "agent_tracks": "api", "previous_plan_states": "api", "score_plans": "api", "score_states": "api",
    "DEFAULT_CONFIG": "config", "SUB_SCORES": "config", "ScorerConfig": "config",
    "AgentTracks": "context", "ScoringContext": "context", "prepare_scene": "context",
    "clear_packed_maps": "maps",
    "COLLISION_TYPES": "result", "ScoreResult": "result", "epdms": "result", "finalize": "result",
    "finalize_rows": "result", "human_zero_mask": "result", "two_stage_score": "result",
    "project_on_polyline": "route",
    "score_rows": "vectorised", "score_scene": "vectorised",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'irlvla_gym.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"irlvla_gym.metrics.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
