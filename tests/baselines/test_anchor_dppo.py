"""The BC anchor changes PPO's loss and reaches the policy; DPPO's per-step likelihoods are finite, match between
rollout and update, and only the last k denoising steps receive gradients; hooks see the live policy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from .conftest import ANCHOR_ENV as ENV, VLA_KEYS, anchor_model, tiny_overrides

from baselines.anchor import BCAnchor, ExpertDataset, ReferenceKLAnchor, frozen_copy



@pytest.fixture(scope="module")
def model(checkpoints):
    m = anchor_model(checkpoints, n_steps=8, batch_size=8, n_epochs=1)
    m.learn(16)  # fills the rollout buffer
    return m


def test_expert_dataset_matches_env(dataset):
    import gymnasium as gym

    env = gym.make("IRLVLA-Navsim-v2", **ENV)
    obs, _ = env.reset(options={"scene_index": 2})
    for key in VLA_KEYS:
        np.testing.assert_array_equal(dataset.obs[key][2], obs[key])
    np.testing.assert_allclose(dataset.actions[2], env.unwrapped.expert_action())


@pytest.mark.parametrize("kind", ["nll", "mse"])
def test_bc_anchor_gradient_reaches_policy(model, dataset, kind):
    policy = model.policy
    policy.optimizer.zero_grad()
    loss, logs = BCAnchor(dataset, weight=1.0, kind=kind).loss(policy)
    assert torch.isfinite(loss) and f"bc_{kind}" in logs
    loss.backward()
    head_grad = sum(p.grad.abs().sum().item() for p in policy.action_net.parameters() if p.grad is not None)
    encoder_grad = sum(p.grad.abs().sum().item() for p in policy.features_extractor.parameters()
                       if p.grad is not None)
    assert head_grad > 0 and encoder_grad > 0
    policy.optimizer.zero_grad()


def test_bc_term_changes_the_update(model, dataset):
    """Same parameters, optimizer state and rollout: train() with the anchor ends elsewhere than without it."""
    start_params = copy.deepcopy(model.policy.state_dict())
    start_opt = copy.deepcopy(model.policy.optimizer.state_dict())

    def update(anchor):
        model.policy.load_state_dict(copy.deepcopy(start_params))
        model.policy.optimizer.load_state_dict(copy.deepcopy(start_opt))
        model.anchor = anchor
        np.random.seed(0)  # the rollout buffer's minibatch order
        model.train()
        return {k: v.clone() for k, v in model.policy.state_dict().items()}

    plain = update(None)
    plain_again = update(None)
    anchored = update(BCAnchor(dataset, weight=1.0, kind="nll", seed=0))
    assert all(torch.equal(plain[k], plain_again[k]) for k in plain)  # the update itself is deterministic
    assert any(not torch.equal(plain[k], anchored[k]) for k in plain)
    assert model.logger.name_to_value["anchor/loss"] > 0
    model.anchor = None


def test_reference_kl_anchor_is_zero_at_reference(model, dataset):
    reference = frozen_copy(model.policy)
    loss, _ = ReferenceKLAnchor(dataset, reference, weight=1.0).loss(model.policy)
    assert abs(loss.item()) < 1e-6
    with torch.no_grad():
        model.policy.log_std.add_(0.5)
    try:
        loss, _ = ReferenceKLAnchor(dataset, reference, weight=1.0).loss(model.policy)
        assert loss.item() > 0.1
    finally:
        with torch.no_grad():
            model.policy.log_std.sub_(0.5)


@pytest.fixture(scope="module")
def agent(checkpoints):
    from baselines.dppo import DiffusionAgent
    from irlvla_gym.policies import VLANetwork

    torch.manual_seed(0)
    net = VLANetwork.from_pretrained(checkpoints["diffusion"])  # 4 denoising steps
    with torch.no_grad():  # a non-trivial head (the zero-initialised output layer would give zero gradients)
        for p in net.head.out.parameters():
            p.normal_(0.0, 0.1)
    return DiffusionAgent(net, ft_denoising_steps=2, denoise_std=0.05)


def test_dppo_log_likelihoods_finite_and_consistent(agent, dataset):
    out = agent.act(dataset.obs, generator=torch.Generator().manual_seed(0))
    n = len(dataset)
    assert out["log_prob"].shape == (n, 2) and out["chain_in"].shape == (n, 2, 24)
    assert torch.isfinite(out["log_prob"]).all() and torch.isfinite(out["action"]).all()
    with torch.no_grad():
        log_prob, value = agent.evaluate(dataset.obs, out["chain_in"], out["chain_out"])
    torch.testing.assert_close(log_prob, out["log_prob"], rtol=0, atol=1e-4)  # ratio 1 before any update
    torch.testing.assert_close(value, out["value"], rtol=0, atol=1e-5)
    det = agent.act(dataset.obs, deterministic=True)["action"]
    from irlvla_gym.policies import prepare_observations

    for i in range(n):  # the noise-free chain is the head's deterministic sample, scene by scene
        one = {k: v[i:i + 1] for k, v in dataset.obs.items()}
        mean = agent.network(prepare_observations(one, agent.obs_keys))
        torch.testing.assert_close(det[i:i + 1], mean, rtol=0, atol=1e-5)


def test_dppo_only_last_k_steps_receive_gradients(agent, dataset):
    out = agent.act(dataset.obs, generator=torch.Generator().manual_seed(1))
    agent.zero_grad()
    log_prob, _ = agent.evaluate(dataset.obs, out["chain_in"], out["chain_out"])
    log_prob.sum().backward()
    grad = agent.network.head.time_embed.weight.grad  # row j = denoising step index j (K = 4, k = 2)
    assert grad is not None
    assert grad[:2].abs().sum() > 0  # trained: the last two steps (j = 1, 0)
    assert grad[2:].abs().sum() == 0  # frozen: j = 3, 2
    assert sum(p.grad.abs().sum() for p in agent.network.encoder.parameters() if p.grad is not None) > 0


def test_hooks_called_at_interval(tmp_path, checkpoints):
    from baselines.config import load_config
    from baselines.hooks import HookRunner, PolicySnapshot
    from baselines.runner import train_run

    calls: list[int] = []

    class Probe:
        def on_interval(self, snap: PolicySnapshot):
            plans = snap.plan({k: v[:2] for k, v in ExpertDataset.from_env_config(
                {**ENV, "num_scenes": 2}).obs.items()})
            assert plans.shape == (2, 8, 3) and np.isfinite(plans).all()
            calls.append(snap.step)
            return {"probe/x": 1.0}

    original = HookRunner.__init__

    def with_probe(self, hooks, interval):
        original(self, [Probe()], 16)

    HookRunner.__init__ = with_probe
    try:
        for variant in ("ppo-vla-rwm", "dppo-vla-rwm"):
            calls.clear()
            cfg = load_config(variant, "quick", tiny_overrides(variant, checkpoints))
            train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
            assert calls == [32, 64], (variant, calls)  # after each update (rollouts of 4 envs x 8 steps)
    finally:
        HookRunner.__init__ = original
