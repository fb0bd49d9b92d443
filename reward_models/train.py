"""Training of the reward world model: supervised sub-score losses + a maximum-entropy IRL term.

``irlvla rwm train --data DIR --out CKPT_DIR`` (:class:`TrainRunConfig`, :func:`run_train`, which calls
:func:`train`). The loop reads top to bottom (CleanRL style):
hyperparameters, data (plan features are parameter-free and computed once, :func:`precompute_features`),
model/optimizer (or resume), then per epoch: minibatches of ``batch_scenes`` scenes with all
their plans (expert + K candidates), the loss, the update, validation, checkpointing, early stopping.

Loss for one minibatch (B scenes x M = K + 1 plans, expert at slot 0; r = the composed reward in [0, 1]):

* supervised: cross-entropy of the 3-way NC and DDC heads over {0, 0.5, 1}; binary cross-entropy of DAC, TLC,
  TTC, LK, HC, EC; binary cross-entropy of the EP head against the soft EP target; plus ``reward_weight`` x the
  squared error between r and the true EPDMS (aligns the composition with the score);
* maximum-entropy IRL (``irl_weight``): per scene, ``-log softmax(r / irl_temperature)[expert]`` over {expert,
  candidates}: the demonstration must carry more reward than every candidate (the MaxEnt IRL likelihood of the
  demonstration under a Boltzmann distribution over the scene's plan set);
* optional listwise ranking (``rank_weight``): cross-entropy between softmax(EPDMS / rank_temperature) and
  softmax(r / rank_temperature) over the scene's plans (sharpens best-of-K selection).

Validation: the last ``val_fraction`` of the dataset's scenes (or ``--val-data``); early stopping on the validation
loss with ``patience`` epochs. The best model goes to ``CKPT_DIR/model.safetensors`` + ``config.json``; the state
for resuming goes to ``CKPT_DIR/last/`` every epoch (rerunning the same command continues from there).
``CKPT_DIR/run.json`` records the run's data and settings (:func:`run_record`): a rerun with other settings is an
error naming the field, except the budgets ``epochs`` / ``max_minutes``, which a rerun may raise to train on. A run
that is finished (``epochs`` done or stopped early) is not trained further: a rerun returns its summary.
TensorBoard logs in ``CKPT_DIR/tb`` when tensorboard is installed.

torch is imported inside the functions: the configs below build ``irlvla rwm train --help`` without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from reward_models.dataset import DatasetError, RWMData, concat_data, load_dataset, obs_entries

if TYPE_CHECKING:
    import torch

    from reward_models.model import ModelConfig, RewardWorldModel


@dataclass
class TrainConfig:
    """Training hyperparameters (all stored in the checkpoint's ``config.json``; each is the ``irlvla rwm train``
    flag of the same name)."""

    epochs: int = 30
    """passes over the training scenes"""
    batch_scenes: int = 16
    """scenes per minibatch (each with all its plans)"""
    lr: float = 2e-3
    """peak AdamW learning rate (50 warm-up steps, cosine decay to 10 %)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    irl_weight: float = 0.1
    """weight of the MaxEnt IRL term"""
    irl_temperature: float = 0.05
    """temperature of the MaxEnt IRL softmax over a scene's plans (reward units)"""
    reward_weight: float = 2.0
    """weight of the reward-vs-EPDMS squared error"""
    rank_weight: float = 0.5
    """weight of the listwise ranking term"""
    rank_temperature: float = 0.05
    """temperature of both softmaxes of the ranking term (reward / EPDMS units)"""
    val_fraction: float = 0.1
    """share of the dataset's scenes (the last ones) held out for validation when no --val-data is given"""
    patience: int = 4
    """early stop after this many epochs without a validation improvement"""
    seed: int = 0
    """torch / numpy seed"""
    max_minutes: float | None = None
    """stop after this training time (minutes)"""
    grad_clip: float = 1.0
    """gradient-norm clipping"""
    ema: float = 0.0
    """decay of an exponential moving average of the weights, validated and saved (0: off). Per optimiser step the
    decay is min(ema, (1 + step) / (10 + step)); the optimiser keeps updating the raw weights, and the average is
    what gets validated, early-stopped on and saved"""
    overrate_weight: float = 0.0
    """extra weight of the squared reward error where the model over-rates a plan (pessimism): such an error counts
    1 + overrate_weight times (over-rating a bad plan is what makes best-of-K selection and RL pick it; under-rating
    a good one costs little when other good plans exist). 0: the plain squared error"""


