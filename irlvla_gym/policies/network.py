"""The VLA network: vision + language + command/ego (+ BEV) tokens, a fusion transformer, and a planning head.

Data flow (d = ``config.hidden``; every token also gets a learned type embedding)::

    camera (B, 3, H, W) --resize--> ViT / SigLIP (transformers) --> (B, 1 + P, hv) --Linear--> vision tokens
    instruction (B, L)  --> BertModel (transformers) ---------------> (B, L, ht) --Linear--> language tokens (pads masked)
    ego (B, 21)         --> fixed scaling, MLP ---------------------> ego token (B, 1, d)
                        --> command one-hot argmax, Embedding(4, d) -> command token (B, 1, d)
    bev (B, 8, h, w)    --> strided CNN, G x G cells ---------------> BEV tokens (B, G * G, d)
    agents (B, 32, 14)  --> fixed scaling, MLP per slot ------------> agent tokens (B, A', d) (masked slots ignored)
    map (B, 64, 20, 11) --> fixed scaling, point MLP, max over points -> map tokens (B, M', d) (masked slots ignored)
    [plan token] + all tokens --> fusion transformer (pre-norm) --> fused tokens (B, T, d), token 0 = pooled
    fused tokens --> GaussianHead (MLP on token 0) | DiffusionHead (cross-attention) --> mean action (B, 24)

*Network inputs* (what :meth:`VLANetwork.forward` takes) are float/long tensors: ``camera`` (B, 3, H, W) in [0, 1],
``bev`` (B, C, h, w) in [0, 1], ``ego`` (B, 21) raw env units, ``instruction`` (B, L) int64 token ids.
:func:`prepare_observations` converts env observations (uint8 images, channels last) into them. The camera may
also stay uint8 (``prepare_observations(..., raw_camera=True)``, as the SB3 policy passes it): the encoder then
resizes it in integers (:meth:`VLAEncoder.camera_pixels`; the same pixels up to float rounding, several times
cheaper).

Weights round-trip with :meth:`VLANetwork.save_pretrained` / :meth:`VLANetwork.from_pretrained` (``config.json`` +
``model.safetensors``, huggingface_hub's ``PyTorchModelHubMixin``: local directories, shipped names and Hub repo ids). The vision (and language) encoder can start from any local transformers checkpoint
(``VLAConfig.vision_pretrained_path``), loaded with transformers' own ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from huggingface_hub import PyTorchModelHubMixin

from irlvla_gym.policies.config import (
    CONFIG_NAME, MASK_KEYS, WEIGHTS_NAME, VLAConfig, looks_like_hub_id, network_input_keys,
)
from irlvla_gym.policies.heads import DiffusionHead, GaussianHead

EGO_DIM = 21
COMMAND_SLICE = slice(4, 8)
EGO_SCALE = np.array([10.0, 10.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0] + [10.0, 10.0, 0.5] * 4 + [10.0], np.float32)
"""(21,) fixed divisors of the ego vector (velocity / 10 m/s, acceleration / 3 m/s^2, history xy / 10 m,
yaw / 0.5 rad, speed / 10 m/s), so every input is O(1)."""
TOKEN_TYPES = ("plan", "camera", "instruction", "command", "ego", "bev")
VECTOR_TOKEN_TYPES = ("agents", "map")
"""Type embeddings of the vector sets live in their own table, so networks without them keep their weights' shapes."""
AGENT_SCALE = np.array([20.0, 20.0, 1.0, 1.0, 10.0, 10.0, 5.0, 5.0] + [1.0] * 6, np.float32)
"""(14,) divisors of the ``agents`` features (x, y / 20 m, heading cos / sin, vx, vy / 10 m/s, length, width / 5 m,
category one-hot), so every input is O(1)."""
MAP_SCALE = np.array([20.0, 20.0] + [1.0] * 9, np.float32)
"""(11,) divisors of the ``map`` point features (x, y / 20 m; tangents and flags as they are)."""
MAP_POINT_STRIDE = 2
"""The map encoder reads points 0, 2, .., 18 of a polyline's 20 equally spaced ones: ~3x cheaper on one core, and a
piece of at most 30 m (``ObsConfig.map_segment_length``) keeps its shape at ~3 m spacing."""


