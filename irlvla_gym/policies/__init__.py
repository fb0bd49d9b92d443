"""The VLA policy (stage 1 of IRL-VLA): network, Stable-Baselines3 policy and imitation pretraining.

* :class:`VLAConfig` (``config.py``): every network setting, json-serialisable.
* :class:`VLANetwork` (``network.py``): transformers vision + language encoders, command/ego tokens, optional BEV
  CNN, fusion transformer, Gaussian or diffusion planning head (``heads.py``); ``save_pretrained`` /
  ``from_pretrained`` (safetensors + config.json).
* :class:`VLAPolicy` (``sb3.py``): ``PPO(VLAPolicy, env, policy_kwargs=dict(vla_config=..., pretrained_path=...))``.
* ``irlvla bc`` (``bc.py``): behaviour cloning on expert plans with validation (ADE, FDE, EPDMS), checkpoints and
  resume; ``checkpoints/bc_default`` is the shipped BC network (see README.md).

Names are imported lazily (torch, transformers and SB3 load on first use).
"""

from __future__ import annotations

from irlvla_gym.utils import lazy_exports

_EXPORTS = {
    "VLAConfig": "irlvla_gym.policies.config",
    "SUPPORTED_OBS_KEYS": "irlvla_gym.policies.config",
    "VLANetwork": "irlvla_gym.policies.network",
    "VLAEncoder": "irlvla_gym.policies.network",
    "prepare_observations": "irlvla_gym.policies.network",
    "resolve_checkpoint": "irlvla_gym.policies.network",
    "GaussianHead": "irlvla_gym.policies.heads",
    "DiffusionHead": "irlvla_gym.policies.heads",
    "VLAPolicy": "irlvla_gym.policies.sb3",
    "VLAFeaturesExtractor": "irlvla_gym.policies.sb3",
    "BCConfig": "irlvla_gym.policies.bc",
    "train_bc": "irlvla_gym.policies.bc",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
