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
    if variant.endswith("-greedy"):
        o["distill"] = {"epochs": 1, "num_scenes": 8, "samples": 2, "batch_size": 4, "val_scenes": 4,
                        "val_score_scenes": 2, "reward": str(checkpoints["rwm"])}
    o.update(extra)
    return [o]


ANCHOR_ENV = {"num_scenes": 4, "obs_keys": list(VLA_KEYS), "obs_config": SMALL_OBS}
"""The tiny env of the anchor tests."""


@pytest.fixture(scope="module")
def dataset():
    """Expert actions of the anchor tests' env."""
    from baselines.anchor import ExpertDataset

    return ExpertDataset.from_env_config(ANCHOR_ENV)


def anchor_model(checkpoints: dict[str, Path], **ppo_kwargs: Any):
    """A PPOWithAnchor on 2 tiny envs with the tiny Gaussian VLA checkpoint (``ppo_kwargs``: n_steps, batch_size...)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from baselines.anchor import PPOWithAnchor
    from irlvla_gym.policies import VLAPolicy

    venv = DummyVecEnv([lambda: gym.make("IRLVLA-Navsim-v2", **ANCHOR_ENV)] * 2)
    return PPOWithAnchor(VLAPolicy, venv, seed=0, device="cpu",
                         policy_kwargs={"pretrained_path": str(checkpoints["gaussian"])}, **ppo_kwargs)

