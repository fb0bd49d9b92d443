"""An ensemble of reward world models with an uncertainty penalty: ``reward = mean - beta * std`` over M members.

A policy optimised against one learned reward drifts to plans where that model is wrong. Members trained with
different seeds on different bootstrap resamples of the dataset agree where the data is dense and disagree off
it, so subtracting ``beta`` x their spread makes those plans unattractive (pessimism under model uncertainty).

:class:`EnsembleRewardModel` has the interface of :class:`~reward_models.model.RewardWorldModel`
(``encode_scene``, ``score``, ``predict_reward``, ``predict_subscores``, ``save_pretrained``, ``from_pretrained``),
so it drops into anything that scores plans with the single model (``SceneRewardFn``, the hacking probe)::

    ens = EnsembleRewardModel.from_pretrained("runs/hacking/ensemble")          # or build_ensemble(...)
    enc = ens.encode_scene(obs)                # M scene encodings (the parameter-free parts computed once)
    pred = ens.score(enc, plans)               # pred.reward = pred.mean - beta * pred.std, all (B, K)
    fn = model_reward_fn(ens)                  # (scene, plan) -> float, pass as the env's reward=
    gym.make("IRLVLA-Navsim-v2", reward="rwm-ensemble:runs/hacking/ensemble")

The plan features (:func:`reward_models.features.pose_features`) have no parameters, so they are computed once per
call and shared by the members: an ensemble of M costs one feature pass + M small networks, not M full models.

Members (:func:`build_ensemble`): each starts from the shipped checkpoint's weights (``init``) with its plan MLP and
sub-score heads re-initialised from the member's seed, and is trained on a bootstrap resample (scenes drawn with
replacement) of an RWM dataset for a few epochs (:func:`reward_models.refit.fit`). Member ``i`` uses seed
``seed + i``; ``init=None`` trains members from scratch instead.

On disk (:meth:`EnsembleRewardModel.save_pretrained`)::

    DIR/ensemble.json       {"format": "irlvla-rwm-ensemble", "format_version": 1, "beta": ..., "members": [...]}
    DIR/config.json         the same plus "model_type": "irlvla_rwm_ensemble" (Hub layout, AutoConfig-readable)
    DIR/member-0/           a RewardWorldModel checkpoint (model.safetensors + config.json), one per member
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from huggingface_hub import PyTorchModelHubMixin

from irlvla_gym.policies.config import looks_like_hub_id
from reward_models.checkpoint import (CONFIG_FILE, HUB_DOWNLOAD_ARGS, CheckpointError, load_hub_repo, read_json,
                                      write_json)
from reward_models.model import (
    SUB_SCORES, RewardWorldModel, SceneEncoding, is_prepared, numpy_outputs, prepare_obs, run_inference,
)
from reward_models.reward_fn import SceneRewardFn

ENSEMBLE_FORMAT = "irlvla-rwm-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_MODEL_TYPE = "irlvla_rwm_ensemble"
"""``model_type`` of an ensemble's ``config.json`` (``ensemble.json`` plus this key; AutoConfig-readable once
``irlvla_gym.policies.config.auto_config_class(ENSEMBLE_MODEL_TYPE)`` registered it)."""


@dataclass
class EnsembleEncoding:
    """M members' encodings of the same B scenes (``members[0].obs`` holds the shared map lookup)."""

    members: list[SceneEncoding]

    def __len__(self) -> int:
        return len(self.members[0])

    def select(self, rows) -> "EnsembleEncoding":
        """The encoding of scenes ``rows`` (:meth:`SceneEncoding.select`; copies). Members 1.. share member 0's
        selected observation tensors (``score`` reads only member 0's: the plan features are shared)."""
        first = self.members[0].select(rows)
        return EnsembleEncoding([first, *(m.select(rows, obs=first.obs) for m in self.members[1:])])

    def with_obs(self, **entries: torch.Tensor) -> "EnsembleEncoding":
        """Member 0's observation entries replaced (:meth:`SceneEncoding.with_obs`), shared by the other members."""
        first = self.members[0].with_obs(**entries)
        return EnsembleEncoding([first, *(dataclasses.replace(m, obs=first.obs) for m in self.members[1:])])

    def pad_to(self, other: "EnsembleEncoding") -> "EnsembleEncoding":
        """Every member padded to at least ``other``'s member's sizes (:meth:`SceneEncoding.pad_to`); members
        1.. share member 0's padded observation tensors."""
        first = self.members[0].pad_to(other.members[0])
        return EnsembleEncoding([first, *(m.pad_to(o, obs=first.obs)
                                          for m, o in zip(self.members[1:], other.members[1:]))])

    @classmethod
    def concat(cls, encodings: Sequence["EnsembleEncoding"]) -> "EnsembleEncoding":
        """One encoding of the scenes of ``encodings`` in order, member by member (:meth:`SceneEncoding.concat`:
        tokens padded with masked slots); the observation tensors are concatenated once, from member 0's."""
        encodings = list(encodings)
        if len({len(e.members) for e in encodings}) != 1:
            raise ValueError("EnsembleEncoding.concat: encodings of ensembles with different member counts")
        first = SceneEncoding.concat([e.members[0] for e in encodings])
        rest = [SceneEncoding.concat([e.members[i] for e in encodings], obs=first.obs)
                for i in range(1, len(encodings[0].members))]
        return cls([first, *rest])


