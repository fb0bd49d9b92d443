"""``VLAConfig``: every setting of the VLA network in one json-serialisable dataclass.

Saved as ``config.json`` beside ``model.safetensors`` by :meth:`VLANetwork.save_pretrained`; the transformers
sub-model configs (vision, language) are stored inside it as plain dicts, so a saved network rebuilds without the
checkpoint it was initialised from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SUPPORTED_OBS_KEYS = ("camera", "bev", "ego", "instruction")
"""Observation keys the network can read (``irlvla_gym.obs`` keys); any non-empty subset works."""
HEADS = ("gaussian", "diffusion")
VISION_MODELS = ("vit", "siglip")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class VLAConfig:
    """Settings of :class:`~irlvla_gym.policies.network.VLANetwork`.

    Observations:
        obs_keys: which observation keys the network reads, a non-empty subset of :data:`SUPPORTED_OBS_KEYS`
            (``camera``: front image; ``bev``: 8-channel raster; ``ego``: (21,) kinematics + command one-hot +
            history; ``instruction``: (L,) token ids). The env must provide every one of them.

    Vision encoder (key ``camera``), a transformers model:
        vision_model: ``"vit"`` (``ViTModel``) or ``"siglip"`` (``SiglipVisionModel``) built from a config.
        vision_pretrained_path: a local transformers checkpoint directory (ViT or SigLIP, full SigLIP checkpoints
            included) loaded with ``from_pretrained`` instead; its config replaces the ``vision_*`` sizes below.
        image_size: (H, W) the camera image is resized to (area interpolation). SigLIP needs H == W.
        patch_size, vision_hidden, vision_layers, vision_heads: sizes of the config-built model.
        image_mean, image_std: per-channel normalisation of [0, 1] pixels (0.5 / 0.5 = SigLIP and ViT convention).
        vision_config: the transformers config dict actually used (filled in by the network; saved with it).

    Language encoder (key ``instruction``), a transformers ``BertModel``:
        vocab_size: token vocabulary (the shipped instruction tokenizer has 39 tokens).
        max_tokens: instruction length L (position embeddings).
        text_hidden, text_layers, text_heads: sizes. language_pretrained_path: optional local checkpoint instead.
        language_config: the transformers config dict actually used (filled in by the network).

    BEV encoder (key ``bev``): a 3-layer strided CNN (x16 downsampling) pooled to a grid whose cells become tokens.
        bev_channels: input channels (8). bev_width: channels of the first layer. bev_grid: G (G x G tokens).

    Fusion and heads:
        hidden: width d of the fused tokens. fusion_layers, fusion_heads, fusion_ff_mult (feed-forward width / d):
            the fusion transformer (its cost grows with the token count T squared; see ``VLAEncoder``).
        head: ``"gaussian"`` (MLP on the pooled plan token -> mean of the normalised 24-dim plan) or
            ``"diffusion"`` (denoises the plan conditioned on the fused tokens by cross-attention; its
            deterministic sample is the Gaussian's mean).
        log_std_init: initial state-independent log-std of the Gaussian (normalised action units).
        diffusion_steps: denoising steps (train and sample; a short DDPM schedule like DiffusionDrive's).
        diffusion_layers: decoder layers (self-attention over the 8 waypoint tokens + cross-attention to fused tokens).
        dropout: dropout everywhere (transformers encoders included, pretrained ones too). Default 0: SB3's PPO
            computes log-probabilities in train mode, so any dropout makes its probability ratio noisy.
    """

    obs_keys: tuple[str, ...] = ("camera", "ego", "instruction")

    vision_model: str = "vit"
    vision_pretrained_path: str | None = None
    image_size: tuple[int, int] = (64, 128)
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    image_mean: float = 0.5
    image_std: float = 0.5
    vision_config: dict[str, Any] | None = None

    vocab_size: int = 39
    max_tokens: int = 32
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    language_pretrained_path: str | None = None
    language_config: dict[str, Any] | None = None

    bev_channels: int = 8
    bev_width: int = 32
    bev_grid: int = 4

    hidden: int = 64
    fusion_layers: int = 2
    fusion_heads: int = 4
    fusion_ff_mult: int = 2
    head: str = "gaussian"
    log_std_init: float = -2.0
    diffusion_steps: int = 8
    diffusion_layers: int = 2
    dropout: float = 0.0

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.obs_keys, str):
            self.obs_keys = (self.obs_keys,)
        self.obs_keys = tuple(self.obs_keys)
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        if not self.obs_keys:
            raise ValueError("obs_keys must name at least one observation key")
        unknown = [k for k in self.obs_keys if k not in SUPPORTED_OBS_KEYS]
        if unknown:
            raise ValueError(f"VLAConfig.obs_keys {unknown} not supported; choose from {SUPPORTED_OBS_KEYS}")
        if len(set(self.obs_keys)) != len(self.obs_keys):
            raise ValueError(f"duplicate keys in obs_keys {self.obs_keys}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.vision_model not in VISION_MODELS:
            raise ValueError(f"vision_model must be one of {VISION_MODELS}, got {self.vision_model!r}")
        if self.vision_model == "siglip" and self.vision_pretrained_path is None \
                and self.image_size[0] != self.image_size[1]:
            raise ValueError(f"SigLIP needs a square image_size, got {self.image_size}")
        if self.hidden % self.fusion_heads:
            raise ValueError("hidden must be divisible by fusion_heads")
        if self.diffusion_steps < 1:
            raise ValueError("diffusion_steps must be >= 1")

    # ---- serialisation -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain json-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | "VLAConfig" | None) -> "VLAConfig":
        """From a dict of field values (unknown names raise TypeError); a VLAConfig is copied; None: defaults."""
        if values is None:
            return cls()
        if isinstance(values, VLAConfig):
            return dataclasses.replace(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"unknown VLAConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**dict(values))

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` into ``directory`` (atomically); returns its path."""
        from irlvla_gym.utils import atomic_write

        path = Path(directory) / CONFIG_NAME
        with atomic_write(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "VLAConfig":
        """Read ``config.json`` from a directory (or the file itself)."""
        path = Path(directory)
        path = path / CONFIG_NAME if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no VLA config at {path}")
        from irlvla_gym.utils import read_json

        return cls.from_dict(read_json(path))
