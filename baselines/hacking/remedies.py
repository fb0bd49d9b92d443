"""The three remedies against reward hacking, each a switch of :func:`baselines.hacking.experiment.train_remedy`.

1. ``ensemble``: the env reward is an :class:`reward_models.ensemble.EnsembleRewardModel` (``mean - beta * std``
   over M members), passed to the env as a callable reward (:class:`reward_models.ensemble.ModelRewardFn`).
2. ``refit``: :class:`RelabelRefitCallback`: the plans the policy produced in its rollouts are scored by the
   rule-based scorer, added to the reward model's dataset and the model is fine-tuned for a few steps, every
   ``every_n_steps`` env steps (:mod:`reward_models.refit`). Its cost (seconds per refit, share of the wall time) is
   measured.
3. ``anchor``: a KL anchor to the stage-1 (BC) policy (:class:`baselines.anchor.ReferenceKLAnchor` to a frozen
   copy of the policy before RL) or the behaviour-cloning term of ``ppo-vla-rwm-bc``
   (:class:`baselines.anchor.BCAnchor`), added to PPO's loss by :class:`baselines.anchor.PPOWithAnchor`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from baselines.hacking import REMEDIES


@dataclass
class RemedyConfig:
    """Settings of the remedies (all off by default).

    Attributes:
        ensemble: use the ensemble reward. ensemble_members / ensemble_beta / ensemble_epochs: M, the penalty
            weight, member training epochs over their bootstrap resample (:func:`reward_models.ensemble.build_ensemble`).
        refit: relabel-and-refit. refit_every: env steps between refits. refit_max_plans: rollout plans relabelled
            per refit (a uniform subsample of those since the last refit). refit_steps / refit_lr: fine-tuning steps
            and learning rate per refit (:class:`reward_models.refit.RefitConfig`).
        anchor: the anchor term. anchor_kind: ``"kl"`` (KL to the frozen stage-1 policy) or ``"bc"`` (BC NLL on
            expert plans). anchor_weight: its coefficient. anchor_batch: observations per PPO minibatch.
    """

    ensemble: bool = False
    ensemble_members: int = 3
    ensemble_beta: float = 1.0
    ensemble_epochs: int = 3
    refit: bool = False
    refit_every: int = 1024
    refit_max_plans: int = 256
    refit_steps: int = 20
    refit_lr: float = 5e-4
    anchor: bool = False
    anchor_kind: str = "kl"
    anchor_weight: float = 0.01
    anchor_batch: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_remedy(cls, name: str, **overrides: Any) -> "RemedyConfig":
        """The config with only remedy ``name`` switched on (``"none"``: all off)."""
        if name not in REMEDIES:
            raise ValueError(f"remedy must be one of {REMEDIES}, got {name!r}")
        flags = {r: r == name for r in REMEDIES if r != "none"}
        return cls(**{**flags, **overrides})


class RelabelRefitCallback(BaseCallback):
    """SB3 callback for relabel-and-refit (module docs).

    During rollouts it records (scene index, action) of every env step (from ``infos[i]["scene_index"]`` and the
    clipped actions). At the start of a rollout, once ``every_n_steps`` env steps have passed since the last refit,
    it relabels up to ``max_plans`` of the plans recorded since then with the scorer, appends them to
    ``refitter``'s aggregate (``self.data``), fine-tunes the model, and clears the reward's scene-encoding cache.

    Args:
        reward_fn: the env's reward (its ``.model`` is the model being refitted; ``clear_cache()`` is called).
        refitter: :class:`reward_models.refit.Refitter` of that model. relabeller: :class:`reward_models.refit.Relabeller`
            over the env's scene pool. every_n_steps, max_plans: see above. seed: subsampling.

    Attributes:
        data: the :class:`reward_models.refit.RelabelledPlans` added so far. seconds: total refit time (relabel +
        fine-tune). history: one dict per refit (step, plans added, seconds, losses).
    """

    def __init__(self, reward_fn: Any, refitter: Any, relabeller: Any, every_n_steps: int = 1024,
                 max_plans: int = 256, seed: int = 0, verbose: int = 0):
        from reward_models.refit import RelabelledPlans

        super().__init__(verbose)
        self.reward_fn, self.refitter, self.relabeller = reward_fn, refitter, relabeller
        self.every, self.max_plans = int(every_n_steps), int(max_plans)
        self.rng = np.random.default_rng(seed)
        self.data = RelabelledPlans()
        self._scenes: list[int] = []
        self._actions: list[np.ndarray] = []
        self.last = 0
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []

    def _on_training_start(self) -> None:
        self.last = int(self.model.num_timesteps)

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        actions = np.asarray(self.locals["clipped_actions"]).reshape(len(infos), -1)
        for info, action in zip(infos, actions):
            index = info.get("scene_index")
            if index is not None and not info.get("invalid_action", False):
                self._scenes.append(int(index))
                self._actions.append(action.copy())
        return True

    def refit_now(self, step: int) -> dict[str, float]:
        """Relabel the recorded plans (subsampled), add them, fine-tune; returns the refit's record."""
        from irlvla_gym.plans.codec import action_to_plan

        t0 = time.perf_counter()
        n = len(self._scenes)
        take = np.sort(self.rng.choice(n, size=min(self.max_plans, n), replace=False)) if n else np.zeros(0, int)
        scenes = np.asarray(self._scenes, np.int64)[take]
        plans = action_to_plan(np.asarray(self._actions)[take]) if n else np.zeros((0, 8, 3))
        self._scenes, self._actions = [], []
        self.relabeller.relabel(scenes, plans, self.data, step)
        t_label = time.perf_counter() - t0
        fit = self.refitter.refit(self.data)
        self.reward_fn.clear_cache()
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        labels = self.data.labels["epdms"][-len(take):] if len(take) else np.zeros(0)
        record = {"step": float(step), "plans_added": float(len(take)), "dataset_plans": float(len(self.data)),
                  "seconds": seconds, "relabel_seconds": t_label, "fit_seconds": fit["seconds"],
                  "added_true_epdms": float(labels.mean()) if len(labels) else float("nan"),
                  **{k: v for k, v in fit.items() if k.startswith("loss/")}}
        self.history.append(record)
        return record

    def _on_rollout_start(self) -> None:
        step = int(self.model.num_timesteps)
        if step - self.last < self.every or not self._scenes:
            return
        self.last = step
        record = self.refit_now(step)
        for key, value in record.items():
            if key != "step":
                self.logger.record(f"refit/{key.replace('loss/', 'loss_')}", value)
        if self.verbose:
            print(f"[refit] step {step}: +{record['plans_added']:.0f} plans (total {record['dataset_plans']:.0f}), "
                  f"{record['seconds']:.1f} s")


