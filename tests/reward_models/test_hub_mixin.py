"""Reward world model (and ensemble) save/load through huggingface_hub's PyTorchModelHubMixin (issue ecosystem): the
shipped checkpoints load unchanged with identical scores, transformers' AutoConfig reads a saved config.json, and a
Hub repo id loads through the mixin (offline: the download is faked with local files)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from reward_models.checkpoint import MODEL_TYPE, SHIPPED_DIR, CheckpointError, register_auto_config, shipped_checkpoints
from reward_models.ensemble import ENSEMBLE_MODEL_TYPE, EnsembleRewardModel
from reward_models.model import ModelConfig, RewardWorldModel


@pytest.fixture(scope="module")
def scenes():
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.plans.vocabulary import load_vocabulary
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models.model import OBS_KEYS

    spec = SPLITS["synthetic-test"]
    obs = ObservationBuilder(OBS_KEYS).observe_batch([generate_scene(spec.first_seed + i, spec.config, spec.name)
                                                      for i in range(3)])
    plans = np.stack([load_vocabulary(256)[::8]] * 3).astype(np.float32)  # (3, 32, 8, 3)
    return obs, plans


def reference_load(name: str) -> RewardWorldModel:
    """How the hand-written loader (before the mixin) built a model: config.json's ``model``, strict state dict."""
    from safetensors.torch import load_file

    cfg = json.loads((SHIPPED_DIR / name / "config.json").read_text())
    model = RewardWorldModel(ModelConfig.from_dict(cfg["model"]))
    model.load_state_dict(load_file(str(SHIPPED_DIR / name / "model.safetensors")))
    return model.eval()


@pytest.mark.parametrize("name", ["default", "policy_aware", "real", "v1"])
def test_shipped_checkpoints_score_identically(name, scenes, tmp_path):
    if name not in shipped_checkpoints():
        pytest.skip(f"{name} not shipped")
    obs, plans = scenes
    new = RewardWorldModel.from_pretrained(name)
    expected = reference_load(name).predict_subscores(obs, plans)
    got = new.predict_subscores(obs, plans)
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)
    assert not new.training and new.checkpoint_info["format"] == "irlvla-rwm"
    out = new.save_pretrained(tmp_path / name, extra={"note": "copy"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == MODEL_TYPE and saved["note"] == "copy" and "auto_map" not in saved
    assert np.array_equal(RewardWorldModel.from_pretrained(out).predict_reward(obs, plans), expected["reward"])


def test_default_by_none_and_autoconfig(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = RewardWorldModel.from_pretrained(None)
    assert model.checkpoint_info == RewardWorldModel.from_pretrained(SHIPPED_DIR / "default").checkpoint_info
    torch.manual_seed(0)
    small = RewardWorldModel(ModelConfig(d_model=16, heads=2, hidden=32))
    out = small.save_pretrained(tmp_path / "rwm", extra={"epoch": 1})
    register_auto_config()
    hf = transformers.AutoConfig.from_pretrained(str(out))
    assert hf.model_type == MODEL_TYPE and hf.epoch == 1
    assert ModelConfig.from_dict(hf.model) == small.config
    card = small.save_pretrained(tmp_path / "card", model_card=True)
    assert (card / "README.md").is_file()
    back = RewardWorldModel.from_pretrained(card)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), small.state_dict().values()))


def test_hub_repo_id_and_missing(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.hub_mixin

    torch.manual_seed(1)
    small = RewardWorldModel(ModelConfig(d_model=16, heads=2, hidden=32))
    remote = small.save_pretrained(tmp_path / "remote")
    snapshot = tmp_path / "cache" / "snapshots" / "abc"

    def fake_download(repo_id, filename, **kwargs):
        assert repo_id == "someone/tiny-rwm"
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(remote / filename, snapshot / filename))

    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.chdir(tmp_path)
    back = RewardWorldModel.from_pretrained("someone/tiny-rwm")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), small.state_dict().values()))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="shipped"):
        RewardWorldModel.from_pretrained(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="Hub repo could not be loaded"):
        RewardWorldModel.from_pretrained("nobody/nothing", local_files_only=True, cache_dir=str(tmp_path / "hf"))


def test_ensemble_round_trip_and_old_layout(tmp_path, scenes):
    transformers = pytest.importorskip("transformers")
    from irlvla_gym.policies.config import auto_config_class

    obs, plans = scenes
    torch.manual_seed(2)
    ens = EnsembleRewardModel([RewardWorldModel(ModelConfig(d_model=16, heads=2, hidden=32)) for _ in range(2)],
                              beta=0.5)
    out = ens.save_pretrained(tmp_path / "ens", extra={"note": "x"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "ensemble.json", "member-0", "member-1"]
    expected = ens.eval().predict_reward(obs, plans)
    back = EnsembleRewardModel.from_pretrained(out)
    assert back.beta == 0.5 and np.array_equal(back.predict_reward(obs, plans), expected)
    assert EnsembleRewardModel.from_pretrained(out, beta=0.0).beta == 0.0
    auto_config_class(ENSEMBLE_MODEL_TYPE)
    hf = transformers.AutoConfig.from_pretrained(str(out))
    assert hf.members == ["member-0", "member-1"] and hf.beta == 0.5
    (out / "config.json").unlink()  # an ensemble written before config.json existed
    assert np.array_equal(EnsembleRewardModel.from_pretrained(out).predict_reward(obs, plans), expected)
    with pytest.raises(CheckpointError, match="ensemble.json"):
        EnsembleRewardModel.from_pretrained(tmp_path / "missing")
