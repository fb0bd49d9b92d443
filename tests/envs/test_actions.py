"""Action scaling, action types and the trajectory vocabulary."""

from __future__ import annotations

import numpy as np

from irlvla_gym.plans.codec import (
    ACTION_DIM, PLAN_SCALE, TrajectoryAction, VocabularyAction, action_to_plan, plan_to_action,
)
from irlvla_gym.plans.vocabulary import DATA_DIR, build_vocabulary, kmeans, load_vocabulary


def test_scaling_roundtrip_and_coverage(synthetic):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (5, ACTION_DIM)).astype(np.float32)
    np.testing.assert_allclose(plan_to_action(action_to_plan(a)), a, atol=1e-6)
    assert action_to_plan(np.zeros(ACTION_DIM)).shape == (8, 3)
    assert np.all(action_to_plan(np.zeros(ACTION_DIM)) == 0)  # action 0 = stay
    for scene in synthetic:  # expert plans lie strictly inside the box
        assert np.all(np.abs(scene.ego.future) < PLAN_SCALE)
        np.testing.assert_allclose(action_to_plan(plan_to_action(scene.ego.future)), scene.ego.future, atol=1e-4)
    # Values outside the box are clipped.
    np.testing.assert_array_equal(action_to_plan(np.full(ACTION_DIM, 5.0)), PLAN_SCALE)


def test_trajectory_decode_flags():
    t = TrajectoryAction()
    assert t.space().shape == (24,) and t.space().dtype == np.float32
    ok = t.decode(np.zeros(24, np.float32))
    assert not ok.invalid and not ok.clipped
    assert t.decode(np.full(24, 2.0)).clipped
    bad = t.decode(np.r_[np.nan, np.inf, np.zeros(22)])
    assert bad.invalid and np.all(np.isfinite(bad.plan))
    assert t.decode("not an action").invalid


def test_vocabulary_shipped_and_decode():
    assert (DATA_DIR / "vocabulary_256.json").exists()
    vocab = load_vocabulary(256)
    assert vocab.shape == (256, 8, 3) and np.all(np.isfinite(vocab))
    v = VocabularyAction(vocab)
    assert v.space().n == 256
    np.testing.assert_array_equal(v.decode(3).plan, vocab[3])
    for bad in (-1, 256, np.nan):
        assert v.decode(bad).invalid
    assert v.encode(vocab[17]) == 17


def test_kmeans_and_build(synthetic):
    pts = np.r_[np.zeros((10, 2)), np.ones((10, 2)) * 10]
    c = kmeans(pts, 2, seed=0)
    np.testing.assert_allclose(np.sort(c[:, 0]), [0.0, 10.0])
    plans = np.stack([s.ego.future for s in synthetic] * 2)
    vocab = build_vocabulary(3, plans)
    assert vocab.shape == (3, 8, 3)


def test_other_k_built_and_cached(tmp_path, monkeypatch, synthetic):
    import irlvla_gym.plans.vocabulary as V

    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    calls = []

    def fake_plans(split="synthetic-train", num_scenes=0):
        calls.append(num_scenes)
        return np.stack([s.ego.future for s in synthetic] * 3)

    monkeypatch.setattr(V, "expert_plans", fake_plans)
    first = V.load_vocabulary(4)
    assert first.shape == (4, 8, 3) and (tmp_path / "vocabulary" / "vocabulary_4.npy").exists()
    np.testing.assert_array_equal(V.load_vocabulary(4), first)
    assert len(calls) == 1
