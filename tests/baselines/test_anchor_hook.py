"""PPOWithAnchor adds the anchor through a hook on SB3's own PPO.train (no copy of its loop): same seed, same
rollout, same anchor batches -> the same parameters and optimizer state after train() as the previous
implementation, which copied SB3's loop (kept below as the reference), for every anchor kind, several minibatches and
epochs, gradient clipping and a target_kl early stop; the hook is removed afterwards and refuses a changed loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.utils import explained_variance

from baselines.anchor import AnchorHook, BCAnchor, PPOWithAnchor, ReferenceKLAnchor, frozen_copy

from .conftest import ANCHOR_ENV as ENV, anchor_model


def legacy_train(self) -> None:
    """``PPOWithAnchor.train`` before the hook: SB3 2.x's ``PPO.train`` copied with the anchor lines added (the
    reference the hook must reproduce)."""
    self.policy.set_training_mode(True)
    self._update_learning_rate(self.policy.optimizer)
    clip_range = self.clip_range(self._current_progress_remaining)
    clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)
    anchor = getattr(self, "anchor", None)

    entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
    anchor_losses: list[float] = []  # anchor
    anchor_logs: dict[str, list[float]] = {}  # anchor
    approx_kl_divs: list[float] = []
    continue_training = True
    loss = torch.zeros(())
    for epoch in range(self.n_epochs):
        approx_kl_divs = []
        for rollout_data in self.rollout_buffer.get(self.batch_size):
            actions = rollout_data.actions
            if isinstance(self.action_space, spaces.Discrete):
                actions = rollout_data.actions.long().flatten()
            values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
            values = values.flatten()
            advantages = rollout_data.advantages
            if self.normalize_advantage and len(advantages) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            # clipped surrogate objective
            ratio = torch.exp(log_prob - rollout_data.old_log_prob)
            policy_loss_1 = advantages * ratio
            policy_loss_2 = advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
            policy_loss = -torch.min(policy_loss_1, policy_loss_2).mean()
            pg_losses.append(policy_loss.item())
            clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())

            if clip_range_vf is None:
                values_pred = values
            else:
                values_pred = rollout_data.old_values + torch.clamp(
                    values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
            value_loss = F.mse_loss(rollout_data.returns, values_pred)
            value_losses.append(value_loss.item())
            entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
            entropy_losses.append(entropy_loss.item())

            loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
            if anchor is not None and anchor.weight > 0:  # anchor
                anchor_loss, logs = anchor.loss(self.policy)
                loss = loss + anchor.weight * anchor_loss
                anchor_losses.append(anchor_loss.item())
                for key, value in logs.items():
                    anchor_logs.setdefault(key, []).append(value)

            with torch.no_grad():
                log_ratio = log_prob - rollout_data.old_log_prob
                approx_kl_div = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                approx_kl_divs.append(float(approx_kl_div))
            if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                continue_training = False
                if self.verbose >= 1:
                    print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                break

            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += 1
        if not continue_training:
            break

    explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
    self.logger.record("train/entropy_loss", np.mean(entropy_losses))
    self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
    self.logger.record("train/value_loss", np.mean(value_losses))
    self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
    self.logger.record("train/clip_fraction", np.mean(clip_fractions))
    self.logger.record("train/loss", loss.item())
    self.logger.record("train/explained_variance", explained_var)
    if anchor_losses:  # anchor
        self.logger.record("anchor/loss", float(np.mean(anchor_losses)))
        self.logger.record("anchor/weight", anchor.weight)
        for key, values_ in anchor_logs.items():
            self.logger.record(f"anchor/{key}", float(np.mean(values_)))
    if hasattr(self.policy, "log_std"):
        self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
    self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
    self.logger.record("train/clip_range", clip_range)
    if clip_range_vf is not None:
        self.logger.record("train/clip_range_vf", clip_range_vf)

@pytest.fixture(scope="module")
def model(checkpoints):
    m = anchor_model(checkpoints, n_steps=8, batch_size=4, n_epochs=2, max_grad_norm=0.05)
    m.learn(16)  # fills the rollout buffer (16 samples: 4 minibatches per epoch)
    m.start_params = copy.deepcopy(m.policy.state_dict())  # every test's train() starts here
    m.start_opt = copy.deepcopy(m.policy.optimizer.state_dict())
    return m


def run_train(model, anchor_factory, train_fn, target_kl=None):
    """One train() from the saved start state; returns parameters, optimizer state and the logged values."""
    model.policy.load_state_dict(copy.deepcopy(model.start_params))
    model.policy.optimizer.load_state_dict(copy.deepcopy(model.start_opt))
    model.anchor = anchor_factory()
    model.target_kl = target_kl
    model._n_updates = 0
    np.random.seed(0)  # the rollout buffer's minibatch order
    torch.manual_seed(0)
    try:
        train_fn(model)
    finally:
        model.anchor, model.target_kl = None, None
    params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    opt = copy.deepcopy(model.policy.optimizer.state_dict()["state"])
    return params, opt, dict(model.logger.name_to_value)


def assert_same(a, b):
    pa, oa, la = a
    pb, ob, lb = b
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert oa.keys() == ob.keys()
    for i in oa:
        for name in oa[i]:
            torch.testing.assert_close(oa[i][name], ob[i][name], rtol=1e-5, atol=1e-7)
    for key in ("anchor/loss", "train/loss", "train/policy_gradient_loss", "train/value_loss"):
        assert la[key] == pytest.approx(lb[key], rel=1e-5, abs=1e-6), key


ANCHORS = {
    "bc-nll": lambda data, model: (lambda: BCAnchor(data, weight=0.5, batch_size=4, kind="nll", seed=3)),
    "bc-mse": lambda data, model: (lambda: BCAnchor(data, weight=2.0, batch_size=4, kind="mse", seed=4)),
    "kl-ref": lambda data, model: (lambda: ReferenceKLAnchor(data, model.reference, weight=1.0, batch_size=4,
                                                             seed=5)),
}


@pytest.mark.parametrize("kind", sorted(ANCHORS))
def test_hook_gives_the_same_update_as_the_copied_loop(model, dataset, kind):
    if kind == "kl-ref":
        reference = frozen_copy(model.policy)
        with torch.no_grad():  # a reference away from the policy, so the KL term has a gradient
            reference.log_std.add_(0.3)
        model.reference = reference
    factory = ANCHORS[kind](dataset, model)
    new = run_train(model, factory, PPOWithAnchor.train)
    old = run_train(model, factory, legacy_train)
    assert_same(new, old)
    plain = run_train(model, lambda: None, PPOWithAnchor.train)
    assert any(not torch.allclose(plain[0][k], new[0][k]) for k in new[0])  # the anchor did change the update
    assert "zero_grad" not in vars(model.policy.optimizer)  # the hook is gone after train()


def test_target_kl_early_stop_matches(model, dataset):
    factory = ANCHORS["bc-nll"](dataset, model)
    # the first minibatch's approx_kl (~0.76: the rollout predates the fixture's first update) passes 1.5 x 0.52,
    # a later one of the first epoch does not: a stop after some steps
    new = run_train(model, factory, PPOWithAnchor.train, target_kl=0.52)
    old = run_train(model, factory, legacy_train, target_kl=0.52)
    pa, _, la = new
    pb, _, lb = old
    assert any(not torch.equal(pa[k], model.start_params[k]) for k in pa)  # it stepped before stopping
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert la["train/n_updates"] == lb["train/n_updates"] == 1


def test_hook_refuses_a_step_without_its_anchor_term(model, dataset):
    """A future PPO.train that stepped before clearing gradients would miss the anchor: it raises instead."""
    policy = model.policy
    with AnchorHook(BCAnchor(dataset, weight=1.0, batch_size=4), policy) as hook:
        policy.optimizer.zero_grad()
        assert hook.pending and len(hook.losses) == 1
        assert any(p.grad is not None for p in policy.parameters())
        policy.optimizer.step()
        with pytest.raises(RuntimeError, match="anchor"):
            policy.optimizer.step()
    assert "zero_grad" not in vars(policy.optimizer)

