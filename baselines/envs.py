"""The identical training env of every baseline, vectorised, with the reward chosen by the config and timed.

* :func:`env_kwargs`: ``IRLVLA-Navsim-v2`` keyword arguments of a run (the config's ``env`` + its reward).
* :func:`make_reward`: ``"epdms"`` stays a string (the env's built-in scorer); ``"rwm"`` / ``"rwm:<dir>"`` become a
  :class:`reward_models.SceneRewardFn` whose scene-encoding cache holds every training scene.
* :func:`make_sb3_vec_env`: the native batched vector env through its SB3 adapter
  (``irlvla_gym.envs.sb3.BatchedVecEnv``) when that exists, else SB3's ``DummyVecEnv`` over single envs; wrapped in
  :class:`TimedVecEnv`, which measures the seconds spent inside the env (simulation + reward). With the Ray backend
  (:data:`BACKEND_ENV`, ``irlvla baselines train ... --backend ray --num-workers N``) the same rows run on N Ray
  actors (``irlvla_gym.envs.ray_vector.RayVecEnv``: same observations, rewards and episodes as the native env), on the
  cluster of ``--ray-address`` / ``$RAY_ADDRESS`` or a local Ray instance.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from baselines.config import ENV_ID, RunConfig
from irlvla_gym.rewards import parse_reward

BACKEND_ENV = "IRLVLA_VEC_BACKEND"
"""``local`` (default) or ``ray``: where :func:`make_sb3_vec_env` runs the envs (written by ``baselines.cli``'s
``apply_scale_options`` from ``--backend``; an environment variable because the runner's code paths take no such
argument, and the backend changes the speed, not the numbers, so it is no part of a run's config)."""
WORKERS_ENV = "IRLVLA_RAY_WORKERS"
"""Ray actors of the ``ray`` backend (``--num-workers``; default 2). The cluster: ``$RAY_ADDRESS`` (``--ray-address``),
else a local Ray instance."""


def scale_settings() -> tuple[str, int]:
    """(backend, Ray workers) from :data:`BACKEND_ENV` / :data:`WORKERS_ENV`; a bad value is a ValueError naming
    the variable."""
    backend = os.environ.get(BACKEND_ENV) or "local"
    if backend not in ("local", "ray"):
        raise ValueError(f"{BACKEND_ENV} must be 'local' or 'ray', got {backend!r}")
    workers = os.environ.get(WORKERS_ENV) or "2"
    if not workers.isdigit() or int(workers) < 1:
        raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {workers!r}")
    return backend, int(workers)


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


def pay_relative(paid: np.ndarray, baseline: np.ndarray, infos: Sequence[dict[str, Any]]) -> np.ndarray:
    """(N,) float32 ``paid - baseline`` (both (N,)), the reward a per-scene baseline wrapper hands PPO; each info
    keeps ``raw_reward`` (what the env paid) and ``baseline_reward``."""
    paid, baseline = np.asarray(paid, np.float64), np.asarray(baseline, np.float64)
    for info, r, b in zip(infos, paid.tolist(), baseline.tolist()):
        info["raw_reward"], info["baseline_reward"] = r, b
    return (paid - baseline).astype(np.float32)


class SelfCriticalReward(VecEnvWrapper):
    """Pays ``reward(action) - reward(mean action)`` on the same scene: a per-scene baseline for one-step episodes.

    Why: in the plan-once env every episode is one plan of one scene, and the scenes' scores differ far more than
    the plans sampled in one scene do (EPDMS std ~0.3 across training scenes); PPO's critic has to predict that
    from the observation and at the paper budget its explained variance stays ~0, so the advantage is mostly
    scene difficulty. The score of the policy's own mean plan in the same scene removes it exactly (the
    self-critical baseline of Rennie et al. 2017): the advantage of a sample is how much better it is than what the
    policy would do deterministically. A cheap reward (the RWM) makes the second query affordable.

    Before each step the wrapped env scores the mean actions on the current scenes without stepping
    (``rewards_of``, :class:`~irlvla_gym.envs.sb3.BatchedVecEnv` / ``MultiProcessVecEnv``), clipped to the action
    box as SB3 clips the sampled ones. Infos get ``raw_reward`` (what the env paid) and ``baseline_reward``.

    Args:
        venv: a VecEnv with ``rewards_of(actions) -> (N,)``.
        mean_actions: ``obs -> (N, A)`` mean actions of the policy for the current observations; set it (attribute
            ``mean_actions``) before the first step, e.g. once the model exists.
    """

    def __init__(self, venv: VecEnv, mean_actions: Callable[[Any], np.ndarray] | None = None):
        super().__init__(venv)
        try:
            venv.rewards_of
        except AttributeError:
            raise ValueError(f"reward_baseline 'mean-plan' needs an env that scores plans without stepping "
                             f"(rewards_of); {type(venv).__name__} has none (use the native or multi-process "
                             "vector env, not dummy or ray)") from None
        self.mean_actions = mean_actions
        self._obs: Any = None
        self._baseline: np.ndarray | None = None

    def reset(self):
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        if self.mean_actions is None:
            raise RuntimeError("SelfCriticalReward: set mean_actions before stepping")
        if self._obs is None:
            raise RuntimeError("SelfCriticalReward: call reset() before step()")
        space = self.action_space
        mean = np.clip(np.asarray(self.mean_actions(self._obs)), space.low, space.high)
        self._baseline = np.asarray(self.venv.rewards_of(mean), np.float64).reshape(self.num_envs)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self._obs = obs
        rewards = np.asarray(rewards)
        # in the paid rewards' precision (SB3 adapters pay float32): the mean plan itself is paid exactly 0
        baseline = self._baseline.astype(rewards.dtype).astype(np.float64)
        return obs, pay_relative(rewards, baseline, infos), dones, infos


class GroupRelativeReward(VecEnvWrapper):
    """Pays each plan its reward minus the mean reward of the other plans of its scene group (leave-one-out).

    The env starts every episode of a group of ``group_size`` consecutive rows in one scene
    (``scene_group_size``, :class:`~irlvla_gym.envs.vector.NavsimVectorBase`), so each step samples G plans per
    scene and the group's other rewards are an unbiased per-scene baseline (RLOO; GRPO without the std): the
    advantage says which of the policy's own samples of that scene were better, not how easy the scene is. No extra
    reward query: the G rewards are the step's own. Infos get ``raw_reward`` and ``baseline_reward``.

    Args:
        venv: the vector env with scene groups. group_size: G >= 2, dividing its number of envs.
    """

    def __init__(self, venv: VecEnv, group_size: int):
        super().__init__(venv)
        if group_size < 2 or venv.num_envs % group_size:
            raise ValueError(f"reward_baseline 'group': scene_group_size must be >= 2 and divide n_envs "
                             f"({venv.num_envs}), got {group_size}")
        self.group_size = int(group_size)

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        paid = np.asarray(rewards, np.float64).reshape(-1, self.group_size)
        scenes = [info.get("scene_index") for info in infos]
        if None not in scenes and np.ptp(np.asarray(scenes).reshape(-1, self.group_size), axis=1).any():
            raise RuntimeError("GroupRelativeReward: the rows of a group planned different scenes (make the env with "
                               "scene_group_size equal to the group size)")
        baseline = (paid.sum(axis=1, keepdims=True) - paid) / (self.group_size - 1)
        return obs, pay_relative(paid.reshape(-1), baseline.reshape(-1), infos), dones, infos


def policy_mean_actions(policy: Any) -> Callable[[Any], np.ndarray]:
    """``obs -> (N, A)`` mean actions of an SB3 policy for :class:`SelfCriticalReward`: the means the policy
    recorded in its last rollout forward for these very observations (``last_forward``,
    :class:`~irlvla_gym.policies.VLAPolicy`), else a deterministic ``predict`` (one more forward pass)."""

    def mean_actions(obs: Any) -> np.ndarray:
        recorded = getattr(policy, "last_forward", None)
        if recorded is not None and _same_obs(recorded[0], obs):
            return recorded[1].cpu().numpy()
        return policy.predict(obs, deterministic=True)[0]

    return mean_actions


def _same_obs(seen: Any, obs: Any) -> bool:
    """Whether the observations a policy saw (tensors or arrays, dict or not) equal ``obs``."""
    if isinstance(obs, dict):
        return (isinstance(seen, dict) and seen.keys() == obs.keys()
                and all(_same_obs(seen[k], obs[k]) for k in obs))
    seen = seen.cpu().numpy() if hasattr(seen, "cpu") else np.asarray(seen)
    obs = np.asarray(obs)
    if seen.shape != obs.shape and obs.ndim == 4:  # SB3's VecTransposeImage: the policy saw (N, C, H, W)
        obs = np.moveaxis(obs, -1, 1)
    return seen.shape == obs.shape and np.array_equal(seen, obs)


def _native_sb3(cfg: RunConfig, kwargs: dict[str, Any]) -> VecEnv:
    """The native batched vector env behind SB3's VecEnv interface (ImportError when the adapter is missing)."""
    from irlvla_gym.envs.sb3 import BatchedVecEnv  # the SB3 adapter of irlvla_gym.envs.vector

    groups = {"scene_group_size": cfg.scene_group_size} if cfg.scene_group_size > 1 else {}
    return BatchedVecEnv(ENV_ID, num_envs=cfg.n_envs, **groups, **kwargs)


def ray_vec_env(cfg: RunConfig, num_workers: int) -> VecEnv:
    """The run's envs on ``num_workers`` Ray actors (at most ``n_envs``), on ``$RAY_ADDRESS`` or a local Ray. The
    reward goes by name, so each actor builds its own (a learned reward with its default encoding cache, not
    ``rwm_cache_size``)."""
    from irlvla_gym.envs.ray_vector import RayVecEnv

    return RayVecEnv(ENV_ID, num_envs=cfg.n_envs, num_workers=min(int(num_workers), cfg.n_envs),
                     **env_kwargs(cfg, reward=cfg.reward))


def make_sb3_vec_env(cfg: RunConfig, reward: Any | None = None, backend: str | None = None,
                     num_workers: int | None = None) -> tuple[TimedVecEnv, str]:
    """The training VecEnv of a run and its kind (``"native"``, ``"dummy"`` or ``"ray"``); see the module docs.
    ``backend`` / ``num_workers``: default :func:`scale_settings` (local unless ``--backend ray``)."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401 - registers the env ids

    env_backend, env_workers = scale_settings()
    # the self-critical baseline's second query is env time too: TimedVecEnv outside it
    wrap = {"mean-plan": lambda v: TimedVecEnv(SelfCriticalReward(v)),
            "group": lambda v: TimedVecEnv(GroupRelativeReward(v, cfg.scene_group_size))}.get(cfg.reward_baseline,
                                                                                              TimedVecEnv)
    if (backend or env_backend) == "ray":
        return wrap(ray_vec_env(cfg, num_workers or env_workers)), "ray"
    kwargs = env_kwargs(cfg, reward)
    if cfg.vec_env in ("auto", "native"):
        try:
            return wrap(_native_sb3(cfg, kwargs)), "native"
        except ImportError as exc:
            if cfg.vec_env == "native":
                raise RuntimeError(f"vec_env='native' but the SB3 adapter of the native vector env is unusable: "
                                   f"{exc}") from exc
    venv = DummyVecEnv([lambda: gym.make(ENV_ID, **kwargs) for _ in range(cfg.n_envs)])
    return wrap(venv), "dummy"


def self_critical_wrapper(venv: VecEnv) -> SelfCriticalReward | None:
    """The :class:`SelfCriticalReward` among ``venv``'s wrappers (None without one)."""
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, SelfCriticalReward):
            return venv
        venv = venv.venv
    return None


def make_gym_vector_env(cfg: RunConfig, reward: Any | None = None):
    """The native gymnasium vector env (SAME_STEP autoreset) for hand-written loops (:mod:`baselines.dppo`)."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401

    return gym.make_vec(ENV_ID, num_envs=cfg.n_envs, vectorization_mode="vector_entry_point",
                        **env_kwargs(cfg, reward))


__all__ = ["BACKEND_ENV", "WORKERS_ENV", "GroupRelativeReward", "SelfCriticalReward", "TimedVecEnv", "env_kwargs",
           "make_gym_vector_env", "make_reward", "make_sb3_vec_env", "pay_relative", "policy_mean_actions",
           "ray_vec_env", "scale_settings", "self_critical_wrapper"]
