"""VLA policy speed, on one core: network forward latency at batch 1 and 64, and behaviour-cloning samples/s.

Run ``python -m benchmarks.policy`` (a table) or ``python -m benchmarks.policy --json`` (one JSON object).

Rows (process CPU time on one thread, best of ``--repeats`` timed rounds, so that other processes on a shared
machine do not distort the figures; default-size env observations of synthetic scenes):

* forward <config>, batch 1 / 64: ``VLANetwork`` in eval mode under ``torch.no_grad`` from network inputs to the
  mean action (ms per call). Configs: the default (camera + ego + instruction, Gaussian head), the diffusion head,
  and all four keys (camera + bev + ego + instruction), and the vector sets (agents + map + ego + instruction).
* SB3 predict, batch 1: ``VLAPolicy.predict`` (numpy observation in, action out, SB3 preprocessing included).
* BC train, batch 64: one behaviour-cloning update (forward, MSE loss, backward, AdamW step), in samples/s.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, at_least, report  # noqa: E402

CONFIGS = {
    "default": {},
    "diffusion": {"head": "diffusion"},
    "all keys": {"obs_keys": ("camera", "bev", "ego", "instruction")},
    "vectors": {"obs_keys": ("agents", "map", "ego", "instruction")},
}


def _best_cpu_time(fn: Callable[[], object], repeats: int, calls: int) -> float:
    """Best (over ``repeats`` rounds) process CPU seconds per call of ``fn``, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def _observations(batch: int) -> dict[str, np.ndarray]:
    from irlvla_gym.obs import ObservationBuilder
    from irlvla_gym.scenes.synthetic import generate_scene

    scenes = [generate_scene(seed, split="synthetic-val") for seed in range(1_000_000, 1_000_008)]
    obs = ObservationBuilder(("camera", "bev", "ego", "instruction", "agents", "map")).observe_batch(scenes)
    reps = int(np.ceil(batch / len(scenes)))
    return {k: np.concatenate([v] * reps)[:batch] for k, v in obs.items()}


def run(repeats: int = 3) -> list[BenchResult]:
    import torch

    from irlvla_gym.policies.network import VLANetwork, prepare_observations

    torch.manual_seed(0)
    obs64 = _observations(64)
    results: list[BenchResult] = []
    for name, overrides in CONFIGS.items():
        net = VLANetwork(overrides).eval()
        params = sum(p.numel() for p in net.parameters())
        for batch in (1, 64):
            inputs = prepare_observations({k: v[:batch] for k, v in obs64.items()}, net.obs_keys)
            with torch.no_grad():
                sec = _best_cpu_time(lambda: net(inputs), repeats, 20 if batch == 1 else 3)
            results.append(at_least(f"forward {name}, batch {batch}", sec * 1e3, "ms", None,
                                    note=f"{'+'.join(net.obs_keys)}, {net.config.head}, {params / 1e6:.2f} M params",
                                    samples_per_s=batch / sec))

    # SB3 predict (numpy in, action out) through the policy on the plan-once env's spaces
    import gymnasium as gym

    import irlvla_gym  # noqa: F401
    from irlvla_gym.policies.sb3 import VLAPolicy

    env = gym.make("IRLVLA-Navsim-v2", num_scenes=1, obs_keys=("camera", "ego", "instruction"))
    policy = VLAPolicy(env.observation_space, env.action_space, lambda _: 1e-4)
    single = {k: obs64[k][0] for k in ("camera", "ego", "instruction")}
    sec = _best_cpu_time(lambda: policy.predict(single, deterministic=True), repeats, 20)
    results.append(at_least("SB3 predict, batch 1", sec * 1e3, "ms", None, note="VLAPolicy.predict, default config"))

    # one behaviour-cloning update
    for name in ("default", "vectors"):
        net = VLANetwork(CONFIGS[name]).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        inputs = prepare_observations(obs64, net.obs_keys)
        target = torch.zeros(64, 24)

        def update() -> None:
            loss = net.bc_loss(inputs, target)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        sec = _best_cpu_time(update, repeats, 3)
        results.append(at_least(f"BC train {name}, batch 64" if name != "default" else "BC train, batch 64",
                                64 / sec, "samples/s", None,
                                note=f"forward + MSE + backward + AdamW, {'+'.join(net.obs_keys)}"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per row (best is reported)")
    args = parser.parse_args(argv)
    results = run(args.repeats)
    return report("VLA policy benchmarks (one core)", results, as_json=args.json, meta={"repeats": args.repeats})


if __name__ == "__main__":
    sys.exit(main())
