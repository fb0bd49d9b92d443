"""The PPO speed-ups keep the math: uint8 camera resized in integers == SB3's float / 255 + area resize.

The reference is the pre-speed-up path, reproduced here: SB3's ``preprocess_obs`` (camera ``float() / 255``) and
``F.interpolate(mode="area")`` in the encoder. Tolerances: 1e-6 (float rounding of the pixel average, ~2e-7).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy

from irlvla_gym.policies.network import VLAEncoder, box_sum_uint8
from irlvla_gym.policies.sb3 import VLAPolicy

from .conftest import make_env, tiny_config

KEYS = ("camera", "ego", "instruction")
RESIZED = dict(image_size=(16, 32))  # the env's small camera is 32 x 64: a x2 area resize, as in the shipped config


def legacy_camera_pixels(encoder: VLAEncoder, camera: torch.Tensor) -> torch.Tensor:
    """The encoder's camera path before the speed-up: float in [0, 1] (SB3 divided by 255), area resize."""
    img = camera.float() / 255.0 if camera.dtype == torch.uint8 else camera.float()
    if tuple(img.shape[-2:]) != encoder.image_size:
        img = F.interpolate(img, size=encoder.image_size, mode="area")
    return (img - encoder.image_mean) / encoder.image_std


def use_legacy_path(policy: VLAPolicy) -> None:
    """Route ``policy`` through SB3's own preprocessing and the old encoder resize (the reference)."""
    encoder = policy.features_extractor.encoder
    encoder.camera_pixels = lambda camera: legacy_camera_pixels(encoder, camera)
    policy.extract_features = lambda obs, fe=None: ActorCriticPolicy.extract_features(policy, obs, fe)


def test_box_sum_and_camera_pixels_match_the_area_resize():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 3, 32, 64), dtype=torch.uint8, generator=gen)
    sums = box_sum_uint8(image, 2, 4)
    assert sums.dtype == torch.int16 and sums.shape == (3, 3, 16, 16)
    torch.testing.assert_close(sums.float(), F.avg_pool2d(image.float(), (2, 4)) * 8, rtol=0, atol=0)

    from irlvla_gym.policies.config import VLAConfig

    encoder = VLAEncoder(VLAConfig.from_dict(tiny_config(obs_keys=KEYS, **RESIZED)))
    reference = legacy_camera_pixels(encoder, image)
    torch.testing.assert_close(encoder.camera_pixels(image), reference, rtol=0, atol=1e-6)  # uint8 path
    torch.testing.assert_close(encoder.camera_pixels(image.float() / 255.0), reference, rtol=0, atol=1e-6)
    odd = torch.randint(0, 256, (2, 3, 30, 70), dtype=torch.uint8, generator=gen)  # no integer factor: fallback
    torch.testing.assert_close(encoder.camera_pixels(odd), legacy_camera_pixels(encoder, odd), rtol=0, atol=1e-6)


def _ppo(env, seed: int = 0):
    from stable_baselines3 import PPO

    return PPO(VLAPolicy, env, n_steps=16, batch_size=8, n_epochs=2, learning_rate=3e-4, seed=seed, device="cpu",
               policy_kwargs=dict(vla_config=tiny_config(obs_keys=KEYS, **RESIZED)))


@pytest.mark.parametrize("training", [False, True])
def test_policy_outputs_equal_the_legacy_path(scenes, training):
    env = make_env(KEYS, scenes=scenes)
    policy = _ppo(env).policy
    policy.set_training_mode(training)
    obs = {k: np.stack([env.reset(options={"scene_index": i})[0][k] for i in range(4)]) for k in KEYS}
    obs_t, _ = policy.obs_to_tensor(obs)
    assert obs_t["camera"].dtype == torch.uint8
    actions = torch.zeros(4, 24)
    with torch.no_grad():
        new = policy.evaluate_actions(obs_t, actions)
        mean_new = policy.get_distribution(obs_t).distribution.mean
        use_legacy_path(policy)
        old = policy.evaluate_actions(obs_t, actions)
        mean_old = policy.get_distribution(obs_t).distribution.mean
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(mean_new, mean_old, rtol=0, atol=1e-6)


def test_one_ppo_iteration_updates_the_same_parameters(scenes):
    """A rollout + two epochs of updates from the same seed: same parameters with and without the speed-up."""
    models = []
    for legacy in (False, True):
        model = _ppo(make_env(KEYS, scenes=scenes))
        if legacy:
            use_legacy_path(model.policy)
        model.learn(16)
        models.append(model)
    new, old = (m.policy.state_dict() for m in models)
    start = _ppo(make_env(KEYS, scenes=scenes)).policy.state_dict()
    assert any(not torch.equal(new[k], start[k]) for k in new)  # the update did move the weights
    for key in new:
        torch.testing.assert_close(new[key], old[key], rtol=0, atol=1e-6, msg=key)


def test_frozen_encoders_opt_in(tmp_path, scenes):
    """``frozen_encoders`` (opt-in, changes results): PPO leaves those encoders' weights alone, trains the rest,
    and a saved model rebuilds with the same encoders frozen."""
    from stable_baselines3 import PPO

    env = make_env(KEYS, scenes=scenes)
    model = PPO(VLAPolicy, env, n_steps=16, batch_size=8, n_epochs=1, learning_rate=3e-4, seed=0, device="cpu",
                policy_kwargs=dict(vla_config=tiny_config(obs_keys=KEYS), frozen_encoders=["vision", "language"]))
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(16)
    after = model.policy.state_dict()
    frozen = [k for k in after if "encoder.vision." in k or "encoder.language." in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    trained = [k for k in after if k not in frozen and not torch.equal(before[k], after[k])]
    assert any("encoder.vision_proj" in k for k in trained) and any("encoder.fusion" in k for k in trained)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", env=env, device="cpu")
    assert loaded.policy.frozen_encoders == ("vision", "language")
    assert not any(p.requires_grad for p in loaded.policy.features_extractor.encoder.vision.parameters())
    with pytest.raises(ValueError, match="frozen_encoders"):
        VLAPolicy(env.observation_space, env.action_space, lambda _: 1e-4, frozen_encoders=("fusion",))
