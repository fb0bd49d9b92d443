"""PPO speed of a baselines variant (default ``ppo-vla-rwm``, quick preset): where a PPO iteration's time goes.

    python -m benchmarks.ppo [--variant ppo-vla-rwm] [--iterations 3] [--set key=value ...] [--json]

Builds the variant's env and model exactly as ``irlvla baselines train`` does (``baselines.sb3_ppo.build_model``),
runs one untimed warm-up iteration (scene preparation, reward-model caches), then times ``--iterations`` PPO
iterations (one rollout of ``n_steps x n_envs`` env steps + one ``train()`` of ``n_epochs`` epochs):

* env: seconds inside the vector env's ``step`` (simulation + reward + observations; ``TimedVecEnv``);
* rollout policy: the rest of ``collect_rollouts`` (policy forward under ``no_grad``, sampling, buffer writes);
* update: ``train()`` (minibatch forward + backward + optimizer over the rollout buffer).

Each is reported in seconds per 100k env steps (extrapolated linearly from the timed iterations), with the wall
total. Threads: the project default (one torch thread) unless ``IRLVLA_NUM_THREADS`` says otherwise. Wall-clock
figures: on a shared machine, note the load (``uptime``) with them and compare only runs made side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from benchmarks.common import BenchResult, add_common_args, report


def _timed(fn: Callable[..., Any], totals: dict[str, float], name: str) -> Callable[..., Any]:
    """``fn`` wrapped to add its wall seconds to ``totals[name]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
    return wrapper


def time_ppo(variant: str = "ppo-vla-rwm", preset: str = "quick", iterations: int = 3,
             overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """Seconds of ``iterations`` timed PPO iterations of a variant, split into env / rollout policy / update.

    Returns ``{"steps", "env_s", "rollout_policy_s", "update_s", "wall_s", "setup_s"}`` (env steps, seconds).
    """
    from baselines.config import load_config
    from baselines.envs import make_reward, make_sb3_vec_env
    from baselines.sb3_ppo import build_model

    from baselines.runner import prepare_training_scenes

    t0 = time.perf_counter()
    cfg = load_config(variant, preset, list(overrides))
    prepare_training_scenes(cfg)  # as irlvla baselines train: the split's store when the pool outgrows the cache
    venv, _ = make_sb3_vec_env(cfg, make_reward(cfg))
    model = build_model(cfg, venv, seed=0, tensorboard_log=None)
    per_iteration = int(model.n_steps) * venv.num_envs
    model.learn(per_iteration)  # warm-up: first scenes, caches, allocator
    setup = time.perf_counter() - t0

    totals: dict[str, float] = {}
    model.collect_rollouts = _timed(model.collect_rollouts, totals, "collect")
    model.train = _timed(model.train, totals, "update")
    env_before = venv.env_seconds
    start = time.perf_counter()
    model.learn(iterations * per_iteration, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    env = venv.env_seconds - env_before
    venv.close()
    return {"steps": float(iterations * per_iteration), "env_s": env, "rollout_policy_s": totals["collect"] - env,
            "update_s": totals["update"], "wall_s": wall, "setup_s": setup}


def results_of(times: dict[str, float], variant: str) -> list[BenchResult]:
    """Benchmark rows (seconds per 100k env steps) of :func:`time_ppo`'s output."""
    scale = 1e5 / times["steps"]
    note = f"{int(times['steps'])} timed env steps"
    rows = [BenchResult(f"{variant}: {name} per 100k env steps", times[key] * scale, "s", note=note)
            for name, key in (("env", "env_s"), ("rollout policy", "rollout_policy_s"), ("update", "update_s"),
                              ("wall", "wall_s"))]
    rows[-1].extra = {k: v for k, v in times.items()}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--variant", default="ppo-vla-rwm")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--iterations", type=int, default=3, help="timed PPO iterations (after one warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for irlvla baselines train (repeatable)")
    args = parser.parse_args(argv)
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    times = time_ppo(args.variant, args.preset, args.iterations, tuple(args.overrides))
    return report(f"PPO speed ({args.variant}, {args.preset})", results_of(times, args.variant), as_json=args.json,
                  meta={"iterations": args.iterations, "overrides": args.overrides})


if __name__ == "__main__":
    sys.exit(main())
