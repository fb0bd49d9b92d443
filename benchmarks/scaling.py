"""Scale-out: env steps/s and PPO wall time per 100k steps against the number of Ray workers, beside the native env.

    python -m benchmarks.scaling [--workers 1 2] [--num-envs 128] [--steps 100] [--ppo-steps 8192] [--json]
    python -m benchmarks.scaling --env-id IRLVLA-Navsim-ClosedLoop-v2 --compact-obs --num-envs 64

Starts a local multi-process Ray cluster (``ray.cluster_utils.Cluster``: a head node and ``max(--workers) - 1`` worker
nodes, each its own raylet with one CPU, on this machine's own address: Ray 2.60 rewrites 127.0.0.1 to it), then, on
the same ``--scenes`` synthetic-train scenes:

* ``native``: one :class:`~irlvla_gym.envs.sb3.BatchedVecEnv` of ``--num-envs`` rows in this process;
* ``ray xW``: :class:`~irlvla_gym.envs.ray_vector.RayVecEnv` of the same rows on W actors (one per node, SPREAD).

For each: env steps/s over ``--steps`` vector steps of random actions after a warm-up pass (every scene's precompute
cached), the CPU seconds they cost (this process + the actors' processes, from ``psutil``) as env steps per CPU
second, and PPO (``MlpPolicy``, ``n_steps`` 64, 4 epochs of minibatch 256, one torch thread) wall seconds for
``--ppo-steps`` env steps, extrapolated to 100k, with the part spent inside the env's step (the part Ray can spread;
the learner's update stays in this process). The goal row: Ray throughput with the most workers over one worker (it can rise only up to the
cores the machine has free: at most ~2x on 2 cores, less while other work runs; see the load-average line).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks.common import force_single_thread

force_single_thread()

from benchmarks.common import BenchResult, add_common_args, at_least, report  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes ``pids`` so far."""
    import psutil

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def measure_steps(venv: Any, steps: int, warmup: int, pids: list[int]) -> dict[str, float]:
    """Env steps/s (wall) and env steps per CPU second of ``steps`` vector steps after ``warmup`` ones."""
    import numpy as np

    rng = np.random.default_rng(0)
    venv.seed(0)
    venv.reset()
    shape = (venv.num_envs, *venv.action_space.shape)
    for _ in range(warmup):
        venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
    cpu0, wall0 = cpu_seconds(pids), time.perf_counter()
    for _ in range(steps):
        venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(pids) - cpu0
    n = steps * venv.num_envs
    return {"steps_per_s": n / wall, "steps_per_cpu_s": n / max(cpu, 1e-9), "wall_s": wall, "cpu_s": cpu}


def measure_ppo(venv: Any, ppo_steps: int) -> tuple[float, float]:
    """(PPO wall seconds, of which inside the env's step) per 100k env steps, ``ppo_steps`` measured after one
    untimed rollout."""
    import torch
    from stable_baselines3 import PPO

    from baselines.envs import TimedVecEnv

    torch.set_num_threads(1)
    timed = TimedVecEnv(venv)
    model = PPO("MlpPolicy", timed, n_steps=64, batch_size=256, n_epochs=4, seed=0, device="cpu", verbose=0)
    model.learn(64 * venv.num_envs)  # warm-up
    start, env_start = time.perf_counter(), timed.env_seconds
    model.learn(ppo_steps, reset_num_timesteps=False)
    scale = 100_000 / ppo_steps
    return (time.perf_counter() - start) * scale, (timed.env_seconds - env_start) * scale


