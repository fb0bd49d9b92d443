"""Item 6 of the trust issue: RWM checkpoints with NaN/inf weights or changed bytes are refused, naming the file."""

from __future__ import annotations

import json

import pytest
import torch

from reward_models.checkpoint import CheckpointError, read_checkpoint, save_model


@pytest.fixture
def saved(tmp_path):
    from reward_models.model import ModelConfig, RewardWorldModel

    model = RewardWorldModel(ModelConfig())
    save_model(model, tmp_path / "ck", extra={"note": "test"})
    return tmp_path / "ck", model


def test_checksum_is_recorded_and_verified(saved):
    d, _ = saved
    cfg = json.loads((d / "config.json").read_text())
    assert len(cfg["model_sha256"]) == 64 and cfg["note"] == "test"
    read_checkpoint(d)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight: still valid safetensors
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: checksum mismatch"):
        read_checkpoint(d)


def test_checkpoints_without_a_checksum_still_load(saved):
    d, _ = saved
    cfg = json.loads((d / "config.json").read_text())
    del cfg["model_sha256"]
    (d / "config.json").write_text(json.dumps(cfg))
    read_checkpoint(d)
    read_checkpoint("default")  # the shipped checkpoints have none


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(saved, bad):
    from reward_models.checkpoint import save_tensors

    d, model = saved
    state = model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = bad
    save_tensors(d / "model.safetensors", state)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["model_sha256"]  # an old checkpoint (or a consistent forged one): the values are still checked
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: tensor '{name}' has 1 NaN/inf"):
        read_checkpoint(d)
    with pytest.raises(CheckpointError):
        from reward_models.model import RewardWorldModel

        RewardWorldModel.from_pretrained(d)
    assert torch.isfinite(model.state_dict()[name]).all()


def test_non_finite_rewards_raise_a_clear_error():
    import numpy as np

    from reward_models.reward_fn import NonFiniteRewardError, finite_rewards

    ok = np.array([0.1, 0.9])
    assert finite_rewards(ok, "x") is ok
    with pytest.raises(NonFiniteRewardError, match=r"RWMRewardFn: the reward model produced 1 non-finite.*row 1"):
        finite_rewards(np.array([0.5, np.nan, 0.2]), "RWMRewardFn")


def test_scene_reward_fn_refuses_nan_outputs(monkeypatch):
    import numpy as np

    from irlvla_gym.scenes.source import SceneSource
    from reward_models.reward_fn import NonFiniteRewardError, SceneRewardFn

    fn = SceneRewardFn()
    real = fn.model.score

    def nan_score(*args, **kwargs):
        out = real(*args, **kwargs)
        out.reward.fill_(float("nan"))
        return out

    monkeypatch.setattr(fn.model, "score", nan_score)
    scene = SceneSource("synthetic-test").load(0)
    with pytest.raises(NonFiniteRewardError, match="SceneRewardFn"):
        fn(scene, np.zeros((8, 3)))
