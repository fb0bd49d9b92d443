"""Smooth subspace exploration: the basis, the SB3 distribution, VLAPolicy(exploration="smooth") under PPO, and the
RWM dataset's policy samples drawn the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irlvla_gym.plans.codec import PLAN_SCALE, action_to_plan
from irlvla_gym.plans.exploration import SMOOTH_DIRECTIONS, SMOOTH_STD, perturb_actions, smooth_basis
from irlvla_gym.policies.exploration import SubspaceGaussianDistribution

from .conftest import make_env, tiny_config

KEYS = ("camera", "bev", "ego", "instruction")


def test_basis_rows_are_the_named_physical_offsets():
    basis = smooth_basis()
    assert basis.shape == (len(SMOOTH_DIRECTIONS), 24)
    offsets = basis.reshape(-1, 8, 3) * PLAN_SCALE  # back to metres / radians
    t = 0.5 * np.arange(1, 9)
    np.testing.assert_allclose(offsets[0, :, 0], t**2 / 2)  # lon_acc: 1 m/s^2 -> 8 m at 4 s
    np.testing.assert_allclose(offsets[1, :, 0], t**3 / 6)
    np.testing.assert_allclose(offsets[2, :, 1], t**2 / 2)
    assert np.all(offsets[:2, :, 1:] == 0) and np.all(offsets[2:, :, 0] == 0)
    assert np.all(np.diff(offsets[2, :, 2]) > 0)  # the lateral directions turn the heading with the path
    with pytest.raises(ValueError, match="lon_brake"):
        smooth_basis(("lon_acc", "lon_brake"))


def test_perturbations_start_smoothly_and_have_the_asked_spread():
    rng = np.random.default_rng(0)
    mean = np.zeros(24)
    acts = perturb_actions(mean, 4000, rng)
    plans = action_to_plan(np.clip(acts, -1, 1)).reshape(-1, 8, 3)
    # coefficient of lon_acc recovered by least squares has the default std
    coeff = (acts - mean) @ np.linalg.pinv(smooth_basis())
    np.testing.assert_allclose(coeff.std(axis=0), SMOOTH_STD, rtol=0.06)
    # no jump at the first pose: at 0.5 s the offset is a t^2/2 + j t^3/6 (a few cm), not a step
    assert np.abs(plans[:, 0, 0]).mean() < 0.1
    with pytest.raises(ValueError, match="std"):
        perturb_actions(mean, 2, rng, std=(1.0, 2.0))
    # one std row per sample: a zero row leaves that sample at the mean
    rows = np.array([SMOOTH_STD, (0.0, 0.0, 0.0, 0.0)])
    two = perturb_actions(mean, 2, rng, std=rows)
    assert np.abs(two[0]).max() > 0 and np.all(two[1] == 0)


def test_subspace_distribution_samples_in_span_and_log_prob_is_the_coefficients_density():
    basis = smooth_basis()
    dist = SubspaceGaussianDistribution(basis, 24)
    mean = torch.randn(5, 24) * 0.1
    log_std = torch.log(torch.tensor(SMOOTH_STD, dtype=torch.float32))
    dist.proba_distribution(mean, log_std)
    actions = dist.sample()
    coeff = dist.coefficients(actions)
    b = torch.as_tensor(basis, dtype=torch.float32)
    torch.testing.assert_close(mean + coeff @ b, actions, rtol=0, atol=1e-5)
    expected = torch.distributions.Normal(0.0, log_std.exp()).log_prob(coeff).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.mode(), mean)
    assert dist.entropy().shape == (5,)
    with pytest.raises(ValueError, match="log_std"):
        dist.proba_distribution(mean, torch.zeros(24))


def _ppo(env, **policy_kwargs):
    from stable_baselines3 import PPO

    from irlvla_gym.policies import VLAPolicy

    return PPO(VLAPolicy, env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=3e-4, seed=0, device="cpu",
               policy_kwargs=dict(vla_config=tiny_config(obs_keys=KEYS), **policy_kwargs))


def test_vla_policy_smooth_exploration_trains_saves_and_loads(tmp_path, scenes):
    from stable_baselines3 import PPO

    env = make_env(KEYS, scenes=scenes)
    model = _ppo(env, exploration="smooth", exploration_std=(0.4, 0.2, 0.1, 0.05))
    assert isinstance(model.policy.action_dist, SubspaceGaussianDistribution)
    torch.testing.assert_close(model.policy.log_std.detach().exp(), torch.tensor((0.4, 0.2, 0.1, 0.05)))
    obs = {k: np.stack([env.reset(options={"scene_index": i})[0][k] for i in range(4)]) for k in KEYS}
    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        actions, _, log_prob = model.policy(obs_t)
        _, log_prob_again, _ = model.policy.evaluate_actions(obs_t, actions)
        mean = model.policy.get_distribution(obs_t).mode()
    torch.testing.assert_close(log_prob_again, log_prob, rtol=0, atol=1e-4)  # PPO's first ratio is 1
    residual = (actions - mean) - ((actions - mean) @ torch.linalg.pinv(torch.tensor(smooth_basis(),
                                                                                      dtype=torch.float32))
                                   @ torch.tensor(smooth_basis(), dtype=torch.float32))
    assert float(residual.abs().max()) < 1e-5  # every sample differs from the mean only along the directions
    model.learn(128)
    assert model.policy.log_std.shape == (4,)
    model.save(tmp_path / "smooth.zip")
    loaded = PPO.load(tmp_path / "smooth.zip", env=env, device="cpu")
    assert loaded.policy.exploration == "smooth"
    torch.testing.assert_close(loaded.policy.log_std, model.policy.log_std)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_speed_factors_scale_only_the_lateral_directions():
    from irlvla_gym.plans.exploration import LATERAL_FACTOR_RANGE, NOMINAL_SPEED, direction_speed_factors

    speed = np.array([0.0, NOMINAL_SPEED / 2, NOMINAL_SPEED, 10 * NOMINAL_SPEED])
    factors = direction_speed_factors(speed)
    lateral = [SMOOTH_DIRECTIONS.index("lat_acc"), SMOOTH_DIRECTIONS.index("lat_jerk")]
    np.testing.assert_allclose(factors[:, [0, 1]], 1.0)
    np.testing.assert_allclose(factors[:, lateral[0]], [LATERAL_FACTOR_RANGE[0], 0.5, 1.0, LATERAL_FACTOR_RANGE[1]])
    np.testing.assert_allclose(factors[:, lateral[1]], factors[:, lateral[0]])
    torch.testing.assert_close(direction_speed_factors(torch.tensor(speed, dtype=torch.float32)),
                               torch.tensor(factors, dtype=torch.float32))


def test_vla_policy_speed_scaled_exploration_narrows_lateral_samples_of_slow_egos(tmp_path, scenes):
    from stable_baselines3 import PPO

    from irlvla_gym.obs.ego import SPEED
    from irlvla_gym.plans.exploration import direction_speed_factors

    env = make_env(KEYS, scenes=scenes)
    model = _ppo(env, exploration="smooth-speed")
    obs = {k: np.stack([env.reset(options={"scene_index": i % 4})[0][k] for i in range(8)]) for k in KEYS}
    obs["ego"][:4, SPEED] = 0.0  # standing egos (the rest drive at the scenes' speeds)
    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = model.policy.get_distribution(obs_t)
        actions, _, log_prob = model.policy(obs_t)
        _, log_prob_again, _ = model.policy.evaluate_actions(obs_t, actions)
    expected = model.policy.log_std.exp() * direction_speed_factors(obs_t["ego"][:, SPEED])
    torch.testing.assert_close(dist.distribution.stddev, expected)
    torch.testing.assert_close(log_prob_again, log_prob, rtol=0, atol=1e-4)
    model.learn(128)
    model.save(tmp_path / "speed.zip")
    loaded = PPO.load(tmp_path / "speed.zip", env=env, device="cpu")
    assert loaded.policy.exploration == "smooth-speed"
    from irlvla_gym.policies import VLAPolicy

    no_ego = ("bev", "instruction")
    with pytest.raises(ValueError, match="'ego' to the obs_keys"):
        PPO(VLAPolicy, make_env(no_ego, scenes=scenes), n_steps=64, batch_size=32, device="cpu",
            policy_kwargs=dict(vla_config=tiny_config(obs_keys=no_ego), exploration="smooth-speed"))


def test_vla_policy_exploration_arguments_are_checked(scenes):
    env = make_env(KEYS, scenes=scenes)
    with pytest.raises(ValueError, match="exploration 'wide'"):
        _ppo(env, exploration="wide")
    with pytest.raises(ValueError, match="exploration_std"):
        _ppo(env, exploration="smooth", log_std_init=-3.0)
    with pytest.raises(ValueError, match="exploration_std"):
        _ppo(env, exploration_std=(0.1, 0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="positive"):
        _ppo(env, exploration="smooth", exploration_std=(0.1, 0.0, 0.1, 0.1))


def test_rwm_dataset_policy_samples_follow_the_configured_exploration(scenes, tmp_path):
    from irlvla_gym.policies import VLANetwork
    from reward_models.dataset import CandidateConfig, CandidateGenerator, DatasetConfig, VLAPlanSampler

    net = VLANetwork(tiny_config(obs_keys=("bev", "ego", "instruction")))
    net.save_pretrained(tmp_path / "net")
    sampler = VLAPlanSampler(str(tmp_path / "net"))
    CandidateGenerator(CandidateConfig(policy_exploration="smooth", magnitudes=(1.0,)), policy=sampler)
    assert sampler.exploration == "smooth"
    plans = sampler.sample(scenes[0], None, 200, np.random.default_rng(0))
    from irlvla_gym.plans.codec import plan_to_action

    acts = plan_to_action(plans).reshape(200, 24)
    delta = acts[1:] - acts[0]
    inside = np.all(np.abs(acts[1:]) < 0.999, axis=1)  # clipping leaves the span; compare unclipped rows only
    coeff = delta[inside] @ np.linalg.pinv(smooth_basis())
    np.testing.assert_allclose(coeff @ smooth_basis(), delta[inside], atol=1e-5)
    np.testing.assert_allclose(coeff.std(axis=0), SMOOTH_STD, rtol=0.25)
    assert DatasetConfig(out=str(tmp_path), policy_samples=20).candidate_config().policy == 20
    with pytest.raises(ValueError, match="policy_exploration"):
        CandidateConfig(policy_exploration="wide")


def test_vla_policy_explores_only_the_given_directions(scenes):
    env = make_env(KEYS, scenes=scenes)
    model = _ppo(env, exploration="smooth", exploration_directions=("lon_acc", "lon_jerk"))
    torch.testing.assert_close(model.policy.log_std.detach().exp(), torch.tensor(SMOOTH_STD[:2]))
    basis = torch.tensor(smooth_basis(("lon_acc", "lon_jerk")), dtype=torch.float32)
    obs = {k: np.stack([env.reset(options={"scene_index": i})[0][k] for i in range(4)]) for k in KEYS}
    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        actions, _, _ = model.policy(obs_t)
        mean = model.policy.get_distribution(obs_t).mode()
    delta = (actions - mean).reshape(4, 8, 3)
    assert float(delta[..., 1:].abs().max()) < 1e-6  # no lateral offset or heading change sampled
    torch.testing.assert_close((actions - mean) @ torch.linalg.pinv(basis) @ basis, actions - mean)
    with pytest.raises(ValueError, match="unknown direction"):
        _ppo(env, exploration="smooth", exploration_directions=("lon_acc", "yaw"))
    with pytest.raises(ValueError, match="expected 2 values"):
        _ppo(env, exploration="smooth", exploration_directions=("lon_acc", "lon_jerk"), exploration_std=(0.1,))
    with pytest.raises(ValueError, match="exploration_directions apply only"):
        _ppo(env, exploration_directions=("lon_acc",))