@dataclass
class EnsemblePrediction:
    """Ensemble outputs for (B, K) plans.

    Attributes:
        member_rewards: (M, B, K) each member's EPDMS-shaped reward in [0, 1].
        mean, std: (B, K) mean and population standard deviation of ``member_rewards`` over members.
        reward: (B, K) ``mean - beta * std`` (may be slightly negative for large ``beta``).
        expected: sub-score name -> (B, K) mean over members of the expected sub-score.
        member_expected: sub-score name -> (M, B, K).
    """

    member_rewards: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    reward: torch.Tensor
    expected: dict[str, torch.Tensor]
    member_expected: dict[str, torch.Tensor]


def member_std(values: torch.Tensor) -> torch.Tensor:
    """Population standard deviation over the leading (member) axis: (M, ...) -> (...).

    Computed from deviations to member 0 (``var = E[d^2] - E[d]^2``, d = x - x_0), so identical members give
    exactly 0, not a rounding residue of the mean."""
    d = values - values[:1]
    var = (d * d).mean(0) - d.mean(0) ** 2
    return var.clamp_min(0.0).sqrt()


class EnsembleRewardModel(nn.Module, PyTorchModelHubMixin, library_name="irlvla-gym",
                          tags=["reward-model", "world-model", "autonomous-driving", "ensemble"]):
    """M reward world models scored together; ``reward = mean - beta * std`` (module docs).

    Args:
        members: the member models (same BEV geometry, since they share the plan features).
        beta: weight of the uncertainty penalty (0 = the plain ensemble mean).
    """

    def __init__(self, members: Sequence[RewardWorldModel], beta: float = 1.0):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        bev = {dataclasses.astuple(m.config.bev) for m in members}
        if len(bev) != 1:
            raise ValueError(f"ensemble members must share the BEV geometry (they share plan features), got {bev}")
        self.members = nn.ModuleList(members)
        self.beta = float(beta)

    @property
    def config(self):
        """Member 0's :class:`~reward_models.model.ModelConfig` (the geometry every member shares)."""
        return self.members[0].config

    def __len__(self) -> int:
        return len(self.members)

    # ---- scene and plans -------------------------------------------------------------------------------------

    def encode_scene(self, obs: Mapping[str, np.ndarray | torch.Tensor], lookup: bool = True) -> EnsembleEncoding:
        """Each member's scene tokens for one observation or a batch; observation tensors and the map lookup are
        prepared once (member 0's encoding carries them)."""
        dev = next(self.parameters()).device
        o = obs if is_prepared(obs) else prepare_obs(obs, dev, bev_uint8=dev.type == "cpu")
        first = self.members[0].encode_scene(o, lookup=lookup)
        rest = [m.encode_scene(o, lookup=False) for m in self.members[1:]]
        return EnsembleEncoding([first, *rest])

    def plan_features(self, enc: EnsembleEncoding, plans: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, K, 8, F) parameter-free plan features, shared by every member."""
        return self.members[0].plan_features(enc.members[0], plans)

    def score(self, enc: EnsembleEncoding, plans: np.ndarray | torch.Tensor | None,
              feats: torch.Tensor | None = None) -> EnsemblePrediction:
        """Score (B, K, 8, 3) plans (or (K, 8, 3) for B = 1) with every member; see :class:`EnsemblePrediction`."""
        if feats is None and len({m.config.bev_samples for m in self.members}) == 1:
            # the plan encoder's input has no parameters either: one compiled pass (on the CPU) for every member
            inputs = self.members[0].plan_inputs(enc.members[0], plans)
            preds = [m.score(e, None, inputs=inputs) for m, e in zip(self.members, enc.members)]
        else:
            if feats is None:
                feats = self.plan_features(enc, plans)
            preds = [m.score(e, None, feats=feats) for m, e in zip(self.members, enc.members)]
        rewards = torch.stack([p.reward for p in preds])  # (M, B, K)
        mean, std = rewards.mean(0), member_std(rewards)
        member_expected = {n: torch.stack([p.expected[n] for p in preds]) for n in SUB_SCORES}
        return EnsemblePrediction(rewards, mean, std, mean - self.beta * std,
                                  {n: v.mean(0) for n, v in member_expected.items()}, member_expected)

    def forward(self, obs: Mapping[str, np.ndarray | torch.Tensor],
                plans: np.ndarray | torch.Tensor) -> EnsemblePrediction:
        """``score(encode_scene(obs), plans)``."""
        return self.score(self.encode_scene(obs), plans)

    @torch.no_grad()
    def predict_reward(self, obs: Mapping[str, np.ndarray], plans: np.ndarray) -> np.ndarray:
        """Penalised rewards as numpy: one scene + (K, 8, 3) plans -> (K,); a batch + (B, K, 8, 3) -> (B, K)."""
        return self.predict_subscores(obs, plans)["reward"]

    def predict_subscores(self, obs: Mapping[str, np.ndarray], plans: np.ndarray) -> dict[str, np.ndarray]:
        """Mean expected sub-scores, ``reward`` (penalised), ``reward_mean`` and ``reward_std`` as numpy arrays
        (shapes as :meth:`predict_reward`)."""
        pred, single = run_inference(self, obs, plans)
        return numpy_outputs({**pred.expected, "reward": pred.reward, "reward_mean": pred.mean,
                              "reward_std": pred.std}, single)

    # ---- persistence -----------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, extra: Mapping[str, Any] | None = None, *,
                        model_card: bool = False, **hub_kwargs: Any) -> Path:
        """Write ``ensemble.json`` (+ the same as ``config.json``, with ``model_type``) and one checkpoint directory
        per member into ``save_directory``; returns it. ``model_card`` / ``hub_kwargs``: as
        :meth:`RewardWorldModel.save_pretrained <reward_models.model.RewardWorldModel.save_pretrained>`."""
        from irlvla_gym.utils import save_through_hub_mixin

        return save_through_hub_mixin(self, save_directory, ("_save_extra", dict(extra or {})), model_card, hub_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: members, ``ensemble.json`` and ``config.json``."""
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        names = [f"member-{i}" for i in range(len(self.members))]
        for name, member in zip(names, self.members):
            member.save_pretrained(d / name)
        meta = {"format": ENSEMBLE_FORMAT, "format_version": ENSEMBLE_FORMAT_VERSION, "beta": self.beta,
                "members": names, **getattr(self, "_save_extra", {})}
        write_json(d / ENSEMBLE_FILE, meta)
        write_json(d / CONFIG_FILE, {**meta, "model_type": ENSEMBLE_MODEL_TYPE})

    @classmethod
    def from_pretrained(cls, path: str | Path, beta: float | None = None, device: str | torch.device = "cpu",
                        **hub_kwargs: Any) -> "EnsembleRewardModel":
        """Load a directory written by :meth:`save_pretrained` (or a Hub repo id holding one); ``beta`` overrides
        the saved one. Directories written before ``config.json`` existed (``ensemble.json`` only) load as before."""
        d = Path(path)
        if d.is_dir():
            if not (d / CONFIG_FILE).is_file():
                return cls._from_pretrained(model_id=str(d), beta=beta, device=device)
            read_json(d / CONFIG_FILE)  # a damaged file raises CheckpointError naming it, before the mixin reads it
            return super().from_pretrained(str(d), beta=beta, device=device, **hub_kwargs)
        if not looks_like_hub_id(path):
            raise CheckpointError(f"{d / ENSEMBLE_FILE}: checkpoint file not found")
        return load_hub_repo(lambda: super(EnsembleRewardModel, cls).from_pretrained(
            str(path), beta=beta, device=device, **hub_kwargs), path, "not an ensemble directory")

    @classmethod
    def _from_pretrained(cls, *, model_id: str, beta: float | None = None, device: str | torch.device = "cpu",
                         **hub_kwargs: Any) -> "EnsembleRewardModel":
        """The mixin's hook: read ``ensemble.json`` and the members (from a Hub snapshot for a repo id)."""
        if Path(model_id).is_dir():
            d = Path(model_id)
        else:
            from huggingface_hub import snapshot_download

            kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_DOWNLOAD_ARGS}
            d = Path(snapshot_download(model_id, **kwargs))
        meta = read_json(d / ENSEMBLE_FILE)
        if meta.get("format") != ENSEMBLE_FORMAT or meta.get("format_version") != ENSEMBLE_FORMAT_VERSION:
            raise CheckpointError(f"{d / ENSEMBLE_FILE}: not an {ENSEMBLE_FORMAT} v{ENSEMBLE_FORMAT_VERSION} file")
        members = [RewardWorldModel.from_pretrained(d / name, device=device) for name in meta["members"]]
        ens = cls(members, meta["beta"] if beta is None else beta).to(device).eval()
        ens.checkpoint_info = meta
        return ens


