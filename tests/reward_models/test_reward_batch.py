"""The batched env reward: ``SceneRewardFn.score_batch`` (and the ensemble's ``ModelRewardFn``) equals per-row
``fn(scene, plan)`` calls up to float32 rounding, in the plan-once and closed-loop envs; ``SceneEncoding.concat``
pads encodings of different batches without changing any score; ``pack_rows`` lays rows out as a plan grid."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import irlvla_gym  # noqa: F401  (registers the envs)
from irlvla_gym.envs.testing import small_kwargs
from reward_models import RewardWorldModel, SceneRewardFn
from reward_models.reward_fn import pack_rows

ATOL = 1e-5


@pytest.fixture(scope="module")
def scenes():
    """Five synthetic scenes and a road without agents (zero agent slots beside full ones)."""
    from irlvla_gym.scenes.synthetic import generate_scene
    from irlvla_gym.scenes.testing import straight_road_scene

    return [generate_scene(seed, split="synthetic-train") for seed in range(5)] + [
        straight_road_scene(token="empty-road", length_ahead=200.0)]


@pytest.fixture(scope="module")
def ensemble_fn(tiny_ckpt):
    """A 3-member ensemble of the tiny checkpoint with re-initialised heads (members disagree), as the env's
    ``ModelRewardFn``."""
    from reward_models.ensemble import EnsembleRewardModel, ModelRewardFn, reinit_heads

    members = [reinit_heads(RewardWorldModel.from_pretrained(tiny_ckpt), seed) for seed in range(3)]
    return lambda: ModelRewardFn(EnsembleRewardModel(members, beta=0.5))


def _rows(scenes, n: int, seed: int):
    """n rows (scene, plan): repeated scenes, each plan its expert's scaled and shifted sideways."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scenes), n)
    plans = np.stack([scenes[i].ego.future for i in idx]) * rng.uniform(0.3, 1.6, (n, 1, 1))
    plans[:, :, 1] += rng.normal(0.0, 1.0, (n, 1))
    return [scenes[i] for i in idx], plans


def _check_against_rows(make_fn, scenes) -> None:
    """score_batch of a fresh reward fn: new scenes, then cached + new mixed, then all cached; and the N = 1 call."""
    ref, fn = make_fn(), make_fn()
    for seed, pool in ((0, scenes[:4]), (1, scenes), (2, scenes)):
        rows, plans = _rows(pool, 23, seed)
        expected = np.array([ref(s, p) for s, p in zip(rows, plans)])
        got = fn.score_batch(rows, plans)
        assert got.shape == (23,) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert len(fn._cache) == len(scenes)
    one = fn.score_batch(rows[:1], plans[:1])
    assert one[0] == fn(rows[0], plans[0])  # one row: the same encoding and forward pass as the per-row call
    assert fn.score_batch([], np.zeros((0, 8, 3))).shape == (0,)


def test_score_batch_equals_per_row_calls(tiny_ckpt, scenes):
    _check_against_rows(lambda: SceneRewardFn(tiny_ckpt), scenes)


def test_ensemble_score_batch_equals_per_row_calls(ensemble_fn, scenes):
    _check_against_rows(ensemble_fn, scenes)


def test_score_batch_small_cache_and_float_bev_entries(tiny_ckpt, scenes):
    """A cache smaller than the step's scenes, and entries of per-row calls (float raster) mixed with batched ones
    (raw bytes): still the per-row values."""
    ref = SceneRewardFn(tiny_ckpt)
    fn = SceneRewardFn(tiny_ckpt, cache_size=2)
    rows, plans = _rows(scenes, 17, 3)
    fn(scenes[0], scenes[0].ego.future)  # a per-row encoding (float scene channels) in the cache
    expected = np.array([ref(s, p) for s, p in zip(rows, plans)])
    np.testing.assert_allclose(fn.score_batch(rows, plans), expected, rtol=0, atol=ATOL)
    assert len(fn._cache) == 2
    fn.clear_cache()
    fn._cache.size = 0  # nothing cached: every call encodes its scenes
    np.testing.assert_allclose(fn.score_batch(rows, plans), expected, rtol=0, atol=ATOL)


