"""Behaviour cloning: the loss falls, checkpoints resume, and the (shipped) BC policy beats constant velocity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irlvla_gym.policies.bc import BCConfig, ObsCache, build_obs_cache, displacement_errors, train_bc

from .conftest import tiny_config


def _cfg(tmp_path, epochs: int, **kw) -> BCConfig:
    return BCConfig(out=str(tmp_path / "run"), num_scenes=48, num_val_scenes=8, val_score_scenes=2, epochs=epochs,
                    batch_size=16, lr=2e-3, warmup_steps=3, obs_keys=("bev", "ego", "instruction"),
                    vla_config=tiny_config(), cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def test_bc_loss_falls_checkpoints_and_resumes(tmp_path, capsys):
    first = train_bc(_cfg(tmp_path, epochs=4))
    out = tmp_path / "run"
    state = json.loads((out / "trainer" / "state.json").read_text())
    losses = [h["train_loss"] for h in state["history"]]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]
    assert first["val_ade"] < state["history"][0]["val_ade"]
    assert np.isfinite(first["val_epdms"]) and 0.0 <= first["cv_epdms"] <= 1.0
    names = sorted(p.name for p in (out / "trainer").iterdir())
    assert names == ["model-0004.safetensors", "optimizer-0004.safetensors", "state.json"]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert any((out / "tb").iterdir())

    # an interrupted run is resumed from its last finished epoch: rerun the command with more epochs
    capsys.readouterr()
    resumed = train_bc(_cfg(tmp_path, epochs=5))
    assert "resuming" in capsys.readouterr().err
    history = json.loads((out / "bc_metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and resumed["step"] == 5 * 3
    assert history[:4] == state["history"]

    from irlvla_gym.policies.network import VLANetwork

    assert VLANetwork.from_pretrained(out).config.obs_keys == ("bev", "ego", "instruction")


def test_obs_cache_is_built_once_and_matches_the_env(tmp_path):
    import gymnasium as gym

    import irlvla_gym  # noqa: F401

    cache = build_obs_cache("synthetic-val", None, 3, ("ego", "instruction"), str(tmp_path), progress=False)
    again = build_obs_cache("synthetic-val", None, 3, ("ego", "instruction"), str(tmp_path), progress=False)
    assert again.path == cache.path and len(again) == 3
    assert isinstance(cache.obs["ego"], np.memmap)
    assert sorted(p.name for p in cache.path.iterdir()) == ["action.npy", "ego.npy", "instruction.npy", "meta.json",
                                                            "plan.npy", "tokens.npy"]
    env = gym.make("IRLVLA-Navsim-v2", scenes="synthetic-val", obs_keys=("ego", "instruction"))
    obs, _ = env.reset(options={"scene_index": 2})
    np.testing.assert_array_equal(cache.obs["ego"][2], obs["ego"])
    np.testing.assert_array_equal(cache.obs["instruction"][2], obs["instruction"])
    np.testing.assert_array_equal(cache.actions[2], env.unwrapped.expert_action())
    assert ObsCache(cache.path).tokens[2] == "synthetic-val-00002"


def test_displacement_errors():
    pred = np.zeros((2, 8, 3))
    expert = np.zeros((2, 8, 3))
    expert[..., 0] = np.arange(1, 9)
    ade, fde = displacement_errors(pred, expert)
    assert ade == pytest.approx(4.5) and fde == pytest.approx(8.0)


def test_shipped_bc_checkpoint_beats_constant_velocity(tmp_path):
    """The shipped BC network's EPDMS on synthetic-val scenes beats constant velocity (same scenes, same scorer)."""
    from irlvla_gym.policies.bc import evaluate_checkpoint
    from irlvla_gym.policies.network import CHECKPOINT_DIR

    if not (CHECKPOINT_DIR / "bc_default" / "config.json").is_file():
        pytest.skip("no shipped checkpoint")
    result = evaluate_checkpoint("bc_default", num=24, score=24, cache_dir=str(tmp_path), progress=False)
    assert result["epdms"] > result["cv_epdms"]
    assert result["ade"] < result["cv_ade"]
