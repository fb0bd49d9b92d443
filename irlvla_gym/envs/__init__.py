"""Gymnasium environments of irlvla-gym.

* ``IRLVLA-Navsim-v2`` (:class:`~irlvla_gym.envs.navsim_env.NavsimEnv`): plan once per scene, scored.
* ``IRLVLA-Navsim-ClosedLoop-v2`` (:class:`~irlvla_gym.envs.closed_loop.NavsimClosedLoopEnv`): replan every 0.5 s.

Both are registered on ``import irlvla_gym``. The classes are imported lazily (attribute access) so that importing
this package stays light.

The episode logic exists once: :mod:`~irlvla_gym.envs.core` (episode state as arrays over N rows, the batched step
template) with the plan-once / closed-loop hooks of :mod:`~irlvla_gym.envs.modes`. The single envs are that core
with one row (:mod:`~irlvla_gym.envs.base`), the native vector envs (:mod:`~irlvla_gym.envs.vector`) the core with N
rows plus autoreset and batched infos.
"""

from __future__ import annotations

from typing import Any

from irlvla_gym.envs.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS", "register_envs", "NavsimEnv", "NavsimClosedLoopEnv", "EnvConfig"]


def __getattr__(name: str) -> Any:
    if name == "NavsimEnv":
        from irlvla_gym.envs.navsim_env import NavsimEnv

        return NavsimEnv
    if name == "NavsimClosedLoopEnv":
        from irlvla_gym.envs.closed_loop import NavsimClosedLoopEnv

        return NavsimClosedLoopEnv
    if name == "EnvConfig":
        from irlvla_gym.envs.config import EnvConfig

        return EnvConfig
    raise AttributeError(f"module 'irlvla_gym.envs' has no attribute {name!r}")