def _config_dict(hf_config) -> dict[str, Any]:
    """A transformers config as a plain json-safe dict."""
    return json.loads(hf_config.to_json_string(use_diff=False))


def build_vision_model(cfg: VLAConfig, load_pretrained: bool = True) -> nn.Module:
    """The transformers vision encoder; fills ``cfg.vision_config`` (and ``image_size`` for a checkpoint).

    Order of precedence: ``vision_pretrained_path`` (``from_pretrained``, when ``load_pretrained``), then a saved
    ``vision_config`` dict, then a fresh config from the ``vision_*`` sizes.
    """
    from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

    if cfg.vision_pretrained_path and load_pretrained:
        from transformers import AutoConfig

        path = str(cfg.vision_pretrained_path)
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type == "vit":
            model = ViTModel.from_pretrained(path, add_pooling_layer=False, hidden_dropout_prob=cfg.dropout,
                                             attention_probs_dropout_prob=cfg.dropout)
            cfg.vision_model = "vit"
        elif model_type in ("siglip", "siglip_vision_model"):
            model = SiglipVisionModel.from_pretrained(path, attention_dropout=cfg.dropout)
            cfg.vision_model = "siglip"
        else:
            raise ValueError(f"vision_pretrained_path {path}: unsupported model type {model_type!r} (vit or siglip)")
        size = model.config.image_size
        cfg.image_size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        cfg.vision_config = _config_dict(model.config)
        return model
    if cfg.vision_config is not None:
        d = dict(cfg.vision_config)
        if d.get("model_type") == "vit":
            return ViTModel(ViTConfig.from_dict(d), add_pooling_layer=False)
        return SiglipVisionModel(SiglipVisionConfig.from_dict(d))
    common = dict(patch_size=cfg.patch_size, hidden_size=cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
                  num_attention_heads=cfg.vision_heads, intermediate_size=4 * cfg.vision_hidden, num_channels=3)
    if cfg.vision_model == "vit":
        hf = ViTConfig(image_size=list(cfg.image_size), hidden_dropout_prob=cfg.dropout,
                       attention_probs_dropout_prob=cfg.dropout, **common)
        model = ViTModel(hf, add_pooling_layer=False)
    else:
        hf = SiglipVisionConfig(image_size=cfg.image_size[0], attention_dropout=cfg.dropout, **common)
        model = SiglipVisionModel(hf)
    cfg.vision_config = _config_dict(model.config)
    return model


def build_language_model(cfg: VLAConfig, load_pretrained: bool = True) -> nn.Module:
    """The transformers text encoder (``BertModel``, no pooler); fills ``cfg.language_config``."""
    from transformers import BertConfig, BertModel

    if cfg.language_pretrained_path and load_pretrained:
        model = BertModel.from_pretrained(str(cfg.language_pretrained_path), add_pooling_layer=False,
                                          hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        cfg.language_config = _config_dict(model.config)
        return model
    if cfg.language_config is not None:
        return BertModel(BertConfig.from_dict(dict(cfg.language_config)), add_pooling_layer=False)
    hf = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
                    num_attention_heads=cfg.text_heads, intermediate_size=4 * cfg.text_hidden,
                    max_position_embeddings=cfg.max_tokens, type_vocab_size=1, pad_token_id=0,
                    hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    model = BertModel(hf, add_pooling_layer=False)
    cfg.language_config = _config_dict(model.config)
    return model


class BevEncoder(nn.Module):
    """Strided CNN over the BEV raster: (B, C, h, w) in [0, 1] -> (B, G * G, d) tokens of a G x G cell grid (the x16
    feature map average-pooled to ``grid`` cells; G = 4 at 128 x 128 is 16 m x 16 m per cell)."""

    def __init__(self, in_channels: int, width: int, hidden: int, grid: int = 4):
        super().__init__()
        self.grid = (int(grid), int(grid))
        self.cnn = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=4), nn.GELU(),
            nn.Conv2d(width, 2 * width, 2, stride=2), nn.GELU(),
            nn.Conv2d(2 * width, hidden, 2, stride=2),
        )
        self.pos = nn.Parameter(torch.randn(self.grid[0] * self.grid[1], hidden) * 0.02)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        h = self.cnn(bev)
        if tuple(h.shape[-2:]) != self.grid:
            h = F.adaptive_avg_pool2d(h, self.grid)
        return h.flatten(2).transpose(1, 2) + self.pos