# ---- as an env reward -------------------------------------------------------------------------------------------


class ModelRewardFn(SceneRewardFn):
    """:class:`~reward_models.reward_fn.SceneRewardFn` around a given model object (a single
    :class:`RewardWorldModel` or an :class:`EnsembleRewardModel`) instead of a cached checkpoint: the env's
    ``(scene, plan) -> float`` reward with the per-scene encoding cache. Call :meth:`clear_cache` after changing
    the model's weights (the cached encodings belong to the old weights).

    Args:
        model: anything with ``encode_scene(obs)`` and ``score(enc, plans).reward`` (B, K).
        cache_size: scene encodings kept (LRU).
    """

    def __init__(self, model: nn.Module, cache_size: int = 64):
        self._attach(model, cache_size)


def make_ensemble_reward(argument: str | None, *, beta: float | None = None, cache_size: int = 4096) -> ModelRewardFn:
    """The env reward ``"rwm-ensemble:<dir>"`` (a directory written by :meth:`EnsembleRewardModel.save_pretrained`).
    Registered as the ``rwm-ensemble`` entry point of ``irlvla_gym.rewards``, so ``reward="rwm-ensemble:<dir>"``
    works wherever a reward spec does."""
    if not argument:
        raise ValueError("reward 'rwm-ensemble' needs a directory: 'rwm-ensemble:<dir>'")
    return ModelRewardFn(EnsembleRewardModel.from_pretrained(argument, beta=beta), cache_size)


