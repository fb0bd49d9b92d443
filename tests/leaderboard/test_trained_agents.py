"""Every model the project trains is a leaderboard agent spec: the baselines' PPO runs (CNN and VLA policies), plug-in
runs, and plain SB3 models trained on ``IRLVLA-Navsim-Residual-v2`` (flat ``compact`` observation, residual or
vocabulary action) load with ``irlvla leaderboard --agents <path>`` and plan exactly as their training env decodes."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from irlvla_gym.agents import (TRUST_PICKLE_ENV, AgentSpecError, SB3ModelAgent, UntrustedInputError, VLANetworkAgent,
                               file_sha256, load_agent, read_sidecar, save_sb3_model, sidecar_path)

SMALL_OBS = {"camera_size": [32, 64], "bev_size": [64, 64]}
RESIDUAL_ID = "IRLVLA-Navsim-Residual-v2"


def _tiny_vla(path):
    import torch

    from irlvla_gym.policies import VLAConfig, VLANetwork

    torch.manual_seed(0)
    cfg = dict(obs_keys=("camera", "ego", "instruction"), image_size=(32, 64), patch_size=16, vision_hidden=32,
               vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, hidden=32,
               fusion_layers=1, fusion_heads=2, log_std_init=-3.0)
    return VLANetwork(VLAConfig.from_dict(cfg)).save_pretrained(path)


def _overrides(variant: str, pretrained) -> list[dict]:
    o: dict = {"total_timesteps": 32, "n_envs": 4, "checkpoint_every": 32, "env": {"num_scenes": 4}}
    if variant == "plugin-a2c":
        o["plugin_kwargs"] = {"n_steps": 8}
    else:
        o["ppo"] = {"n_steps": 8, "batch_size": 16, "n_epochs": 1}
    if "vla" in variant:
        o["env"]["obs_config"] = SMALL_OBS
        o["pretrained"] = str(pretrained)
    return [o]


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory):
    """ppo-vla-epdms, ppo-cnn-epdms and plugin-a2c trained for 32 env steps by the baselines runner."""
    from baselines.common import run_dir_of
    from baselines.config import load_config
    from baselines.runner import train_run

    root = tmp_path_factory.mktemp("trained")
    pretrained = _tiny_vla(root / "vla")
    out = root / "runs"
    for variant in ("ppo-vla-epdms", "ppo-cnn-epdms", "plugin-a2c"):
        train_run(load_config(variant, "quick", _overrides(variant, pretrained)), 0, out, progress=False,
                  evaluate=False)
    return {v: run_dir_of(out, v, 0) for v in ("ppo-vla-epdms", "ppo-cnn-epdms", "plugin-a2c")}


def test_baselines_runs_write_a_complete_sidecar(baseline_runs):
    for variant, run in baseline_runs.items():
        side = read_sidecar(run / "model.zip")
        assert side["name"] == f"{variant}/s0" and side["env_id"] == "IRLVLA-Navsim-v2"
        assert side["action_type"] == "trajectory" and side["flatten_obs"] is False
        assert side["obs_config"]["camera_size"] == ([32, 64] if "vla" in variant else [128, 256])
    assert read_sidecar(baseline_runs["ppo-vla-epdms"] / "model.zip")["network"] == "network"


def test_baselines_runs_go_on_the_leaderboard_from_the_cli(baseline_runs, tmp_path, capsys, monkeypatch):
    from irlvla_gym.cli import main

    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)  # --trust-pickle exports it; undone after the test

    specs = [str(baseline_runs["ppo-vla-epdms"] / "model.zip"), str(baseline_runs["ppo-cnn-epdms"] / "model.zip"),
             str(baseline_runs["plugin-a2c"])]  # a run directory is a spec too
    code = main(["leaderboard", "--split", "synthetic-test", "--agents", *specs, "--num-scenes", "4", "--trust-pickle",
                 "--out", str(tmp_path / "lb"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = {r["agent"]: r for r in json.loads((tmp_path / "lb" / "leaderboard.json").read_text())["rows"]}
    assert set(rows) == {"ppo-vla-epdms/s0", "ppo-cnn-epdms/s0", "plugin-a2c/s0"}
    assert all(r["errors"] == 0 and r["scenes"] == 4 for r in rows.values())


def test_vla_run_zip_loads_through_its_network_without_pickle(baseline_runs, test_scenes, monkeypatch):
    """The VLA run's zip needs no --trust-pickle (its sidecar names the safetensors network) and plans as SB3's own
    load of the zip does (whose camera entry SB3 transposed to channels-first)."""
    from irlvla_gym.obs.registry import ObservationBuilder

    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    zip_path = baseline_runs["ppo-vla-epdms"] / "model.zip"
    agent = load_agent(str(zip_path))
    assert isinstance(agent, VLANetworkAgent) and agent.name == "ppo-vla-epdms/s0"
    direct = SB3ModelAgent.load(zip_path, trust_pickle=True)
    assert direct.model.observation_space["camera"].shape == (3, 32, 64)
    builder = ObservationBuilder(agent.obs_keys, agent.obs_config)
    obs = [builder.observe(s) for s in test_scenes]
    stacked = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    np.testing.assert_allclose(agent.plan_batch(stacked, test_scenes), direct.plan_batch(stacked, test_scenes),
                               atol=1e-5)
    # A CNN run's zip still needs the flag.
    with pytest.raises(UntrustedInputError, match="--trust-pickle"):
        load_agent(str(baseline_runs["ppo-cnn-epdms"] / "model.zip"))


def test_changed_zip_is_not_redirected_to_the_network(baseline_runs, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    run = tmp_path / "run"
    shutil.copytree(baseline_runs["ppo-vla-epdms"], run)
    with open(run / "model.zip", "ab") as fh:
        fh.write(b"\0")  # the sidecar's hash no longer matches: the zip itself is what gets loaded
    with pytest.raises(UntrustedInputError):
        load_agent(str(run / "model.zip"))
    side = json.loads(sidecar_path(run / "model.zip").read_text())
    side.update(network="../elsewhere", zip_sha256=file_sha256(run / "model.zip"))
    sidecar_path(run / "model.zip").write_text(json.dumps(side))
    with pytest.raises(AgentSpecError, match="outside"):
        load_agent(str(run / "model.zip"))
    sidecar_path(run / "model.zip").write_text("[1, 2]")
    with pytest.raises(AgentSpecError, match=r"model\.irlvla\.json"):
        load_agent(str(run / "model.zip"), trust_pickle=True)
    # A run written before sidecars named the network: its directory loads the network (no pickle), as
    # baselines.evaluate.load_run_agent does
    sidecar_path(run / "model.zip").unlink()
    agent = load_agent(str(run))
    assert isinstance(agent, VLANetworkAgent) and agent.name == "ppo-vla-epdms/s0"
    assert agent.obs_config.camera_size == (32, 64)


def _residual_env(**kwargs):
    import gymnasium as gym

    import irlvla_gym  # noqa: F401 - registers the ids

    return gym.make(RESIDUAL_ID, split="synthetic-test", num_scenes=4, **kwargs)


@pytest.fixture(scope="module")
def residual_models(tmp_path_factory):
    """Plain SB3 on the residual id: PPO (residual action) and DQN (vocabulary action), a few hundred steps."""
    from stable_baselines3 import DQN, PPO

    root = tmp_path_factory.mktemp("residual")
    ppo = PPO("MlpPolicy", _residual_env(), n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    ppo.learn(128)
    dqn = DQN("MlpPolicy", _residual_env(action_type="vocabulary"), learning_starts=16, buffer_size=256, seed=0,
              device="cpu")
    dqn.learn(64)
    paths = {"ppo": save_sb3_model(ppo, root / "ppo_residual.zip"),  # sidecar from model.get_env()
             "dqn": save_sb3_model(dqn, root / "dqn_vocabulary")}
    ppo.save(str(root / "bare_ppo.zip"))  # saved by SB3 alone: settings inferred from the spaces
    paths["bare"] = root / "bare_ppo.zip"
    return paths, {"ppo": ppo, "dqn": dqn}


def test_residual_sidecar_rebuilds_the_env_settings(residual_models):
    paths, _ = residual_models
    side = read_sidecar(paths["ppo"])
    assert side["env_id"] == RESIDUAL_ID and side["obs_keys"] == ["compact"] and side["flatten_obs"] is True
    assert side["action_type"] == "residual" and side["residual_reference"] == "route"
    assert read_sidecar(paths["dqn"])["action_type"] == "vocabulary" and paths["dqn"].suffix == ".zip"
    assert read_sidecar(paths["bare"]) is None
    bare = load_agent(str(paths["bare"]), trust_pickle=True)
    assert bare.obs_keys == ("compact",) and bare.flatten_obs and bare.settings["action_type"] == "residual"


@pytest.mark.parametrize("which, kwargs", [("ppo", {}), ("dqn", {"action_type": "vocabulary"})])
def test_residual_models_plan_as_the_env_decodes(residual_models, which, kwargs):
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.source import SceneSource

    paths, models = residual_models
    agent = load_agent(str(paths[which]), trust_pickle=True)
    env = _residual_env(**kwargs)
    source = SceneSource("synthetic-test")
    builder = ObservationBuilder(agent.obs_keys, agent.obs_config)
    for index in range(3):
        obs, _ = env.reset(options={"scene_index": index})
        scene = source.load(index)
        mine = builder.observe(scene)
        flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in mine.values()])
        np.testing.assert_allclose(flat, obs, atol=1e-6)  # the leaderboard's observation is the env's
        action, _ = models[which].predict(obs, deterministic=True)
        np.testing.assert_allclose(agent.plan(mine, scene), env.unwrapped.decode_action(action).plan, atol=1e-6)
    with pytest.raises(ValueError, match="needs the scene") if which == "ppo" else contextlib.nullcontext():
        agent.plan(mine, None)


def test_residual_models_on_the_leaderboard(residual_models):
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    paths, _ = residual_models
    result = run_leaderboard(LeaderboardConfig(split="synthetic-test", agents=[str(p) for p in paths.values()],
                                               num_scenes=4, progress=False, trust_pickle=True))
    assert [r["agent"] for r in result.rows] and all(r["errors"] == 0 for r in result.rows)
    assert {r["agent"] for r in result.rows} == {"ppo_residual", "dqn_vocabulary", "bare_ppo"}


def test_save_sb3_model_refuses_a_foreign_env(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=16, batch_size=16, device="cpu")
    with pytest.raises(ValueError, match="no IRL-VLA env"):
        save_sb3_model(model, tmp_path / "x.zip")
