"""Ray-backed SB3 ``VecEnv``: the native batched env sharded over Ray actors, on one machine or a cluster.

``PPO("MlpPolicy", RayVecEnv("IRLVLA-Navsim-Residual-v2", num_envs=64, num_workers=8))`` steps 64 envs on 8 Ray
actors (8 env rows each); the learner stays in this process (CPU or GPU). Each actor (:class:`EnvShard`) hosts a
:class:`~irlvla_gym.envs.sb3.BatchedVecEnv`, i.e. one native vector env (:mod:`irlvla_gym.envs.vector`) over its
shard of the rows, with its own scene source, caches and reward: a reward named by a string (``"rwm"``,
``"rwm:<dir>"``) is built by each actor through the :mod:`irlvla_gym.rewards` entry points. Actors are placed with
Ray's ``SPREAD`` strategy (across the cluster's nodes).

**Same numbers as the local native env.** Row i of a ``RayVecEnv`` is row i of ``BatchedVecEnv(env_id, N)``: rows
are split into contiguous shards (``numpy.array_split``), ``seed(s)`` seeds row i with ``s + i`` as SB3 does, and a
row's scene RNG is used only by the scene draws of its own resets (never by the step, never shared between rows),
so the union of the shards draws exactly the scenes of one local env. The driver sends each shard its rows' RNG
states (``seeding.np_random(s + i)``, as the native reset makes them) rather than seeds. Observations (arrays or
dicts of arrays, concatenated in row order), rewards (float32), dones and per-env infos (``terminal_observation``,
``TimeLimit.truncated``, Monitor-style ``episode`` stats, ``t`` from this object's creation) equal the local ones
(tests/envs/test_ray_vector.py). A learned reward with a batched ``score_batch`` sees smaller batches per actor and
may round differently in the last bits (as :mod:`irlvla_gym.envs.vector` notes for batches).

**Worker failure** (the actor's process or node dies: ``RayActorError`` and relatives; or a step takes longer than
``step_timeout_s``, then the actor is killed): the actor is replaced by a new one (up to ``max_restarts`` times per
run, then :class:`WorkerFailedError`; every wait on Ray has a timeout, so a failure never hangs the learner) and its
rows are restored from the RNG states the driver keeps (each row's state before and after the scene draw of its
current episode):

* every row of the shard at the start of its episode (always so for the plan-once ids, whose episodes are one step):
  the new actor redraws the same current scenes and runs the lost step with the same actions, so the run goes on
  exactly as if nothing had failed (same observations, rewards and later scenes; PPO ends with the same weights);
* otherwise (closed loop, mid-episode): the shard's episodes are **truncated**: ``done`` with
  ``TimeLimit.truncated=True``, ``terminal_observation`` the last observation the learner saw, reward 0 for the lost
  step and ``worker_restarted=True`` in the info (SB3 bootstraps the value of a truncated episode); the new actor
  starts each row's *next* episode from the RNG state after the current draw, i.e. the scene that row would have
  drawn next without the failure.

``ray`` is imported when a ``RayVecEnv`` is made (this module imports numpy, gymnasium and SB3 only).
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""One BLAS / torch thread per actor: a worker is one CPU (``num_cpus`` per actor), oversubscription is 50x slower."""


class WorkerFailedError(RuntimeError):
    """A Ray worker failed more often than ``max_restarts`` allows, or a new one could not be started in time."""


def import_ray():
    """``import ray``, or an ImportError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"the Ray backend needs Ray: pip install 'irlvla-gym[ray]' ({exc})") from exc
    return ray


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray: nothing when this process is connected already; else the cluster at ``address`` or
    ``$RAY_ADDRESS`` (``ray start --head`` prints it); else a local instance with ``num_cpus`` CPUs.

    Returns True when this call started or joined Ray (the caller then owns ``ray.shutdown()``).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    runtime_env = {"env_vars": {var: os.environ.get(var, "1") for var in THREAD_VARS}}
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    return True


def failure_types() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean "the worker is gone or stuck" (an exception raised by the env itself is not one:
    it reaches the caller as ``RayTaskError``)."""
    import ray.exceptions as rex

    return (rex.RayActorError, rex.GetTimeoutError, rex.ObjectLostError, rex.NodeDiedError, rex.WorkerCrashedError,
            rex.ActorUnschedulableError)