@dataclass
class ModelOverrides:
    """:class:`~reward_models.model.ModelConfig` fields set on the command line (None: the ModelConfig default)."""

    d_model: int | None = None
    """token width (default: ModelConfig's)"""
    hidden: int | None = None
    """plan-embedding width (default: ModelConfig's)"""
    heads: int | None = None
    """attention heads (default: ModelConfig's)"""
    bev_samples: Literal["full", "extrema"] | None = None
    """BEV samples per plan pose: all 70, or their per-channel max/min over the ego box (28)"""
    bev_tokens: Literal[16, 64] | None = None
    """BEV scene tokens"""
    activation: Literal["gelu", "relu"] | None = None
    """hidden-layer activation"""
    agent_forecast: Literal["cv", "lane", "logged"] | None = None
    """agent forecast of the plan features: constant velocity, lane following, or the logged futures (needs data
    built with --agents-future logged)"""
    agent_geometry: Literal["circle", "box"] | None = None
    """distance to the agents in the plan features: bounding circles or oriented-box separation"""

    def model_config(self) -> "ModelConfig":
        from reward_models.model import ModelConfig

        return ModelConfig(**{k: v for k, v in dataclasses.asdict(self).items() if v is not None})


@dataclass
class TrainRunConfig:
    """One ``irlvla rwm train`` run (:func:`run_train`): data, checkpoint directory, hyperparameters, model."""

    data: str
    """RWM dataset directory (irlvla rwm dataset)"""
    out: str
    """checkpoint directory"""
    val_data: str | None = None
    """validation dataset (default: last 10% of --data scenes, --val-fraction)"""
    max_scenes: int | None = None
    """train on the first N scenes of --data"""
    extra_data: tuple[str, ...] = ()
    """more RWM datasets trained on beside --data (e.g. real windows, reward_models.real); the same number of
    candidates per scene"""
    extra_repeat: int = 1
    """times each --extra-data scene is drawn per epoch (oversamples a small set such as real windows)"""
    extra_val_data: tuple[str, ...] = ()
    """more validation datasets: the validation loss is then the mean over all validation sets, each counting
    equally (so a few real windows weigh as much as the synthetic validation scenes)"""
    init: str | None = None
    """start from this checkpoint's weights and model config (fine-tuning; a directory or a shipped name such as
    'default'); of the model flags only the parameter-free ones (--agent-geometry, --agent-forecast) may be set"""
    progress: bool = True
    """progress bars"""
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelOverrides = field(default_factory=ModelOverrides)


def run_train(cfg: TrainRunConfig) -> dict[str, Any]:
    """Train (or resume) the RWM of ``cfg``; returns the summary of :func:`train`.

    Raises:
        ValueError: ``init`` together with model flags that change the weights' shapes, or ``extra_repeat`` < 1.
    """
    model_cfg, overrides = cfg.model.model_config(), None
    if cfg.init is not None:
        overrides = {k: v for k, v in dataclasses.asdict(cfg.model).items() if v is not None}
        shaped = sorted(set(overrides) - set(INIT_OVERRIDES))
        if shaped:
            raise ValueError(f"init={cfg.init!r} takes the checkpoint's model config; of the model flags only "
                             f"{', '.join(INIT_OVERRIDES)} may be set (got {', '.join(shaped)})")
        model_cfg = None
    return train(cfg.data, cfg.out, cfg.train, model_cfg, val_dir=cfg.val_data, max_scenes=cfg.max_scenes,
                 progress=cfg.progress, extra_data=cfg.extra_data, extra_repeat=cfg.extra_repeat,
                 extra_val=cfg.extra_val_data, init=cfg.init, init_overrides=overrides)


