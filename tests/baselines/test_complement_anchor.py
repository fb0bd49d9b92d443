"""The complement anchor (``bc.kind: complement``, baselines.anchor.ComplementAnchor): the policy's mean-plan change
against the pretrained policy in the directions the smooth exploration never samples."""

from __future__ import annotations


import numpy as np

import gymnasium as gym
import pytest
import torch

from baselines.anchor import ComplementAnchor, ExpertDataset, PPOWithAnchor, frozen_copy
from baselines.config import load_config
from baselines.runner import run_dir_of, train_run

from .conftest import ANCHOR_ENV, tiny_overrides


def _model(checkpoints, **policy_kwargs):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from irlvla_gym.policies import VLAPolicy

    venv = DummyVecEnv([lambda: gym.make("IRLVLA-Navsim-v2", **ANCHOR_ENV)] * 2)
    return PPOWithAnchor(VLAPolicy, venv, seed=0, device="cpu", n_steps=8, batch_size=8, n_epochs=1,
                         policy_kwargs={"pretrained_path": str(checkpoints["gaussian"]), **policy_kwargs})


def test_only_changes_outside_the_explored_directions_cost(checkpoints, dataset):
    model = _model(checkpoints, exploration="smooth", exploration_directions=("lon_acc", "lon_jerk"))
    anchor = ComplementAnchor(dataset, frozen_copy(model.policy), weight=1.0, batch_size=4)
    value, logs = anchor.loss(model.policy)
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-10) and "complement_sq" in logs
    basis = model.policy.action_dist.basis
    head_bias = model.policy.action_net.mlp[-1].bias  # the Gaussian head's last layer: shifts every mean alike
    with torch.no_grad():
        head_bias += 0.05 * basis[0]  # along an explored direction: free
    assert float(anchor.loss(model.policy)[0].detach()) == pytest.approx(0.0, abs=1e-8)
    lateral = torch.zeros(24)
    lateral[1::3] = 0.01  # y of every pose: never explored here
    with torch.no_grad():
        head_bias += lateral
    assert float(anchor.loss(model.policy)[0].detach()) == pytest.approx(float((lateral ** 2).sum()), rel=1e-3)


def test_needs_the_subspace_exploration(checkpoints, dataset):
    model = _model(checkpoints)
    with pytest.raises(ValueError, match="smooth exploration subspace"):
        ComplementAnchor(dataset, frozen_copy(model.policy))


def test_a_run_with_the_kl_anchor_to_the_pretrained_policy(tmp_path, checkpoints, monkeypatch):
    """``bc.kind: kl``: KL(policy || pretrained policy); the reference holds the pretrained weights."""
    import baselines.sb3_ppo as sb3_ppo

    made = []
    real = sb3_ppo.make_anchor
    monkeypatch.setattr(sb3_ppo, "make_anchor", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    overrides = tiny_overrides("ppo-vla-rwm", checkpoints, bc={"weight": 1.0, "kind": "kl", "num_scenes": 4,
                                                              "batch_size": 8}, hooks=[])
    train_run(load_config("ppo-vla-rwm", "quick", overrides), 0, tmp_path, progress=False, evaluate=False)
    (anchor,) = made
    from baselines.anchor import ReferenceKLAnchor
    from safetensors.torch import load_file

    assert isinstance(anchor, ReferenceKLAnchor)
    pretrained = load_file(str(checkpoints["gaussian"] / "model.safetensors"))
    head = {k[len("head."):]: v for k, v in pretrained.items() if k.startswith("head.")}
    reference = anchor.reference.action_net.state_dict()
    assert head and head.keys() <= reference.keys()
    for name, value in head.items():
        torch.testing.assert_close(reference[name], value)


def test_a_run_with_the_complement_anchor(tmp_path, checkpoints):
    overrides = tiny_overrides("ppo-vla-rwm", checkpoints, bc={"weight": 10.0, "kind": "complement",
                                                              "num_scenes": 4, "batch_size": 8}, hooks=[])
    metrics = train_run(load_config("ppo-vla-rwm", "quick", overrides), 0, tmp_path, progress=False, evaluate=False)
    assert metrics["steps"] == 64
    assert (run_dir_of(tmp_path, "ppo-vla-rwm", 0) / "network" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="policy 'vla'"):
        bad = load_config("ppo-cnn-epdms", "quick", tiny_overrides("ppo-cnn-epdms", checkpoints,
                                                                   bc={"weight": 1.0, "kind": "complement"}))
        train_run(bad, 0, tmp_path / "cnn", progress=False, evaluate=False)


class _FartherIsBetter:
    """A learned-reward stand-in: the plan's last x (m)."""

    def score_batch(self, scenes, plans):
        return np.asarray(plans)[:, -1, 0]


def test_reward_greedy_targets_are_the_rewards_pick_around_the_pretrained_plan(checkpoints, dataset):
    from irlvla_gym.plans.codec import action_to_plan
    from irlvla_gym.plans.exploration import smooth_basis

    model = _model(checkpoints, exploration="smooth")
    greedy = dataset.with_reward_greedy_targets(ANCHOR_ENV, _FartherIsBetter(), model.policy, samples=8, seed=0)
    means, _ = model.policy.predict(dataset.obs, deterministic=True)
    assert greedy.tokens == dataset.tokens and greedy.obs is dataset.obs
    gain = action_to_plan(greedy.actions)[:, -1, 0] - action_to_plan(means)[:, -1, 0]
    assert (gain >= -1e-9).all() and (gain > 0).any()  # never worse than the mean by the reward, better somewhere
    basis = smooth_basis()
    delta = greedy.actions - means
    np.testing.assert_allclose(delta @ np.linalg.pinv(basis) @ basis, delta, atol=1e-5)  # smooth changes only
    again = dataset.with_reward_greedy_targets(ANCHOR_ENV, _FartherIsBetter(), model.policy, samples=8, seed=0)
    np.testing.assert_array_equal(again.actions, greedy.actions)
    with pytest.raises(ValueError, match="learned reward"):
        load_config("ppo-vla-epdms", "quick", [{"bc": {"targets": "reward-greedy"}}])
