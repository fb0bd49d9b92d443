"""Fixtures of the baselines tests: tiny VLA checkpoints (Gaussian and diffusion heads), a tiny reward world model
and tiny-budget overrides, so every variant trains and evaluates end to end in seconds on one core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SMALL_OBS = {"camera_size": [32, 64], "bev_size": [64, 64]}
VLA_KEYS = ("camera", "ego", "instruction")


def tiny_vla_config(**overrides: Any) -> dict[str, Any]:
    """A VLAConfig dict small enough for one-core tests."""
    cfg = dict(obs_keys=VLA_KEYS, image_size=(32, 64), patch_size=16, vision_hidden=32, vision_layers=1,
               vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, hidden=32, fusion_layers=1,
               fusion_heads=2, diffusion_steps=4, diffusion_layers=1, log_std_init=-3.0)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints: ``gaussian`` and ``diffusion`` VLA networks and an untrained ``rwm``."""
    import torch

    from irlvla_gym.policies import VLAConfig, VLANetwork
    from reward_models import ModelConfig, RewardWorldModel

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    out = {}
    for head in ("gaussian", "diffusion"):
        out[head] = VLANetwork(VLAConfig.from_dict(tiny_vla_config(head=head))).save_pretrained(root / head)
    RewardWorldModel(ModelConfig(d_model=16, heads=2, hidden=32)).save_pretrained(root / "rwm")
    out["rwm"] = root / "rwm"
    return out


def tiny_overrides(variant: str, checkpoints: dict[str, Path], **extra: Any) -> list[dict[str, Any]]:
    """Config overrides for a tiny run of ``variant``: 64 env steps, 4 envs, 4 scenes, 2 evaluation scenes."""
    o: dict[str, Any] = {"total_timesteps": 64, "n_envs": 4, "checkpoint_every": 32,
                         "env": {"num_scenes": 4}, "eval": {"num_scenes": 2}}
    if variant.startswith("dppo"):
        o["dppo"] = {"n_steps": 8, "batch_size": 16, "n_epochs": 1, "ft_denoising_steps": 2}
        o["pretrained"] = str(checkpoints["diffusion"])
    else:
        o["ppo"] = {"n_steps": 8, "batch_size": 16, "n_epochs": 1}
    if "vla" in variant:
        o["env"]["obs_config"] = SMALL_OBS
        if not variant.startswith("dppo"):
            o["pretrained"] = str(checkpoints["gaussian"])
    if variant.endswith("-bc"):
        o["bc"] = {"num_scenes": 4, "batch_size": 8}
    if "rwm" in variant:
        o["reward"] = f"rwm:{checkpoints['rwm']}"
    o.update(extra)
    return [o]