INIT_OVERRIDES = ("agent_geometry", "agent_forecast")
"""ModelConfig fields a fine-tuning run (``init``) may change: they change the plan features, not the weights."""
RUN_RECORD = "run.json"
"""File in the checkpoint directory recording what the run trains on (:func:`run_record`)."""
BUDGET_FIELDS = ("epochs", "max_minutes")
"""TrainConfig fields a rerun may change: budgets (raising one continues the run), not what is trained."""


def run_record(data_dir: str, cfg: TrainConfig, model_cfg: ModelConfig | None, val_dir: str | None,
               max_scenes: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run trains on and how, as JSON reads it back (budgets left out: :data:`BUDGET_FIELDS`). ``extra``:
    further settings (extra datasets, initial checkpoint), recorded only when set, so records of runs without
    them read as before."""
    import json

    from reward_models.model import ModelConfig

    record = {"data": str(Path(data_dir).resolve()), "val_data": str(Path(val_dir).resolve()) if val_dir else None,
              "max_scenes": max_scenes,
              "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in BUDGET_FIELDS},
              "model": (model_cfg or ModelConfig()).to_dict()}
    record.update({k: v for k, v in (extra or {}).items() if v})
    return json.loads(json.dumps(record, default=str))


def check_run_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``out/run.json``, or, when one is there, refuse a different one (ValueError naming the
    fields): continuing a run on other data or settings would silently mix two trainings."""
    from irlvla_gym.utils import json_differences
    from reward_models.checkpoint import read_json, write_json

    path = out / RUN_RECORD
    if not path.is_file():
        write_json(path, record)
        return
    diff = json_differences(read_json(path), record)
    if diff:
        raise ValueError(f"{out} holds an RWM run with a different config: {'; '.join(diff)}; train into another "
                         f"--out (or delete {out} to start over)")


def finished_summary(out: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` (``epochs`` done or stopped early; read from ``last/trainer.json``),
    or None when there is still training to do (none yet, interrupted, or stopped by ``max_minutes``)."""
    from reward_models.checkpoint import read_json

    if not (out / "last" / "trainer.json").is_file():
        return None
    saved = read_json(out / "last" / "trainer.json")
    early = saved["bad_epochs"] >= cfg.patience
    if saved["epoch"] < cfg.epochs and not early:
        return None
    summary_path = out / "train_summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    return {"epochs_done": saved["epoch"], "steps": saved["step"], "best_val_loss": saved["best_val"],
            "history": saved["history"], **summary, "finished": True,
            "stopped": summary.get("stopped") or (
                f"early stop: no validation improvement for {cfg.patience} epochs" if early else "")}


def supervised_losses(pred, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sub-score losses (means over all plans). ``labels`` name -> (B, M) float targets."""
    import torch
    import torch.nn.functional as F

    from reward_models.model import BINARY, THREE_WAY

    out = {}
    for n in THREE_WAY:
        target = torch.round(labels[n] * 2).long().clamp(0, 2)
        out[n] = F.cross_entropy(pred.logits[n].reshape(-1, 3), target.reshape(-1))
    for n in BINARY:
        out[n] = F.binary_cross_entropy_with_logits(pred.logits[n], (labels[n] > 0.5).float())
    out["ep"] = F.binary_cross_entropy_with_logits(pred.logits["ep"], labels["ep"].clamp(0, 1))
    return out


def irl_loss(reward: torch.Tensor, temperature: float) -> torch.Tensor:
    """MaxEnt IRL: -log softmax(reward / T)[expert] per scene (expert at slot 0), averaged. reward (B, M)."""
    return -(reward / temperature).log_softmax(dim=-1)[:, 0].mean()


def rank_loss(reward: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """ListNet cross-entropy between softmax(target / T) and softmax(reward / T) over each scene's plans."""
    p = (target / temperature).softmax(-1)
    return -(p * (reward / temperature).log_softmax(-1)).sum(-1).mean()


def batch_tensors(data: RWMData, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                            dict[str, torch.Tensor]]:
    """Model inputs (prepared obs), plans (B, M, 8, 3) and labels (B, M) for scenes ``idx``."""
    import torch

    from reward_models.model import prepare_obs

    obs = prepare_obs({k: data.obs[k][idx] for k in obs_entries(data.obs)}, batched=True)
    plans = torch.from_numpy(data.plans[idx])
    labels = {k: torch.from_numpy(v[idx]) for k, v in data.labels.items()}
    return obs, plans, labels


def precompute_features(model: RewardWorldModel, data: RWMData, chunk: int = 16) -> torch.Tensor:
    """(N, M, 8, F) plan features of a whole dataset. They have no parameters, so training computes them once
    (about 0.3 kB per plan) instead of every epoch."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(data), chunk):
            idx = np.arange(s, min(s + chunk, len(data)))
            obs, plans, _ = batch_tensors(data, idx)
            out.append(model.plan_features(model.encode_scene(obs), plans))
    return torch.cat(out)


def compute_loss(model: RewardWorldModel, obs, plans, labels, cfg: TrainConfig,
                 feats: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss of one minibatch (module docs) and ``{"logs": per-term values, "reward": (B, M) detached}``."""
    if feats is None:
        pred = model(obs, plans)
    else:
        pred = model.score(model.encode_scene(obs, lookup=False), None, feats=feats)
    parts = supervised_losses(pred, labels)
    sup = sum(parts.values())
    err = pred.reward - labels["epdms"]
    rew = ((1.0 + cfg.overrate_weight * (err > 0).to(err.dtype)) * err * err).mean()
    irl = irl_loss(pred.reward, cfg.irl_temperature)
    rank = rank_loss(pred.reward, labels["epdms"], cfg.rank_temperature)
    total = sup + cfg.reward_weight * rew + cfg.irl_weight * irl + cfg.rank_weight * rank
    logs = {f"loss/{k}": v.item() for k, v in parts.items()}
    logs.update({"loss/supervised": sup.item(), "loss/reward_mse": rew.item(), "loss/irl": irl.item(),
                 "loss/rank": rank.item(), "loss/total": total.item()})
    return total, {"logs": logs, "reward": pred.reward.detach()}


def evaluate_loss(model: RewardWorldModel, data: RWMData, cfg: TrainConfig,
                  feats: torch.Tensor | None = None) -> dict[str, float]:
    """Mean validation losses and the pooled Spearman of reward vs EPDMS."""
    import torch

    from reward_models.metrics import best_of_k_gaps, spearman

    model.eval()
    sums: dict[str, float] = {}
    preds, n = [], 0
    with torch.no_grad():
        for start in range(0, len(data), cfg.batch_scenes):
            idx = np.arange(start, min(start + cfg.batch_scenes, len(data)))
            obs, plans, labels = batch_tensors(data, idx)
            _, out = compute_loss(model, obs, plans, labels, cfg, None if feats is None else feats[idx])
            for k, v in out["logs"].items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            preds.append(out["reward"].numpy())
            n += len(idx)
    model.train()
    res = {k: v / n for k, v in sums.items()}
    pred = np.concatenate(preds)
    res["spearman"] = spearman(pred.ravel(), data.labels["epdms"].ravel())
    res["best_of_k_gap"] = float(best_of_k_gaps(pred[:, 1:], data.labels["epdms"][:, 1:]).mean())
    return res


def evaluate_sets(model: RewardWorldModel, sets: list[RWMData], cfg: TrainConfig,
                  feats: list[torch.Tensor] | None = None) -> dict[str, float]:
    """:func:`evaluate_loss` on each validation set, macro-averaged (every set counts equally; one set: its
    values). With several sets each set's Spearman and best-of-K gap are added as ``set{i}/spearman`` /
    ``set{i}/best_of_k_gap``."""
    per = [evaluate_loss(model, d, cfg, None if feats is None else feats[i]) for i, d in enumerate(sets) if len(d)]
    if len(per) == 1:
        return per[0]
    out = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
    for i, r in enumerate(per):
        out[f"set{i}/spearman"], out[f"set{i}/best_of_k_gap"] = r["spearman"], r["best_of_k_gap"]
    return out


def split_train_val(data: RWMData, fraction: float) -> tuple[RWMData, RWMData]:
    n_val = max(1, int(round(len(data) * fraction))) if len(data) > 1 else 0
    n = len(data) - n_val
    return data.subset(np.arange(n)), data.subset(np.arange(n, len(data)))


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over 50 steps, then cosine decay to 10 % of ``base`` at ``total`` steps."""
    if step < 50:
        return base * (step + 1) / 50
    frac = min(1.0, (step - 50) / max(1, total - 50))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _summary_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(path))


# ---- the training loop ----------------------------------------------------------------------------------------


@dataclass
class _Trainer:
    """What the loop updates: model, optimiser, weight average, numpy generator, counters (``state``: epoch, step,
    best_val, bad_epochs, history; saved in ``last/trainer.json``)."""

    model: Any
    opt: Any
    model_cfg: Any
    rng: np.random.Generator
    state: dict[str, Any]
    ema: Any = None

    @property
    def kept(self) -> Any:
        """The weights that are validated and saved: the average when there is one."""
        return self.ema if self.ema is not None else self.model

    def save_last(self, last: Path, meta: dict[str, Any]) -> None:
        """The resumable state: weights, optimiser (+ torch RNG), average, counters, numpy RNG."""
        import torch

        from reward_models.checkpoint import optimizer_tensors, save_tensors, write_json

        tensors, groups = optimizer_tensors(self.opt)
        tensors["torch_rng"] = torch.get_rng_state()
        save_tensors(last / "optimizer.safetensors", tensors)
        save_tensors(last / "model.safetensors", self.model.state_dict())
        if self.ema is not None:
            save_tensors(last / "ema.safetensors", self.ema.state_dict())
        write_json(last / "trainer.json", {**self.state, "model": self.model_cfg.to_dict(), "optimizer_groups": groups,
                                           "numpy_rng": self.rng.bit_generator.state, **meta})


def _start(last: Path, cfg: TrainConfig, model_cfg: ModelConfig | None, init: str | None = None) -> _Trainer:
    """A new model and optimiser, or both restored from ``last/`` (then ``model_cfg`` is the saved one). ``init``:
    a new model starts from that checkpoint's weights and config instead of a random one."""
    import copy

    import torch

    from reward_models.checkpoint import CheckpointError, load_optimizer, load_tensors, read_json
    from reward_models.model import ModelConfig, RewardWorldModel

    state = {"epoch": 0, "step": 0, "best_val": float("inf"), "bad_epochs": 0, "history": []}
    rng = np.random.default_rng(cfg.seed)
    if (last / "trainer.json").exists():
        saved = read_json(last / "trainer.json")
        model_cfg = ModelConfig.from_dict(saved["model"])
        model = RewardWorldModel(model_cfg)
        try:
            model.load_state_dict(load_tensors(last / "model.safetensors"))
        except RuntimeError as exc:
            raise CheckpointError(f"{last / 'model.safetensors'}: weights do not match ({exc})") from None
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt_t = load_tensors(last / "optimizer.safetensors")
        load_optimizer(opt, opt_t, saved["optimizer_groups"])
        if "torch_rng" in opt_t:
            torch.set_rng_state(opt_t["torch_rng"])
        rng.bit_generator.state = saved["numpy_rng"]
        state = {k: saved[k] for k in state}
        print(f"rwm train: resuming from {last} at epoch {state['epoch']}, step {state['step']}")
    elif init is not None:
        model = RewardWorldModel.from_pretrained(init).train()
        if model_cfg is not None:  # init's config + the data's observation settings and feature overrides
            model.config = model_cfg  # (none of them changes the weights' shapes)
        model_cfg = model.config
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        model_cfg = model_cfg or ModelConfig()
        model = RewardWorldModel(model_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema > 0:  # the averaged weights: validated and saved instead of the raw ones
        ema = copy.deepcopy(model).requires_grad_(False)
        if (last / "ema.safetensors").exists():
            ema.load_state_dict(load_tensors(last / "ema.safetensors"))
    return _Trainer(model, opt, model_cfg, rng, state, ema)


def _epoch_order(rng: np.random.Generator, n: int, repeats: np.ndarray | None) -> np.ndarray:
    """Scene indices of one epoch, shuffled: every scene once, or scene i ``repeats[i]`` times."""
    return rng.permutation(n) if repeats is None else rng.permutation(np.repeat(np.arange(n), repeats))


def _train_epoch(t: _Trainer, train_data: RWMData, feats: torch.Tensor, cfg: TrainConfig, total_steps: int,
                 writer, log_every: int, progress: bool, repeats: np.ndarray | None = None) -> float:
    """One epoch of updates (scene i drawn ``repeats[i]`` times, default once); returns the running (exponentially
    smoothed) training loss."""
    import torch
    from tqdm.auto import tqdm

    state, model = t.state, t.model
    order = _epoch_order(t.rng, len(train_data), repeats)
    steps_per_epoch = math.ceil(len(order) / cfg.batch_scenes)
    bar = tqdm(range(steps_per_epoch), desc=f"rwm train epoch {state['epoch'] + 1}/{cfg.epochs}",
               disable=not progress, leave=False)
    running = 0.0
    for b in bar:
        idx = np.sort(order[b * cfg.batch_scenes:(b + 1) * cfg.batch_scenes])
        obs, plans, labels = batch_tensors(train_data, idx)
        lr = _lr_at(state["step"], total_steps, cfg.lr)
        for g in t.opt.param_groups:
            g["lr"] = lr
        loss, out = compute_loss(model, obs, plans, labels, cfg, feats[idx])
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        t.opt.step()
        if t.ema is not None:
            decay = min(cfg.ema, (1 + state["step"]) / (10 + state["step"]))
            with torch.no_grad():
                e_params, params = list(t.ema.parameters()), list(model.parameters())
                torch._foreach_mul_(e_params, decay)
                torch._foreach_add_(e_params, params, alpha=1.0 - decay)
        state["step"] += 1
        running = 0.9 * running + 0.1 * loss.item() if b else loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if writer is not None and state["step"] % log_every == 0:
            for k, v in out["logs"].items():
                writer.add_scalar(f"train/{k}", v, state["step"])
            writer.add_scalar("train/lr", lr, state["step"])
    bar.close()
    return running


def portable(value: Any) -> Any:
    """``value`` without machine paths: an absolute path (a scene store, a policy checkpoint) becomes its last folder
    name, so a shipped checkpoint's config.json says what it was trained on without naming the machine."""
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.basename(os.path.normpath(value))
    return value


def dataset_command(manifest: dict[str, Any]) -> str:
    """The ``irlvla rwm dataset`` command that makes a dataset like the one of ``manifest`` (``--out`` left out)."""
    parts = ["irlvla rwm dataset", f"--split {portable(manifest.get('source'))}",
             f"--num-scenes {manifest.get('num_scenes')}"]
    if manifest.get("start"):
        parts.append(f"--start {manifest['start']}")
    candidates = manifest.get("candidates", {}).get("num_candidates")
    if candidates is not None:
        parts.append(f"--candidates {candidates}")
    if manifest.get("policy"):
        parts.append(f"--policy {portable(manifest['policy'])}")
    if manifest.get("seed"):
        parts.append(f"--seed {manifest['seed']}")
    if (manifest.get("obs_config") or {}).get("max_agents"):
        parts.append(f"--max-agents {manifest['obs_config']['max_agents']}")
    if (manifest.get("obs_config") or {}).get("agents_future", "none") != "none":
        parts.append(f"--agents-future {manifest['obs_config']['agents_future']}")
    return " ".join(parts)


@dataclass
class _TrainingData:
    """What one run trains and validates on: the training scenes (``repeats``: draws per epoch of each scene,
    None = once), the validation sets, and the checkpoint metadata describing them (no machine paths)."""

    train: RWMData
    repeats: np.ndarray | None
    val: list[RWMData]
    meta: dict[str, Any]
    obs_config: dict | None = None


def _training_data(data_dir: str, cfg: TrainConfig, val_dir: str | None, max_scenes: int | None,
                   extra_data: tuple[str, ...], extra_repeat: int, extra_val: tuple[str, ...]) -> _TrainingData:
    """Load --data (split into train / validation unless ``val_dir``), the extra training sets (each scene drawn
    ``extra_repeat`` times per epoch) and the extra validation sets."""
    if extra_repeat < 1:
        raise ValueError(f"extra_repeat must be >= 1, got {extra_repeat}")
    data = load_dataset(data_dir, max_scenes=max_scenes)
    main, val = (data, load_dataset(val_dir)) if val_dir else split_train_val(data, cfg.val_fraction)
    extras = [load_dataset(p) for p in extra_data]
    train_data = concat_data([main, *extras])
    repeats = None
    if extras and extra_repeat > 1:
        repeats = np.concatenate([np.ones(len(main), np.int64), np.full(len(train_data) - len(main), extra_repeat)])
    vals = [val, *(load_dataset(p) for p in extra_val)]
    obs_config = data.manifest.get("obs_config")
    for path, d in zip((*extra_data, *extra_val), (*extras, *vals[1:])):
        if d.manifest.get("obs_config") != obs_config:
            raise DatasetError(f"{path}: observations built with obs_config {d.manifest.get('obs_config')}, but "
                               f"--data {data_dir} with {obs_config}; build every dataset of a run alike "
                               "(irlvla rwm dataset --max-agents / --agents-future)")
    meta = {"train": dataclasses.asdict(cfg), "data": dataset_command(data.manifest), "train_scenes": len(train_data),
            "val_scenes": sum(len(v) for v in vals), "dataset": {k: portable(data.manifest[k]) for k in
                                                                 ("source", "num_scenes", "seed", "candidates",
                                                                  "ep_normaliser", "policy") if k in data.manifest}}
    if extras:
        meta["extra_data"] = [dataset_command(d.manifest) for d in extras]
        meta["extra_repeat"] = extra_repeat
    if extra_val:
        meta["extra_val_data"] = [dataset_command(d.manifest) for d in vals[1:]]
    return _TrainingData(train_data, repeats, vals, meta, obs_config)


def _init_config(init: str | None, model_cfg: ModelConfig | None,
                 overrides: dict[str, Any] | None = None) -> ModelConfig | None:
    """The model config of a run: ``init``'s (read from its config.json) with ``overrides`` (fields of
    :data:`INIT_OVERRIDES`) when fine-tuning, else ``model_cfg``."""
    if init is None:
        return model_cfg
    from reward_models.checkpoint import read_json, resolve_checkpoint
    from reward_models.model import ModelConfig

    bad = sorted(set(overrides or {}) - set(INIT_OVERRIDES))
    if bad:
        raise ValueError(f"init_overrides: {bad} change the weights' shapes; only {INIT_OVERRIDES} may be overridden")
    base = ModelConfig.from_dict(read_json(resolve_checkpoint(init) / "config.json").get("model", {}))
    return dataclasses.replace(base, **(overrides or {}))


def train(data_dir: str, out: str, cfg: TrainConfig | None = None, model_cfg: ModelConfig | None = None,
          val_dir: str | None = None, max_scenes: int | None = None, progress: bool = True,
          log_every: int = 20, *, extra_data: tuple[str, ...] = (), extra_repeat: int = 1,
          extra_val: tuple[str, ...] = (), init: str | None = None,
          init_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or resume) an RWM; returns a summary dict (also written to ``CKPT_DIR/train_summary.json``).

    ``extra_data`` / ``extra_repeat`` / ``extra_val`` / ``init``: see :class:`TrainRunConfig` (``extra_data``,
    ``extra_repeat``, ``extra_val_data``, ``init``); ``init_overrides``: :data:`INIT_OVERRIDES` fields set on top of
    ``init``'s model config."""
    import torch

    from reward_models.checkpoint import save_model, write_json
    from reward_models.model import ModelConfig

    cfg = cfg or TrainConfig()
    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    model_cfg = _init_config(init, model_cfg, init_overrides)
    extra = {"extra_data": [str(Path(p).resolve()) for p in extra_data], "extra_val": [str(Path(p).resolve()) for p in
             extra_val], "extra_repeat": extra_repeat if extra_repeat != 1 else None, "init": init}
    check_run_record(out_p, run_record(data_dir, cfg, model_cfg, val_dir, max_scenes, extra))
    done = finished_summary(out_p, cfg)
    if done is not None:  # a rerun of a finished run: nothing to train, weights stay as they are
        print(f"rwm train: {out_p} finished earlier ({done['epochs_done']} epochs"
              + (f", {done['stopped']}" if done["stopped"] else "") + "); nothing to do")
        return done
    torch.manual_seed(cfg.seed)

    # ---- data, model (or resume) ----
    td = _training_data(data_dir, cfg, val_dir, max_scenes, tuple(extra_data), extra_repeat, tuple(extra_val))
    n_draws = len(td.train) if td.repeats is None else int(td.repeats.sum())
    total_steps = math.ceil(n_draws / cfg.batch_scenes) * cfg.epochs
    last = out_p / "last"
    model_cfg = dataclasses.replace(model_cfg or ModelConfig(), obs_config=td.obs_config)
    if model_cfg.agent_forecast == "logged" and (td.obs_config or {}).get("agents_future") != "logged":
        raise DatasetError(f"{data_dir}: agent_forecast 'logged' reads the agents' logged futures, but the data was "
                           "built without them (irlvla rwm dataset --agents-future logged)")
    t = _start(last, cfg, model_cfg, init)
    state = t.state
    train_feats, val_feats = precompute_features(t.model, td.train), [precompute_features(t.model, v) for v in td.val]
    t.model.train()
    writer = _summary_writer(out_p / "tb")
    meta = dict(td.meta, **({"init": portable(init)} if init else {}))
    start_time = time.monotonic()

    # ---- loop ----
    stopped = ""
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        running = _train_epoch(t, td.train, train_feats, cfg, total_steps, writer, log_every, progress, td.repeats)
        val = (evaluate_sets(t.kept, td.val, cfg, val_feats) if any(len(v) for v in td.val)
               else {"loss/total": running, "spearman": float("nan")})
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "step": state["step"], "train_loss": running,
                                 "val_loss": val["loss/total"], "val_spearman": val["spearman"],
                                 "val_best_of_k_gap": val.get("best_of_k_gap", float("nan"))})
        if writer is not None:
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, state["step"])
            writer.flush()
        sets = "".join(f"({k.split('/')[0]} {v:.4f}) " for k, v in val.items() if k.endswith("/spearman"))
        print(f"rwm train: epoch {epoch + 1}/{cfg.epochs} step {state['step']} train loss {running:.4f} "
              f"val loss {val['loss/total']:.4f} val spearman {val['spearman']:.4f} {sets}"
              f"val best-of-K gap {val.get('best_of_k_gap', float('nan')):.4f}", flush=True)
        if val["loss/total"] < state["best_val"] - 1e-5:
            state["best_val"], state["bad_epochs"] = val["loss/total"], 0
            save_model(t.kept, out_p, extra={**meta, "epoch": epoch + 1, "step": state["step"],
                                              "val": {k: float(v) for k, v in val.items()}})
        else:
            state["bad_epochs"] += 1
        t.save_last(last, meta)
        if state["bad_epochs"] >= cfg.patience:
            stopped = f"early stop: no validation improvement for {cfg.patience} epochs"
            break
        if cfg.max_minutes is not None and (time.monotonic() - start_time) / 60 > cfg.max_minutes:
            stopped = f"time budget of {cfg.max_minutes} min reached"
            break
    if stopped:
        print(f"rwm train: {stopped}")
    if writer is not None:
        writer.close()
    summary = {"epochs_done": state["epoch"], "steps": state["step"], "best_val_loss": state["best_val"],
               "history": state["history"], "stopped": stopped,
               "finished": state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience}
    write_json(out_p / "train_summary.json", summary)
    return summary


__all__ = ["BUDGET_FIELDS", "ModelOverrides", "RUN_RECORD", "TrainConfig", "TrainRunConfig", "check_run_record",
           "compute_loss", "evaluate_loss", "evaluate_sets", "finished_summary", "irl_loss", "rank_loss", "run_record",
           "run_train", "supervised_losses", "train"]
