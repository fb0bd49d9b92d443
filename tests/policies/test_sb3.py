"""VLAPolicy under SB3's PPO: both envs, learning, save/load, pretrained weights, rl-zoo3 yaml, threads."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import KVWriter, Logger

from irlvla_gym.policies.network import VLANetwork
from irlvla_gym.policies.sb3 import VLAPolicy

from .conftest import make_env, tiny_config

KEYS = ("camera", "bev", "ego", "instruction")


class Capture(KVWriter):
    """SB3 logger output that keeps every dumped key/value dict."""

    def __init__(self):
        self.rows: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.rows.append(dict(key_values))


def _ppo(env, **policy_kwargs):
    from stable_baselines3 import PPO

    policy_kwargs.setdefault("vla_config", tiny_config(obs_keys=KEYS))
    return PPO(VLAPolicy, env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=3e-4, seed=0, device="cpu",
               policy_kwargs=policy_kwargs)


@pytest.mark.parametrize("head", ["gaussian", "diffusion"])
def test_ppo_learns_saves_and_loads(tmp_path, scenes, head):
    from stable_baselines3 import PPO

    env = make_env(KEYS, scenes=scenes)
    model = _ppo(env, vla_config=tiny_config(obs_keys=KEYS, head=head))
    capture = Capture()
    model.set_logger(Logger(folder=None, output_formats=[capture]))
    before = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    model.learn(192 if head == "gaussian" else 128)
    losses = [row["train/loss"] for row in capture.rows if "train/loss" in row]
    assert losses and np.all(np.isfinite(losses))
    after = model.policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("features_extractor.encoder.vision") for k in changed)
    assert any(k.startswith("action_net") for k in changed) and "value_net.weight" in changed

    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", env=env, device="cpu")
    obs = {k: np.stack([env.reset(options={"scene_index": i})[0][k] for i in range(3)]) for k in KEYS}
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    assert a.shape == (3, 24)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_ppo_on_vector_observations(scenes):
    """Agents and map polylines (with their masks, which SB3 hands over as floats) train under PPO, and the policy's
    mean is the network's plan."""
    keys = ("agents", "map", "ego")
    env = make_env(keys, scenes=scenes)
    model = _ppo(env, vla_config=tiny_config(obs_keys=keys))
    before = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    model.learn(64)
    changed = [k for k, v in model.policy.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("features_extractor.encoder.agents") for k in changed)
    assert any(k.startswith("features_extractor.encoder.map") for k in changed)
    obs, _ = env.reset(seed=0)
    policy = model.policy.eval()
    action, _ = model.predict(obs, deterministic=True)
    from irlvla_gym.plans.codec import action_to_plan

    plan = policy.network.plan({k: v[None] for k, v in obs.items()})
    np.testing.assert_allclose(action_to_plan(action[None]), plan, atol=1e-5)


def test_policy_mean_is_the_network_plan(scenes):
    """The Gaussian's mean is the head's output (for the diffusion head: its deterministic sample)."""
    env = make_env(KEYS, scenes=scenes)
    model = _ppo(env, vla_config=tiny_config(obs_keys=KEYS, head="diffusion"))
    policy = model.policy.eval()
    obs, _ = env.reset(seed=0)
    obs_t, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = policy.get_distribution(obs_t)
        plan = policy.network.plan({k: v[None] for k, v in obs.items()})
    from irlvla_gym.plans.codec import action_to_plan

    np.testing.assert_allclose(action_to_plan(dist.distribution.mean.numpy()), plan, atol=1e-5)
    assert torch.equal(dist.distribution.stddev[0], policy.log_std.exp())
    assert policy.log_std is policy.action_net.log_std


def test_pretrained_weights_survive_ppo_construction(tmp_path, scenes):
    torch.manual_seed(5)
    net = VLANetwork(tiny_config(obs_keys=KEYS))
    with torch.no_grad():  # make the weights unmistakable (not what any init would produce)
        for p in net.parameters():
            p.add_(0.5)
    net.save_pretrained(tmp_path / "ckpt")
    env = make_env(KEYS, scenes=scenes)
    for ortho in (False, True):
        model = _ppo(env, vla_config=None, pretrained_path=str(tmp_path / "ckpt"), ortho_init=ortho)
        got = model.policy.network.state_dict()
        for name, value in net.state_dict().items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    # log_std_init overrides only the log-std
    model = _ppo(env, vla_config=None, pretrained_path=str(tmp_path / "ckpt"), log_std_init=-3.0)
    assert torch.all(model.policy.log_std == -3.0)
    torch.testing.assert_close(model.policy.network.state_dict()["head.mlp.1.weight"],
                               net.state_dict()["head.mlp.1.weight"])


