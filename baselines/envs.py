"""The identical training env of every baseline, vectorised, with the reward chosen by the config and timed.

* :func:`env_kwargs`: ``IRLVLA-Navsim-v2`` keyword arguments of a run (the config's ``env`` + its reward).
* :func:`make_reward`: ``"epdms"`` stays a string (the env's built-in scorer); ``"rwm"`` / ``"rwm:<dir>"`` become a
  :class:`reward_models.SceneRewardFn` whose scene-encoding cache holds every training scene.
* :func:`make_sb3_vec_env`: the native batched vector env through its SB3 adapter
  (``irlvla_gym.envs.sb3.BatchedVecEnv``) when that exists, else SB3's ``DummyVecEnv`` over single envs; wrapped in
  :class:`TimedVecEnv`, which measures the seconds spent inside the env (simulation + reward).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from baselines.config import ENV_ID, RunConfig
from irlvla_gym.rewards import parse_reward


def make_reward(cfg: RunConfig) -> Any:
    """The env's ``reward`` argument for a run: the string ``"epdms"`` (the env's own scorer) or the built reward
    callable (:mod:`irlvla_gym.rewards`; the RWM's scene-encoding cache sized by ``rwm_cache_size``)."""
    spec = parse_reward(cfg.reward)
    if spec.is_builtin:
        return cfg.reward
    return spec.make(cache_size=cfg.rwm_cache_size)  # rewards without an encoding cache ignore it


def env_kwargs(cfg: RunConfig, reward: Any | None = None) -> dict[str, Any]:
    """Keyword arguments of ``gym.make(ENV_ID, ...)`` for a run (``reward``: an already made reward)."""
    kwargs = dict(cfg.env)
    kwargs["reward"] = make_reward(cfg) if reward is None else reward
    return kwargs


class TimedVecEnv(VecEnvWrapper):
    """Counts env steps and the wall-clock seconds spent inside ``step`` (simulation + reward + observations).

    Attributes:
        env_seconds: seconds inside ``step_async`` + ``step_wait`` so far. env_steps: single-env steps so far.
    """

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self.env_seconds = 0.0
        self.env_steps = 0
        self._t = 0.0

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._t = time.perf_counter()
        self.venv.step_async(actions)

    def step_wait(self):
        out = self.venv.step_wait()
        self.env_seconds += time.perf_counter() - self._t
        self.env_steps += self.num_envs
        return out


def _native_sb3(cfg: RunConfig, kwargs: dict[str, Any]) -> VecEnv:
    """The native batched vector env behind SB3's VecEnv interface (ImportError when the adapter is missing)."""
    from irlvla_gym.envs.sb3 import BatchedVecEnv  # the SB3 adapter of irlvla_gym.envs.vector (issue 9)

    return BatchedVecEnv(ENV_ID, num_envs=cfg.n_envs, **kwargs)


def make_sb3_vec_env(cfg: RunConfig, reward: Any | None = None) -> tuple[TimedVecEnv, str]:
    """The training VecEnv of a run and its kind (``"native"`` or ``"dummy"``); see the module docs."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401 - registers the env ids

    kwargs = env_kwargs(cfg, reward)
    if cfg.vec_env in ("auto", "native"):
        try:
            return TimedVecEnv(_native_sb3(cfg, kwargs)), "native"
        except ImportError as exc:
            if cfg.vec_env == "native":
                raise RuntimeError(f"vec_env='native' but the SB3 adapter of the native vector env is unusable: "
                                   f"{exc}") from exc
    venv = DummyVecEnv([lambda: gym.make(ENV_ID, **kwargs) for _ in range(cfg.n_envs)])
    return TimedVecEnv(venv), "dummy"


def make_gym_vector_env(cfg: RunConfig, reward: Any | None = None):
    """The native gymnasium vector env (SAME_STEP autoreset) for hand-written loops (:mod:`baselines.dppo`)."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401

    return gym.make_vec(ENV_ID, num_envs=cfg.n_envs, vectorization_mode="vector_entry_point",
                        **env_kwargs(cfg, reward))


__all__ = ["TimedVecEnv", "env_kwargs", "make_gym_vector_env", "make_reward", "make_sb3_vec_env"]
