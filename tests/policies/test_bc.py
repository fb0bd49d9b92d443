"""Behaviour cloning: the loss falls, checkpoints resume, and the (shipped) BC policy beats constant velocity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irlvla_gym.policies.bc import BCConfig, ObsCache, build_obs_cache, displacement_errors, train_bc

from .conftest import tiny_config


def _cfg(tmp_path, epochs: int, **kw) -> BCConfig:
    values = dict(out=str(tmp_path / "run"), num_scenes=48, num_val_scenes=8, val_score_scenes=2, epochs=epochs,
                  batch_size=16, lr=2e-3, warmup_steps=3, obs_keys=("bev", "ego", "instruction"),
                  vla_config=tiny_config(), cache_dir=str(tmp_path.parent / "bc-cache"), progress=False)
    values.update(kw)
    return BCConfig(**values)


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


@pytest.mark.parametrize("head", ["gaussian", "diffusion"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, head):
    """Ctrl-C in epoch 3, then the same command: the result equals an uninterrupted run, weight for weight (the
    diffusion loss draws noise: the torch RNG state is part of the checkpoint)."""
    import torch
    from safetensors.torch import load_file

    import irlvla_gym.policies.network as network

    cfg = dict(num_scenes=32, num_val_scenes=4, val_score_scenes=0, head=head)
    train_bc(_cfg(tmp_path / "a", epochs=3, **cfg))
    real, calls = network.prepare_observations, [0]

    def flaky(*args, **kwargs):  # 32 scenes / 16 = 2 updates + 1 validation batch per epoch
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "prepare_observations", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_bc(_cfg(tmp_path / "b", epochs=3, **cfg))
    assert json.loads((tmp_path / "b" / "run" / "trainer" / "state.json").read_text())["epoch"] == 2
    monkeypatch.setattr(network, "prepare_observations", real)
    train_bc(_cfg(tmp_path / "b", epochs=3, **cfg))
    a = load_file(str(tmp_path / "a" / "run" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_diffusion_head_bc_loss_falls(tmp_path):
    train_bc(_cfg(tmp_path, epochs=3, head="diffusion", num_scenes=32, num_val_scenes=4, val_score_scenes=0))
    history = json.loads((tmp_path / "run" / "bc_metrics.json").read_text())["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and np.isfinite(history[-1]["val_ade"])


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


def test_target_plans_replace_the_expert_targets(tmp_path):
    """``--target-plans``: the trainer fits the file's plans (here: the expert's shifted 1 m left), not the expert's;
    a training scene without a plan in the file is an error naming the file."""
    from irlvla_gym.plans.codec import plan_to_action
    from irlvla_gym.plans.files import save_plans

    cache = build_obs_cache("synthetic-train", None, 48, ("bev", "ego", "instruction"), str(tmp_path.parent / "bc-cache"),
                            progress=False)
    shifted = np.array(cache.plans)
    shifted[:, :, 1] += 1.0
    plans_file = save_plans(tmp_path / "targets.npz", [str(t) for t in cache.tokens], shifted)
    train_bc(_cfg(tmp_path, epochs=6, target_plans=str(plans_file)))
    from irlvla_gym.policies.network import VLANetwork

    net = VLANetwork.from_pretrained(tmp_path / "run").eval()
    predicted = net.plan({k: np.array(v[:48]) for k, v in cache.obs.items()})
    to_shifted = np.abs(plan_to_action(predicted) - plan_to_action(shifted)).mean()
    to_expert = np.abs(plan_to_action(predicted) - np.asarray(cache.actions)).mean()
    assert to_shifted < to_expert

    save_plans(tmp_path / "partial.npz", [str(t) for t in cache.tokens[:10]], shifted[:10])
    with pytest.raises(ValueError, match="partial.npz: 38 token"):
        train_bc(_cfg(tmp_path / "other", epochs=1, target_plans=str(tmp_path / "partial.npz")))


def test_obs_cache_keeps_the_masks_of_vector_sets(tmp_path):
    cache = build_obs_cache("synthetic-val", None, 3, ("agents", "map", "ego"), str(tmp_path), progress=False)
    assert set(cache.obs) == {"agents", "agents_mask", "map", "map_mask", "ego"}
    assert cache.obs["agents_mask"].dtype == np.uint8 and cache.obs["map"].shape == (3, 64, 20, 11)
