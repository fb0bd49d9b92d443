"""The reward world model (RWM): scene + candidate plans -> predicted EPDMS sub-scores -> an EPDMS-shaped reward.

Architecture (IRL-VLA stage 2, the paper's figure: plan tokens attend to BEV, map, object and semantic tokens)::

    scene (encoded ONCE per scene)                           plans (K per scene)
    bev (8,128,128) u8 -> CNN (/4, /2, /2) -> 64 BEV tokens   (K, 8, 3) poses -> per-pose geometric features
    agents (32,14) + mask -> MLP           -> 32 object tokens            (reward_models.features: 8 x 98 values
    map (64,20,11) + mask -> PointNet      -> 64 map tokens                 + their max / min over time)
                                                                            -> MLP -> h0 -> 1 plan token / plan
    ego (21,)                              -> 1 ego/command token           |
    instruction (32,) ids -> mean embedding-> 1 semantic token              |
              \\___________ scene tokens (B, S=162, d) _______ cross-attention (plan tokens attend) x n_layers
                                                                            |
                                                  [plan token, h0] -> MLP -> plan embedding (B, K, h)
                                                                            |
          heads: NC (3-way {0, .5, 1}), DDC (3-way), DAC, TLC, TTC, LK, HC, EC (binary logits), EP (sigmoid)
                                                                            |
    reward = E[NC] P[DAC] E[DDC] P[TLC] (5 EP + 5 P[TTC] + 2 P[LK] + 2 P[HC] [+ 2 P[EC]]) / (14 [+ 2])

The reward has the scorer's EPDMS shape. ``use_ec=False`` (default) drops EC and divides by 14, matching the
scorer without a previous plan (the plan-once env and the dataset); ``use_ec=True`` uses /16.

Speed: :meth:`RewardWorldModel.encode_scene` runs once per scene; :meth:`RewardWorldModel.score` scores any number
of plans against the cached :class:`SceneEncoding` (batch of K plans shares one scene encoding).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from huggingface_hub import PyTorchModelHubMixin

from irlvla_gym.policies.config import looks_like_hub_id
from reward_models import kernels
from reward_models.checkpoint import (
    CONFIG_FILE, MODEL_FILE, CheckpointError, download_checkpoint, load_hub_repo, read_checkpoint, read_json,
    resolve_checkpoint,
    save_model,
)
from irlvla_gym.metrics.config import SUB_SCORES
from reward_models.dataset import OBS_ENTRIES, OBS_KEYS, obs_entries
from reward_models.features import (
    AGENT_GEOMETRIES, BEV_SCENE_CHANNELS, NUM_POSE_FEATURES, PLAN_DT, POSE_FEATURES, BevGeometry, map_lookup, pose_features,
)
from reward_models.forecast import AGENT_FORECASTS, forecast_agents

THREE_WAY = ("nc", "ddc")
BINARY = ("dac", "tlc", "ttc", "lk", "hc", "ec")
THREE_WAY_VALUES = (0.0, 0.5, 1.0)
BEV_SAMPLE_MODES = ("full", "extrema")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
# columns of the fused head output: the two 3-way heads first (one softmax), then the binary ones, the two
# multiplicative ones (DAC, TLC) adjacent: name -> (first column, width)
_FUSED_ORDER = ("nc", "ddc", "dac", "tlc", "ep", "ttc", "lk", "hc", "ec")
_HEAD_COLUMNS = {n: (sum(3 if m in THREE_WAY else 1 for m in _FUSED_ORDER[:i]), 3 if n in THREE_WAY else 1)
                 for i, n in enumerate(_FUSED_ORDER)}
_THREE_WAY_VALUES = torch.tensor(THREE_WAY_VALUES)
# the weighted sum of EPDMS as a dot product with the 13 sigmoids: 5 EP + 5 TTC + 2 LK + 2 HC (+ 2 EC), / 14 (16)
_WEIGHTS, _EC_WEIGHTS = torch.zeros(13), torch.zeros(13)
for _n, _w in (("ep", 5), ("ttc", 5), ("lk", 2), ("hc", 2), ("ec", 2)):
    _EC_WEIGHTS[_HEAD_COLUMNS[_n][0]] = _w / 16
    _WEIGHTS[_HEAD_COLUMNS[_n][0]] = _w / 14 if _n != "ec" else 0.0
_BEV_FIRST = POSE_FEATURES.index("bev_pose_centre_0")  # the 70 BEV sample columns start here
_BEV_FULL = 2 * 5 * BEV_SCENE_CHANNELS
# input scaling of the scene token MLPs: agents x, y / 32 m, velocity / 10 m/s, size / 5 m; map x, y / 32 m;
# ego velocity / 10, acceleration / 3, history poses / 20, speed / 10
_AGENT_SCALE = torch.tensor([1 / 32.0] * 2 + [1.0] * 2 + [1 / 10.0] * 2 + [1 / 5.0] * 2 + [1.0] * 6)
_MAP_SCALE = torch.tensor([1 / 32.0] * 2 + [1.0] * 9)
_EGO_SCALE = torch.tensor([1 / 10.0] * 2 + [1 / 3.0] * 2 + [1.0] * 4 + [1 / 20.0] * 12 + [1 / 10.0])
_BEV_EXTREMA = 2 * 2 * BEV_SCENE_CHANNELS


LEGACY_DEFAULTS = {"heads": 4, "hidden": 128, "bev_samples": "full", "bev_tokens": 64, "agent_forecast": "cv",
                   "map_layout": "interleaved", "activation": "gelu"}
"""Values of fields that a ``config.json`` of the first checkpoints (``checkpoints/v1``, ``checkpoints/policy_aware``)
does not list or listed under other defaults: :meth:`ModelConfig.from_dict` fills them in, so those checkpoints
load as they were trained."""


@dataclass
class ModelConfig:
    """Hyperparameters of :class:`RewardWorldModel` (stored in ``config.json``).

    Attributes:
        The defaults are the shipped model's (``checkpoints/default``); :data:`LEGACY_DEFAULTS` those of the first
        checkpoints.

        d_model: token width. heads: attention heads. layers: cross-attention blocks.
        hidden: plan-embedding width (after flattening the 8 pose tokens).
        instruction_vocab: embedding rows for instruction token ids (ids >= this are clipped).
        use_ec: include EC in the reward (/16) instead of dropping it (/14).
        bev_range_*: BEV metric extent (must match the ``ObsConfig`` used to build observations).
        bev_samples: ``"full"``: the plan encoder sees all 70 BEV samples per pose (7 channels x 5 box points x
            {pose, midpoint}); ``"extrema"``: per channel only their max and min over the 5 box points, at the pose
            and at the midpoint (28 values), which makes the first plan layer 2x smaller.
        bev_tokens: BEV scene tokens, 64 (8 x 8 grid; the first convolution takes 4 x 4 patches) or 16 (4 x 4 grid
            from the raster averaged over 4 x 4 cells: 10x cheaper convolutions and a shorter attention).
        agent_forecast: how the plan features place the agents at the pose times: ``"cv"`` constant velocity,
            ``"lane"`` lane following on the map entry (:mod:`reward_models.forecast`, once per scene), ``"logged"``
            the observation's ``agents_future`` entry (the log; needs ``obs_config`` with ``agents_future:
            logged``).
        map_layout: ``"cells"``: the map lookup table of every raster cell lists that cell's nearest segments;
            ``"interleaved"``: the layout the first checkpoints were trained with (a bug: their lane / route /
            red-light features were read from the wrong cells; see :func:`reward_models.features.map_lookup`). A
            ``config.json`` without this field is such a checkpoint.
        activation: of every hidden layer, ``"gelu"`` or ``"relu"`` (cheaper on a CPU).
        obs_config: the observation settings (:class:`irlvla_gym.obs.config.ObsConfig` fields, e.g.
            ``{"max_agents": 64}``) the model's training inputs were built with; None = the ObsConfig defaults. The
            scene reward (:class:`reward_models.reward_fn.SceneRewardFn`) builds observations with them. The network
            takes any number of agent / polyline slots, so other settings still run, with less information.
        agent_geometry: distance to the agents in the plan features, ``"circle"`` (bounding circles, the first
            checkpoints) or ``"box"`` (oriented-box separation; :func:`reward_models.features.pose_features`).
    """

    d_model: int = 32
    heads: int = 2
    layers: int = 1
    hidden: int = 64
    instruction_vocab: int = 64
    use_ec: bool = False
    bev_range_ahead: float = 48.0
    bev_range_behind: float = 16.0
    bev_range_side: float = 32.0
    bev_samples: str = "extrema"
    bev_tokens: int = 16
    agent_forecast: str = "lane"
    map_layout: str = "cells"
    activation: str = "gelu"
    obs_config: dict | None = None
    agent_geometry: str = "circle"

    def __post_init__(self):
        if self.obs_config is not None and not isinstance(self.obs_config, dict):
            raise ValueError(f"ModelConfig.obs_config must be a dict of ObsConfig fields or None, got "
                             f"{type(self.obs_config).__name__}")
        if self.bev_samples not in BEV_SAMPLE_MODES:
            raise ValueError(f"ModelConfig.bev_samples must be one of {BEV_SAMPLE_MODES}, got {self.bev_samples!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ModelConfig.activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")
        if self.map_layout not in ("cells", "interleaved"):
            raise ValueError(f"ModelConfig.map_layout must be 'cells' or 'interleaved', got {self.map_layout!r}")
        if self.agent_geometry not in AGENT_GEOMETRIES:
            raise ValueError(f"ModelConfig.agent_geometry must be one of {AGENT_GEOMETRIES}, got "
                             f"{self.agent_geometry!r}")
        if self.agent_forecast not in AGENT_FORECASTS:
            raise ValueError(f"ModelConfig.agent_forecast must be one of {AGENT_FORECASTS}, got "
                             f"{self.agent_forecast!r}")
        if self.bev_tokens not in (16, 64):
            raise ValueError(f"ModelConfig.bev_tokens must be 16 or 64, got {self.bev_tokens!r}")
        if self.d_model % self.heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads})")

    @property
    def plan_feature_dim(self) -> int:
        """Per-pose feature count the plan encoder sees (after :func:`compact_bev_samples` when ``"extrema"``)."""
        return NUM_POSE_FEATURES if self.bev_samples == "full" else NUM_POSE_FEATURES - _BEV_FULL + _BEV_EXTREMA

    @property
    def bev(self) -> BevGeometry:
        return BevGeometry(self.bev_range_ahead, self.bev_range_behind, self.bev_range_side)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in names}
        for name, legacy in LEGACY_DEFAULTS.items():  # a config.json written before the field existed
            values.setdefault(name, legacy)
        return cls(**values)


@dataclass
class SceneEncoding:
    """The model's view of B scenes, computed once and reused for any number of plans.

    Attributes:
        tokens: (B, S, d) scene tokens. mask: (B, S) bool, True = padding (ignored by attention).
        obs: the prepared observation tensors (:func:`prepare_obs`) the plan features need.
        kv: per cross-attention block, the scene tokens' keys and values (B, heads, S, d / heads) each, projected
            once per scene so that scoring plans only projects the plan queries (None: projected in ``score``).

    :meth:`select`, :meth:`concat` (padding tokens with masked slots), :meth:`pad_to` and :meth:`with_obs` assemble
    one encoding from encodings of different batches (the env's batched reward, ``SceneRewardFn.score_batch``).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    obs: dict[str, torch.Tensor]
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows, obs: dict | None = None) -> "SceneEncoding":
        """The encoding of scenes ``rows`` (int index array or tensor, or a bool mask; repeats allowed): copies.

        ``obs``: use these (already selected) observation tensors instead of selecting this encoding's own (an
        ensemble's members share member 0's)."""
        idx = _row_index(rows, self.tokens.device)
        kv = None if self.kv is None else [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in self.kv]
        if obs is None:
            obs = {k: _map_tensors(v, lambda t: t.index_select(0, idx)) for k, v in self.obs.items()}
        return SceneEncoding(self.tokens.index_select(0, idx), self.mask.index_select(0, idx), obs, kv)

    def with_obs(self, **entries: torch.Tensor) -> "SceneEncoding":
        """The same encoding with observation entries replaced (e.g. ``bev=`` the raw uint8 raster (B, 8, H, W)
        instead of the float copy of its scene channels that :meth:`RewardWorldModel.encode_scene` makes for small
        batches: the plan features sample either, with the same values up to float32 rounding)."""
        return dataclasses.replace(self, obs={**self.obs, **entries})

    def pad_to(self, other: "SceneEncoding", obs: dict | None = None) -> "SceneEncoding":
        """This encoding with every tensor padded at the end of its non-batch axes to at least the sizes of
        ``other``'s (padding as in :meth:`concat`; tensors already as large are kept, not copied), so that the
        two concatenate without padding. ``obs``: use these (already padded) observation tensors instead."""
        if obs is None:
            obs = {}
            for k, v in self.obs.items():
                ref = other.obs.get(k)
                if ref is None or (isinstance(v, torch.Tensor) and v.dtype != ref.dtype):
                    obs[k] = v  # a float raster beside raw bytes: concat converts it
                elif isinstance(v, torch.Tensor):
                    obs[k] = _pad_to(v, ref.shape[1:])
                else:
                    obs[k] = dataclasses.replace(v, **{f.name: _pad_to(getattr(v, f.name),
                                                                       getattr(ref, f.name).shape[1:])
                                                       for f in dataclasses.fields(v)})
        kv = self.kv
        if kv is not None and other.kv is not None:
            kv = [(_pad_to(k, ko.shape[1:]), _pad_to(v, vo.shape[1:])) for (k, v), (ko, vo) in zip(kv, other.kv)]
        return SceneEncoding(_pad_to(self.tokens, other.tokens.shape[1:]),
                             _pad_to(self.mask, other.mask.shape[1:], True), obs, kv)

    @classmethod
    def concat(cls, encodings: Sequence["SceneEncoding"], obs: dict | None = None) -> "SceneEncoding":
        """One encoding of the scenes of ``encodings`` in order (B = the sum of theirs; an encoding may repeat).

        Encodings of different batches have different token counts (agent / map slots are trimmed to their batch's
        largest count): every tensor is padded at the end of its non-batch axes to the largest size, with
        ``mask = True`` (ignored by the attention) on padded tokens, ``agents_mask`` / ``map_mask`` False and zeros
        elsewhere (padded agents, polylines and map-lookup segments are never read: the plan features skip masked
        agents and only follow segment indices of the scene's own lookup table), so each scene scores as alone.
        A uint8 ``bev`` is converted to the float scene channels (:func:`reward_models.kernels.scene_channels`)
        when other encodings carry float ones. ``kv`` is None when any encoding's is (``score`` projects then).

        Args:
            encodings: one or more encodings with the same observation entries (ValueError otherwise).
            obs: use these observation tensors (already concatenated) instead of concatenating the encodings' own.
        """
        encodings = list(encodings)
        if len(encodings) == 1:
            return encodings[0] if obs is None else dataclasses.replace(encodings[0], obs=obs)
        if obs is None:
            obs = _concat_obs([e.obs for e in encodings])
        tokens = _pad_cat([e.tokens for e in encodings])
        mask = _pad_cat([e.mask for e in encodings], True)
        kv = None
        if all(e.kv is not None for e in encodings):
            kv = [(_pad_cat([e.kv[b][0] for e in encodings]), _pad_cat([e.kv[b][1] for e in encodings]))
                  for b in range(len(encodings[0].kv))]
        return cls(tokens, mask, obs, kv)


