"""Gymnasium environments of irlvla-gym.

* ``IRLVLA-Navsim-v2`` (:class:`~irlvla_gym.envs.navsim_env.NavsimEnv`): plan once per scene, scored.
* ``IRLVLA-Navsim-ClosedLoop-v2`` (:class:`~irlvla_gym.envs.closed_loop.NavsimClosedLoopEnv`): replan every 0.5 s.
* ``IRLVLA-Navsim-Residual-v2`` (:class:`~irlvla_gym.envs.residual.NavsimResidualEnv`): ``IRLVLA-Navsim-v2`` with
  residual actions around a driving reference plan and a flat feature observation, so RL libraries' defaults work.

All are registered on ``import irlvla_gym``. The classes are imported lazily (attribute access) so that importing
this package stays light.

The episode logic exists once: :mod:`~irlvla_gym.envs.core` (episode state as arrays over N rows, the batched step
template) with the plan-once / closed-loop hooks of :mod:`~irlvla_gym.envs.modes`. The single envs are that core
with one row (:mod:`~irlvla_gym.envs.base`), the native vector envs (:mod:`~irlvla_gym.envs.vector`) the core with N
rows plus autoreset and batched infos.
"""

from __future__ import annotations

from irlvla_gym.envs.registration import ENV_IDS, register_envs
from irlvla_gym.utils import lazy_exports

_EXPORTS = {
    "NavsimEnv": "irlvla_gym.envs.navsim_env",
    "NavsimClosedLoopEnv": "irlvla_gym.envs.closed_loop",
    "NavsimResidualEnv": "irlvla_gym.envs.residual",
    "EnvConfig": "irlvla_gym.envs.config",
    "RayVecEnv": "irlvla_gym.envs.ray_vector",
}

__all__ = ["ENV_IDS", "register_envs", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
