"""Relabel-and-refit adds exactly the scored plans to the dataset, and the fine-tuning changes the model."""

from __future__ import annotations

import numpy as np
import torch


def test_relabel_adds_exactly_the_scored_plans():
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.dataset import LABELS, label_plans, reference_progress_fn
    from reward_models.refit import RelabelledPlans, Relabeller

    source = SceneSource("synthetic-train", num_scenes=4)
    relabeller = Relabeller(source.load)
    data = RelabelledPlans()
    scenes = np.array([2, 0, 2, 3])
    rng = np.random.default_rng(0)
    plans = np.stack([np.asarray(source.load(int(i)).ego.future) for i in scenes])
    plans = plans * rng.uniform(0.7, 1.3, size=(4, 1, 1))
    labels = relabeller.relabel(scenes, plans, data, step=5)
    assert len(data) == 4 and data.scene_keys == [0, 2, 3]
    ref_fn, _ = reference_progress_fn()
    for i, index in enumerate(scenes):
        scene = source.load(int(index))
        direct = label_plans(scene, plans[i][None], float(ref_fn(scene)))
        for k in LABELS:
            np.testing.assert_allclose(labels[k][i], direct[k][0], rtol=0, atol=0)
    # stored per scene in input order within the scene: rows of scene 0 first (np.unique order), then 2, then 3
    order = np.concatenate([np.flatnonzero(scenes == s) for s in (0, 2, 3)])
    np.testing.assert_array_equal(data.plans, plans[order].astype(np.float32))
    for k in LABELS:
        np.testing.assert_array_equal(data.labels[k], labels[k][order].astype(np.float32))
    np.testing.assert_array_equal(data.scene_row, [0, 1, 1, 2]) and np.testing.assert_array_equal(data.step, 5)
    # a second call appends; the scene observations are stored once
    relabeller.relabel(np.array([0]), plans[1:2], data, step=9)
    assert len(data) == 5 and data.obs["bev"].shape[0] == 3 and data.step[-1] == 9


def test_refitter_updates_the_model(tiny, rwm_data, tmp_path):
    from irlvla_gym.scenes.source import SceneSource
    from reward_models import RewardWorldModel
    from reward_models.refit import RefitConfig, RelabelledPlans, Refitter, Relabeller

    model = RewardWorldModel.from_pretrained(tiny["rwm"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = RelabelledPlans()
    source = SceneSource("synthetic-train", num_scenes=2)
    Relabeller(source.load).relabel(np.array([0, 1]), np.stack([source.load(i).ego.future for i in (0, 1)]), data)
    refitter = Refitter(model, rwm_data, RefitConfig(steps=2, batch_scenes=2, extra_batch=2))
    out = refitter.refit(data)
    assert out["seconds"] > 0 and "loss/base_total" in out and "loss/extra_total" in out
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    back = data.save(tmp_path / "plans.npz")
    with np.load(back, allow_pickle=False) as z:
        assert z["plans"].shape == (2, 8, 3) and z["label_epdms"].shape == (2,)


def test_pointwise_loss_shared_scene_encoding_equals_per_plan(tiny):
    """Encoding each distinct scene once (rows) + cached features gives the per-plan loss exactly."""
    from irlvla_gym.scenes.source import SceneSource
    from reward_models import RewardWorldModel
    from reward_models.model import OBS_ENTRIES, prepare_obs
    from reward_models.refit import RelabelledPlans, Relabeller, pointwise_loss

    model = RewardWorldModel.from_pretrained(tiny["rwm"])
    source = SceneSource("synthetic-train", num_scenes=2)
    data = RelabelledPlans()
    plans = np.stack([source.load(i).ego.future for i in (0, 1, 0)]) * np.array([1.0, 1.1, 0.8])[:, None, None]
    Relabeller(source.load).relabel(np.array([0, 1, 0]), plans, data)
    idx = np.arange(3)
    obs, p, labels = data.batch(idx)
    with torch.no_grad():
        direct, _ = pointwise_loss(model, obs, p, labels, 2.0)
        feats = model.plan_features(model.encode_scene(obs), p)
        shared, _ = pointwise_loss(model, prepare_obs({k: data.obs[k] for k in OBS_ENTRIES}, batched=True), None,
                                   labels, 2.0, feats=feats, rows=data.scene_row)
    torch.testing.assert_close(shared, direct)
