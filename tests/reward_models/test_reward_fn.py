"""The RWM as the envs' reward and as a batched reward function; the eval report."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401  (registers the envs)
from reward_models import DEFAULT_CHECKPOINT, RWMRewardFn, SceneRewardFn


def test_env_with_rwm_reward_steps(tiny_ckpt):
    env = gym.make("IRLVLA-Navsim-v2", num_scenes=2, obs_keys=("ego",), reward=f"rwm:{tiny_ckpt}")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.unwrapped.expert_action())
    assert terminated and 0.0 <= reward <= 1.0 and info["rewards"] == {"custom": reward}
    env.close()


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model.safetensors").exists(), reason="no shipped checkpoint")
def test_default_checkpoint_in_both_envs():
    for env_id in ("IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"):
        env = gym.make(env_id, num_scenes=2, obs_keys=("ego",), reward="rwm")
        env.reset(seed=0)
        _, reward, *_ = env.step(env.action_space.sample() * 0.0)
        assert 0.0 <= reward <= 1.0
        env.close()


def test_scene_reward_caches_the_encoding(tiny_ckpt):
    from irlvla_gym.scenes.synthetic import generate_scene

    scene = generate_scene(0)
    fn = SceneRewardFn(tiny_ckpt)
    r1 = fn(scene, scene.ego.future)
    assert len(fn._cache) == 1
    batch = fn.score(scene, np.stack([scene.ego.future] * 3))
    assert len(fn._cache) == 1 and batch.shape == (3,)
    assert batch[0] == pytest.approx(r1, abs=1e-6)


@pytest.mark.parametrize("action_type", ["trajectory", "vocabulary"])
def test_rwm_reward_fn_shape(tiny_ckpt, action_type):
    env = gym.make_vec("IRLVLA-Navsim-v2", num_envs=3, vectorization_mode="sync", num_scenes=3,
                       obs_keys=RWMRewardFn.OBS_KEYS, action_type=action_type)
    obs, _ = env.reset(seed=0)
    acts = env.action_space.sample()
    fn = RWMRewardFn(tiny_ckpt, action_type=action_type)
    r = fn(obs, acts, obs, np.ones(3, bool))
    assert r.shape == (3,) and r.dtype == np.float32 and np.all((r >= 0) & (r <= 1))
    if action_type == "trajectory":
        bad = acts.copy()
        bad[1, 0] = np.nan
        assert fn(obs, bad, obs, None)[1] == 0.0
    with pytest.raises(KeyError, match="obs_keys"):
        fn({"ego": obs["ego"]}, acts, None, None)
    env.close()


def test_eval_report(tiny_ckpt, tiny_data, tmp_path):
    from reward_models.evaluate import evaluate

    rep = evaluate(str(tiny_ckpt), str(tmp_path / "ev"), data=str(tiny_data), speed_scenes=0, progress=False)
    for name in ("report.json", "report.md", "calibration.png"):
        assert (tmp_path / "ev" / name).exists()
    saved = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert {"spearman", "pearson", "best_of_k", "subscores"} <= set(saved)
    assert -1.0 <= rep["spearman"] <= 1.0
    assert rep["best_of_k"]["oracle_pick"] >= rep["best_of_k"]["rwm_pick"] - 1e-9


def test_eval_report_compares_with_another_checkpoint(tiny_ckpt, tiny_data, tmp_path):
    """``--compare``: a checkpoint against itself has the same gap and a zero paired difference."""
    from reward_models.evaluate import evaluate

    rep = evaluate(str(tiny_ckpt), str(tmp_path / "ev"), data=str(tiny_data), speed_scenes=0, progress=False,
                   compare=str(tiny_ckpt))
    c = rep["compare"]
    assert c["gap"] == rep["best_of_k"]["gap"] and c["gap_difference"] == 0.0 and c["ci"] == (0.0, 0.0)
    assert "paired difference" in (tmp_path / "ev" / "report.md").read_text()
