"""Stable-Baselines3 adapter: the native batched vector envs as an SB3 ``VecEnv``.

``PPO("MultiInputPolicy", BatchedVecEnv("IRLVLA-Navsim-v2", num_envs=64))`` steps the 64 envs with one tracker,
scorer and render call per vector step (:mod:`irlvla_gym.envs.vector`) instead of SB3's DummyVecEnv loop.

SB3's VecEnv contract is gymnasium's SAME_STEP autoreset: when an env's episode ends, ``step_wait`` returns the
*next* episode's observation, with the finished one in ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"] = truncated and not terminated``. The adapter therefore builds the native env with
``autoreset_mode=SAME_STEP`` and converts its batched infos to SB3's list of per-env dicts. Observations, rewards
(float32), dones and infos equal those of ``DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * N)`` with the same
seeds (tests/envs/test_sb3_adapter.py); ``seed(s)`` seeds env i with ``s + i`` at the next reset, as SB3 does.

Episode statistics are built in, as SB3's ``Monitor`` / ``VecMonitor`` write them: the info of the step that ends an
episode has ``"episode": {"r": return, "l": length, "t": seconds since the VecEnv was made}``, so PPO logs
``rollout/ep_rew_mean`` and ``ep_len_mean`` without a wrapper (a ``VecMonitor`` on top writes the same keys).

**VecNormalize**: normalise only the float entries (``ego``, ``compact``, ``agents``, ``map``;
:func:`normalizable_obs_keys` lists those of a space)::

    from stable_baselines3.common.vec_env import VecNormalize

    venv = BatchedVecEnv("IRLVLA-Navsim-v2", num_envs=16, obs_keys=("camera", "ego", "instruction"))
    venv = VecNormalize(venv, norm_obs_keys=["ego"])  # or normalizable_obs_keys(venv.observation_space)
    model = PPO(VLAPolicy, venv)

SB3's default (``norm_obs_keys=None``) normalises *every* Dict entry: the uint8 images become float32 z-scores (and
VecNormalize replaces their entries of the space it was given, in place) and the int64 instruction token ids become
floats; :class:`~irlvla_gym.policies.sb3.VLAPolicy` refuses both with a ValueError naming the key and this fix.
Each read of :attr:`BatchedVecEnv.observation_space` returns a fresh copy, so such in-place edits stay inside the
wrapper and never reach this VecEnv, its template env or a policy built on them.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from irlvla_gym.envs.registration import register_envs


def _rows_of(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's batched infos (``key`` arrays + ``_key`` masks, nested dicts) to one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos[f"_{key}"]
        if isinstance(value, dict):
            nested = _rows_of(value, n)
            for i in np.flatnonzero(mask):
                out[i][key] = nested[i]
            continue
        items = value.tolist() if value.dtype != object and value.ndim == 1 else value
        for i in np.flatnonzero(mask):
            out[i][key] = items[i]
    return out


def normalizable_obs_keys(observation_space: gym.spaces.Space) -> list[str]:
    """The entries of a Dict observation space that SB3's ``VecNormalize`` may normalise (``norm_obs_keys``): the
    floating-point ``Box`` entries (``ego``, ``compact``, ``agents``, ``map``), not the uint8 images and masks nor the
    integer token ids."""
    if not isinstance(observation_space, gym.spaces.Dict):
        raise ValueError(f"norm_obs_keys applies to Dict observation spaces, got {type(observation_space).__name__}")
    return [key for key, space in observation_space.spaces.items()
            if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)]


class CopyOnRead:
    """A data descriptor whose every read returns a deep copy of the stored value (stored under ``_<name>``).

    SB3's ``VecNormalize`` (defaults) replaces the image entries of the Dict space it reads from the wrapped VecEnv
    *in place*; with this descriptor on ``observation_space`` it edits its own copy only.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else copy.deepcopy(getattr(obj, self.attr))

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.attr, value)


