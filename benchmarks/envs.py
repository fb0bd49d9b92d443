"""Env speed: steps/s of IRLVLA-Navsim-v2 and IRLVLA-Navsim-ClosedLoop-v2 with the default observations
(bev + ego + instruction) and ``reward="epdms"``, beside highway-env's ``highway-fast-v0`` when it is installed.

Run ``python -m benchmarks.envs`` (a table) or ``python -m benchmarks.envs --json`` (one JSON object).

Rows, per env id:

* ``single env``: one env, random actions (``action_space.sample``), resets included.
* ``SyncVectorEnv x8``: 8 envs in one process (SAME_STEP autoreset, so the plan-once env does not spend every other
  step on an autoreset); steps/s counts env steps (8 per vector step).
* ``AsyncVectorEnv x2``: 2 worker processes.
* ``native vector x8``: ``gym.make_vec(..., vectorization_mode="vector_entry_point")``, the batched
  :class:`~irlvla_gym.envs.vector.NavsimVectorEnv` / ``NavsimClosedLoopVectorEnv`` (one tracker, scorer and render
  call per vector step); ``, 2 processes``: two such processes at once, the "two cores" figure the plan-once goal
  (>= 1,000 steps/s) is checked against; ``single env, 2 processes``: the same for two single envs.
* The per-scene precompute is shared by the envs of a process (and inherited by forked workers), so warm-ups
  visit each scene once per process.
* ``benchmarks/vector_env.py`` has the N = 1 .. 256 comparison with SyncVectorEnv / DummyVecEnv / SubprocVecEnv.
* ``scene precompute``: first visit of a scene (generation + scoring context + agents + expert rollout + t0
  observation), ms per scene; timed in a warm-up that visits every scene of the pool once, so the timed loops run
  from the in-memory LRU (``num_scenes`` pool, default 64), as a training run does after its first pass.
* ``highway-fast-v0``: single env, random actions, and the ratio of each IRLVLA single-env figure to it.

Every process pins numpy/torch to one thread.

Measured (2 shared cores, load average ~4 from other users, steps/s): IRLVLA-Navsim-v2 single env 596 (was ~200),
SyncVectorEnv x8 562, native vector x8 1,680 on one core and 1,602 on two processes (was ~490); ClosedLoop single
env 303 (was 84-144), native vector x8 483.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402

import irlvla_gym  # noqa: E402,F401
from benchmarks.common import BenchResult, add_common_args, at_least, report, skipped  # noqa: E402

ENV_IDS = ("IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2")
GOAL_PLAN_ONCE = 1000.0  # steps/s on two cores, bev + ego + instruction


def _make(env_id: str, num_scenes: int) -> gym.Env:
    import torch

    torch.set_num_threads(1)
    env = gym.make(env_id, num_scenes=num_scenes, scene_cache_size=max(num_scenes, 1))
    env.unwrapped.action_space.seed(0)
    return env


def _warm(env: gym.Env, num_scenes: int) -> None:
    """Visit every scene of the pool once (fills the per-scene LRU)."""
    for i in range(num_scenes):
        env.reset(options={"scene_index": i})
        env.step(env.action_space.sample())


def single_env(env_id: str, steps: int, num_scenes: int) -> tuple[float, float]:
    env = _make(env_id, num_scenes)
    t0 = time.perf_counter()
    _warm(env, num_scenes)
    per_scene_ms = 1000.0 * (time.perf_counter() - t0) / num_scenes
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, te, tr, _ = env.step(env.action_space.sample())
        if te or tr:
            env.reset()
    env.close()
    return steps / (time.perf_counter() - t0), per_scene_ms


def vector_env(env_id: str, steps: int, num_scenes: int, num_envs: int, asynchronous: bool) -> float:
    fns = [functools.partial(_make, env_id, num_scenes) for _ in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    envs = (gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode) if asynchronous
            else gym.vector.SyncVectorEnv(fns, autoreset_mode=mode))
    try:
        envs.reset(seed=0)
        # Warm every copy: each sub-env visits every scene of the pool once.
        for i in range(num_scenes):
            envs.reset(options={"scene_index": i})
            envs.step(envs.action_space.sample())
        envs.reset(seed=0)
        envs.action_space.seed(0)
        n = max(1, steps // num_envs)
        t0 = time.perf_counter()
        for _ in range(n):
            envs.step(envs.action_space.sample())
        return n * num_envs / (time.perf_counter() - t0)
    finally:
        envs.close()


def native_vector(env_id: str, steps: int, num_scenes: int, num_envs: int) -> tuple[int, float]:
    """(env steps, seconds) of the native batched vector env (``vectorization_mode="vector_entry_point"``)."""
    import torch

    torch.set_num_threads(1)
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", num_scenes=num_scenes,
                        scene_cache_size=max(num_scenes, 1))
    try:
        envs.reset(seed=0)
        for i in range(num_scenes):  # warm every copy
            envs.reset(options={"scene_index": i})
            envs.step(envs.action_space.sample())
        envs.reset(seed=0)
        envs.action_space.seed(0)
        n = max(1, steps // num_envs)
        t0 = time.perf_counter()
        for _ in range(n):
            envs.step(envs.action_space.sample())
        return n * num_envs, time.perf_counter() - t0
    finally:
        envs.close()


def _native_worker(args: tuple) -> tuple[int, float]:
    force_single_thread()
    return native_vector(*args)


def native_vector_processes(env_id: str, steps: int, num_scenes: int, num_envs: int, processes: int) -> float:
    """Total env steps/s of ``processes`` processes each running a native vector env (timed loops overlap)."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(processes) as pool:
        out = pool.map(_native_worker, [(env_id, steps, num_scenes, num_envs)] * processes)
    return sum(n for n, _ in out) / max(t for _, t in out)