class VectorSetEncoder(nn.Module):
    """A padded set of vectors -> one token per slot: (B, S, F) or (B, S, P, F) points -> (B, S, d).

    Features are divided by a fixed ``scale`` (F,). Single vectors go through a two-layer MLP; polylines of P points
    (PointNet-style) through one linear layer + GELU per point, a max over the points, then the two-layer MLP: the
    per-point work stays one small matmul (a map of 64 x 20 points would otherwise dominate the network's cost).
    """

    def __init__(self, scale: np.ndarray, hidden: int, points: bool):
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)), persistent=False)
        self.point = nn.Sequential(nn.Linear(len(scale), hidden), nn.GELU()) if points else None
        self.mlp = nn.Sequential(nn.Linear(hidden if points else len(scale), hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / self.scale
        if self.point is not None:
            x = self.point(x).amax(dim=-2)
        return self.mlp(x)


class VLAEncoder(nn.Module):
    """Encoders of every configured observation key and the fusion transformer.

    ``forward(inputs)`` returns fused tokens (B, T, d); token 0 is the pooled plan token. T = 1 + (1 + P if camera)
    + (L' if instruction) + (2 if ego) + (G * G if bev) + (A' if agents) + (M' if map), with P = image patches and
    L' = the longest instruction of the batch (trailing padding is trimmed: it is masked anyway, and the fusion cost
    grows with T^2). A' / M' = the most real agent / map slots of a row in the batch (the env packs real slots
    first); with the diffusion head, which cross-attends to every token, all 32 / 64 slots are kept so a row's plan
    never depends on its batch neighbours.
    """

    def __init__(self, cfg: VLAConfig, load_pretrained: bool = True):
        super().__init__()
        self.obs_keys = tuple(cfg.obs_keys)
        d = cfg.hidden
        self.image_size = tuple(cfg.image_size)
        if "camera" in self.obs_keys:
            self.vision = build_vision_model(cfg, load_pretrained)
            self.image_size = tuple(cfg.image_size)
            self.vision_proj = nn.Linear(self.vision.config.hidden_size, d)
            self.register_buffer("image_mean", torch.tensor(float(cfg.image_mean)), persistent=False)
            self.register_buffer("image_std", torch.tensor(float(cfg.image_std)), persistent=False)
        if "instruction" in self.obs_keys:
            self.language = build_language_model(cfg, load_pretrained)
            self.max_tokens = int(self.language.config.max_position_embeddings)
            self.vocab_size = int(self.language.config.vocab_size)
            self.language_proj = nn.Linear(self.language.config.hidden_size, d)
            self.instruction_cache = InstructionCache()
        if "ego" in self.obs_keys:
            self.register_buffer("ego_scale", torch.from_numpy(EGO_SCALE), persistent=False)
            self.ego_mlp = nn.Sequential(nn.Linear(EGO_DIM, d), nn.GELU(), nn.Linear(d, d))
            self.command_embed = nn.Embedding(4, d)
        if "bev" in self.obs_keys:
            self.bev = BevEncoder(cfg.bev_channels, cfg.bev_width, d, cfg.bev_grid)
        if "agents" in self.obs_keys:
            self.agents = VectorSetEncoder(AGENT_SCALE, d, points=False)
        if "map" in self.obs_keys:
            self.map = VectorSetEncoder(MAP_SCALE, d, points=True)
        if any(k in self.obs_keys for k in VECTOR_TOKEN_TYPES):
            self.vector_type_embed = nn.Embedding(len(VECTOR_TOKEN_TYPES), d)
        self.trim_vector_sets = cfg.head != "diffusion"
        self.plan_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.type_embed = nn.Embedding(len(TOKEN_TYPES), d)
        layer = nn.TransformerEncoderLayer(d, cfg.fusion_heads, cfg.fusion_ff_mult * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, cfg.fusion_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def _typed(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        return tokens + self.type_embed.weight[TOKEN_TYPES.index(kind)]

    def camera_pixels(self, camera: torch.Tensor) -> torch.Tensor:
        """Camera (B, 3, H, W), float in [0, 1] or uint8 in [0, 255] -> the vision model's normalised pixels
        (B, 3, h, w) float32 at ``image_size`` (area resize, then ``(x - image_mean) / image_std``).

        Both inputs give the same pixels up to float rounding (~2e-7): a uint8 image is box-summed in int16 and
        divided once (4x less memory traffic than SB3's ``float() / 255`` of the full image followed by a float
        resize, which dominated PPO's data path). Integer resize factors use ``avg_pool2d`` (the same numbers as
        ``interpolate(mode="area")``, which runs a much slower adaptive pool); other sizes fall back to it.
        """
        h, w = self.image_size
        fh, fw = camera.shape[-2] // h, camera.shape[-1] // w
        exact = camera.shape[-2] == fh * h and camera.shape[-1] == fw * w
        if camera.dtype == torch.uint8 and exact and fh * fw * 255 < 2 ** 15:
            # one float copy, then scale and shift in place: (sum / (n * 255) - mean) / std as sum * a + b
            std = float(self.image_std)
            img = box_sum_uint8(camera, fh, fw).float()
            return img.mul_(1.0 / (fh * fw * 255 * std)).add_(-float(self.image_mean) / std)
        else:
            img = camera.float() / 255.0 if camera.dtype == torch.uint8 else camera.float()
            if (fh, fw) != (1, 1) and exact:
                img = F.avg_pool2d(img, (fh, fw))
            elif tuple(img.shape[-2:]) != self.image_size:
                img = F.interpolate(img, size=self.image_size, mode="area")
        return (img - self.image_mean) / self.image_std

    def forward(self, inputs: Mapping[str, torch.Tensor], pooled_only: bool = False) -> torch.Tensor:
        """Network inputs (module docs) -> fused tokens (B, T, d); with ``pooled_only`` the pooled plan token alone
        (B, 1, d), the same numbers as ``forward(inputs)[:, :1]`` up to float rounding: the last fusion layer then
        runs its attention query and feed-forward for token 0 only (what the Gaussian head and the critic read)."""
        first = inputs[self.obs_keys[0]]
        b = first.shape[0]
        tokens = [self._typed(self.plan_token.expand(b, -1, -1), "plan")]
        masks = [torch.zeros(b, 1, dtype=torch.bool, device=first.device)]
        if "camera" in self.obs_keys:
            img = self.camera_pixels(inputs["camera"])
            vis = self.vision_proj(self.vision(pixel_values=img).last_hidden_state)  # (B, 1 + P, d)
            tokens.append(self._typed(vis, "camera"))
            masks.append(torch.zeros(b, vis.shape[1], dtype=torch.bool, device=first.device))
        if "instruction" in self.obs_keys:
            ids = inputs["instruction"].long()[:, : self.max_tokens].clamp(0, self.vocab_size - 1)
            length = max(1, int((ids != 0).sum(dim=1).max()))  # padding is trailing ([CLS] words [SEP] 0 ..)
            ids = ids[:, :length]
            tokens.append(self._typed(self.encode_instructions(ids), "instruction"))
            masks.append(ids == 0)
        if "ego" in self.obs_keys:
            ego = inputs["ego"].float()
            command = ego[:, COMMAND_SLICE].argmax(dim=-1)
            tokens.append(self._typed(self.command_embed(command)[:, None], "command"))
            tokens.append(self._typed(self.ego_mlp(ego / self.ego_scale)[:, None], "ego"))
            masks.append(torch.zeros(b, 2, dtype=torch.bool, device=first.device))
        if "bev" in self.obs_keys:
            bev = self.bev(inputs["bev"].float())
            tokens.append(self._typed(bev, "bev"))
            masks.append(torch.zeros(b, bev.shape[1], dtype=torch.bool, device=first.device))
        for kind in VECTOR_TOKEN_TYPES:
            if kind in self.obs_keys:
                real = inputs[MASK_KEYS[kind]]  # (B, S)
                real = real if real.dtype == torch.bool else real > 0.5
                values = inputs[kind]
                if self.trim_vector_sets:  # real slots come first: keep the batch's longest prefix (>= 1 slot)
                    keep = max(1, int(real.sum(dim=1).max()))
                    real, values = real[:, :keep], values[:, :keep]
                if kind == "map":
                    values = values[:, :, ::MAP_POINT_STRIDE]
                encoded = getattr(self, kind)(values) + self.vector_type_embed.weight[VECTOR_TOKEN_TYPES.index(kind)]
                tokens.append(encoded)
                masks.append(~real)
        x, padding = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        if not pooled_only:
            return self.norm(self.fusion(x, src_key_padding_mask=padding))
        for layer in self.fusion.layers[:-1]:
            x = layer(x, src_key_padding_mask=padding)
        return self.norm(pooled_layer(self.fusion.layers[-1], x, padding))

    def encode_instructions(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) int64 (0 = trailing padding) -> projected language tokens (B, L, d).

        Each distinct row is encoded once and gathered back (its gradient is the sum over its copies): a rollout
        repeats a handful of instructions (~15 distinct rows in a PPO minibatch of 128), and the language encoder
        was a sixth of a minibatch's cost. Rows do not interact in the encoder, so this equals encoding every row
        (up to float rounding of the smaller matmuls)."""
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        if unique.shape[0] == ids.shape[0]:
            unique, inverse = ids, None
        if self.training or torch.is_grad_enabled():
            projected = self.project_instructions(unique)
        else:  # rollouts and probes: the weights only change between them (InstructionCache)
            projected = self.instruction_cache.rows(unique, self.project_instructions,
                                                    [*self.language.parameters(), *self.language_proj.parameters()])
        return projected if inverse is None else projected[inverse]

    def project_instructions(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (U, L) -> the language encoder's tokens, projected: (U, L, d)."""
        lang = self.language(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state  # (U, L, ht)
        return self.language_proj(lang)


class InstructionCache:
    """Projected language tokens of instruction rows seen by inference forwards (no grad, eval mode), reused while
    the encoder's weights stay the same. A PPO rollout asks for the same few instructions at every step (8 rows a
    step, ~20 distinct over a 512-step rollout): the language encoder was a third of a rollout forward's cost.

    A row is keyed by its token ids at the batch's trimmed length (padding positions included: every token reaches
    the fusion, and a diffusion head reads the padded ones too), so a hit returns what encoding it in this batch
    returns, up to float rounding of the batch size. The entries are dropped when any weight changed: a tensor's
    in-place version counter (optimizer steps, ``load_state_dict``) or storage (``.data`` replaced) moved.

    Args:
        size: rows kept; beyond it the cache starts over (a rollout needs a few dozen).
    """

    def __init__(self, size: int = 1024):
        self.size = int(size)
        self.entries: dict[bytes, torch.Tensor] = {}
        self.weights_key: tuple[tuple[int, int], ...] = ()

    def rows(self, ids: torch.Tensor, encode: Any, params: list[torch.Tensor]) -> torch.Tensor:
        """``encode(ids)`` (U, L) -> (U, L, d) of distinct rows ``ids``, encoding only the rows not cached."""
        weights_key = tuple((p.data_ptr(), p._version) for p in params)
        if weights_key != self.weights_key or len(self.entries) + len(ids) > self.size:
            self.entries.clear()
            self.weights_key = weights_key
        keys = [row.tobytes() for row in ids.cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        if missing:
            fresh = encode(ids[missing])
            for j, i in enumerate(missing):
                self.entries[keys[i]] = fresh[j]
        return torch.stack([self.entries[key] for key in keys])


def pooled_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Token 0 of a pre-norm ``TransformerEncoderLayer`` applied to tokens ``x`` (B, T, d) with key padding mask
    ``padding`` (B, T) bool (True = ignored) -> (B, 1, d). Every token is still a key and value; only token 0 is a
    query and goes through the feed-forward block (the layer's own modules, so its weights and gradients)."""
    if not layer.norm_first:
        raise ValueError("pooled_layer reproduces pre-norm layers (norm_first=True) only")
    h = layer.norm1(x)
    attended = layer.self_attn(h[:, :1], h, h, key_padding_mask=padding, need_weights=False)[0]
    y = x[:, :1] + layer.dropout1(attended)
    feed = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(y)))))
    return y + layer.dropout2(feed)


def box_sum_uint8(image: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Sums of the non-overlapping ``fh`` x ``fw`` boxes of a uint8 image (B, C, fh * h, fw * w) -> int16
    (B, C, h, w); exact while ``255 * fh * fw`` fits int16. Strided adds, which on CPU beat both a float
    ``avg_pool2d`` and a reshaped ``sum`` by 3-5x."""
    rows = image[:, :, 0::fh].to(torch.int16)
    for i in range(1, fh):
        rows = rows + image[:, :, i::fh]
    out = rows[..., 0::fw]
    for j in range(1, fw):
        out = out + rows[..., j::fw]
    return out


def make_head(cfg: VLAConfig) -> GaussianHead | DiffusionHead:
    """The planning head named by ``cfg.head``."""
    if cfg.head == "diffusion":
        return DiffusionHead(cfg.hidden, cfg.fusion_heads, cfg.diffusion_layers, cfg.diffusion_steps,
                             cfg.log_std_init, cfg.dropout)
    return GaussianHead(cfg.hidden, cfg.log_std_init, cfg.dropout)


def prepare_observations(obs: Mapping[str, Any], keys: tuple[str, ...] | list[str],
                         device: torch.device | str = "cpu", raw_camera: bool = False) -> dict[str, torch.Tensor]:
    """Env observations (batched, ``(B, ...)`` numpy or tensors) -> network inputs (module docs).

    ``camera`` (B, H, W, 3) or (B, 3, H, W) uint8 -> (B, 3, H, W) float in [0, 1] (``raw_camera``: a uint8 camera
    stays uint8 (B, 3, H, W), which :meth:`VLAEncoder.camera_pixels` resizes in integers, cheaper);
    ``bev`` uint8 -> float / 255; ``ego`` -> float32; ``instruction`` -> int64; ``agents`` / ``map`` -> float32,
    each with its mask entry (``agents_mask`` / ``map_mask``, 1 = real slot) -> bool.
    """
    out: dict[str, torch.Tensor] = {}
    for key in network_input_keys(keys):
        if key not in obs:
            raise KeyError(f"observation has no {key!r} entry (has {sorted(obs)})")
        x = torch.as_tensor(np.asarray(obs[key]) if not isinstance(obs[key], torch.Tensor) else obs[key],
                            device=device)
        if key == "camera":
            if x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.permute(0, 3, 1, 2)
            if x.dtype != torch.uint8 or not raw_camera:
                x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        elif key == "bev":
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        elif key == "instruction":
            x = x.long()
        elif key in MASK_KEYS.values():
            x = x > 0.5 if torch.is_floating_point(x) else x != 0
        else:
            x = x.float()
        out[key] = x
    return out


class VLANetwork(nn.Module, PyTorchModelHubMixin, library_name="irlvla-gym",
                 tags=["robotics", "autonomous-driving", "vision-language-action"]):
    """The VLA planning network: :class:`VLAEncoder` + a planning head (``config.head``).

    ``forward(inputs)`` -> mean action (B, 24) (the normalised plan; ``irlvla_gym.plans.codec.action_to_plan``
    maps it to metres). Build from a :class:`VLAConfig` (or dict), or load with :meth:`from_pretrained`.

    Args:
        config: :class:`VLAConfig` or a dict of its fields (None: defaults). A copy is kept in ``self.config``,
            with the transformers sub-configs filled in.
        load_pretrained: load ``vision_pretrained_path`` / ``language_pretrained_path`` weights (False builds the
            same architecture from the saved sub-configs, as :meth:`from_pretrained` does).
        encoder, head: existing modules to wrap instead of building new ones (used by the SB3 policy, whose
            features extractor and action net own them).
    """

    def __init__(self, config: VLAConfig | Mapping[str, Any] | None = None, load_pretrained: bool = True,
                 encoder: VLAEncoder | None = None, head: nn.Module | None = None):
        super().__init__()
        self.config = VLAConfig.from_dict(config)
        self.encoder = encoder if encoder is not None else VLAEncoder(self.config, load_pretrained)
        self.head = head if head is not None else make_head(self.config)

    @property
    def obs_keys(self) -> tuple[str, ...]:
        return tuple(self.config.obs_keys)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Network inputs -> mean action (B, 24)."""
        return self.head(self.encoder(inputs))

    def bc_loss(self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor,
                loss: str = "mse") -> dict[str, torch.Tensor]:
        """Imitation loss against expert actions (B, 24); see the heads' ``bc_loss``."""
        return self.head.bc_loss(self.encoder(inputs), target, loss)

    @torch.no_grad()
    def plan(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Env observations (batched) -> metric plans (B, 8, 3) float64 (eval mode, no gradients)."""
        from irlvla_gym.plans.codec import action_to_plan

        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            mean = self(prepare_observations(obs, self.obs_keys, device))
        finally:
            self.train(was_training)
        return action_to_plan(mean.cpu().numpy())

    # ---- persistence ---------------------------------------------------------------------------------------------
    # huggingface_hub's PyTorchModelHubMixin (not transformers' PreTrainedModel): the network is a plain nn.Module
    # whose config is the VLAConfig dataclass and whose transformers encoders are sub-modules; PreTrainedModel would
    # have to own the config class, weight initialisation and loading (meta-device init, tied weights), which risks
    # the shipped checkpoints' bit-identical outputs for no gain. The mixin adds Hub ids, push_to_hub and model cards
    # around the unchanged layout (config.json + model.safetensors); AutoConfig reads the config through
    # config.register_auto_config().

    def save_pretrained(self, save_directory: str | Path, metadata: Mapping[str, str] | None = None, *,
                        model_card: bool = False, **hub_kwargs: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (both atomically) into ``save_directory``; returns it.

        ``metadata``: strings stored in the safetensors header. ``model_card=True`` (or any huggingface_hub argument
        such as ``push_to_hub=True, repo_id=...``) goes through ``PyTorchModelHubMixin.save_pretrained``, which also
        writes a ``README.md`` model card; a plain save writes exactly the two files.
        """
        from irlvla_gym.utils import save_through_hub_mixin

        return save_through_hub_mixin(self, save_directory, ("_save_metadata", dict(metadata or {})), model_card,
                                      hub_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's per-framework hook: ``model.safetensors`` + ``config.json`` (atomic, shareable modes)."""
        from safetensors.torch import save

        from irlvla_gym.utils import atomic_write

        directory = Path(save_directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = getattr(self, "_save_metadata", None) or {}
        meta = {"format": "pt", **{str(k): str(v) for k, v in metadata.items()}}
        with atomic_write(directory / WEIGHTS_NAME) as fh:
            fh.write(save(state, metadata=meta))
        self.config.save(directory)
        umask = os.umask(0)
        os.umask(umask)
        for name in (WEIGHTS_NAME, CONFIG_NAME):  # temp files are 0600; checkpoints are meant to be shared
            os.chmod(directory / name, 0o666 & ~umask)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, map_location: str | torch.device = "cpu",
                        **hub_kwargs: Any) -> "VLANetwork":
        """Load a network saved by :meth:`save_pretrained`: a local directory, a shipped checkpoint name
        (``"bc_default"``) or a Hugging Face Hub repo id (``"user/repo"``, downloaded by huggingface_hub;
        ``hub_kwargs``: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``).

        Weights are checked for NaN/inf and loaded strictly; the network is returned in the mode a new one has
        (training), on ``map_location``. Nothing from the checkpoint is executed (json + safetensors only).
        """
        spec = pretrained_model_name_or_path
        try:
            local = resolve_checkpoint(spec)
        except FileNotFoundError:
            if not looks_like_hub_id(spec):
                raise
        else:
            VLAConfig.load(local)  # a damaged config.json raises naming the file, before the mixin reads it
            return super().from_pretrained(str(local), map_location=map_location, **hub_kwargs)
        try:
            return super().from_pretrained(str(spec), map_location=map_location, **hub_kwargs)
        except Exception as exc:  # offline, no such repo, no access: one error type for "not found anywhere"
            raise FileNotFoundError(f"no VLA checkpoint (config.json + model.safetensors) at {spec}: not a local "
                                    f"directory, and the Hub repo could not be loaded ({type(exc).__name__})") from exc

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                         force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None,
                         map_location: str | torch.device = "cpu", **_: Any) -> "VLANetwork":
        """The mixin's hook: build from ``config.json`` (no transformers download: sub-models come from the saved
        sub-configs), check and load ``model.safetensors``. Other keyword arguments the mixin forwards (config
        values named like ``__init__`` arguments, e.g. ``head``) are ignored: ``config.json`` is read whole."""
        from safetensors.torch import load_file

        if os.path.isdir(model_id):
            directory = Path(model_id)
        else:
            from huggingface_hub import hf_hub_download

            directory = Path(hf_hub_download(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                             force_download=force_download, token=token,
                                             local_files_only=local_files_only)).parent
            hf_hub_download(model_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir, token=token,
                            local_files_only=local_files_only)  # same snapshot folder as the weights
        net = cls(VLAConfig.load(directory), load_pretrained=False)
        state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
        for name, tensor in state.items():  # a NaN weight would only show up later as NaN plans and rewards
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{directory / WEIGHTS_NAME}: tensor {name!r} has NaN/inf values")
        net.load_state_dict(state, strict=True)
        return net.to(map_location)


CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Shipped checkpoints (``checkpoints/<name>/``), loadable by name."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory: ``path`` itself, or a shipped checkpoint name (``"bc_default"``)."""
    p = Path(path)
    if (p / CONFIG_NAME).is_file():
        return p
    shipped = CHECKPOINT_DIR / str(path)
    if not p.is_absolute() and (shipped / CONFIG_NAME).is_file():
        return shipped
    raise FileNotFoundError(f"no VLA checkpoint (config.json + model.safetensors) at {path}")


__all__ = ["BevEncoder", "CHECKPOINT_DIR", "EGO_SCALE", "InstructionCache", "VLAEncoder", "VLANetwork",
           "box_sum_uint8", "build_language_model", "build_vision_model", "make_head", "prepare_observations",
           "resolve_checkpoint"]
