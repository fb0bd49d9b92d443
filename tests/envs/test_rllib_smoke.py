"""RLlib PPO (new API stack) runs on IRLVLA-Navsim-v2 through its registered id and vector entry point
(baselines/rllib_example.py). Skipped unless RLlib imports (``pip install 'irlvla-gym[rllib]'``)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("tree", reason="RLlib needs dm-tree: pip install 'irlvla-gym[rllib]'")
pytest.importorskip("ray.rllib.algorithms.ppo", reason="RLlib is not installed: pip install 'irlvla-gym[rllib]'")
pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("env_id", ["IRLVLA-Navsim-v2", "IRLVLA-Navsim-Residual-v2"])
def test_rllib_ppo_iterations(env_id, synthetic):
    import ray

    from baselines.rllib_example import ppo_config, train

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = ppo_config(env_id, num_env_runners=0, num_envs_per_env_runner=4, num_scenes=None,
                            env_config={"scenes": synthetic})
        rows = train(config, iterations=2)
    finally:
        if started:
            ray.shutdown()
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[-1]["env_steps"] >= 512  # train_batch_size_per_learner 256 per iteration
    assert rows[-1]["episode_return_mean"] is not None and math.isfinite(rows[-1]["episode_return_mean"])
    assert 0.0 <= rows[-1]["episode_return_mean"] <= 1.0  # EPDMS per one-step episode
