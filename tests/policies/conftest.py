"""Shared fixtures of the policy tests: a tiny VLA config, small observation settings and a few scenes."""

from __future__ import annotations

import numpy as np
import pytest

SMALL_OBS = {"camera_size": (32, 64), "bev_size": (32, 32)}
"""Small camera / BEV so env steps and forwards are cheap (the network resizes the camera anyway)."""


def tiny_config(**overrides) -> dict:
    """A VLAConfig dict small enough for one-core tests (d = 32, one layer everywhere)."""
    cfg = dict(image_size=(32, 64), patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
               text_hidden=32, text_layers=1, text_heads=2, bev_width=8, hidden=32, fusion_layers=1,
               fusion_heads=2, diffusion_steps=4, diffusion_layers=1)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def scenes():
    """Four synthetic-train scenes (generated once per session)."""
    from irlvla_gym.scenes.synthetic import generate_scene

    return [generate_scene(seed, split="synthetic-train") for seed in range(4)]


@pytest.fixture(scope="session")
def obs_batch(scenes) -> dict[str, np.ndarray]:
    """Env-format observations (B = 4) of every key the network reads, small ObsConfig."""
    from irlvla_gym.obs import ObservationBuilder

    return ObservationBuilder(("camera", "bev", "ego", "instruction", "agents", "map"), SMALL_OBS).observe_batch(scenes)


def make_env(obs_keys, env_id: str = "IRLVLA-Navsim-v2", scenes=None, **kwargs):
    import gymnasium as gym

    import irlvla_gym  # noqa: F401  (registers the envs)

    env = gym.make(env_id, scenes=scenes, obs_keys=tuple(obs_keys), obs_config=SMALL_OBS, **kwargs)
    if "camera" in obs_keys and "bev" in obs_keys:  # SB3's VecTransposeImage cannot handle the mixed layouts
        from irlvla_gym.policies.wrappers import ChannelsFirstCamera

        env = ChannelsFirstCamera(env)
    return env
