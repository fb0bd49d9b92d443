"""The probe's numbers equal direct calls: the scorer (same plans, same scenes, the labeller's settings) and the
reward model (one scene at a time)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.hacking.probe import (SUB_SCORES, ProbeTracker, compare, most_gamed, predicted_scores, true_scores)


def _plans(probe) -> np.ndarray:
    """The expert plan of each probe scene, the second one stretched by 30 % (a different score)."""
    plans = np.stack([np.asarray(s.ego.future, np.float64) for s in probe.scenes])
    plans[1, :, :2] *= 1.3
    return plans


def test_true_scores_match_direct_scorer_call(probe):
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import pdm_reference_progress

    plans = _plans(probe)
    got = true_scores(probe, plans)
    assert probe._bundles is not None  # the batched path (one tracker + one multi-scene scorer call) was taken
    for i, scene in enumerate(probe.scenes):
        r = score_plans(scene, plans[i], human_filter=True, traffic="log",
                        reference_progress=pdm_reference_progress(scene))
        for k in (*SUB_SCORES, "epdms"):
            assert got[k][i] == float(np.asarray(getattr(r, k))[0]), k


def test_predicted_scores_match_direct_model_call(probe, tiny):
    from irlvla_gym.obs.registry import ObservationBuilder
    from reward_models import RewardWorldModel
    from reward_models.model import OBS_KEYS

    model = RewardWorldModel.from_pretrained(tiny["rwm"])
    plans = _plans(probe)
    got = predicted_scores(model, probe, plans)
    builder = ObservationBuilder(OBS_KEYS)
    for i, scene in enumerate(probe.scenes):
        direct = model.predict_subscores(builder.observe(scene), plans[i][None].astype(np.float32))
        for k in (*SUB_SCORES, "reward"):
            np.testing.assert_allclose(got[k][i], direct[k][0], rtol=1e-5, atol=1e-6)


def test_tracker_measure_combines_both(probe, tiny):
    from reward_models import RewardWorldModel

    model = RewardWorldModel.from_pretrained(tiny["rwm"])
    tracker = ProbeTracker(probe, model, reference_model=model)
    plans = _plans(probe)
    m = tracker.measure(7, plans)
    true, pred = true_scores(probe, plans), predicted_scores(model, probe, plans)
    assert m["true_epdms"] == pytest.approx(true["epdms"].mean())
    assert m["pred_reward"] == pytest.approx(pred["reward"].mean())
    assert m["gap"] == pytest.approx(pred["reward"].mean() - true["epdms"].mean())
    assert m["ref_gap"] == pytest.approx(m["gap"]) and m["plan_shift_m"] == 0.0
    for s in SUB_SCORES:
        assert m[f"sub_gap/{s}"] == pytest.approx(pred[s].mean() - true[s].mean())
    assert tracker.history[-1]["step"] == 7.0
    assert tracker.measure(8, plans + np.array([1.0, 0.0, 0.0]))["plan_shift_m"] == pytest.approx(1.0)


def test_compare_overrated_fraction():
    pred = {"reward": np.array([0.9, 0.95, 0.85, 0.3]), **{s: np.ones(4) for s in SUB_SCORES}}
    true = {"epdms": np.array([0.2, 0.9, 0.4, 0.3]), **{s: np.ones(4) for s in SUB_SCORES}}
    true["ep"] = np.array([0.5, 0.5, 0.5, 0.5])
    m = compare(pred, true)
    assert m["n_rated_high"] == 3 and m["frac_overrated"] == pytest.approx(2 / 3)
    assert most_gamed(m) == ("ep", pytest.approx(0.5))
    none_high = compare({**pred, "reward": np.full(4, 0.5)}, true)
    assert none_high["frac_overrated"] == 0.0 and none_high["n_rated_high"] == 0


def test_probe_set_of_a_store_is_kept_beside_it_and_read_back_equal(tmp_path, monkeypatch):
    """A probe set over a scene store writes its observations and EP normalisers beside the store once; a later
    probe set of the same scenes and settings reads them back (no PDM-Closed run) with the same values, bit for
    bit; other settings get their own file."""
    import reward_models.dataset as dataset
    from baselines.hacking import probe as P
    from irlvla_gym.scenes.source import build_pool_store

    from .conftest import SMALL_OBS, VLA_KEYS

    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    build_pool_store("synthetic-val", 3, progress=False)
    first = P.ProbeSet.from_split("synthetic-val", 3, VLA_KEYS, SMALL_OBS)
    files = list((tmp_path / "scenes" / "synthetic-val-first3" / "probe").glob("probe-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(dataset, "reference_progress_fn", lambda: (pytest.fail, "must not run"))
    again = P.ProbeSet.from_split("synthetic-val", 3, VLA_KEYS, SMALL_OBS)
    np.testing.assert_array_equal(again.reference_progress, first.reference_progress)
    for name in ("policy_obs", "rwm_obs"):
        got, want = getattr(again, name), getattr(first, name)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key])
    assert [s.token for s in again.scenes] == [f"synthetic-val-{i:05d}" for i in range(3)]
    monkeypatch.undo()
    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    P.ProbeSet.from_split("synthetic-val", 2, VLA_KEYS, SMALL_OBS)  # scenes 0..1: lazy source, nothing kept
    P.ProbeSet.from_split("synthetic-val", 3, ("ego",), SMALL_OBS)
    assert len(list(files[0].parent.glob("probe-*.npz"))) == 2


def test_probe_set_values_equal_the_plain_computation(probe):
    """from_split's values are probe_arrays' of the same scenes (the cache stores exactly these)."""
    from baselines.hacking.probe import probe_arrays

    from .conftest import SMALL_OBS, VLA_KEYS

    plain = probe_arrays(probe.scenes, VLA_KEYS, SMALL_OBS)
    np.testing.assert_array_equal(plain["reference_progress"], probe.reference_progress)
    for key, value in probe.policy_obs.items():
        np.testing.assert_array_equal(plain[f"policy/{key}"], value)
    for key, value in probe.rwm_obs.items():
        np.testing.assert_array_equal(plain[f"rwm/{key}"], value)


def test_a_model_with_other_observation_settings_reads_its_own_inputs(probe):
    """A model trained with 64 agent slots and the agents' logged futures (``ModelConfig.obs_config``) is probed
    with observations built under those settings, equal to direct calls; default-settings models keep ``rwm_obs``."""
    import torch

    from irlvla_gym.obs.registry import ObservationBuilder
    from reward_models.model import OBS_KEYS, ModelConfig, RewardWorldModel

    torch.manual_seed(0)
    settings = {"max_agents": 64, "agents_future": "logged"}
    model = RewardWorldModel(ModelConfig(agent_forecast="logged", obs_config=settings)).eval()
    plans = _plans(probe)
    got = predicted_scores(model, probe, plans)
    assert probe.rwm_obs_for(model)["agents"].shape[1] == 64 and "agents_future" not in probe.rwm_obs
    assert probe.rwm_obs_for(RewardWorldModel(ModelConfig())) is probe.rwm_obs
    builder = ObservationBuilder(OBS_KEYS, settings)
    for i, scene in enumerate(probe.scenes):
        direct = model.predict_subscores(builder.observe(scene), plans[i][None].astype(np.float32))
        np.testing.assert_allclose(got["reward"][i], direct["reward"][0], rtol=1e-5, atol=1e-6)