def test_concat_pads_tokens_and_scores_each_scene_as_alone(tiny_ckpt, scenes):
    """Encodings of batches with different agent / map slot counts, concatenated (with a repeat), score every plan
    as the separate encodings do; padded tokens are masked, padded obs agents / polylines are not real."""
    from irlvla_gym.obs.registry import ObservationBuilder
    from reward_models.model import OBS_KEYS, SceneEncoding

    model = RewardWorldModel.from_pretrained(tiny_ckpt)
    builder = ObservationBuilder(OBS_KEYS)
    parts = [[scenes[5]], scenes[0:2], scenes[2:5]]  # the empty road alone: one agent slot
    with torch.no_grad():
        encs = [model.encode_scene(builder.observe_batch(p)) for p in parts]
        assert len({e.tokens.shape[1] for e in encs}) > 1
        plans = np.stack([[s.ego.future, s.ego.future * 0.7] for p in parts for s in p]).astype(np.float32)
        expected = torch.cat([model.score(e, plans[i:i + len(e)]).reward
                              for e, i in zip(encs, np.cumsum([0] + [len(e) for e in encs]))])
        whole = SceneEncoding.concat(encs + [encs[0]])
        got = model.score(whole, np.concatenate([plans, plans[:1]])).reward
    assert len(whole) == 7 and whole.mask.shape == whole.tokens.shape[:2]
    torch.testing.assert_close(got[:6], expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(got[6], expected[0], rtol=0, atol=ATOL)
    s0 = encs[0].tokens.shape[1]
    assert whole.mask[0, s0:].all() and not whole.obs["agents_mask"][0, 1:].any()
    assert whole.kv[0][0].shape[2] == whole.tokens.shape[1]
    picked = whole.select([6, 0])  # select copies every entry, the map lookup included
    torch.testing.assert_close(picked.obs["map_lookup"].nearest[0], whole.obs["map_lookup"].nearest[6])


def test_pack_rows_layout():
    scene_of_row = np.array([2, 0, 2, 2, 1, 2, 2, 0])
    plans = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 8, 3), np.float32)
    for cost in (0.0, 4.0, 100.0):
        lay = pack_rows(scene_of_row, 3, slot_cost=cost)
        grid = lay.grid(plans)
        assert grid.shape == (len(lay.slot_scene), lay.width, 8, 3)
        np.testing.assert_array_equal(grid[lay.row_slot, lay.row_col], plans)  # each row in its own cell
        np.testing.assert_array_equal(lay.slot_scene[lay.row_slot], scene_of_row)  # in a slot of its scene
        assert len(set(zip(lay.row_slot.tolist(), lay.row_col.tolist()))) == 8
    assert pack_rows(scene_of_row, 3, slot_cost=0.0).width == 1  # slots free: one row per slot
    assert pack_rows(scene_of_row, 3, slot_cost=100.0).width == 5  # slots dear: one slot per scene


@pytest.mark.parametrize("env_id", ["IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"])
@pytest.mark.parametrize("kind", ["rwm", "ensemble"])
def test_vector_env_rewards_equal_per_row_calls(tiny_ckpt, ensemble_fn, scenes, env_id, kind):
    """A native vector env with the batched reward vs the same env with the per-row reward (the callable without
    ``score_batch``): same episodes (the reward does not steer them), rewards equal up to float32 rounding."""
    make = (lambda: SceneRewardFn(tiny_ckpt)) if kind == "rwm" else ensemble_fn
    batched, per_row = make(), make()
    envs = [gym.make_vec(env_id, num_envs=5, vectorization_mode="vector_entry_point",
                         **small_kwargs(scenes[:3], reward=reward, obs_keys=("ego",)))
            for reward in (batched, lambda scene, plan: per_row(scene, plan))]
    for e in envs:
        e.reset(seed=4)
    rng = np.random.default_rng(4)
    calls = []
    score_batch = batched.score_batch
    batched.score_batch = lambda s, p, **kw: calls.append(len(s)) or score_batch(s, p, **kw)
    for step in range(6):
        actions = rng.uniform(-1, 1, (5, 24)).astype(np.float32) * 0.3
        if step == 2:
            actions[1, 0] = np.nan  # invalid: 0, not scored
        (o1, r1, te1, tr1, _), (o2, r2, te2, tr2, _) = (e.step(actions) for e in envs)
        np.testing.assert_array_equal(o1["ego"], o2["ego"])
        np.testing.assert_array_equal(te1 | tr1, te2 | tr2)
        np.testing.assert_allclose(r1, r2, rtol=0, atol=ATOL)
        assert step != 2 or r1[1] == 0.0
    assert calls[2] == 4 and len(calls) == 6  # one call per step, for the valid rows
    for e in envs:
        e.close()