class BatchedVecEnv(VecEnv):
    """SB3 ``VecEnv`` over a native vector env of ``env_id`` (see module docs).

    ``observation_space`` is the single env's space, copied on every read (:class:`CopyOnRead`): a wrapper that edits
    it in place (``VecNormalize`` with its defaults) cannot change this env's, the template's or a policy's space.
    With ``VecNormalize`` pass ``norm_obs_keys=["ego"]`` (the float entries, :func:`normalizable_obs_keys`); the
    default also normalises the uint8 images and the instruction token ids, which the VLA policy refuses.

    Args:
        env_id: ``"IRLVLA-Navsim-v2"`` or ``"IRLVLA-Navsim-ClosedLoop-v2"`` (or any id with a vector entry point
            that supports SAME_STEP autoreset).
        num_envs: N.
        **kwargs: the env's keyword arguments (shared by the N envs).
    """

    observation_space = CopyOnRead()

    def __init__(self, env_id: str = "IRLVLA-Navsim-v2", num_envs: int = 8, **kwargs: Any):
        register_envs()  # kwargs may include the vector env's own scene_group_size (NavsimVectorBase)

        self.venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                                 autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None
        self.render_mode = None
        self._episode_return = np.zeros(num_envs, np.float64)
        self._episode_length = np.zeros(num_envs, np.int64)
        self._start = time.time()

    @property
    def template(self) -> gym.Env:
        """The single env holding the shared scene source, caches and spaces."""
        return self.venv.unwrapped.template

    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = self._options[0] if self._options and self._options[0] else None
        obs, infos = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = _rows_of(infos, self.num_envs)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        self._episode_return += rewards
        self._episode_length += 1
        rows = _rows_of(infos, self.num_envs)
        final = infos.get("final_info")
        finished = _rows_of(final, self.num_envs) if final is not None else None
        out: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            if dones[i]:
                info = dict(finished[i])
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                info["terminal_observation"] = infos["final_obs"][i]
                info["episode"] = {"r": round(float(self._episode_return[i]), 6), "l": int(self._episode_length[i]),
                                   "t": round(time.time() - self._start, 6)}
                self._episode_return[i], self._episode_length[i] = 0.0, 0
                reset_info = {k: v for k, v in rows[i].items() if k not in ("final_obs", "final_info")}
                self.reset_infos[i] = reset_info
            else:
                info = rows[i]
                info["TimeLimit.truncated"] = False
            out.append(info)
        return obs, rewards.astype(np.float32), dones, out

    def rewards_of(self, actions: np.ndarray) -> np.ndarray:
        """(N,) rewards ``actions`` would earn on the current scenes (those of the last returned observations),
        without stepping: ``NavsimVectorEnv.rewards_of`` (plan-once env only)."""
        return self.venv.unwrapped.rewards_of(actions)

    def close(self) -> None:
        self.venv.close()

    # ---- attribute access: the N envs share one template env --------------------------------------------------

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.template, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.template, attr_name, value)  # shared by all envs

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        method = getattr(self.template, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


def make_vec_env(env_id: str = "IRLVLA-Navsim-v2", num_envs: int = 8, processes: int = 1,
                 **kwargs: Any) -> VecEnv:
    """An SB3 VecEnv of ``num_envs`` envs: one :class:`BatchedVecEnv` (``processes=1``), or ``processes`` worker
    processes each holding a :class:`BatchedVecEnv` of ``num_envs / processes`` envs (:class:`MultiProcessVecEnv`),
    for more cores."""
    if processes <= 1:
        return BatchedVecEnv(env_id, num_envs, **kwargs)
    return MultiProcessVecEnv(env_id, num_envs, processes, **kwargs)


def _worker(remote, parent_remote, env_id: str, num_envs: int, kwargs: dict[str, Any]) -> None:
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    parent_remote.close()
    env = BatchedVecEnv(env_id, num_envs, **kwargs)
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                env.step_async(data)
                remote.send(env.step_wait())
            elif cmd == "reset":
                env._seeds, env._options = data
                obs = env.reset()
                remote.send((obs, env.reset_infos))
            elif cmd == "call":
                name, args, kwargs_ = data
                remote.send(getattr(env, name)(*args, **kwargs_))
            elif cmd == "close":
                env.close()
                remote.close()
                break
    except (KeyboardInterrupt, EOFError):
        pass


class MultiProcessVecEnv(VecEnv):
    """``processes`` worker processes, each stepping a :class:`BatchedVecEnv` of ``num_envs / processes`` envs
    (env i lives in worker ``i // (num_envs / processes)``). One pipe round trip per worker per step carries the
    whole sub-batch (SB3's SubprocVecEnv makes one per env). Seeds: env i gets ``seed + i`` as in SB3.
    ``observation_space`` is copied on every read, as :class:`BatchedVecEnv`'s."""

    observation_space = CopyOnRead()

    def __init__(self, env_id: str = "IRLVLA-Navsim-v2", num_envs: int = 8, processes: int = 2, **kwargs: Any):
        import multiprocessing as mp

        if num_envs % processes:
            raise ValueError(f"num_envs ({num_envs}) must be a multiple of processes ({processes})")
        self.per_worker = num_envs // processes
        ctx = mp.get_context("fork")
        self.remotes, self.processes = [], []
        for _ in range(processes):
            remote, work_remote = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(work_remote, remote, env_id, self.per_worker, kwargs),
                               daemon=True)
            proc.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(proc)
        register_envs()

        probe = gym.make(env_id, **kwargs)
        super().__init__(num_envs, probe.observation_space, probe.action_space)
        probe.close()
        self._actions: np.ndarray | None = None
        self.render_mode = None
        self.closed = False  # episode statistics come from the workers' BatchedVecEnvs (info["episode"])

    def _split(self, values: Iterable[Any]) -> list[list[Any]]:
        values = list(values)
        w = self.per_worker
        return [values[k * w:(k + 1) * w] for k in range(len(self.remotes))]

    def reset(self) -> VecEnvObs:
        for remote, seeds, options in zip(self.remotes, self._split(self._seeds), self._split(self._options)):
            remote.send(("reset", (seeds, options)))
        results = [remote.recv() for remote in self.remotes]
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return {k: np.concatenate([obs[k] for obs, _ in results]) for k in results[0][0]}

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        w = self.per_worker
        for k, remote in enumerate(self.remotes):
            remote.send(("step", actions[k * w:(k + 1) * w]))

    def step_wait(self) -> VecEnvStepReturn:
        results = [remote.recv() for remote in self.remotes]
        obs = {k: np.concatenate([r[0][k] for r in results]) for k in results[0][0]}
        return (obs, np.concatenate([r[1] for r in results]), np.concatenate([r[2] for r in results]),
                [info for r in results for info in r[3]])

    def rewards_of(self, actions: np.ndarray) -> np.ndarray:
        """(N,) rewards ``actions`` would earn on the current scenes without stepping (:meth:`BatchedVecEnv.rewards_of`
        in each worker)."""
        actions = np.asarray(actions)
        w = self.per_worker
        for k, remote in enumerate(self.remotes):
            remote.send(("call", ("rewards_of", (actions[k * w:(k + 1) * w],), {})))
        return np.concatenate([remote.recv() for remote in self.remotes])

    def close(self) -> None:
        if self.closed:
            return
        for remote in self.remotes:
            remote.send(("close", None))
        for proc in self.processes:
            proc.join()
        self.closed = True

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        self.remotes[0].send(("call", ("get_attr", (attr_name,), {})))
        value = self.remotes[0].recv()[0]
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for remote in self.remotes:
            remote.send(("call", ("set_attr", (attr_name, value), {})))
            remote.recv()

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        self.remotes[0].send(("call", ("env_method", (method_name, *method_args), method_kwargs)))
        value = self.remotes[0].recv()[0]
        return [value for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
