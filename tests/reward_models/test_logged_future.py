"""A reward model that reads the agents' logged futures (agent_forecast "logged", ObsConfig.agents_future)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_models.dataset import DatasetError, build_dataset, concat_data, load_dataset
from reward_models.model import ModelConfig, RewardWorldModel

from .conftest import TINY


@pytest.fixture(scope="module")
def logged_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("rwm_logged") / "data"
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False,
                  obs_config={"agents_future": "logged"})
    return out


def _model(forecast: str) -> RewardWorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(agent_forecast=forecast, obs_config={"agents_future": "logged"} if forecast == "logged" else None)
    return RewardWorldModel(cfg).eval()


def test_dataset_carries_the_future_and_plain_data_does_not(logged_data, tiny_data):
    data, plain = load_dataset(logged_data), load_dataset(tiny_data)
    assert data.obs["agents_future"].shape == (3, 32, 8, 4)
    assert "agents_future" not in plain.obs
    with pytest.raises(DatasetError, match="observation entries"):
        concat_data([data, plain])
    assert len(concat_data([data, data])) == 6


def test_logged_model_places_agents_on_their_logged_futures(logged_data):
    data = load_dataset(logged_data)
    obs = {k: v[:2] for k, v in data.obs.items()}
    model = _model("logged")
    with torch.no_grad():
        feats = model.plan_features(model.encode_scene(obs), data.plans[:2])
        moved = dict(obs, agents_future=obs["agents_future"] + np.float32(3.0))
        feats_moved = model.plan_features(model.encode_scene(moved), data.plans[:2])
    assert not torch.allclose(feats, feats_moved)  # the futures are read
    with pytest.raises(KeyError, match="agents_future"):
        model.encode_scene({k: v for k, v in obs.items() if k != "agents_future"})


def test_other_forecasts_ignore_a_future_entry(logged_data):
    data = load_dataset(logged_data)
    obs = {k: v[:2] for k, v in data.obs.items()}
    bare = {k: v for k, v in obs.items() if k != "agents_future"}
    for forecast in ("cv", "lane"):
        model = _model(forecast)
        with torch.no_grad():
            a = model(obs, data.plans[:2]).reward
            b = model(bare, data.plans[:2]).reward
        assert torch.equal(a, b), forecast


def test_training_a_logged_model_needs_logged_data(tiny_data, logged_data, tmp_path):
    from reward_models.train import TrainConfig, train

    cfg = TrainConfig(epochs=1, batch_scenes=2, val_fraction=0.34)
    with pytest.raises(DatasetError, match="agents-future logged"):
        train(str(tiny_data), str(tmp_path / "bad"), cfg, ModelConfig(agent_forecast="logged"), progress=False)
    summary = train(str(logged_data), str(tmp_path / "ok"), cfg, ModelConfig(agent_forecast="logged"),
                    progress=False)
    assert summary["epochs_done"] == 1


def test_scene_reward_builds_the_future_for_a_logged_model(tmp_path):
    from irlvla_gym.scenes.synthetic import generate_scene
    from reward_models.checkpoint import save_model
    from reward_models.reward_fn import SceneRewardFn

    model = _model("logged")
    save_model(model, tmp_path / "logged")
    fn = SceneRewardFn(tmp_path / "logged")
    scenes = [generate_scene(s) for s in range(3)]
    plans = np.zeros((3, 8, 3), np.float32)
    plans[:, :, 0] = np.arange(1, 9) * 2.0
    batch = fn.score_batch(scenes, plans)
    single = [fn(scene, plan) for scene, plan in zip(scenes, plans)]
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert fn.builder.config.agents_future == "logged"


def test_reobserved_dataset_equals_a_fresh_build(tiny_data, logged_data, tmp_path):
    from reward_models.dataset import reobserve_dataset

    out = tmp_path / "reobserved"
    manifest = reobserve_dataset(tiny_data, out, {"agents_future": "logged"})
    assert manifest["observations_from"]["obs_config"] is None
    again, fresh = load_dataset(out), load_dataset(logged_data)
    assert sorted(again.obs) == sorted(fresh.obs)
    for k in fresh.obs:
        np.testing.assert_array_equal(again.obs[k], fresh.obs[k], err_msg=k)
    np.testing.assert_array_equal(again.plans, fresh.plans)
    for k in fresh.labels:
        np.testing.assert_array_equal(again.labels[k], fresh.labels[k], err_msg=k)
    assert reobserve_dataset(tiny_data, out, {"agents_future": "logged"})["shards"] == manifest["shards"]  # resume
    with pytest.raises(DatasetError, match=r"different settings \(obs_config\)"):
        reobserve_dataset(tiny_data, out, {"max_agents": 64})
