"""Registration: both ids, both spellings, light import."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

from irlvla_gym.envs.testing import small_kwargs


def test_import_registers_without_heavy_modules():
    code = ("import sys, gymnasium as gym, irlvla_gym; "
            "assert 'IRLVLA-Navsim-v2' in gym.registry and 'IRLVLA-Navsim-ClosedLoop-v2' in gym.registry; "
            "heavy = [m for m in ('torch', 'irlvla_gym.sim', 'irlvla_gym.metrics', 'irlvla_gym.envs.navsim_env') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_make_with_module_prefix_without_prior_import():
    code = ("import gymnasium as gym; env = gym.make('irlvla_gym:IRLVLA-Navsim-v2', num_scenes=2, "
            "obs_keys=('ego',)); print(type(env.unwrapped).__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd="/", capture_output=True, text=True)
    assert out.stdout.strip() == "NavsimEnv"


@pytest.mark.parametrize("env_id", ["IRLVLA-Navsim-v2", "irlvla_gym:IRLVLA-Navsim-v2",
                                    "IRLVLA-Navsim-ClosedLoop-v2", "irlvla_gym:IRLVLA-Navsim-ClosedLoop-v2"])
def test_make_both_spellings(env_id, synthetic):
    import irlvla_gym  # noqa: F401

    env = gym.make(env_id, **small_kwargs(synthetic[:1]))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["token"] == synthetic[0].token
    env.close()


def test_register_is_idempotent():
    from irlvla_gym.envs.registration import register_envs

    register_envs()
    register_envs()
    assert "IRLVLA-Navsim-v2" in gym.registry


def test_config_dict_and_unknown_argument(synthetic):
    from irlvla_gym.envs.navsim_env import NavsimEnv

    env = NavsimEnv(config={"scenes": synthetic[:1], "obs_keys": ["ego"], "traffic": "idm"}, traffic="log")
    assert env.config.traffic == "log" and env.config.obs_keys == ("ego",)
    with pytest.raises(TypeError, match="unknown env argument"):
        NavsimEnv(config={"scenes": synthetic[:1], "bogus": 1})
    with pytest.raises(ValueError, match="traffic"):
        NavsimEnv(scenes=synthetic[:1], traffic="magic")
