"""The ensemble: zero spread for identical members, mean - beta * std otherwise, persistence, env reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _obs_and_plans(probe):
    plans = np.stack([np.asarray(s.ego.future, np.float32) for s in probe.scenes])[:, None]
    plans = np.concatenate([plans, plans * 1.2, plans * 0.5], axis=1)  # (B, 3, 8, 3)
    return probe.rwm_obs, plans


def test_identical_members_have_zero_std(probe, tiny):
    from reward_models import RewardWorldModel
    from reward_models.ensemble import EnsembleRewardModel

    single = RewardWorldModel.from_pretrained(tiny["rwm"])
    ens = EnsembleRewardModel([RewardWorldModel.from_pretrained(tiny["rwm"]) for _ in range(3)], beta=2.0)
    obs, plans = _obs_and_plans(probe)
    with torch.no_grad():
        pred = ens(obs, plans)
        ref = single(obs, plans)
    assert pred.member_rewards.shape == (3, len(probe), 3)
    assert torch.equal(pred.std, torch.zeros_like(pred.std))
    torch.testing.assert_close(pred.mean, ref.reward)
    torch.testing.assert_close(pred.reward, ref.reward)  # no penalty when members agree
    for name in ref.expected:
        torch.testing.assert_close(pred.expected[name], ref.expected[name])


def test_different_members_penalise_disagreement(probe, tiny, tmp_path):
    from reward_models import RewardWorldModel
    from reward_models.ensemble import EnsembleRewardModel, reinit_heads

    members = [reinit_heads(RewardWorldModel.from_pretrained(tiny["rwm"]), seed) for seed in range(3)]
    ens = EnsembleRewardModel(members, beta=0.5)
    obs, plans = _obs_and_plans(probe)
    out = ens.predict_subscores(obs, plans)
    r = out["reward_mean"]
    per = np.stack([m.predict_reward(obs, plans) for m in members])
    np.testing.assert_allclose(r, per.mean(0), atol=1e-6)
    np.testing.assert_allclose(out["reward_std"], per.std(0), atol=1e-6)
    assert (out["reward_std"] > 0).all()
    np.testing.assert_allclose(out["reward"], r - 0.5 * out["reward_std"], atol=1e-6)
    # persistence round trip
    ens.save_pretrained(tmp_path / "ens")
    back = EnsembleRewardModel.from_pretrained(tmp_path / "ens")
    assert back.beta == 0.5 and len(back) == 3
    np.testing.assert_allclose(back.predict_reward(obs, plans), out["reward"], atol=1e-6)
    assert EnsembleRewardModel.from_pretrained(tmp_path / "ens", beta=0.0).beta == 0.0


def test_env_reward_and_build(probe, tiny, rwm_data, tmp_path):
    import gymnasium as gym

    import irlvla_gym  # noqa: F401
    from reward_models.ensemble import build_ensemble, ensemble_env_reward

    ens, summary = build_ensemble(rwm_data, members=2, init=tiny["rwm"], epochs=1, batch_scenes=2)
    assert len(ens) == 2 and len(summary["members"]) == 2 and summary["seconds"] > 0
    ens.save_pretrained(tmp_path / "ens")
    fn = ensemble_env_reward(f"rwm-ensemble:{tmp_path / 'ens'}")
    scene = probe.scenes[0]
    value = fn(scene, np.asarray(scene.ego.future))
    expected = ens.predict_reward({k: v[0] for k, v in probe.rwm_obs.items()},
                                  np.asarray(scene.ego.future, np.float32)[None])[0]
    assert value == pytest.approx(float(expected), abs=1e-5)
    env = gym.make("IRLVLA-Navsim-v2", reward=fn, num_scenes=2, obs_keys=("ego",))
    env.reset(seed=0)
    _, r, *_ = env.step(env.action_space.sample() * 0)
    assert np.isfinite(r)
    with pytest.raises(ValueError):
        ensemble_env_reward("rwm:/x")
