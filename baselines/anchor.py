"""Anchor terms that keep an RL-fine-tuned policy near the expert or near its stage-1 (BC) self.

IRL-VLA stabilises PPO on the learned reward with a behaviour-cloning term on expert plans (``ppo-vla-rwm-bc``);
issue 10's KL anchor to the stage-1 policy is the same kind of term with a different target. Both are an
:class:`AnchorTerm`: ``loss(policy) -> (scalar tensor, logs)`` on a minibatch of its own data, added to PPO's loss
with a weight inside :meth:`PPOWithAnchor.train`::

    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss + anchor.weight * anchor_loss

* :class:`ExpertDataset`: observations of the training scenes at t0 and the expert's actions
  (``plan_to_action(scene.ego.future)``), built once with the env's observation builder.
* :class:`BCAnchor`: ``kind="nll"``: mean over dimensions of the negative log-likelihood of the expert action under
  the policy's Gaussian; ``kind="mse"``: mean squared error of the policy's mean action.
* :class:`ReferenceKLAnchor`: ``KL(pi || pi_ref)`` of the diagonal Gaussians on the dataset observations, to a
  frozen copy of a reference policy (e.g. the policy at the start of training).
* :class:`PPOWithAnchor`: SB3's PPO whose ``train()`` adds ``anchor.weight * anchor.loss(policy)`` (the anchor is
  not saved in the model zip; set ``model.anchor`` again after ``load``). SB3's ``PPO.train`` itself runs: the
  anchor's gradient is added through a hook on the optimizer's ``zero_grad`` (:class:`AnchorHook`), not a copy of
  the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import PPO

# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ExpertDataset:
    """Expert (observation, action) pairs of a fixed scene pool.

    Attributes:
        obs: key -> (N, ...) env observations at t0 (exactly what ``IRLVLA-Navsim-v2`` returns on reset).
        actions: (N, 24) float32 expert actions (the logged future, ``plan_to_action``).
        tokens: (N,) scene tokens.
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    tokens: list[str]

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def from_env_config(cls, env: Mapping[str, Any], num_scenes: int | None = None,
                        chunk: int = 32) -> "ExpertDataset":
        """Build from ``IRLVLA-Navsim-v2`` kwargs (``scenes`` / ``split`` / ``num_scenes`` / ``obs_keys`` /
        ``obs_config``): the first ``num_scenes`` scenes of that source (None: the env's pool)."""
        from irlvla_gym.plans.codec import plan_to_action
        from irlvla_gym.envs.config import EnvConfig
        from irlvla_gym.scenes.source import SceneSource
        from irlvla_gym.obs.registry import ObservationBuilder

        cfg = EnvConfig.from_kwargs({k: v for k, v in env.items() if k != "reward"})
        n = cfg.num_scenes if num_scenes is None else num_scenes
        source = SceneSource(cfg.scenes, cfg.split, n)
        builder = ObservationBuilder(cfg.obs_keys, cfg.obs_config)
        parts: list[dict[str, np.ndarray]] = []
        actions, tokens = [], []
        for start in range(0, len(source), chunk):
            scenes = [source.load(i) for i in range(start, min(len(source), start + chunk))]
            parts.append(builder.observe_batch(scenes))
            actions.append(plan_to_action(np.stack([s.ego.future for s in scenes])))
            tokens += [s.token for s in scenes]
        obs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return cls(obs, np.concatenate(actions).astype(np.float32), tokens)

    def with_reward_greedy_targets(self, env: Mapping[str, Any], reward: Any, reference: Any, samples: int = 16,
                                   seed: int = 0, chunk: int = 64) -> "ExpertDataset":
        """The same observations with the reward's greedy pick as the target action: per scene, the best by
        ``reward`` of the reference policy's mean plan and ``samples`` smooth perturbations of it
        (:func:`irlvla_gym.plans.exploration.perturb_actions`, default stds) — the improvement one greedy step on
        the learned reward makes, scene by scene.

        Args:
            env: the env kwargs this dataset was built from (its scenes). reward: an env reward callable with
                ``score_batch(scenes, plans)`` (the learned reward). reference: an SB3 policy (the pretrained one).
        """
        from irlvla_gym.envs.config import EnvConfig
        from irlvla_gym.plans.codec import ACTION_DIM, action_to_plan
        from irlvla_gym.scenes.source import SceneSource
        from reward_models.greedy import candidate_actions

        cfg = EnvConfig.from_kwargs({k: v for k, v in env.items() if k != "reward"})
        source = SceneSource(cfg.scenes, cfg.split, len(self))
        rng = np.random.default_rng(seed)
        low, high = reference.action_space.low, reference.action_space.high
        targets = np.empty_like(self.actions)
        for start in range(0, len(self), chunk):
            rows = range(start, min(len(self), start + chunk))
            means, _ = reference.predict({k: v[start:rows.stop] for k, v in self.obs.items()}, deterministic=True)
            candidates = np.clip(candidate_actions(means, samples, rng), low, high)  # (B, 1 + k, A)
            scenes = [scene for scene in map(source.load, rows) for _ in range(samples + 1)]
            values = np.asarray(reward.score_batch(scenes, action_to_plan(candidates.reshape(-1, ACTION_DIM))))
            best = values.reshape(len(rows), samples + 1).argmax(axis=1)  # one batched reward call per chunk
            targets[start:rows.stop] = candidates[np.arange(len(rows)), best]
        return ExpertDataset(self.obs, targets, self.tokens)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A random minibatch (observations, expert actions)."""
        idx = np.sort(rng.choice(len(self), size=min(batch_size, len(self)), replace=False))
        return {k: v[idx] for k, v in self.obs.items()}, self.actions[idx]


# ---------------------------------------------------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------------------------------------------------


class AnchorTerm(Protocol):
    """An extra loss added to the RL loss with weight ``weight``.

    ``loss(policy)`` draws its own minibatch and returns a scalar tensor (with gradients reaching the policy) and
    floats to log (``anchor/<name>``). ``policy`` is an SB3 ``ActorCriticPolicy``, or any module with
    ``anchor_loss(obs, actions, kind)`` (the DPPO agent).
    """

    weight: float

    def loss(self, policy: Any) -> tuple[torch.Tensor, dict[str, float]]: ...


def _sb3_distribution(policy: Any, obs: Mapping[str, np.ndarray]):
    obs_t, _ = policy.obs_to_tensor(dict(obs))  # handles VecTransposeImage's channels-first camera
    return policy.get_distribution(obs_t)


class BCAnchor:
    """Behaviour cloning on expert plans as an anchor term.

    Args:
        dataset: the expert pairs. weight: coefficient in the total loss. batch_size: pairs per PPO minibatch.
        kind: ``"nll"`` (negative log-likelihood of the expert action per action dimension; also moves the
            log-std) or ``"mse"`` (squared error of the mean action). seed: minibatch sampling seed.
    """

    def __init__(self, dataset: ExpertDataset, weight: float = 0.1, batch_size: int = 64, kind: str = "nll",
                 seed: int = 0):
        if kind not in ("nll", "mse"):
            raise ValueError(f"kind must be 'nll' or 'mse', got {kind!r}")
        self.dataset, self.weight, self.batch_size, self.kind = dataset, float(weight), int(batch_size), kind
        self.rng = np.random.default_rng(seed)

    def loss(self, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        obs, actions = self.dataset.sample(self.batch_size, self.rng)
        if hasattr(policy, "anchor_loss"):
            value = policy.anchor_loss(obs, actions, self.kind)
        else:
            dist = _sb3_distribution(policy, obs)
            target = torch.as_tensor(actions, device=policy.device)
            if self.kind == "nll":
                value = -dist.log_prob(target).mean() / target.shape[-1]
            else:
                value = F.mse_loss(dist.mode(), target)  # the mean action, whatever the distribution
        return value, {f"bc_{self.kind}": float(value.detach())}


def frozen_copy(policy: Any) -> Any:
    """A frozen copy of an SB3 policy (rebuilt from its constructor parameters, same weights, eval mode, no
    gradients): the reference of :class:`ReferenceKLAnchor` (``copy.deepcopy`` fails on policies that hold the last
    forward's distribution)."""
    copy_ = type(policy)(**policy._get_constructor_parameters()).to(policy.device)
    copy_.load_state_dict(policy.state_dict())
    copy_.set_training_mode(False)
    return copy_.requires_grad_(False)


class ReferenceKLAnchor:
    """``KL(pi || pi_ref)`` (diagonal Gaussians, summed over action dimensions, mean over observations) on the
    observations of a dataset, to a frozen reference policy (an SB3 policy with the same spaces, e.g.
    ``frozen_copy(model.policy)`` taken before RL).

    Args:
        dataset: supplies the observations (its actions are not used). reference: the frozen policy.
        weight, batch_size, seed: as :class:`BCAnchor`.
    """

    def __init__(self, dataset: ExpertDataset, reference: Any, weight: float = 0.1, batch_size: int = 64,
                 seed: int = 0):
        self.dataset, self.reference, self.weight, self.batch_size = dataset, reference, float(weight), int(batch_size)
        self.reference.set_training_mode(False)
        self.reference.requires_grad_(False)
        self.rng = np.random.default_rng(seed)

    def loss(self, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        obs, _ = self.dataset.sample(self.batch_size, self.rng)
        dist = _sb3_distribution(policy, obs).distribution
        with torch.no_grad():
            ref = _sb3_distribution(self.reference, obs).distribution
        value = torch.distributions.kl_divergence(dist, ref).sum(-1).mean()
        return value, {"kl_ref": float(value.detach())}


class ComplementAnchor(ReferenceKLAnchor):
    """``||P (mu(s) - mu_ref(s))||^2``: the change of the policy's mean action, against a frozen reference (the
    pretrained policy), in the directions its exploration never samples (summed over the 24 normalised numbers, mean
    over observations; ``P`` projects onto the orthogonal complement of the smooth basis).

    Why: with the smooth subspace exploration (:class:`~irlvla_gym.policies.exploration.SubspaceGaussianDistribution`)
    PPO's ratio only sees the mean's moves along the explored directions, but the network's shared weights move the
    rest of the plan too, unseen and unrewarded: a longitudinal-only policy drifted 0.37 m sideways at 4 s on
    synthetic-val. This term keeps those unexplored components at the reference's.

    Args:
        dataset: supplies the observations (its actions are not used). reference: the frozen pretrained policy.
        weight, batch_size, seed: as :class:`BCAnchor`.
    """

    def __init__(self, dataset: ExpertDataset, reference: Any, weight: float = 10.0, batch_size: int = 64,
                 seed: int = 0):
        basis = getattr(getattr(reference, "action_dist", None), "basis", None)
        if basis is None:
            raise ValueError("bc.kind 'complement' needs a policy with a smooth exploration subspace "
                             "(policy_kwargs.exploration: smooth)")
        super().__init__(dataset, reference, weight, batch_size, seed)
        basis = torch.as_tensor(basis, dtype=torch.float32)
        self.complement = torch.eye(basis.shape[1]) - torch.linalg.pinv(basis) @ basis  # (A, A) projector

    def loss(self, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        obs, _ = self.dataset.sample(self.batch_size, self.rng)
        mean = _sb3_distribution(policy, obs).mode()
        with torch.no_grad():
            ref = _sb3_distribution(self.reference, obs).mode()
        value = (((mean - ref) @ self.complement.to(mean)) ** 2).sum(-1).mean()
        return value, {"complement_sq": float(value.detach())}


# ---------------------------------------------------------------------------------------------------------------------
# PPO with an anchor term
# ---------------------------------------------------------------------------------------------------------------------


class PPOWithAnchor(PPO):
    """SB3 PPO plus ``anchor.weight * anchor.loss(policy)`` in every minibatch update (module docs).

    ``anchor`` is an :class:`AnchorTerm` or None (then this is exactly SB3's PPO). It is excluded from the saved
    zip; assign ``model.anchor`` again after :meth:`load`.

    SB3's own ``PPO.train`` runs unchanged (no copy of its loop): for the duration of :meth:`train` the optimizer's
    ``zero_grad`` is wrapped (:class:`AnchorHook`) so that, right after the gradients are cleared and before PPO's
    ``loss.backward()``, the anchor term of that minibatch is back-propagated. Gradients add up, so the clipped
    gradient and the step are those of ``ppo_loss + weight * anchor_loss`` (every SB3 1.x / 2.x ``PPO.train`` runs
    ``zero_grad(); loss.backward(); clip_grad_norm_(); step()`` per minibatch; a release that changed that order is
    detected at the first ``step`` and raises instead of silently training something else). One difference from a
    single ``backward`` of the sum: a minibatch that ``target_kl`` stops before its update draws no anchor batch.
    """

    def __init__(self, *args: Any, anchor: AnchorTerm | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.anchor = anchor

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "anchor"]

    def train(self) -> None:
        anchor = getattr(self, "anchor", None)
        if anchor is None or anchor.weight <= 0:
            super().train()
            return
        with AnchorHook(anchor, self.policy) as hook:
            super().train()
        if hook.losses:
            self.logger.record("anchor/loss", float(np.mean(hook.losses)))
            self.logger.record("anchor/weight", anchor.weight)
            for key, values in hook.logs.items():
                self.logger.record(f"anchor/{key}", float(np.mean(values)))
            ppo_loss = getattr(self.logger, "name_to_value", {}).get("train/loss")
            if ppo_loss is not None:  # SB3 logs its last minibatch's loss; include that minibatch's anchor term
                self.logger.record("train/loss", float(ppo_loss) + anchor.weight * hook.losses[-1])


class AnchorHook:
    """Context manager: while active, ``policy.optimizer.zero_grad()`` also back-propagates
    ``anchor.weight * anchor.loss(policy)`` (gradients then accumulate PPO's on top), and a step pre-hook checks
    that every optimizer step had its anchor term. ``losses`` / ``logs`` collect the anchor values per minibatch."""

    def __init__(self, anchor: AnchorTerm, policy: Any):
        self.anchor, self.policy, self.optimizer = anchor, policy, policy.optimizer
        self.losses: list[float] = []
        self.logs: dict[str, list[float]] = {}
        self.pending = False
        self.handle: Any = None
        self.zero_grad = self.optimizer.zero_grad
        self.own_attribute = "zero_grad" in vars(self.optimizer)  # already wrapped by someone: restore theirs

    def __enter__(self) -> "AnchorHook":
        self.optimizer.zero_grad = self.zero_grad_with_anchor  # instance attribute, removed on exit
        self.handle = self.optimizer.register_step_pre_hook(self.check_step)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()
        if self.own_attribute:
            self.optimizer.zero_grad = self.zero_grad
        else:
            del self.optimizer.zero_grad

    def zero_grad_with_anchor(self, *args: Any, **kwargs: Any) -> None:
        self.zero_grad(*args, **kwargs)
        value, logs = self.anchor.loss(self.policy)
        if value.requires_grad:
            (self.anchor.weight * value).backward()
        self.pending = True
        self.losses.append(float(value.detach()))
        for key, v in logs.items():
            self.logs.setdefault(key, []).append(v)

    def check_step(self, *_: Any) -> None:
        if not self.pending:
            raise RuntimeError("PPOWithAnchor: the optimizer stepped without an anchor term since its last "
                               "zero_grad(); this SB3 release's PPO.train no longer clears gradients right before "
                               "each backward, so the anchor hook must be adapted (baselines/anchor.py)")
        self.pending = False


def make_anchor(bc: Mapping[str, Any], env: Mapping[str, Any], seed: int = 0,
                dataset: ExpertDataset | None = None, reference: Any = None, greedy_reward: Any = None) -> Any:
    """The anchor term of a run's ``bc`` settings (None when ``weight`` is 0): :class:`BCAnchor` (kind nll / mse),
    :class:`ComplementAnchor` (kind complement) or :class:`ReferenceKLAnchor` (kind kl); ``reference``: the frozen
    pretrained policy of the last two. ``targets: reward-greedy`` replaces the expert actions by the learned reward's
    greedy picks around the pretrained policy's plans (:meth:`ExpertDataset.with_reward_greedy_targets`, scored by
    ``greedy_reward``)."""
    weight = float(bc.get("weight", 0.0) or 0.0)
    if weight <= 0:
        return None
    data = dataset or ExpertDataset.from_env_config(env, bc.get("num_scenes"))
    if bc.get("targets", "expert") == "reward-greedy":
        if reference is None or greedy_reward is None:
            raise ValueError("bc.targets 'reward-greedy' needs the pretrained policy and the run's learned reward")
        data = data.with_reward_greedy_targets(env, greedy_reward, reference, int(bc.get("greedy_samples", 16)), seed)
    kind = str(bc.get("kind", "nll"))
    if kind in ("complement", "kl"):
        if reference is None:
            raise ValueError(f"bc.kind {kind!r} needs the reference policy (make_anchor(..., reference=...))")
        anchor_class = ComplementAnchor if kind == "complement" else ReferenceKLAnchor
        return anchor_class(data, reference, weight=weight, batch_size=int(bc.get("batch_size", 64)), seed=seed)
    return BCAnchor(data, weight=weight, batch_size=int(bc.get("batch_size", 64)), kind=kind, seed=seed)


__all__: Sequence[str] = ["AnchorHook", "AnchorTerm", "BCAnchor", "ComplementAnchor", "ExpertDataset",
                          "PPOWithAnchor", "ReferenceKLAnchor", "frozen_copy", "make_anchor"]
