"""Registration of the IRL-VLA envs with gymnasium (idempotent; run on ``import irlvla_gym``).

Only strings are registered, so importing this module (and ``irlvla_gym``) imports neither the simulator, the
scorer nor torch; ``gym.make`` imports the env module on first use. ``gym.make("irlvla_gym:IRLVLA-Navsim-v2")``
works without a prior import because gymnasium imports the module before the colon (``irlvla_gym``), whose import
registers the ids. Both ids have a ``vector_entry_point``: ``gym.make_vec("IRLVLA-Navsim-v2", num_envs=8,
vectorization_mode="vector_entry_point")`` gives the batched :class:`irlvla_gym.envs.vector.NavsimVectorEnv`
(``IRLVLA-Navsim-ClosedLoop-v2``: :class:`~irlvla_gym.envs.vector.NavsimClosedLoopVectorEnv`); SAME_STEP autoreset
by default, ``autoreset_mode=...`` selects another.

``IRLVLA-Navsim-Residual-v2`` (:class:`irlvla_gym.envs.residual.NavsimResidualEnv`) is ``IRLVLA-Navsim-v2`` with
defaults for RL libraries' defaults: residual actions around a driving reference plan and a flat feature vector.
"""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = ("IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2", "IRLVLA-Navsim-Residual-v2")
_ENTRY_POINTS = {
    "IRLVLA-Navsim-v2": "irlvla_gym.envs.navsim_env:NavsimEnv",
    "IRLVLA-Navsim-ClosedLoop-v2": "irlvla_gym.envs.closed_loop:NavsimClosedLoopEnv",
    "IRLVLA-Navsim-Residual-v2": "irlvla_gym.envs.residual:NavsimResidualEnv",
}

_VECTOR_ENTRY_POINTS = {
    "IRLVLA-Navsim-v2": "irlvla_gym.envs.vector:NavsimVectorEnv",
    "IRLVLA-Navsim-ClosedLoop-v2": "irlvla_gym.envs.vector:NavsimClosedLoopVectorEnv",
    "IRLVLA-Navsim-Residual-v2": "irlvla_gym.envs.residual:NavsimResidualVectorEnv",
}


def register_envs() -> None:
    """Register the ids (does nothing for an id that is already registered)."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, vector_entry_point=_VECTOR_ENTRY_POINTS.get(env_id))
