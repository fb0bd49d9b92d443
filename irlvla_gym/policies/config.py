"""``VLAConfig``: every setting of the VLA network in one json-serialisable dataclass.

Saved as ``config.json`` beside ``model.safetensors`` by :meth:`VLANetwork.save_pretrained`; the transformers
sub-model configs (vision, language) are stored inside it as plain dicts, so a saved network rebuilds without the
checkpoint it was initialised from.

The file also names ``"model_type": "irlvla_vla"`` (:data:`MODEL_TYPE`), so ``transformers.AutoConfig`` reads it once
:func:`register_auto_config` has registered the type in the process (no ``trust_remote_code``: the config class is
defined here, nothing is imported from the checkpoint)::

    from irlvla_gym.policies.config import VLAConfig, register_auto_config
    register_auto_config()
    hf = transformers.AutoConfig.from_pretrained("runs/bc/network")   # a PretrainedConfig, fields as attributes
    cfg = VLAConfig.from_auto_config(hf)

Files written before the key existed (the shipped ``bc_default`` and ``irlvla_default``) load unchanged through
:class:`VLAConfig` / ``VLANetwork.from_pretrained``; AutoConfig needs the key, so re-save them to read them with it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SUPPORTED_OBS_KEYS = ("camera", "bev", "ego", "instruction", "agents", "map")
"""Observation keys the network can read (``irlvla_gym.obs`` keys); any non-empty subset works."""
MASK_KEYS = {"agents": "agents_mask", "map": "map_mask"}
"""Vector-set keys and the env's mask entry (1 = real slot) that comes with each."""
HEADS = ("gaussian", "diffusion")
VISION_MODELS = ("vit", "siglip")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "irlvla_vla"
"""``model_type`` of a VLA ``config.json`` (the key transformers' ``AutoConfig`` dispatches on)."""
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def network_input_keys(obs_keys: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The env entries a network reading ``obs_keys`` needs: the keys, each vector set followed by its mask."""
    out: list[str] = []
    for key in obs_keys:
        out += [key, MASK_KEYS[key]] if key in MASK_KEYS else [key]
    return tuple(out)


@dataclass
class VLAConfig:
    """Settings of :class:`~irlvla_gym.policies.network.VLANetwork`.

    Observations:
        obs_keys: which observation keys the network reads, a non-empty subset of :data:`SUPPORTED_OBS_KEYS`
            (``camera``: front image; ``bev``: 8-channel raster; ``ego``: (21,) kinematics + command one-hot +
            history; ``instruction``: (L,) token ids; ``agents``: (32, 14) nearby agents with velocities and
            ``map``: (64, 20, 11) map polylines, each with its mask entry). The env must provide every one of them.

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

    Vector encoders (keys ``agents`` / ``map``, ``irlvla_gym.obs.vectors``): an MLP per agent slot; a per-point
        layer max-pooled over every 2nd of each polyline's 20 points, then an MLP. Each real slot becomes one token (masked slots are dropped from
        attention); the agents and the map see positions and velocities directly (the camera shows one frame).

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
        """From a dict of field values (unknown names raise TypeError); a VLAConfig is copied; None: defaults.

        A ``model_type`` key (what :meth:`save` writes) is accepted when it is :data:`MODEL_TYPE`."""
        if values is None:
            return cls()
        if isinstance(values, VLAConfig):
            return dataclasses.replace(values)
        values = dict(values)
        model_type = values.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise TypeError(f"config model_type {model_type!r} is not a VLA network ({MODEL_TYPE!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"unknown VLAConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**values)

    @classmethod
    def from_auto_config(cls, hf_config: Any) -> "VLAConfig":
        """From the ``transformers`` config that ``AutoConfig.from_pretrained`` returns for a VLA ``config.json``
        (:func:`register_auto_config`): its attributes named like fields (others, transformers' own, are ignored)."""
        return cls.from_dict({f.name: getattr(hf_config, f.name) for f in dataclasses.fields(cls)
                              if hasattr(hf_config, f.name)})

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (the fields and ``model_type``) into ``directory`` (atomically); returns its path."""
        from irlvla_gym.utils import atomic_write

        path = Path(directory) / CONFIG_NAME
        with atomic_write(path, "w") as fh:
            json.dump({"model_type": MODEL_TYPE, **self.to_dict()}, fh, indent=2, sort_keys=True)
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


# ---- transformers AutoConfig and Hub ids (shared with the reward world model's checkpoints) -------------------------

AUTO_CONFIG_CLASSES: dict[str, type] = {}
"""model_type -> the ``PretrainedConfig`` subclass registered for it in this process (by :func:`auto_config_class`)."""


def auto_config_class(model_type: str) -> type:
    """A ``transformers.PretrainedConfig`` subclass for ``model_type``, registered with ``AutoConfig`` (once per
    process; transformers is imported here, not at start-up). ``AutoConfig.from_pretrained(dir)`` then returns it for
    a ``config.json`` naming that ``model_type``: every key of the file becomes an attribute. Only a config is
    registered, no ``AutoModel``: the networks load with their own ``from_pretrained`` (huggingface_hub's mixin),
    so nothing runs code from a checkpoint (no ``trust_remote_code``)."""
    if model_type in AUTO_CONFIG_CLASSES:
        return AUTO_CONFIG_CLASSES[model_type]
    from transformers import AutoConfig, PretrainedConfig

    name = "".join(part.capitalize() for part in model_type.split("_")) + "HubConfig"
    config_class = type(name, (PretrainedConfig,), {
        "model_type": model_type, "__module__": __name__,
        "__doc__": f"transformers view of an irlvla-gym ``config.json`` with ``model_type={model_type!r}``."})
    try:
        AutoConfig.register(model_type, config_class, exist_ok=True)
    except TypeError:  # transformers releases without exist_ok
        AutoConfig.register(model_type, config_class)
    AUTO_CONFIG_CLASSES[model_type] = config_class
    return config_class


def register_auto_config() -> type:
    """Register the VLA ``config.json`` (:data:`MODEL_TYPE`) with ``transformers.AutoConfig``; returns its class."""
    return auto_config_class(MODEL_TYPE)


def looks_like_hub_id(spec: Any) -> bool:
    """Whether a checkpoint spec that is not a local directory should be tried as a Hugging Face Hub repo id:
    ``"namespace/name"``, and no local directory ``namespace`` exists (``runs/typo`` stays a missing local path)."""
    text = str(spec)
    return bool(HUB_REPO_ID.match(text)) and not Path(text).exists() and not Path(text.split("/")[0]).is_dir()
