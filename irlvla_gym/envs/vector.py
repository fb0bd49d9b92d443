"""Native vector env of ``IRLVLA-Navsim-v2`` (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).

The tracker (LQR + bicycle) costs about as much for one plan as for dozens (its 40 time steps are a Python loop
over numpy arrays batched over plans), and it needs only the start state, not the scene. So this env steps N
plan-once envs by simulating all N plans in **one** ``simulate_plans`` call from their scenes' t0 states, then
scores each plan in its own scene (:meth:`NavsimEnv.finish_step`). Rewards, observations and infos equal those of
N separate envs given the same seeds. Autoreset is SAME_STEP (every step ends every episode): the returned
observation is the next scene's, ``infos["final_obs"]`` / ``infos["final_info"]`` hold the finished step's.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from irlvla_gym.envs.navsim_env import NavsimEnv


class NavsimVectorEnv(gym.vector.VectorEnv):
    """N ``IRLVLA-Navsim-v2`` envs with a batched tracker (see module docs).

    Args:
        num_envs: N.
        **kwargs: the env's arguments (:class:`~irlvla_gym.envs.config.EnvConfig`), shared by all N envs.
    """

    def __init__(self, num_envs: int = 8, **kwargs: Any):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.envs = [NavsimEnv(**kwargs) for _ in range(num_envs)]
        self.num_envs = num_envs
        first = self.envs[0]
        self.render_mode = first.render_mode
        self.metadata = {**first.metadata, "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._obs = create_empty_array(self.single_observation_space, num_envs, fn=np.zeros)

    def _stack(self, items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        self._obs = concatenate(self.single_observation_space, items, self._obs)
        return deepcopy(self._obs)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        if seed is not None:
            self._np_random_seed = seeds[0]
        obs, infos = [], {}
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            o, info = env.reset(seed=s, options=options)
            obs.append(o)
            infos = self._add_info(infos, info, i)
        return self._stack(obs), infos

    def step(self, actions):
        from irlvla_gym.sim import simulate_plans

        decoded = [env.decode_action(a) for env, a in zip(self.envs, actions)]
        todo = [i for i, d in enumerate(decoded) if not d.invalid and self.envs[i].reward_fn is None]
        states: list[np.ndarray | None] = [None] * self.num_envs
        if todo:
            start = np.stack([self.envs[i]._bundle.start_state for i in todo])
            plans = np.stack([decoded[i].plan for i in todo])
            sim = simulate_plans(start, plans)
            for j, i in enumerate(todo):
                states[i] = sim[j:j + 1]
        obs, infos = [], {}
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, bool)
        truncations = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self.envs):
            o, rewards[i], terminations[i], truncations[i], info = env.finish_step(decoded[i], states[i])
            infos = self._add_info(infos, {"final_obs": o, "final_info": info}, i)
            o, reset_info = env.reset()
            infos = self._add_info(infos, reset_info, i)
            obs.append(o)
        return self._stack(obs), rewards, terminations, truncations, infos

    def render(self):
        return [env.render() for env in self.envs] if self.render_mode == "rgb_array" else None

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