def test_closed_loop_and_vocabulary_envs(scenes):
    from stable_baselines3 import PPO

    env = make_env(("bev", "ego"), "IRLVLA-Navsim-ClosedLoop-v2", scenes=scenes)
    model = PPO(VLAPolicy, env, n_steps=32, batch_size=16, n_epochs=1, device="cpu", seed=0,
                policy_kwargs=dict(vla_config=tiny_config(obs_keys=("bev", "ego"))))
    model.learn(32)
    env = make_env(("bev", "ego", "instruction"), scenes=scenes, action_type="vocabulary")
    model = PPO(VLAPolicy, env, n_steps=16, batch_size=16, n_epochs=1, device="cpu", seed=0,
                policy_kwargs=dict(vla_config=tiny_config(obs_keys=("bev", "ego", "instruction"))))
    model.learn(16)
    action, _ = model.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(int(action))
    with pytest.raises(ValueError):
        model.policy.network  # no planning head on a Discrete action space


def test_missing_obs_keys_raise(scenes):
    env = make_env(("bev", "ego"), scenes=scenes)
    with pytest.raises(ValueError, match="obs_keys"):
        _ppo(env, vla_config=tiny_config(obs_keys=("camera", "ego")))


def test_default_config_reads_the_env_keys(scenes):
    env = make_env(("bev", "ego", "instruction"), scenes=scenes)
    model = _ppo(env, vla_config=None)
    assert model.policy.vla_config.obs_keys == ("bev", "ego", "instruction")


def test_one_torch_thread_by_default(scenes, monkeypatch):
    monkeypatch.delenv("IRLVLA_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _ppo(make_env(("ego",), scenes=scenes), vla_config=tiny_config(obs_keys=("ego",)))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_rl_zoo3_yaml_parses_and_builds_ppo(scenes):
    """The documented rl-zoo3 file: parse it, resolve the policy class path as rl-zoo3 does, construct PPO."""
    import yaml
    from stable_baselines3 import PPO

    path = Path(importlib.import_module("irlvla_gym.policies").__file__).parent / "rl_zoo3_vla.yml"
    config = yaml.safe_load(path.read_text())
    assert set(config) == {"IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"}
    for env_id, hyper in config.items():
        hyper = dict(hyper)
        module, _, name = hyper.pop("policy").rpartition(".")
        policy_class = getattr(importlib.import_module(module), name)
        assert policy_class is VLAPolicy
        env_kwargs = hyper.pop("env_kwargs")
        for key in ("n_envs", "n_timesteps"):
            hyper.pop(key)
        policy_kwargs = hyper.pop("policy_kwargs")
        env = make_env(env_kwargs["obs_keys"], env_id, scenes=scenes)
        from irlvla_gym.policies.network import CHECKPOINT_DIR

        if not (CHECKPOINT_DIR / policy_kwargs["pretrained_path"] / "config.json").is_file():
            policy_kwargs = dict(policy_kwargs, pretrained_path=None,
                                 vla_config=tiny_config(obs_keys=env_kwargs["obs_keys"]))
        model = PPO(policy_class, env, device="cpu", policy_kwargs=policy_kwargs, **hyper)
        assert model.policy.vla_config.obs_keys == tuple(env_kwargs["obs_keys"])
        assert model.policy.log_std.exp().max() < 0.1


def test_policy_save_and_load_alone(tmp_path, scenes):
    """SB3's policy-only save/load rebuilds from the saved config (no checkpoint or vision source needed)."""
    env = make_env(("camera", "ego"), scenes=scenes)
    model = _ppo(env, vla_config=tiny_config(obs_keys=("camera", "ego")))
    model.policy.save(tmp_path / "policy.pt")
    loaded = VLAPolicy.load(tmp_path / "policy.pt", device="cpu")
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(model.policy.predict(obs, deterministic=True)[0],
                               loaded.predict(obs, deterministic=True)[0], atol=1e-6)


@pytest.mark.parametrize("head", ["gaussian", "diffusion"])
def test_train_mode_log_prob_equals_rollout_log_prob(scenes, head):
    """No dropout anywhere: PPO's first-epoch probability ratio (train mode vs rollout in eval mode) is exactly 1."""
    env = make_env(KEYS, scenes=scenes)
    policy = _ppo(env, vla_config=tiny_config(obs_keys=KEYS, head=head)).policy
    obs = {k: np.stack([env.reset(options={"scene_index": i})[0][k] for i in range(4)]) for k in KEYS}
    obs_t, _ = policy.obs_to_tensor(obs)
    policy.set_training_mode(False)
    with torch.no_grad():
        actions, _, log_prob = policy(obs_t)
        policy.set_training_mode(True)
        _, log_prob_train, _ = policy.evaluate_actions(obs_t, actions)
    torch.testing.assert_close(log_prob_train, log_prob, rtol=0, atol=1e-4)
