"""Fixtures of the hacking tests: tiny VLA / reward-model checkpoints, a tiny RWM dataset, a tiny probe set and a
tiny ppo-vla-rwm config, so every remedy trains end to end in seconds on one core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SMALL_OBS = {"camera_size": [32, 64], "bev_size": [64, 64]}
VLA_KEYS = ("camera", "ego", "instruction")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """``vla``: a tiny Gaussian-head VLA network; ``rwm``: an untrained small reward world model."""
    import torch

    from irlvla_gym.policies import VLAConfig, VLANetwork
    from reward_models import ModelConfig, RewardWorldModel

    root = tmp_path_factory.mktemp("hacking_ckpt")
    torch.manual_seed(0)
    cfg = dict(obs_keys=VLA_KEYS, image_size=(32, 64), patch_size=16, vision_hidden=32, vision_layers=1,
               vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, hidden=32, fusion_layers=1,
               fusion_heads=2, log_std_init=-3.0)
    VLANetwork(VLAConfig.from_dict(cfg)).save_pretrained(root / "vla")
    RewardWorldModel(ModelConfig(d_model=16, heads=2, hidden=32)).save_pretrained(root / "rwm")
    return {"vla": root / "vla", "rwm": root / "rwm"}


@pytest.fixture(scope="session")
def rwm_data(tmp_path_factory):
    """A 3-scene RWM dataset (8 candidates + the expert per scene) of synthetic-train."""
    from reward_models.dataset import CandidateConfig, build_dataset, load_dataset

    out = tmp_path_factory.mktemp("rwm_data")
    build_dataset("synthetic-train", out, num_scenes=3, candidates=CandidateConfig(num_candidates=8, vocab_near=2,
                  vocab_random=2, policy=0), progress=False)
    return load_dataset(out)


@pytest.fixture(scope="session")
def probe():
    """A 3-scene probe set of synthetic-val with the tiny VLA's observations."""
    from baselines.hacking.probe import ProbeSet

    return ProbeSet.from_split("synthetic-val", 3, VLA_KEYS, SMALL_OBS)


def tiny_run_config(tiny: dict[str, Path], **extra: Any):
    """ppo-vla-rwm with 64 env steps (2 rollouts of 4 envs x 8 steps), 4 scenes, the tiny checkpoints."""
    from baselines.config import load_config

    o: dict[str, Any] = {"total_timesteps": 64, "n_envs": 4, "pretrained": str(tiny["vla"]),
                         "reward": f"rwm:{tiny['rwm']}", "env": {"num_scenes": 4, "obs_config": SMALL_OBS},
                         "ppo": {"n_steps": 8, "batch_size": 16, "n_epochs": 1}}
    o.update(extra)
    return load_config("ppo-vla-rwm", "quick", [o])
