"""SB3's VecNormalize with the VLA policy: the documented setting (``norm_obs_keys=["ego"]``) trains and leaves the
image / token preprocessing unchanged; SB3's defaults (normalise every Dict entry) fail with one clear error; a
wrapper editing the env's space in place cannot change a policy's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from irlvla_gym.envs.sb3 import BatchedVecEnv, MultiProcessVecEnv, normalizable_obs_keys
from irlvla_gym.policies.network import prepare_observations
from irlvla_gym.policies.sb3 import VLAPolicy, check_obs_values

from .conftest import SMALL_OBS, make_env, tiny_config

KEYS = ("camera", "ego", "instruction")
FIX = r"norm_obs_keys=\['ego'\]"


def _venv(scenes, keys=KEYS, n=2):
    return BatchedVecEnv("IRLVLA-Navsim-v2", n, scenes=scenes, obs_keys=keys, obs_config=SMALL_OBS)


def _ppo(env, keys=KEYS, seed=0):
    return PPO(VLAPolicy, env, n_steps=8, batch_size=8, n_epochs=1, seed=seed, device="cpu",
               policy_kwargs=dict(vla_config=tiny_config(obs_keys=keys)))


def test_ppo_with_vecnormalize_ego_trains_and_keeps_camera_scaling(scenes):
    env = _venv(scenes)
    assert normalizable_obs_keys(env.observation_space) == ["ego"]
    venv = VecNormalize(env, norm_obs_keys=["ego"])
    model = _ppo(venv)
    assert model.policy.observation_space["camera"].dtype == np.uint8
    model.learn(16)
    assert model.rollout_buffer.observations["camera"].dtype == np.uint8
    assert model.rollout_buffer.observations["instruction"].dtype == np.int64
    assert venv.obs_rms["ego"].count > 1 and set(venv.obs_rms) == {"ego"}

    # Same weights, no wrapper: same outputs on the same raw observations.
    reference = _ppo(_venv(scenes))
    reference.policy.load_state_dict(model.policy.state_dict())
    raw = env.reset()
    a, _ = model.policy.predict(raw, deterministic=True)
    b, _ = reference.policy.predict(raw, deterministic=True)
    np.testing.assert_array_equal(a, b)

    # The camera reaches the network divided by 255 (SB3's scaling of a uint8 image), instruction as token ids.
    policy = model.policy
    obs, _ = policy.obs_to_tensor(raw)
    with torch.no_grad():
        features = policy.extract_features(obs)
        manual = {"camera": obs["camera"].float() / 255.0, "ego": obs["ego"].float(), "instruction": obs["instruction"]}
        expected = policy.features_extractor(manual)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_vecnormalize_defaults_fail_with_one_clear_error(scenes):
    # Images: VecNormalize replaces the camera / bev entries of its space with float32 Boxes -> refused at build.
    for keys, key in ((KEYS, "camera"), (("bev", "ego"), "bev")):
        env = _venv(scenes, keys)
        with pytest.raises(ValueError, match=rf"'{key}' as a uint8 0..255 image.*{FIX}"):
            _ppo(VecNormalize(env), keys)
        assert env.observation_space[key].dtype == np.uint8  # the wrapper edited its own copy only
        assert env.template.observation_space[key].dtype == np.uint8
    # Token ids: the space stays int64 but the values arrive normalised -> refused at the first forward.
    keys = ("ego", "instruction")
    model = _ppo(VecNormalize(_venv(scenes, keys)), keys)
    with pytest.raises(ValueError, match=rf"'instruction' reached the VLA policy as normalised.*{FIX}"):
        model.learn(8)


def test_policy_keeps_its_space_when_a_wrapper_edits_the_env_space(scenes):
    """A gym env under DummyVecEnv shares its space with SB3; VecNormalize (defaults) then edits it in place. The
    policy built before keeps scaling the BEV by 1/255, also when the rollout buffer turns float (integral pixels)."""
    keys = ("bev", "ego")
    dummy = DummyVecEnv([lambda: make_env(keys, scenes=scenes)])
    model = _ppo(dummy, keys)
    raw = dummy.reset()
    before, _ = model.policy.predict(raw, deterministic=True)
    VecNormalize(dummy)
    assert dummy.observation_space["bev"].dtype == np.float32  # SB3 edited the shared space ...
    assert model.policy.observation_space["bev"].dtype == np.uint8  # ... not the policy's copy
    after, _ = model.policy.predict(raw, deterministic=True)
    as_float, _ = model.policy.predict({k: v.astype(np.float32) for k, v in raw.items()}, deterministic=True)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(before, as_float, rtol=0, atol=1e-6)


def test_check_obs_values_and_copy_on_read(scenes):
    pixels = torch.tensor([[0.0, 17.0, 255.0]])
    check_obs_values({"camera": pixels, "instruction": torch.tensor([[3, 4]])}, KEYS)  # env-like values pass
    for bad in ({"camera": pixels / 255.0}, {"bev": -pixels}, {"instruction": torch.tensor([[0.5]])}):
        with pytest.raises(ValueError, match=FIX):
            check_obs_values(bad, ("camera", "bev", "instruction"))
    env = _venv(scenes, ("ego",), n=1)
    assert env.observation_space is not env.observation_space  # a fresh copy per read ...
    assert env.observation_space == env.template.observation_space  # ... of the template's space
    copy_on_read = type(BatchedVecEnv.__dict__["observation_space"])
    assert isinstance(MultiProcessVecEnv.__dict__["observation_space"], copy_on_read)
    with pytest.raises(ValueError, match="Dict"):
        normalizable_obs_keys(spaces.Box(0, 1, (2,)))