def ensemble_env_reward(spec: str, beta: float | None = None, cache_size: int = 4096) -> ModelRewardFn:
    """The env reward of a spec string ``"rwm-ensemble:<dir>"`` as a callable (``reward=`` also takes the string)."""
    from irlvla_gym.rewards import parse_reward

    parsed = parse_reward(spec)
    if parsed.name != "rwm-ensemble":
        raise ValueError(f"expected 'rwm-ensemble:<dir>', got {spec!r}")
    return make_ensemble_reward(parsed.argument, beta=beta, cache_size=cache_size)


# ---- building members --------------------------------------------------------------------------------------------


def reinit_heads(model: RewardWorldModel, seed: int) -> RewardWorldModel:
    """Re-initialise the plan MLP and the sub-score heads of ``model`` in place from ``seed`` (PyTorch's default
    initialisation); the scene encoder and plan-token layers keep their weights."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in [*model.plan_mlp, *model.heads.values()]:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return model


def bootstrap_indices(n: int, seed: int) -> np.ndarray:
    """(n,) scene indices drawn with replacement (sorted), from ``np.random.default_rng(seed)``."""
    return np.sort(np.random.default_rng(seed).integers(0, n, size=n))


def build_ensemble(data, members: int = 3, beta: float = 1.0, init: str | Path | None = "default",
                   epochs: int = 3, seed: int = 0, bootstrap: bool = True, lr: float = 1e-3,
                   batch_scenes: int = 16, progress: bool = False) -> tuple[EnsembleRewardModel, dict[str, Any]]:
    """Train M members on bootstrap resamples of ``data`` (module docs) and return the ensemble + a summary.

    Args:
        data: a :class:`reward_models.dataset.RWMData` (e.g. ``load_dataset(dir)``).
        members: M. beta: the uncertainty penalty weight.
        init: ``"default"`` (the shipped checkpoint), a checkpoint directory, or None (train from scratch).
        epochs: passes over each member's resample. seed: member ``i`` uses ``seed + i`` (heads, resample, order).
        bootstrap: resample scenes with replacement (else every member sees all scenes, only seeds differ).
        lr, batch_scenes: optimiser settings (:func:`reward_models.refit.fit`).
    Returns:
        (ensemble, {"seconds": ..., "members": [per-member fit summaries]}).
    """
    from reward_models.refit import fit
    from reward_models.reward_fn import DEFAULT_CHECKPOINT
    from reward_models.train import precompute_features

    t0 = time.perf_counter()
    init_path = DEFAULT_CHECKPOINT if init == "default" else init
    models, summaries = [], []
    feats = None
    for i in range(members):
        s = seed + i
        if init_path is not None:
            model = reinit_heads(RewardWorldModel.from_pretrained(init_path), s)
        else:
            torch.manual_seed(s)
            model = RewardWorldModel()
        if feats is None:  # parameter-free: identical for every member
            feats = precompute_features(model, data)
        idx = bootstrap_indices(len(data), s) if bootstrap else np.arange(len(data))
        steps = epochs * max(1, int(np.ceil(len(idx) / batch_scenes)))
        summary = fit(model, data.subset(idx), steps=steps, lr=lr, batch_scenes=batch_scenes, seed=s,
                      feats=feats[idx], progress=progress, desc=f"ensemble member {i + 1}/{members}")
        summaries.append(summary)
        models.append(model.eval())
    ens = EnsembleRewardModel(models, beta=beta).eval()
    return ens, {"seconds": time.perf_counter() - t0, "members": summaries, "bootstrap": bootstrap,
                 "init": None if init_path is None else str(init_path), "epochs": epochs, "seed": seed}


__all__ = ["EnsembleEncoding", "EnsemblePrediction", "EnsembleRewardModel", "ModelRewardFn", "bootstrap_indices",
           "build_ensemble", "ensemble_env_reward", "make_ensemble_reward", "member_std", "reinit_heads"]
