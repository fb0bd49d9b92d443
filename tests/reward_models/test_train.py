"""Model shapes, training loss, checkpoints (round trip, resume, corruption)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reward_models import CheckpointError, RewardWorldModel
from reward_models.dataset import OBS_ENTRIES, load_dataset
from reward_models.train import TrainConfig, batch_tensors, compute_loss, train


def test_scene_encoded_once_scores_many_plans(tiny_data):
    data = load_dataset(tiny_data)
    model = RewardWorldModel().eval()
    obs = {k: data.obs[k][0] for k in OBS_ENTRIES}
    with torch.no_grad():
        enc = model.encode_scene(obs)
        pred = model.score(enc, data.plans[0])
        both = model.score(enc, np.concatenate([data.plans[0], data.plans[0][:3]]))
    assert pred.reward.shape == (1, 9)
    assert ((pred.reward >= 0) & (pred.reward <= 1)).all()
    assert set(pred.expected) == {"nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec"}
    torch.testing.assert_close(both.reward[:, :9], pred.reward, rtol=1e-5, atol=1e-6)  # plans are independent


def test_loss_falls_on_a_tiny_run(tiny_data):
    torch.manual_seed(0)
    data = load_dataset(tiny_data)
    model = RewardWorldModel()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = TrainConfig()
    obs, plans, labels = batch_tensors(data, np.arange(len(data)))
    losses = []
    for _ in range(25):
        loss, _ = compute_loss(model, obs, plans, labels, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoint_round_trip(tiny_data, tiny_ckpt, tmp_path):
    data = load_dataset(tiny_data)
    a = RewardWorldModel.from_pretrained(tiny_ckpt)
    obs = {k: data.obs[k] for k in OBS_ENTRIES}
    ra = a.predict_reward(obs, data.plans)
    a.save_pretrained(tmp_path / "copy")
    b = RewardWorldModel.from_pretrained(tmp_path / "copy")
    np.testing.assert_array_equal(ra, b.predict_reward(obs, data.plans))
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["format_version"] == 1 and "model" in cfg and "train" in cfg
    # provenance as a command, never the training machine's paths (the data folder was a tmp dir)
    assert cfg["data"].startswith("irlvla rwm dataset --split synthetic-train --num-scenes 3")
    assert str(tiny_data) not in json.dumps(cfg) and str(tiny_ckpt) not in json.dumps(cfg)


def test_resume_continues_from_saved_step(tiny_data, tmp_path):
    out = tmp_path / "ck"
    cfg = dict(batch_scenes=2, val_fraction=0.34)
    s1 = train(str(tiny_data), str(out), TrainConfig(epochs=1, **cfg), progress=False)
    assert s1["steps"] == 1
    s2 = train(str(tiny_data), str(out), TrainConfig(epochs=2, **cfg), progress=False)
    assert [h["epoch"] for h in s2["history"]] == [1, 2]
    assert s2["history"][0] == s1["history"][0] and s2["steps"] == 2
    # same result as training 2 epochs in one go
    s3 = train(str(tiny_data), str(tmp_path / "one"), TrainConfig(epochs=2, **cfg), progress=False)
    assert s3["history"][1]["val_loss"] == pytest.approx(s2["history"][1]["val_loss"], rel=1e-5)


def test_weight_average_is_validated_saved_and_resumed(tiny_data, tmp_path):
    from reward_models.checkpoint import load_tensors

    cfg = dict(batch_scenes=1, val_fraction=0.34, ema=0.5, patience=10)
    out = tmp_path / "ck"
    train(str(tiny_data), str(out), TrainConfig(epochs=1, **cfg), progress=False)
    s2 = train(str(tiny_data), str(out), TrainConfig(epochs=3, **cfg), progress=False)
    raw, avg = load_tensors(out / "last" / "model.safetensors"), load_tensors(out / "last" / "ema.safetensors")
    assert any(not torch.equal(raw[k], avg[k]) for k in raw)  # the average lags the raw weights
    best = int(np.argmin([h["val_loss"] for h in s2["history"]]))
    if best == 2:  # the saved model is the average of the best epoch
        saved = load_tensors(out / "model.safetensors")
        assert all(torch.equal(saved[k], avg[k]) for k in avg)
    s3 = train(str(tiny_data), str(tmp_path / "one"), TrainConfig(epochs=3, **cfg), progress=False)
    assert s3["history"][2]["val_loss"] == pytest.approx(s2["history"][2]["val_loss"], rel=1e-5)


def test_corrupted_checkpoint_names_the_file(tiny_ckpt, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad, ignore=shutil.ignore_patterns("tb", "last"))
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        RewardWorldModel.from_pretrained(bad)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        RewardWorldModel.from_pretrained(bad)
    shutil.copy(tiny_ckpt / "model.safetensors", weights)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        RewardWorldModel.from_pretrained(bad)