def _row_index(rows, device: torch.device) -> torch.Tensor:
    """(R,) int64 row indices of an int index array / tensor or a bool mask."""
    idx = torch.as_tensor(np.asarray(rows) if not isinstance(rows, torch.Tensor) else rows, device=device)
    if idx.dtype == torch.bool:
        return idx.nonzero().flatten()
    return idx.reshape(-1).long()


def _map_tensors(value, fn):
    """``fn`` applied to a tensor, or to every field of a dataclass of tensors (``MapLookup``)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    return dataclasses.replace(value, **{f.name: fn(getattr(value, f.name)) for f in dataclasses.fields(value)})


def _pad_to(t: torch.Tensor, size: Sequence[int], value: float | bool = 0) -> torch.Tensor:
    """``t`` padded at the end of its non-batch axes to at least ``size`` with ``value`` (``t`` itself if it is)."""
    target = tuple(max(a, b) for a, b in zip(t.shape[1:], size))
    if target == tuple(t.shape[1:]):
        return t
    out = torch.full((t.shape[0], *target), value, dtype=t.dtype, device=t.device)
    out[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
    return out


def _pad_cat(tensors: Sequence[torch.Tensor], value: float | bool = 0) -> torch.Tensor:
    """Concatenate along axis 0, padding every other axis at its end to the largest size with ``value``.

    One copy per group of equal shapes (encodings of one batch share theirs), not per tensor."""
    shapes = [t.shape for t in tensors]
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape[1:], []).append(i)
    if len(groups) == 1:
        return torch.cat(list(tensors))
    size = tuple(max(dim) for dim in zip(*groups))
    rows = np.cumsum([0] + [shape[0] for shape in shapes])
    first = tensors[0]
    out = torch.full((int(rows[-1]), *size), value, dtype=first.dtype, device=first.device)
    for shape, members in groups.items():
        idx = torch.from_numpy(np.concatenate([np.arange(rows[i], rows[i + 1]) for i in members]))
        out[(idx, *(slice(0, n) for n in shape))] = torch.cat([tensors[i] for i in members])
    return out


def _concat_obs(entries: Sequence[dict]) -> dict:
    """The observation dicts of several encodings concatenated (:meth:`SceneEncoding.concat`)."""
    keys = set(entries[0])
    if any(set(o) != keys for o in entries):
        raise ValueError(f"SceneEncoding.concat: encodings with different observation entries "
                         f"{sorted({tuple(sorted(o)) for o in entries})}")
    bevs = [o["bev"] for o in entries] if "bev" in keys else []
    if len({b.dtype for b in bevs}) > 1:  # raw bytes beside float scene channels: one representation, the float
        entries = [dict(o, bev=kernels.scene_channels(o["bev"])) if o["bev"].dtype == torch.uint8 else o
                   for o in entries]
    out = {}
    for k in entries[0]:
        first = entries[0][k]
        if isinstance(first, torch.Tensor):
            out[k] = _pad_cat([o[k] for o in entries])
        else:  # a dataclass of tensors (the map lookup)
            out[k] = dataclasses.replace(first, **{f.name: _pad_cat([getattr(o[k], f.name) for o in entries])
                                                   for f in dataclasses.fields(first)})
    return out


@dataclass
class Prediction:
    """Model outputs for (B, K) plans.

    Attributes:
        logits: name -> (B, K, 3) for nc / ddc, (B, K) logits for the binary sub-scores, (B, K) EP logit.
        expected: name -> (B, K) expected sub-score in [0, 1] (E over {0, .5, 1}, probability, or EP).
        reward: (B, K) the composed EPDMS-shaped reward in [0, 1].
    """

    logits: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor]
    reward: torch.Tensor = field(default=None)


def prepare_obs(obs: Mapping[str, np.ndarray | torch.Tensor], device: torch.device | str = "cpu",
                batched: bool | None = None, bev_uint8: bool = False) -> dict[str, torch.Tensor]:
    """Observation arrays -> model tensors: ``bev`` float in [0, 1], masks bool, the rest float32 / int64.

    Accepts one observation (``ego`` of shape (21,)) or a batch ((B, 21)); always returns batched tensors.
    ``bev_uint8``: keep a uint8 ``bev`` as it is (0..255; the model's CPU path pools and samples it without a float
    copy of the raster). Raises KeyError naming any missing entry.
    """
    missing = [k for k in OBS_ENTRIES if k not in obs]
    if missing:
        raise KeyError(f"the reward world model needs observation entries {list(OBS_ENTRIES)} (obs keys "
                       f"{list(OBS_KEYS)}); missing {missing}")
    ego = torch.as_tensor(np.asarray(obs["ego"]) if not isinstance(obs["ego"], torch.Tensor) else obs["ego"])
    single = ego.ndim == 1 if batched is None else not batched
    out = {}
    for k in obs_entries(obs):
        v = obs[k]
        v = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        if single:
            v = v.unsqueeze(0)
        if k == "bev":
            if bev_uint8 and v.dtype == torch.uint8:
                v = v.to(device=device)
            else:
                v = v.to(device=device, dtype=torch.float32) / 255.0
        elif k.endswith("_mask"):
            v = v.to(device=device) > 0
        elif k == "instruction":
            v = v.to(device=device, dtype=torch.long)
        else:
            v = v.to(device=device, dtype=torch.float32)
        out[k] = v
    return out


def _mlp(i: int, h: int, o: int, act: str = "gelu") -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), ACTIVATIONS[act](), nn.Linear(h, o))


class CrossBlock(nn.Module):
    """Pre-norm block: plan tokens attend to scene tokens, then a feed-forward layer (both residual)."""

    def __init__(self, d: int, heads: int, act: str = "gelu"):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = _mlp(d, 2 * d, d, act)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene tokens (B, S, d) -> keys, values (B, heads, S, d / heads) (the attention's own projections)."""
        B, S, d = kv.shape
        h = self.attn.num_heads
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        kvp = F.linear(self.norm_kv(kv), w[d:], b[d:]).view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)
        return kvp[0], kvp[1]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_mask: torch.Tensor | None) -> torch.Tensor:
        """q (B, Q, d) against projected keys / values (:meth:`project_kv`); kv_mask (B, S) True = ignore or None.

        The same function as ``nn.MultiheadAttention`` (same weights), with the scene side projected once."""
        B, Q, d = q.shape
        h = self.attn.num_heads
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        qp = F.linear(self.norm_q(q), w[:d], b[:d]).view(B, Q, h, d // h).transpose(1, 2)
        bias = None
        if kv_mask is not None and bool(kv_mask.any()):
            bias = torch.zeros(kv_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(kv_mask, float("-inf"))
            bias = bias[:, None, None, :]
        o = F.scaled_dot_product_attention(qp, k, v, attn_mask=bias).transpose(1, 2).reshape(B, Q, d)
        q = q + self.attn.out_proj(o)
        return q + self.ff(self.norm_ff(q))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """q (B, Q, d), kv (B, S, d), kv_mask (B, S) True = ignore -> (B, Q, d)."""
        return self.attend(q, *self.project_kv(kv), kv_mask)


class RewardWorldModel(nn.Module, PyTorchModelHubMixin, library_name="irlvla-gym",
                       tags=["reward-model", "world-model", "autonomous-driving"]):
    """Predicts EPDMS sub-scores of candidate plans in a scene and composes them into a reward (module docs).

    Typical use::

        model = RewardWorldModel.from_pretrained("reward_models/checkpoints/default")   # or load_default()
        enc = model.encode_scene(obs)                 # obs: dict of obs-builder entries, one scene or a batch
        pred = model.score(enc, plans)                # plans (K, 8, 3) or (B, K, 8, 3) -> pred.reward (B, K)
        rewards = model.predict_reward(obs, plans)    # numpy convenience wrapper, (K,) for one scene
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = cfg = config or ModelConfig()
        d = cfg.d_model
        act = ACTIVATIONS[cfg.activation]
        if cfg.bev_tokens == 64:  # /4 patches, /2, /2: an 8 x 8 token grid
            layers = [nn.Conv2d(8, 32, 4, stride=4), act(), nn.Conv2d(32, 48, 3, stride=2, padding=1)]
        else:  # 4 x 4 averages first (the plan features sample the full-resolution raster), then /2 x 3: 4 x 4 tokens
            layers = [nn.AvgPool2d(4), nn.Conv2d(8, 32, 3, stride=2, padding=1), act(),
                      nn.Conv2d(32, 48, 3, stride=2, padding=1)]
        self.bev_cnn = nn.Sequential(*layers, act(), nn.Conv2d(48, d, 3, stride=2, padding=1))
        self.bev_pos = nn.Parameter(torch.zeros(1, cfg.bev_tokens, d))
        self.agent_mlp = _mlp(14, d, d, cfg.activation)
        self.map_point = _mlp(11, d, d, cfg.activation)
        self.map_out = nn.Linear(d, d)
        self.ego_mlp = _mlp(21, d, d, cfg.activation)
        self.instr = nn.Embedding(cfg.instruction_vocab, d, padding_idx=0)
        self.type_emb = nn.Parameter(torch.zeros(5, d))  # bev, agent, map, ego, instruction
        nf = cfg.plan_feature_dim
        self.plan_in = nn.Sequential(nn.Linear(8 * nf + 2 * nf, cfg.hidden), act(), nn.Linear(cfg.hidden, d))
        self.blocks = nn.ModuleList([CrossBlock(d, cfg.heads, cfg.activation) for _ in range(cfg.layers)])
        self.plan_norm = nn.LayerNorm(d)
        self.plan_mlp = nn.Sequential(nn.Linear(d + cfg.hidden, cfg.hidden), act(),
                                      nn.Linear(cfg.hidden, cfg.hidden), act())
        self.heads = nn.ModuleDict({n: nn.Linear(cfg.hidden, _HEAD_COLUMNS[n][1]) for n in SUB_SCORES})
        nn.init.normal_(self.bev_pos, std=0.02)
        nn.init.normal_(self.type_emb, std=0.02)

    # ---- scene -----------------------------------------------------------------------------------------------

    def encode_scene(self, obs: Mapping[str, np.ndarray | torch.Tensor], lookup: bool = True) -> SceneEncoding:
        """Scene tokens for one observation or a batch (entries :data:`OBS_ENTRIES`; see :func:`prepare_obs`).

        ``lookup=False`` skips the map lookup table the plan features need (when features are precomputed)."""
        dev = next(self.parameters()).device
        o = obs if is_prepared(obs) else prepare_obs(obs, dev, bev_uint8=dev.type == "cpu")
        B = o["ego"].shape[0]
        # real agents / polylines come first (nearest first): drop all-padding slots (attention result unchanged)
        n_ag = max(int(o["agents_mask"].sum(1).max()), 1)
        n_mp = max(int(o["map_mask"].sum(1).max()), 1)
        o = dict(o, agents=o["agents"][:, :n_ag], agents_mask=o["agents_mask"][:, :n_ag], map=o["map"][:, :n_mp],
                 map_mask=o["map_mask"][:, :n_mp])
        future = o.pop("agents_future", None)  # the plan features read it: only a "logged" model may keep it
        if self.config.agent_forecast == "logged":
            if future is None:
                raise KeyError("this reward model (agent_forecast 'logged') needs the observation entry "
                               "'agents_future': build observations with its obs_config (agents_future: logged)")
            o["agents_future"] = future[:, :n_ag]
        te = self.type_emb
        bev = self._bev_tokens(o["bev"]) + self.bev_pos + te[0]  # (B, bev_tokens, d)
        ag = o["agents"]
        ag_in = ag * _AGENT_SCALE.to(ag)
        agents = self.agent_mlp(ag_in) + te[1]
        mp = o["map"]
        mp_in = mp * _MAP_SCALE.to(mp)
        maps = self.map_out(self.map_point(mp_in).max(dim=2).values) + te[2]
        eg = o["ego"]
        eg_in = eg * _EGO_SCALE.to(eg)
        ego = (self.ego_mlp(eg_in) + te[3]).unsqueeze(1)
        ids = o["instruction"].clamp(0, self.config.instruction_vocab - 1)
        emb = self.instr(ids)
        n = (ids > 0).sum(1, keepdim=True).clamp_min(1)
        instr = (emb.sum(1) / n + te[4]).unsqueeze(1)
        tokens = torch.cat([bev, agents, maps, ego, instr], dim=1)
        keep = torch.cat([torch.ones(B, bev.shape[1], dtype=torch.bool, device=dev), o["agents_mask"],
                          o["map_mask"], torch.ones(B, 2, dtype=torch.bool, device=dev)], dim=1)
        if lookup:
            legacy = self.config.map_layout == "interleaved"
            if dev.type == "cpu":
                o = dict(o, map_lookup=kernels.map_lookup_fast(o["map"], o["map_mask"], legacy_layout=legacy))
            else:
                o = dict(o, map_lookup=map_lookup(o["map"], o["map_mask"], legacy_layout=legacy))
            if self.config.agent_forecast in ("lane",):
                times = np.arange(1, 9, dtype=np.float32) * PLAN_DT
                future = forecast_agents(o["agents"], o["agents_mask"], o["map"], o["map_mask"], times,
                                         self.config.agent_forecast)
                o["agents_future"] = torch.from_numpy(future).to(dev)
            if o["bev"].dtype == torch.uint8 and B <= 16:
                # the plan features sample the raster ~20 times per plan: one float copy of the 7 scene channels per
                # scene (large batches, e.g. a vector env's one plan per scene, keep the bytes: no 0.5 MB copy each)
                o["bev"] = kernels.scene_channels(o["bev"])
        return SceneEncoding(tokens, ~keep, o, [block.project_kv(tokens) for block in self.blocks])

    def _bev_tokens(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, 8, H, W) float in [0, 1] or uint8 -> (B, bev_tokens, d) (before the position embedding)."""
        if bev.dtype == torch.uint8:
            if self.config.bev_tokens == 16:  # the 4 x 4 average straight from the bytes (no float raster copy)
                return self.bev_cnn[1:](kernels.pool_bev(bev)).flatten(2).transpose(1, 2)
            bev = bev.float() / 255.0
        return self.bev_cnn(bev).flatten(2).transpose(1, 2)

    # ---- plans -----------------------------------------------------------------------------------------------

    def plan_features(self, enc: SceneEncoding, plans: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, K, 8, F) parameter-free plan-in-scene features (:func:`reward_models.features.pose_features`; on
        the CPU the compiled :func:`reward_models.kernels.pose_features_fast`, the same values)."""
        p = self._plans(enc, plans)
        geometry = self.config.agent_geometry
        if p.device.type == "cpu":
            return kernels.pose_features_fast(p, enc.obs, self.config.bev, agent_geometry=geometry)
        return pose_features(p, enc.obs, self.config.bev, geometry)

    def plan_inputs(self, enc: SceneEncoding, plans: np.ndarray | torch.Tensor | None,
                    feats: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, 10 F') input of the plan encoder: the per-pose features (after :func:`compact_bev_samples` with
        ``bev_samples="extrema"``) flattened over the 8 poses, then their max and min over the poses. From
        precomputed :meth:`plan_features` ``feats``, else from the plans (on the CPU in one compiled pass)."""
        if feats is None:
            p = self._plans(enc, plans)
            if p.device.type == "cpu":
                return kernels.plan_inputs_fast(p, enc.obs, self.config.bev,
                                                compact=self.config.bev_samples == "extrema",
                                                agent_geometry=self.config.agent_geometry)
            feats = pose_features(p, enc.obs, self.config.bev, self.config.agent_geometry)
        if self.config.bev_samples == "extrema":
            feats = compact_bev_samples(feats)
        return torch.cat([feats.flatten(2), feats.amax(dim=2), feats.amin(dim=2)], dim=-1)

    @staticmethod
    def _plans(enc: SceneEncoding, plans: np.ndarray | torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(plans, dtype=torch.float32, device=enc.tokens.device)
        return p.unsqueeze(0) if p.ndim == 3 else p

    def score(self, enc: SceneEncoding, plans: np.ndarray | torch.Tensor | None,
              feats: torch.Tensor | None = None, inputs: torch.Tensor | None = None) -> Prediction:
        """Predict sub-scores and reward of plans against encoded scenes.

        Args:
            enc: :meth:`encode_scene` output for B scenes.
            plans: (B, K, 8, 3) plans per scene, or (K, 8, 3) when B = 1 (poses x, y, yaw in the t0 ego frame,
                rear axle, m / rad).
            feats: precomputed :meth:`plan_features` (then ``plans`` is not used); training caches them.
            inputs: precomputed :meth:`plan_inputs` (then ``plans`` and ``feats`` are not used).
        Returns:
            :class:`Prediction` with (B, K) tensors.
        """
        x = self.plan_inputs(enc, plans, feats) if inputs is None else inputs  # (B, K, 10 F')
        h0 = self.plan_in[1](self.plan_in[0](x))  # (B, K, hidden)
        q = self.plan_in[2](h0)  # (B, K, d): one plan token per plan
        kv = enc.kv if enc.kv is not None else [block.project_kv(enc.tokens) for block in self.blocks]
        for block, (k, v) in zip(self.blocks, kv):
            q = block.attend(q, k, v, enc.mask)
        h = self.plan_mlp(torch.cat([self.plan_norm(q), h0], dim=-1))
        # all heads as one matrix product (the per-head Linear layers stay the parameters)
        heads = [self.heads[n] for n in _FUSED_ORDER]
        out = F.linear(h, torch.cat([hd.weight for hd in heads]), torch.cat([hd.bias for hd in heads]))  # (B, K, 13)
        return self.compose(out)

    def compose(self, out: torch.Tensor) -> Prediction:
        """Expected sub-scores and the EPDMS-shaped reward from the fused head output (..., 13) (columns
        :data:`_HEAD_COLUMNS`): E[NC] P[DAC] E[DDC] P[TLC] (5 EP + 5 P[TTC] + 2 P[LK] + 2 P[HC] [+ 2 P[EC]]) / 14 [16]."""
        cols, sig = out.unbind(-1), torch.sigmoid(out)
        three = out[..., :6].unflatten(-1, (2, 3)).softmax(-1) @ _THREE_WAY_VALUES.to(out)  # (..., 2): E[NC], E[DDC]
        probs, means = sig.unbind(-1), three.unbind(-1)
        logits = {n: cols[i] if width == 1 else out[..., i:i + width] for n, (i, width) in _HEAD_COLUMNS.items()}
        expected = {n: means[THREE_WAY.index(n)] if n in THREE_WAY else probs[i] for n, (i, _) in _HEAD_COLUMNS.items()}
        weighted = sig @ (_EC_WEIGHTS if self.config.use_ec else _WEIGHTS).to(out)
        reward = three.prod(-1) * sig[..., 6:8].prod(-1) * weighted  # E[NC] E[DDC] P[DAC] P[TLC] (weighted sum)
        return Prediction(logits, expected, reward)

    def forward(self, obs: Mapping[str, np.ndarray | torch.Tensor], plans: np.ndarray | torch.Tensor) -> Prediction:
        """``score(encode_scene(obs), plans)``."""
        return self.score(self.encode_scene(obs), plans)

    def predict_reward(self, obs: Mapping[str, np.ndarray], plans: np.ndarray) -> np.ndarray:
        """Rewards as numpy: one scene + (K, 8, 3) plans -> (K,); a batch + (B, K, 8, 3) -> (B, K)."""
        return self.predict_subscores(obs, plans)["reward"]

    def predict_subscores(self, obs: Mapping[str, np.ndarray], plans: np.ndarray) -> dict[str, np.ndarray]:
        """Expected sub-scores and ``reward`` as numpy arrays (same shapes as :meth:`predict_reward`)."""
        pred, single = run_inference(self, obs, plans)
        return numpy_outputs({**pred.expected, "reward": pred.reward}, single)

    # ---- persistence -----------------------------------------------------------------------------------------
    # huggingface_hub's PyTorchModelHubMixin: the layout (config.json + model.safetensors) and the checks of
    # reward_models.checkpoint stay; the mixin adds Hub repo ids, push_to_hub and model cards.

    def save_pretrained(self, save_directory, extra: Mapping | None = None, *, model_card: bool = False,
                        **hub_kwargs) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into directory ``save_directory`` (atomically); returns it.

        ``extra``: more ``config.json`` entries (training summary). ``model_card=True`` or any huggingface_hub
        argument (``push_to_hub=True, repo_id=...``) goes through ``PyTorchModelHubMixin.save_pretrained``, which
        also writes a ``README.md`` model card; a plain save writes exactly the two files."""
        from irlvla_gym.utils import save_through_hub_mixin

        return save_through_hub_mixin(self, save_directory, ("_save_extra", dict(extra or {})), model_card, hub_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's per-framework hook (:func:`reward_models.checkpoint.save_model`)."""
        save_model(self, save_directory, extra=getattr(self, "_save_extra", None))

    @classmethod
    def from_pretrained(cls, path=None, device: str | torch.device = "cpu", **hub_kwargs) -> "RewardWorldModel":
        """Load a checkpoint directory (``model.safetensors`` + ``config.json``), a shipped checkpoint by name
        (``"default"``, ``"policy_aware"``; None = ``"default"``) or a Hugging Face Hub repo id (``"user/repo"``;
        ``hub_kwargs``: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``); clear
        :class:`CheckpointError` if missing or corrupt. Returned in eval mode on ``device``."""
        try:
            local = resolve_checkpoint(path)
        except CheckpointError:
            if not looks_like_hub_id(path):
                raise
        else:
            read_json(local / CONFIG_FILE)  # a damaged file raises CheckpointError naming it, before the mixin reads it
            return super().from_pretrained(str(local), device=device, **hub_kwargs)
        return load_hub_repo(lambda: super(RewardWorldModel, cls).from_pretrained(str(path), device=device, **hub_kwargs),
                             path, "not a checkpoint directory nor a shipped name")

    @classmethod
    def _from_pretrained(cls, *, model_id: str, device: str | torch.device = "cpu", **hub_kwargs) -> "RewardWorldModel":
        """The mixin's hook: :func:`reward_models.checkpoint.read_checkpoint` (format, checksum, finite weights) of
        the directory, or of the Hub snapshot holding both files; the model is built from its ``model`` settings."""
        d, cfg, state = read_checkpoint(model_id if Path(model_id).is_dir() else download_checkpoint(model_id,
                                                                                                     **hub_kwargs))
        model = cls(ModelConfig.from_dict(cfg.get("model", {})))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{d / MODEL_FILE}: weights do not match the config ({exc})") from None
        model.checkpoint_info = cfg
        return model.to(device).eval()


def run_inference(module: nn.Module, obs: Mapping[str, np.ndarray], plans: np.ndarray):
    """``module(obs, plans)`` in eval and inference mode (the training mode is restored); returns the prediction and
    whether ``obs`` was one scene (``ego`` of shape (21,)) rather than a batch."""
    was = module.training
    if was:
        module.eval()
    try:
        with torch.inference_mode():
            return module(obs, plans), np.asarray(obs["ego"]).ndim == 1
    finally:
        if was:
            module.train()


def numpy_outputs(tensors: Mapping[str, torch.Tensor], single: bool) -> dict[str, np.ndarray]:
    """Name -> numpy array, without the batch axis when ``single``."""
    out = {k: v.cpu().numpy() for k, v in tensors.items()}
    return {k: v[0] for k, v in out.items()} if single else out


def compact_bev_samples(feats: torch.Tensor) -> torch.Tensor:
    """(..., NUM_POSE_FEATURES) -> (..., plan_feature_dim of ``bev_samples="extrema"``): the 70 BEV sample columns
    (ordered {pose, mid} x 5 box points x 7 channels) replaced by their max and min over the 5 box points per
    channel, at the pose and at the midpoint ([max pose, max mid, min pose, min mid] x 7 channels)."""
    bev = feats[..., _BEV_FIRST:_BEV_FIRST + _BEV_FULL].unflatten(-1, (2, 5, BEV_SCENE_CHANNELS))
    return torch.cat([feats[..., :_BEV_FIRST], bev.amax(-2).flatten(-2), bev.amin(-2).flatten(-2),
                      feats[..., _BEV_FIRST + _BEV_FULL:]], dim=-1)


def is_prepared(obs: Mapping) -> bool:
    """Already :func:`prepare_obs` output (bool masks, float or uint8 bev, batched)?"""
    bev, mask = obs.get("bev"), obs.get("agents_mask")
    return (isinstance(bev, torch.Tensor) and (bev.is_floating_point() or bev.dtype == torch.uint8)
            and isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and obs["ego"].ndim == 2)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ModelConfig", "RewardWorldModel", "SceneEncoding", "Prediction", "prepare_obs", "compact_bev_samples",
           "SUB_SCORES",
           "THREE_WAY", "BINARY", "OBS_KEYS", "OBS_ENTRIES", "num_parameters"]