def seed_state(seed: int) -> dict[str, Any]:
    """The scene-RNG state the native vector env gives a row reset with ``seed`` (``seeding.np_random(seed)``)."""
    rng, _ = seeding.np_random(int(seed))
    return rng.bit_generator.state


def fresh_state() -> dict[str, Any]:
    """A scene-RNG state from OS entropy (an unseeded row, as the native env makes it)."""
    rng, _ = seeding.np_random()
    return rng.bit_generator.state


# ---------------------------------------------------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------------------------------------------------


class EnvShard:
    """One Ray actor's rows: a :class:`~irlvla_gym.envs.sb3.BatchedVecEnv` of ``num_envs`` envs (a plain class,
    made remote by :class:`RayVecEnv`).

    Args:
        env_id: the env id (with a vector entry point). num_envs: rows of this shard. kwargs: the env's arguments.
    """

    def __init__(self, env_id: str, num_envs: int, kwargs: dict[str, Any]):
        from irlvla_gym.envs.sb3 import BatchedVecEnv
        from irlvla_gym.utils import limit_torch_threads

        limit_torch_threads()
        self.env = BatchedVecEnv(env_id, num_envs, **kwargs)
        self.native = self.env.venv.unwrapped

    def spaces(self) -> tuple[Any, Any]:
        """(single observation space, single action space)."""
        return self.env.observation_space, self.env.action_space

    def location(self) -> dict[str, Any]:
        """Where this actor runs: ``{"node_id": Ray node id, "pid": process id}``."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def reset(self, states: Sequence[dict[str, Any]], options: dict[str, Any] | None):
        """Reset every row from the given scene-RNG states. Returns (obs, reset infos, RNG states after the draws)."""
        self.native.set_rng_states(list(states))
        self.env.set_options(options)
        obs = self.env.reset()
        return obs, self.env.reset_infos, self.native.rng_states()

    def step(self, actions: np.ndarray):
        """One step of the shard. Returns (obs, rewards, dones, infos, reset infos of the done rows {row: info},
        RNG states of every row after the step)."""
        self.env.step_async(actions)
        obs, rewards, dones, infos = self.env.step_wait()
        resets = {int(i): self.env.reset_infos[i] for i in np.flatnonzero(dones)}
        return obs, rewards, dones, infos, resets, self.native.rng_states()

    def call(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        """``getattr(self.env, name)(*args, **kwargs)`` (get_attr / set_attr / env_method of the VecEnv)."""
        return getattr(self.env, name)(*args, **kwargs)

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------------------------------
# The VecEnv
# ---------------------------------------------------------------------------------------------------------------------


def concat_obs(parts: Sequence[Any]) -> Any:
    """Shard observations ((n_k, ...) arrays or dicts of them) concatenated in row order."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)


def same_obs(shard_obs: Any, obs: Any, rows: np.ndarray) -> bool:
    """Whether a shard's observations equal rows ``rows`` of a batched observation."""
    if isinstance(obs, dict):
        return all(np.array_equal(shard_obs[key], obs[key][rows]) for key in obs)
    return bool(np.array_equal(shard_obs, obs[rows]))


def row_obs(obs: Any, i: int) -> Any:
    """Row ``i`` of a batched observation, copied (a terminal observation outlives the batch)."""
    if isinstance(obs, dict):
        return {key: np.array(value[i]) for key, value in obs.items()}
    return np.array(obs[i])


class RayVecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``num_envs`` envs of ``env_id`` on ``num_workers`` Ray actors (see the module docs).

    Args:
        env_id: an id with a vector entry point and SAME_STEP autoreset (``IRLVLA-Navsim-v2``,
            ``IRLVLA-Navsim-ClosedLoop-v2``, ``IRLVLA-Navsim-Residual-v2``).
        num_envs: N, the rows; split into ``num_workers`` contiguous shards of N / workers rows (+1 for the first
            N mod workers).
        num_workers: Ray actors, 1 <= workers <= N.
        address: Ray cluster to join (default ``$RAY_ADDRESS``; neither: a local instance with ``num_workers``
            CPUs, shut down by :meth:`close`). Ignored when this process is connected to Ray already.
        cpus_per_worker: Ray CPUs each actor reserves.
        step_timeout_s: seconds a step (or reset) may take before its actor counts as failed (killed, replaced).
        start_timeout_s: seconds a new actor may take to build its envs.
        max_restarts: actor replacements allowed over the whole run before :class:`WorkerFailedError`.
        **kwargs: the env's keyword arguments (picklable: scene lists, store paths, reward names).

    Attributes:
        restarts: (worker, mode) of each replacement so far, mode ``"replayed"`` or ``"truncated"``.
    """

    def __init__(self, env_id: str = "IRLVLA-Navsim-v2", num_envs: int = 8, num_workers: int = 2, *,
                 address: str | None = None, cpus_per_worker: float = 1.0, step_timeout_s: float = 300.0,
                 start_timeout_s: float = 600.0, max_restarts: int = 16, **kwargs: Any):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not 1 <= int(num_workers) <= int(num_envs):
            raise ValueError(f"num_workers must be between 1 and num_envs ({num_envs}), got {num_workers}")
        if step_timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError(f"step_timeout_s and start_timeout_s must be > 0, got {step_timeout_s}, {start_timeout_s}")
        if cpus_per_worker < 0 or max_restarts < 0:
            raise ValueError(f"cpus_per_worker and max_restarts must be >= 0, got {cpus_per_worker}, {max_restarts}")
        self.ray = import_ray()
        self.started_ray = connect_ray(address, num_cpus=int(num_workers))
        self.env_id, self.env_kwargs = env_id, dict(kwargs)
        self.shards = np.array_split(np.arange(int(num_envs)), int(num_workers))
        self.step_timeout_s, self.start_timeout_s = float(step_timeout_s), float(start_timeout_s)
        self.max_restarts = int(max_restarts)
        self.restarts: list[tuple[int, str]] = []
        self.attr_log: list[tuple[str, Any]] = []  # set_attr calls, replayed on a replacement actor
        self.remote_class = self.ray.remote(EnvShard).options(num_cpus=cpus_per_worker, max_restarts=0,
                                                              scheduling_strategy="SPREAD")
        self.kwargs_ref = self.ray.put(self.env_kwargs)  # serialised once (scene lists), shared by every actor
        self.actors = [self.remote_class.remote(env_id, len(rows), self.kwargs_ref) for rows in self.shards]
        self.closed = False
        try:
            spaces = self._wait(self.actors[0].spaces.remote(), self.start_timeout_s, "starting worker 0")
        except BaseException:  # e.g. bad env arguments (the env's own error): stop what was started
            self.close()
            raise
        super().__init__(int(num_envs), *spaces)
        # Per row: the scene-RNG state before and after the draw of the current episode (the restore points).
        self.start_states: list[dict[str, Any] | None] = [None] * self.num_envs
        self.rng_states: list[dict[str, Any] | None] = [None] * self.num_envs
        self.last_obs: Any = None
        self.pending: list[Any] = []
        self.actions: np.ndarray | None = None
        self.episode_return = np.zeros(self.num_envs, np.float64)
        self.episode_length = np.zeros(self.num_envs, np.int64)
        self.start_time = time.time()

    # ---- Ray plumbing ------------------------------------------------------------------------------------------

    def _wait(self, future: Any, timeout: float, what: str) -> Any:
        """``ray.get`` with a timeout; a failure becomes :class:`WorkerFailedError` naming ``what``."""
        try:
            return self.ray.get(future, timeout=timeout)
        except failure_types() as exc:
            raise WorkerFailedError(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def _replace(self, k: int, mode: str) -> Any:
        """Kill worker ``k`` (if still there) and start a new one with the same rows; the new actor handle."""
        self.restarts.append((k, mode))
        if len(self.restarts) > self.max_restarts:
            raise WorkerFailedError(f"worker {k} failed; {len(self.restarts) - 1} workers were replaced already "
                                    f"(max_restarts={self.max_restarts})")
        try:
            self.ray.kill(self.actors[k], no_restart=True)
        except Exception:  # noqa: BLE001 - already dead or its node gone: nothing to stop
            pass
        actor = self.remote_class.remote(self.env_id, len(self.shards[k]), self.kwargs_ref)
        self._wait(actor.spaces.remote(), self.start_timeout_s, f"starting a replacement for worker {k}")
        for name, value in self.attr_log:
            self._wait(actor.call.remote("set_attr", (name, value), {}), self.step_timeout_s, f"worker {k} set_attr")
        self.actors[k] = actor
        return actor

    def _gather(self, futures: Sequence[Any]) -> tuple[dict[int, Any], list[int]]:
        """Results of one future per worker within ``step_timeout_s`` overall: ({worker: result}, failed workers).
        A worker past the deadline is killed (its step is treated as lost)."""
        deadline = time.monotonic() + self.step_timeout_s
        results, failed = {}, []
        for k, future in enumerate(futures):
            try:
                results[k] = self.ray.get(future, timeout=max(deadline - time.monotonic(), 0.001))
            except failure_types():
                failed.append(k)
        return results, failed

    # ---- reset ------------------------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        states = [seed_state(s) if s is not None else (self.rng_states[i] or fresh_state())
                  for i, s in enumerate(self._seeds)]
        options = self._options[0] if self._options and self._options[0] else None
        futures = [actor.reset.remote([states[i] for i in rows], options)
                   for actor, rows in zip(self.actors, self.shards)]
        results, failed = self._gather(futures)
        for k in failed:  # nothing was stepped yet: the replacement simply resets the same rows
            actor = self._replace(k, "replayed")
            results[k] = self._wait(actor.reset.remote([states[i] for i in self.shards[k]], options),
                                    self.step_timeout_s, f"resetting worker {k}")
        self.start_states = states
        self.reset_infos = []
        for k in range(len(self.shards)):
            self.reset_infos += list(results[k][1])
            for j, i in enumerate(self.shards[k]):
                self.rng_states[i] = results[k][2][j]
        self.last_obs = concat_obs([results[k][0] for k in range(len(self.shards))])
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        self._reset_seeds()
        self._reset_options()
        return self.last_obs

    # ---- step -------------------------------------------------------------------------------------------------

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions)
        if len(self.actions) != self.num_envs:
            raise ValueError(f"actions: expected {self.num_envs} rows, got {len(self.actions)}")
        self.pending = [actor.step.remote(self.actions[rows]) for actor, rows in zip(self.actors, self.shards)]

    def step_wait(self) -> VecEnvStepReturn:
        results, failed = self._gather(self.pending)
        self.pending = []
        for k in failed:
            results[k] = self._recover_retrying(k)
        parts = [results[k] for k in range(len(self.shards))]
        obs = concat_obs([p[0] for p in parts])
        rewards = np.concatenate([p[1] for p in parts]).astype(np.float32)
        dones = np.concatenate([p[2] for p in parts]).astype(bool)
        infos: list[dict[str, Any]] = [info for p in parts for info in p[3]]
        for k, p in enumerate(parts):
            rows = self.shards[k]
            for j, info in p[4].items():
                self.reset_infos[rows[j]] = info
            for j, i in enumerate(rows):
                if dones[i]:
                    self.start_states[i] = self.rng_states[i]  # the next episode was drawn from the state before
                self.rng_states[i] = p[5][j]
        self._episode_stats(rewards, dones, infos)
        self.last_obs = obs
        return obs, rewards, dones, infos

    def _episode_stats(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Monitor-style ``info["episode"]`` with ``t`` from this object's creation. A worker's own ``r`` / ``l``
        are kept (summed in float64 as BatchedVecEnv does; a replacement worker starts counting at an episode
        start, so they stay right); an episode truncated by a replacement gets this object's counters (float32
        rewards; none when it had no step yet)."""
        lost = np.array([bool(dones[i] and infos[i].get("worker_restarted")) for i in range(self.num_envs)])
        self.episode_return += rewards
        self.episode_length += ~lost
        now = round(time.time() - self.start_time, 6)
        for i in np.flatnonzero(dones):
            if "episode" in infos[i]:
                infos[i]["episode"] = {**infos[i]["episode"], "t": now}
            elif self.episode_length[i] > 0:
                infos[i]["episode"] = {"r": round(float(self.episode_return[i]), 6), "l": int(self.episode_length[i]),
                                       "t": now}
            self.episode_return[i], self.episode_length[i] = 0.0, 0

    def _recover_retrying(self, k: int) -> tuple:
        """:meth:`_recover`, again while the replacement fails too (up to ``max_restarts`` replacements in all)."""
        while True:
            try:
                return self._recover(k)
            except WorkerFailedError:
                if len(self.restarts) >= self.max_restarts:
                    raise

    def _recover(self, k: int) -> tuple:
        """Replace failed worker ``k`` and return the shard's result of the lost step (module docs)."""
        rows = self.shards[k]
        actions = self.actions[rows]
        exact = bool((self.episode_length[rows] == 0).all()) and all(self.start_states[i] for i in rows)
        actor = self._replace(k, "replayed" if exact else "truncated")
        if exact:  # redraw the current scenes, then run the lost step again: as if nothing had failed
            obs = self._wait(actor.reset.remote([self.start_states[i] for i in rows], None), self.step_timeout_s,
                             f"restoring worker {k}")[0]
            if same_obs(obs, self.last_obs, rows):
                return self._wait(actor.step.remote(actions), self.step_timeout_s, f"replaying worker {k}'s step")
            self.restarts[-1] = (k, "truncated")  # not what the learner saw (a non-deterministic env): truncate
        obs, reset_infos, states = self._wait(actor.reset.remote([self.rng_states[i] for i in rows], None),
                                              self.step_timeout_s, f"restoring worker {k}")
        infos = [{"TimeLimit.truncated": True, "terminal_observation": row_obs(self.last_obs, i),
                  "worker_restarted": True} for i in rows]
        resets = {j: info for j, info in enumerate(reset_infos)}
        return obs, np.zeros(len(rows), np.float32), np.ones(len(rows), bool), infos, resets, states

    # ---- attributes: every env of a shard shares one template env ---------------------------------------------

    def _call(self, k: int, name: str, *args: Any) -> Any:
        future = self.actors[k].call.remote(name, args, {})
        try:
            return self.ray.get(future, timeout=self.step_timeout_s)
        except failure_types():
            actor = self._replace(k, "replayed")
            return self._wait(actor.call.remote(name, args, {}), self.step_timeout_s, f"worker {k} {name}")

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = self._call(0, "get_attr", attr_name, [0])[0]
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.attr_log.append((attr_name, value))
        for k in range(len(self.actors)):
            self._call(k, "set_attr", attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        future = self.actors[0].call.remote("env_method", (method_name, *method_args),
                                            {"indices": [0], **method_kwargs})
        value = self._wait(future, self.step_timeout_s, f"env_method {method_name}")[0]
        return [value for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    def worker_locations(self) -> list[dict[str, Any]]:
        """Per worker, where its actor runs: ``{"node_id", "pid"}``."""
        return [self._wait(a.location.remote(), self.step_timeout_s, f"worker {k} location")
                for k, a in enumerate(self.actors)]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started_ray:
            self.ray.shutdown()


__all__ = ["EnvShard", "RayVecEnv", "WorkerFailedError", "connect_ray", "import_ray"]
