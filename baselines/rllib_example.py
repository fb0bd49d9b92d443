"""RLlib PPO (the new API stack: RLModule / Learner / EnvRunner) on the irlvla envs through their registered ids.

    python -m baselines.rllib_example [--env-id IRLVLA-Navsim-v2] [--iterations 2] [--env-runners 0] [--envs 8]

Needs RLlib (``pip install 'irlvla-gym[rllib]'``: RLlib's dependencies; see the note in ``pyproject.toml`` on why the
extra does not say ``ray[rllib]``). :func:`ppo_config` is the shipped config:

* the env by its gymnasium id, written ``"irlvla_gym:<id>"`` so that every EnvRunner process imports ``irlvla_gym``
  (which registers the ids) before ``gym.make_vec``; RLlib builds each runner's envs with
  ``gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``, i.e. the native batched env
  (:mod:`irlvla_gym.envs.vector`), with **NEXT_STEP autoreset**: RLlib's runner treats the step after an episode end
  as that env's reset (the native env's SAME_STEP default is SB3's convention);
* a flat Box observation and a Box action, which RLlib's default MLP module takes as they are:
  ``IRLVLA-Navsim-v2`` with ``obs_keys=("compact",)`` and ``flatten_obs=True`` (the 126-d feature vector; the default
  Dict of BEV image + instruction tokens would need a custom RLModule), or ``IRLVLA-Navsim-Residual-v2`` (that
  observation plus the 4-d residual action around a driving reference plan, which learns much faster);
* small batches (``train_batch_size_per_learner`` 256, minibatch 64): a smoke-sized default; scale them up (and
  ``num_env_runners`` across the cluster) for real runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

BOX_ENV_CONFIG: dict[str, Any] = {"obs_keys": ("compact",), "flatten_obs": True}
"""The Box observation for ``IRLVLA-Navsim-v2`` (the residual id has it by default)."""


def env_config_of(env_id: str, num_scenes: int | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """The env's keyword arguments for RLlib (``env_config``): NEXT_STEP autoreset, a Box observation, and
    ``num_scenes`` / ``extra`` on top."""
    from gymnasium.vector import AutoresetMode

    config: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    if env_id.rpartition(":")[2] == "IRLVLA-Navsim-v2":
        config.update(BOX_ENV_CONFIG)
    if num_scenes is not None:
        config["num_scenes"] = int(num_scenes)
    config.update(extra or {})
    return config


def ppo_config(env_id: str = "IRLVLA-Navsim-v2", *, num_env_runners: int = 0, num_envs_per_env_runner: int = 8,
               num_scenes: int | None = 256, seed: int = 0, env_config: Mapping[str, Any] | None = None):
    """An RLlib ``PPOConfig`` (new API stack) for ``env_id`` (a registered irlvla id; see the module docs).

    Args:
        env_id: ``IRLVLA-Navsim-v2`` (Box-observation config), ``IRLVLA-Navsim-Residual-v2``, or any irlvla id with
            a vector entry point and a Box observation config.
        num_env_runners: remote EnvRunner actors (0: sample in the driver).
        num_envs_per_env_runner: rows of each runner's native vector env.
        num_scenes: scene pool (first N of the split; None: all).
        seed: RLlib's seed (env runners, module init).
        env_config: more env keyword arguments (e.g. ``{"scenes": "<store dir>"}``, ``{"reward": "rwm"}``).
    """
    from ray.rllib.algorithms.ppo import PPOConfig

    if num_env_runners < 0 or num_envs_per_env_runner < 1:
        raise ValueError("num_env_runners must be >= 0 and num_envs_per_env_runner >= 1")
    full_id = env_id if ":" in env_id else f"irlvla_gym:{env_id}"
    return (
        PPOConfig()
        .environment(full_id, env_config=env_config_of(env_id, num_scenes, env_config))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs_per_env_runner,
                     gym_env_vectorize_mode="vector_entry_point", num_cpus_per_env_runner=1)
        .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=2, lr=3e-4)
        .rl_module(model_config={"fcnet_hiddens": [64, 64]})
        .debugging(seed=seed)
    )


def train(config: Any, iterations: int) -> list[dict[str, Any]]:
    """Build the algorithm, run ``iterations`` training iterations, stop it; per iteration the env steps sampled so
    far and the mean episode return (RLlib's metrics)."""
    algo = config.build_algo()
    rows = []
    try:
        for _ in range(iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            rows.append({"iteration": int(result.get("training_iteration", len(rows) + 1)),
                         "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
                         "episode_return_mean": runners.get("episode_return_mean")})
    finally:
        algo.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="IRLVLA-Navsim-v2")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--env-runners", type=int, default=0, help="remote EnvRunner actors (0: in this process)")
    parser.add_argument("--envs", type=int, default=8, help="envs per EnvRunner")
    parser.add_argument("--num-scenes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    import ray

    from irlvla_gym.envs.ray_vector import connect_ray

    connect_ray()  # $RAY_ADDRESS, else a local Ray instance
    try:
        config = ppo_config(args.env_id, num_env_runners=args.env_runners, num_envs_per_env_runner=args.envs,
                            num_scenes=args.num_scenes, seed=args.seed)
        for row in train(config, args.iterations):
            print(row, flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