def _single_worker(args: tuple) -> tuple[int, float]:
    force_single_thread()
    env_id, steps, num_scenes = args
    env = _make(env_id, num_scenes)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, te, tr, _ = env.step(env.action_space.sample())
        if te or tr:
            env.reset()
    return steps, time.perf_counter() - t0


def single_env_processes(env_id: str, steps: int, num_scenes: int, processes: int) -> float:
    """Total steps/s of ``processes`` processes each stepping one single env (forked after the warm-up, so the
    per-scene caches are inherited)."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(processes) as pool:
        out = pool.map(_single_worker, [(env_id, steps, num_scenes)] * processes)
    return sum(n for n, _ in out) / max(t for _, t in out)


def highway(steps: int) -> float | None:
    try:
        import highway_env  # noqa: F401
    except ImportError:
        return None
    env = gym.make("highway-fast-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, te, tr, _ = env.step(env.action_space.sample())
        if te or tr:
            env.reset()
    env.close()
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="env steps per measurement")
    parser.add_argument("--num-scenes", type=int, default=64, help="scene pool (warmed up before timing)")
    parser.add_argument("--skip-async", action="store_true")
    add_common_args(parser)
    args = parser.parse_args(argv)

    results: list[BenchResult] = []
    hw = highway(args.steps)
    singles: dict[str, float] = {}
    for env_id in ENV_IDS:
        sps, per_scene = single_env(env_id, args.steps, args.num_scenes)
        singles[env_id] = sps
        ratio = "" if hw is None else f"{sps / hw:.3g}x highway-fast-v0"
        results.append(at_least(f"{env_id} single env", sps, "steps/s", None, note=ratio))
        results.append(at_least(f"{env_id} scene precompute", per_scene, "ms/scene", None,
                                note=f"first visit, {args.num_scenes} scenes"))
        results.append(at_least(f"{env_id} SyncVectorEnv x8",
                                vector_env(env_id, args.steps, args.num_scenes, 8, False), "steps/s", None))
        if args.skip_async:
            results.append(skipped(f"{env_id} AsyncVectorEnv x2", "steps/s", "--skip-async"))
        else:
            results.append(at_least(f"{env_id} AsyncVectorEnv x2",
                                    vector_env(env_id, args.steps, args.num_scenes, 2, True), "steps/s", None,
                                    note="two worker processes"))
        n, secs = native_vector(env_id, args.steps, args.num_scenes, 8)
        results.append(at_least(f"{env_id} native vector x8", n / secs, "steps/s", None,
                                note="vector_entry_point: batched tracker, scorer, render; one core"))
        results.append(at_least(f"{env_id} native vector x8, 2 processes",
                                native_vector_processes(env_id, args.steps, args.num_scenes, 8, 2), "steps/s",
                                GOAL_PLAN_ONCE if env_id == ENV_IDS[0] else None, note="two cores"))
        if env_id == ENV_IDS[0]:
            results.append(at_least(f"{env_id} single env, 2 processes",
                                    single_env_processes(env_id, args.steps, args.num_scenes, 2), "steps/s",
                                    GOAL_PLAN_ONCE, note="two cores"))
    if hw is None:
        results.append(skipped("highway-fast-v0 single env", "steps/s", "highway-env is not installed"))
    else:
        results.append(at_least("highway-fast-v0 single env", hw, "steps/s", None))
    meta: dict[str, Any] = {"steps": args.steps, "num_scenes": args.num_scenes,
                            "obs_keys": ["bev", "ego", "instruction"], "reward": "epdms"}
    return report("env benchmarks", results, as_json=args.json, meta=meta)


if __name__ == "__main__":
    raise SystemExit(main())