def make_anchor(kind: str, policy: Any, env: Mapping[str, Any], weight: float, batch_size: int = 64,
                num_scenes: int | None = None, seed: int = 0) -> Any:
    """The anchor term of remedy 3 (reusing :mod:`baselines.anchor`).

    ``kind="kl"``: :class:`~baselines.anchor.ReferenceKLAnchor` to ``frozen_copy(policy)`` (call before any RL
    update: the copy is the stage-1 policy) on the training scenes' observations; ``kind="bc"``:
    :class:`~baselines.anchor.BCAnchor` (NLL of the expert action, the ``ppo-vla-rwm-bc`` term).
    """
    from baselines.anchor import BCAnchor, ExpertDataset, ReferenceKLAnchor, frozen_copy

    data = ExpertDataset.from_env_config(env, num_scenes)
    if kind == "kl":
        return ReferenceKLAnchor(data, frozen_copy(policy), weight=weight, batch_size=batch_size, seed=seed)
    if kind == "bc":
        return BCAnchor(data, weight=weight, batch_size=batch_size, kind="nll", seed=seed)
    raise ValueError(f"anchor kind must be 'kl' or 'bc', got {kind!r}")


__all__ = ["REMEDIES", "RelabelRefitCallback", "RemedyConfig", "make_anchor"]