def run_one(label: str, venv: Any, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    try:
        out = measure_steps(venv, args.steps, args.warmup, pids)
        ppo = measure_ppo(venv, args.ppo_steps) if args.ppo_steps else (None, None)
        out["ppo_s_per_100k"], out["ppo_env_s_per_100k"] = ppo
    finally:
        venv.close()
    print(f"[scaling] {label}: {out}", file=sys.stderr, flush=True)
    return out


def start_cluster(nodes: int):
    """A head + ``nodes - 1`` worker nodes (1 CPU each) on this machine, and this process connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    cluster.wait_for_nodes(timeout=120)
    return cluster


def measure_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The measurements of the native env and of each worker count (keys ``native``, ``ray x1``, ...)."""
    import os

    import ray

    from irlvla_gym.envs.ray_vector import RayVecEnv
    from irlvla_gym.envs.sb3 import BatchedVecEnv
    from irlvla_gym.scenes.synthetic import generate_scene

    scenes = [generate_scene(seed, split="synthetic-train") for seed in range(args.scenes)]
    kwargs: dict[str, Any] = {"scenes": scenes}
    if args.compact_obs:
        kwargs.update(obs_keys=("compact",), flatten_obs=True)
    results = {"native": run_one("native", BatchedVecEnv(args.env_id, args.num_envs, **kwargs), [os.getpid()],
                                 args)}
    cluster = start_cluster(max(args.workers))
    try:
        for workers in args.workers:
            venv = RayVecEnv(args.env_id, args.num_envs, num_workers=workers, **kwargs)
            pids = [os.getpid()] + [loc["pid"] for loc in venv.worker_locations()]
            results[f"ray x{workers}"] = run_one(f"ray x{workers}", venv, pids, args)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results


def results_of(measured: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[BenchResult]:
    rows: list[BenchResult] = []
    note = f"{args.env_id}, {args.num_envs} envs, {args.scenes} scenes"
    for label, m in measured.items():
        rows.append(at_least(f"{label}: env steps/s (wall)", m["steps_per_s"], "steps/s", None, note))
        rows.append(at_least(f"{label}: env steps per CPU second", m["steps_per_cpu_s"], "steps/cpu-s", None,
                             "driver + actor processes" if label != "native" else "this process"))
        if m["ppo_s_per_100k"] is not None:
            rows.append(at_least(f"{label}: PPO wall per 100k steps", m["ppo_s_per_100k"], "s", None,
                                 f"MlpPolicy, {args.ppo_steps} steps measured; "
                                 f"{m['ppo_env_s_per_100k']:.1f} s of it in the env's step"))
    lo, hi = f"ray x{min(args.workers)}", f"ray x{max(args.workers)}"
    if lo != hi:
        speedup = measured[hi]["steps_per_s"] / measured[lo]["steps_per_s"]
        rows.append(at_least(f"{hi} / {lo} env steps/s", speedup, "x", args.goal,
                             "rises with workers up to the free cores"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--env-id", default="IRLVLA-Navsim-Residual-v2")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (nodes: the max)")
    parser.add_argument("--num-envs", type=int, default=128, help="env rows (split between the workers)")
    parser.add_argument("--scenes", type=int, default=32, help="synthetic-train scenes in the pool")
    parser.add_argument("--steps", type=int, default=100, help="timed vector steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed vector steps first (scene caches)")
    parser.add_argument("--ppo-steps", type=int, default=8192, help="timed PPO env steps (0: skip PPO)")
    parser.add_argument("--compact-obs", action="store_true",
                        help="the flat compact observation (for ids whose default is a Dict, e.g. the closed loop)")
    parser.add_argument("--goal", type=float, default=1.2, help="goal of the most-workers / one-worker speedup")
    args = parser.parse_args(argv)
    for name in ("num_envs", "scenes", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.workers) < 1 or max(args.workers) > args.num_envs:
        parser.error(f"--workers must be between 1 and --num-envs ({args.num_envs})")
    measured = measure_all(args)
    return report("Ray scale-out (RayVecEnv vs the native env)", results_of(measured, args), as_json=args.json,
                  meta={k: v for k, v in vars(args).items() if k != "json"} | {"measured": measured})


if __name__ == "__main__":
    sys.exit(main())
