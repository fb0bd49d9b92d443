"""Reward cost per env step: rule-based EPDMS vs the learned reward world model, on the same scenes, interleaved.

    OMP_NUM_THREADS=1 python -m benchmarks.baselines [--scenes 256] [--steps 2048] [--n-envs 8]

Both envs are the baselines' native batched vector env (camera + ego + instruction, synthetic-train); the actions are
bc_default's plans plus the PPO exploration noise (log-std -4). Blocks of 64 vector steps alternate between the two
rewards so that the load of a shared machine hits both alike; the first pass over the scenes (scene preparation,
RWM scene encodings) is timed separately from the warm steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import gymnasium as gym
    import torch

    import irlvla_gym  # noqa: F401
    from irlvla_gym.policies import VLANetwork, prepare_observations
    from irlvla_gym.utils import limit_torch_threads
    from reward_models import SceneRewardFn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--steps", type=int, default=2048, help="warm env steps per reward")
    p.add_argument("--n-envs", type=int, default=8)
    args = p.parse_args(argv)
    limit_torch_threads(1)
    keys = ("camera", "ego", "instruction")
    common = dict(num_envs=args.n_envs, vectorization_mode="vector_entry_point", num_scenes=args.scenes, obs_keys=keys)
    envs = {"epdms": gym.make_vec("IRLVLA-Navsim-v2", reward="epdms", **common),
            "rwm": gym.make_vec("IRLVLA-Navsim-v2", reward=SceneRewardFn(None, cache_size=4096), **common)}
    net = VLANetwork.from_pretrained("bc_default").eval()
    rng = np.random.default_rng(0)
    obs = {k: e.reset(seed=0)[0] for k, e in envs.items()}

    def block(kind: str, n: int) -> float:
        seconds = 0.0
        for _ in range(n):
            with torch.no_grad():
                mean = net(prepare_observations(obs[kind], keys)).numpy()
            action = np.clip(mean + np.exp(-4.0) * rng.standard_normal(mean.shape), -1, 1)
            t = time.perf_counter()
            obs[kind], *_ = envs[kind].step(action)
            seconds += time.perf_counter() - t
        return seconds

    cold_steps = max(1, 2 * args.scenes // args.n_envs)
    cold = {k: block(k, cold_steps) for k in envs}
    warm = {k: 0.0 for k in envs}
    rounds = max(1, args.steps // (64 * args.n_envs))
    for _ in range(rounds):
        for k in envs:
            warm[k] += block(k, 64)
    n_warm = rounds * 64 * args.n_envs
    print(f"| reward | first {cold_steps * args.n_envs} steps (ms/step) | warm (ms/step, {n_warm} steps) |")
    print("|---|---|---|")
    for k in envs:
        print(f"| {k} | {1e3 * cold[k] / (cold_steps * args.n_envs):.2f} | {1e3 * warm[k] / n_warm:.2f} |")
    print(f"warm ratio rwm / epdms: {warm['rwm'] / warm['epdms']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
