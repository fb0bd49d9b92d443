"""Relabel-and-refit (DAgger-style aggregation) for the reward world model, and a small in-memory fitting loop.

While PPO optimises the learned reward, the policy's plans drift away from the candidates the model was trained on.
Relabel-and-refit closes the loop: plans the policy produced are scored by the rule-based scorer (the same labeller
as the dataset, :func:`reward_models.dataset.label_plans`: fast scorer, log replay, human filter, PDM-Closed EP
normaliser), **added** to the model's dataset, and the model is fine-tuned for a few steps on the aggregate.

* :class:`RelabelledPlans`: the aggregated part of the dataset, one row per scored plan (the scene observation is
  stored once per scene): plans (P, 8, 3), labels name -> (P,), the env step each was added at.
* :class:`Relabeller`: ``relabel(scene_indices (P,), plans (P, 8, 3)) -> labels``, grouping plans by scene (one
  scorer call per scene), caching each scene's model observation and EP normaliser.
* :class:`Refitter`: owns the model's optimiser; ``refit(extra)`` runs ``steps`` AdamW steps, each on one minibatch
  of the base dataset (the full training loss of :mod:`reward_models.train`: sub-score losses, reward MSE,
  MaxEnt IRL, ranking) plus one minibatch of relabelled plans (per-plan sub-score losses + reward MSE, weighted by
  ``extra_weight``), so the model learns the new plans without forgetting the old ones.
* :func:`fit`: the plain loop over an in-memory :class:`~reward_models.dataset.RWMData` (used to train the ensemble
  members, :mod:`reward_models.ensemble`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from reward_models.dataset import LABELS, OBS_KEYS, RWMData, obs_entries
from reward_models.model import RewardWorldModel, prepare_obs
from reward_models.train import TrainConfig, batch_tensors, compute_loss, supervised_losses

# ---------------------------------------------------------------------------------------------------------------------
# The aggregated plans
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RelabelledPlans:
    """Scorer-labelled policy plans (the part of the dataset added during RL).

    Attributes:
        obs: entry -> (S, ...) the model's inputs (:data:`OBS_ENTRIES`) of the S distinct scenes seen so far.
        scene_keys: (S,) the scene of each obs row (scene index of the env's pool).
        scene_row: (P,) int64, the obs row of each plan.
        plans: (P, 8, 3) float32 poses (x, y, yaw) in the t0 ego frame (m, rad).
        labels: name -> (P,) float32 for :data:`reward_models.dataset.LABELS`.
        step: (P,) int64 env step at which the plan was added.
    """

    obs: dict[str, np.ndarray] = field(default_factory=dict)
    scene_keys: list[int] = field(default_factory=list)
    scene_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    plans: np.ndarray = field(default_factory=lambda: np.zeros((0, 8, 3), np.float32))
    labels: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.zeros(0, np.float32) for k in LABELS})
    step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.plans)

    def _row_of(self, key: int, obs: dict[str, np.ndarray]) -> int:
        if key in self.scene_keys:
            return self.scene_keys.index(key)
        for k in obs_entries(obs):
            v = np.asarray(obs[k])[None]
            self.obs[k] = v if k not in self.obs else np.concatenate([self.obs[k], v])
        self.scene_keys.append(int(key))
        return len(self.scene_keys) - 1

    def add(self, scene_key: int, obs: dict[str, np.ndarray], plans: np.ndarray, labels: dict[str, np.ndarray],
            step: int = 0) -> None:
        """Append one scene's (n, 8, 3) plans with their labels (name -> (n,))."""
        plans = np.asarray(plans, np.float32).reshape(-1, 8, 3)
        n = len(plans)
        row = self._row_of(int(scene_key), obs)
        self.scene_row = np.concatenate([self.scene_row, np.full(n, row, np.int64)])
        self.plans = np.concatenate([self.plans, plans])
        for k in LABELS:
            self.labels[k] = np.concatenate([self.labels[k], np.asarray(labels[k], np.float32).reshape(n)])
        self.step = np.concatenate([self.step, np.full(n, int(step), np.int64)])

    def batch(self, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """Model inputs for plans ``idx`` as B = len(idx) one-plan scenes: prepared obs, plans (B, 1, 8, 3),
        labels name -> (B, 1)."""
        rows = self.scene_row[idx]
        obs = prepare_obs({k: self.obs[k][rows] for k in obs_entries(self.obs)}, batched=True)
        plans = torch.from_numpy(self.plans[idx][:, None])
        labels = {k: torch.from_numpy(v[idx][:, None]) for k, v in self.labels.items()}
        return obs, plans, labels

    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` (no pickle)."""
        from irlvla_gym.utils import atomic_write

        path = Path(path)
        arrays = {f"obs_{k}": v for k, v in self.obs.items()}
        arrays.update({f"label_{k}": v for k, v in self.labels.items()})
        with atomic_write(path) as fh:
            np.savez_compressed(fh, scene_keys=np.asarray(self.scene_keys, np.int64), scene_row=self.scene_row,
                                plans=self.plans, step=self.step, **arrays)
        return path


# ---------------------------------------------------------------------------------------------------------------------
# Relabelling with the rule-based scorer
# ---------------------------------------------------------------------------------------------------------------------


class Relabeller:
    """Scores policy plans with the dataset's labeller (module docs) and appends them to a :class:`RelabelledPlans`.

    Args:
        load_scene: ``load_scene(scene_index) -> Scene`` (e.g. ``SceneSource(...).load``).
        obs_config: the observation settings of the model's inputs (None: defaults, as the shipped dataset).
    """

    def __init__(self, load_scene: Callable[[int], Any], obs_config: Any = None):
        from irlvla_gym.obs.registry import ObservationBuilder

        from reward_models.dataset import reference_progress_fn

        self.load_scene = load_scene
        self.builder = ObservationBuilder(OBS_KEYS, obs_config)
        self.ref_fn, self.ep_normaliser = reference_progress_fn()
        self._scenes: dict[int, tuple[Any, dict[str, np.ndarray], float | None]] = {}
        self._contexts: dict[int, Any] = {}

    def scene(self, index: int) -> tuple[Any, dict[str, np.ndarray], float | None]:
        """(scene, model observation, EP normaliser) of a scene index, cached."""
        if index not in self._scenes:
            scene = self.load_scene(index)
            ref = float(self.ref_fn(scene)) if self.ref_fn is not None else None
            self._scenes[index] = (scene, self.builder.observe(scene), ref)
        return self._scenes[index]

    def label(self, index: int, plans: np.ndarray) -> dict[str, np.ndarray]:
        """Scorer labels (name -> (n,)) of (n, 8, 3) plans in scene ``index``: exactly
        :func:`reward_models.dataset.label_plans`, with the scene's scoring context (map queries) cached."""
        from irlvla_gym.metrics import prepare_scene, score_plans

        scene, _, ref = self.scene(index)
        if index not in self._contexts:
            self._contexts[index] = prepare_scene(scene)
        plans = np.asarray(plans, np.float64).reshape(-1, 8, 3)
        r = score_plans(scene, plans, human_filter=True, traffic="log", reference_progress=ref, impl="fast",
                        context=self._contexts[index])
        out = {n: np.asarray(getattr(r, n), np.float64) for n in LABELS[:11]}
        out["progress"] = np.asarray(r.progress, np.float64)
        out["reference_progress"] = np.full(len(plans), np.nan if ref is None else float(ref))
        return out

    def relabel(self, scene_indices: np.ndarray, plans: np.ndarray, into: RelabelledPlans,
                step: int = 0) -> dict[str, np.ndarray]:
        """Label (P, 8, 3) plans of scenes (P,) and append them to ``into``; returns the labels in input order
        (name -> (P,)). Plans are scored per scene, one scorer call each; rows of a scene keep their order."""
        scene_indices = np.asarray(scene_indices, np.int64).reshape(-1)
        plans = np.asarray(plans, np.float64).reshape(-1, 8, 3)
        out = {k: np.zeros(len(plans), np.float64) for k in LABELS}
        for index in np.unique(scene_indices):
            rows = np.flatnonzero(scene_indices == index)
            labels = self.label(int(index), plans[rows])
            for k in LABELS:
                out[k][rows] = labels[k]
            into.add(int(index), self.scene(int(index))[1], plans[rows], labels, step)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------------------------------


def pointwise_loss(model: RewardWorldModel, obs: dict[str, torch.Tensor], plans: torch.Tensor | None,
                   labels: dict[str, torch.Tensor], reward_weight: float, feats: torch.Tensor | None = None,
                   rows: np.ndarray | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-plan loss of B one-plan scenes (no ranking / IRL term: there is no plan set to rank): the sub-score
    losses of :func:`reward_models.train.supervised_losses` + ``reward_weight`` x MSE(reward, EPDMS).

    ``obs``: prepared observations of the distinct scenes; ``rows`` (B,): the obs row of each plan (None: one
    row per plan). ``plans`` (B, 1, 8, 3), or ``feats`` (B, 1, 8, F) precomputed plan features."""

    enc = model.encode_scene(obs, lookup=feats is None)
    if rows is not None:
        enc = enc.select(rows)
    pred = model.score(enc, plans, feats=feats)
    parts = supervised_losses(pred, labels)
    mse = F.mse_loss(pred.reward, labels["epdms"])
    total = sum(parts.values()) + reward_weight * mse
    return total, {"loss/extra_total": float(total.detach()), "loss/extra_reward_mse": float(mse.detach())}


@dataclass
class RefitConfig:
    """Settings of one refit (:class:`Refitter`).

    Attributes:
        steps: optimiser steps per refit. lr: AdamW learning rate (constant). weight_decay: AdamW.
        batch_scenes: base-dataset scenes per step (all their plans). extra_batch: relabelled plans per step.
        extra_weight: weight of the relabelled-plan loss. grad_clip: gradient norm clip. seed: minibatch sampling.
    """

    steps: int = 20
    lr: float = 5e-4
    weight_decay: float = 1e-4
    batch_scenes: int = 8
    extra_batch: int = 64
    extra_weight: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0


class Refitter:
    """Fine-tunes a model in place on base data + relabelled plans (module docs); keeps its optimiser between
    refits.

    Args:
        model: the model to fine-tune (in place: anything scoring with it sees the new weights; clear encoding
            caches afterwards). base: the original dataset (None: relabelled plans only).
        config: :class:`RefitConfig`. train: loss weights of the base term (:class:`reward_models.train.TrainConfig`).
    """

    def __init__(self, model: RewardWorldModel, base: RWMData | None = None, config: RefitConfig | None = None,
                 train: TrainConfig | None = None):
        from reward_models.train import precompute_features

        self.model, self.base, self.config = model, base, config or RefitConfig()
        self.train_cfg = train or TrainConfig()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.rng = np.random.default_rng(self.config.seed)
        self.base_feats = precompute_features(model, base) if base is not None and len(base) else None
        self.extra_feats = torch.zeros(0)
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def _extend_features(self, extra: RelabelledPlans, chunk: int = 64) -> None:
        """Plan features (parameter-free) of the relabelled plans added since the last refit, (P, 1, 8, F)."""
        parts = [self.extra_feats] if len(self.extra_feats) else []
        for s in range(len(self.extra_feats), len(extra), chunk):
            idx = np.arange(s, min(s + chunk, len(extra)))
            obs, plans, _ = extra.batch(idx)
            parts.append(self.model.plan_features(self.model.encode_scene(obs), plans))
        if parts:
            self.extra_feats = torch.cat(parts)

    def refit(self, extra: RelabelledPlans) -> dict[str, float]:
        """Run ``config.steps`` steps; returns the mean losses and the seconds taken."""
        cfg, model = self.config, self.model
        t0 = time.perf_counter()
        self._extend_features(extra)
        model.train()
        sums: dict[str, float] = {}
        for _ in range(cfg.steps):
            loss = torch.zeros(())
            logs: dict[str, float] = {}
            if self.base_feats is not None:
                idx = np.sort(self.rng.choice(len(self.base), size=min(cfg.batch_scenes, len(self.base)),
                                              replace=False))
                obs, plans, labels = batch_tensors(self.base, idx)
                base_loss, out = compute_loss(model, obs, plans, labels, self.train_cfg, self.base_feats[idx])
                loss = loss + base_loss
                logs["loss/base_total"] = float(base_loss.detach())
            if len(extra):
                idx = np.sort(self.rng.choice(len(extra), size=min(cfg.extra_batch, len(extra)), replace=False))
                scenes, rows = np.unique(extra.scene_row[idx], return_inverse=True)  # encode each scene once
                obs = prepare_obs({k: extra.obs[k][scenes] for k in obs_entries(extra.obs)}, batched=True)
                labels = {k: torch.from_numpy(v[idx][:, None]) for k, v in extra.labels.items()}
                e_loss, e_logs = pointwise_loss(model, obs, None, labels, self.train_cfg.reward_weight,
                                                feats=self.extra_feats[idx], rows=rows)
                loss = loss + cfg.extra_weight * e_loss
                logs.update(e_logs)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        model.eval()
        out = {k: v / max(cfg.steps, 1) for k, v in sums.items()}
        out["seconds"] = time.perf_counter() - t0
        self.history.append(out)
        return out


def fit(model: RewardWorldModel, data: RWMData, steps: int, lr: float = 1e-3, batch_scenes: int = 16,
        seed: int = 0, feats: torch.Tensor | None = None, cfg: TrainConfig | None = None, progress: bool = False,
        desc: str = "fit") -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` AdamW steps on minibatches of ``batch_scenes`` scenes of ``data``
    (the full training loss of :mod:`reward_models.train`; linear warm-up over 10 % of the steps, then cosine
    decay to 10 %). ``feats``: precomputed plan features of ``data`` (N, M, 8, F). Returns a summary."""
    import math

    from reward_models.train import precompute_features

    cfg = cfg or TrainConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    feats = precompute_features(model, data) if feats is None else feats
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    warm = max(1, steps // 10)
    t0 = time.perf_counter()
    model.train()
    order = np.zeros(0, np.int64)
    losses = []
    from tqdm.auto import tqdm

    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if len(order) < batch_scenes:
            order = np.concatenate([order, rng.permutation(len(data))])
        idx, order = np.sort(order[:batch_scenes]), order[batch_scenes:]
        frac = min(1.0, max(0, step - warm) / max(1, steps - warm))
        scale = (step + 1) / warm if step < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        obs, plans, labels = batch_tensors(data, idx)
        loss, _ = compute_loss(model, obs, plans, labels, cfg, feats[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    return {"steps": steps, "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(tail)),
            "scenes": len(data)}


__all__ = ["RefitConfig", "Refitter", "RelabelledPlans", "Relabeller", "fit", "pointwise_loss"]
