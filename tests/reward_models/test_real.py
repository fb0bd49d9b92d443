"""The RWM on real windows (:mod:`reward_models.real`): per-scene fidelity metrics, window splits, training on
several datasets / from a checkpoint, and, with the samples in ../shared/data (skipped when absent), real
properties of the datasets and the side-by-side table on a few windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reward_models.dataset import DatasetError, concat_data, load_dataset
from reward_models.real import (
    EvalRealConfig, ModelSpec, bootstrap_ci, scene_metrics, split_windows, summarise,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "scenarionet_nuscenes").is_dir(),
                                reason=f"real samples not found at {DATA}")


def test_scene_metrics_perfect_and_reversed():
    true = np.array([[0.9, 0.1, 0.5, 0.8], [1.0, 0.0, 0.3, 0.6]])
    perfect = scene_metrics(true, true)
    np.testing.assert_allclose(perfect["spearman"], 1.0)
    np.testing.assert_allclose(perfect["gap"], 0.0)
    np.testing.assert_array_equal(perfect["expert_first"], [1.0, 1.0])
    worst = scene_metrics(-true, true)
    np.testing.assert_allclose(worst["spearman"], -1.0)
    np.testing.assert_allclose(worst["gap"], [0.8 - 0.1, 0.6 - 0.0])  # picks the worst candidate
    np.testing.assert_array_equal(worst["expert_first"], [0.0, 0.0])
    with pytest.raises(ValueError, match="pred"):
        scene_metrics(true[:, :1], true[:, :1])


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).normal(0.5, 0.1, 200)
    mean, lo, hi = bootstrap_ci(values)
    assert lo < mean < hi and hi - lo < 0.05
    assert np.isnan(bootstrap_ci(np.array([np.nan]))[0])
    s = summarise({"spearman": values, "gap": values, "expert_first": values})
    assert s["scenes"] == 200 and s["gap"][0] == pytest.approx(values.mean())


def test_split_windows_keeps_the_last_quarter_for_validation():
    assert split_windows(84) == (range(0, 63), range(63, 84))  # AV2: the last of its four 21-window logs
    assert split_windows(29) == (range(0, 22), range(22, 29))
    assert split_windows(1) == (range(0, 1), range(1, 1))
    with pytest.raises(ValueError, match="val_share"):
        split_windows(10, 1.0)


def test_model_spec_maps_loso_models_to_the_sets_they_never_saw(tmp_path):
    for source in ("av2", "nuscenes"):
        (tmp_path / f"holdout-{source}").mkdir()
        (tmp_path / f"holdout-{source}" / "model.safetensors").write_bytes(b"")
    spec = ModelSpec.parse(f"mine={tmp_path}")
    rows = spec.rows(["synthetic-test", "av2", "nuscenes", "waymo"])
    assert ("mine (without av2)", "av2", str(tmp_path / "holdout-av2")) in rows
    assert not any(r[1] == "waymo" for r in rows)  # no model held waymo out
    assert sum(r[1] == "synthetic-test" for r in rows) == 2
    assert ModelSpec.parse("default").rows(["av2"]) == [("default", "av2", "default")]


def test_concat_data_refuses_other_plan_counts(tiny_data, tmp_path):
    data = load_dataset(tiny_data)
    both = concat_data([data, data])
    assert len(both) == 2 * len(data) and both.tokens[len(data):] == data.tokens
    short = data.subset(np.arange(len(data)))
    short.plans = short.plans[:, :3]
    with pytest.raises(DatasetError, match="plans per scene"):
        concat_data([data, short])


def test_train_on_extra_data_from_a_checkpoint(tiny_data, tiny_ckpt, tmp_path):
    from reward_models.train import TrainConfig, train

    out = tmp_path / "ft"
    summary = train(str(tiny_data), str(out), TrainConfig(epochs=1, batch_scenes=2), val_dir=str(tiny_data),
                    progress=False, extra_data=(str(tiny_data),), extra_repeat=2, extra_val=(str(tiny_data),),
                    init=str(tiny_ckpt))
    assert summary["steps"] == 5  # 3 scenes once + 3 scenes twice, 2 per minibatch
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["init"] == Path(tiny_ckpt).name and cfg["extra_repeat"] == 2 and len(cfg["extra_data"]) == 1
    assert str(tmp_path) not in json.dumps(cfg)  # no machine paths in a checkpoint's config
    assert cfg["model"] == {**json.loads((Path(tiny_ckpt) / "config.json").read_text())["model"], "obs_config": None}
    assert set(cfg["val"]) >= {"set0/spearman", "set1/best_of_k_gap"}  # two validation sets, macro-averaged


@pytest.fixture(scope="module")
def real_tiny(tmp_path_factory):
    """The first 3 nuScenes windows, K = 8 candidates, 64 agent slots."""
    from reward_models.dataset import CandidateConfig, build_dataset
    from reward_models.real import build_real_stores

    work = tmp_path_factory.mktemp("real")
    store = build_real_stores(DATA, work, ("nuscenes",))["nuscenes"]
    out = work / "data"
    build_dataset(str(store), out, num_scenes=3, candidates=CandidateConfig(num_candidates=8, vocab_near=2,
                  vocab_random=2, policy=0), progress=False, obs_config={"max_agents": 64})
    return work, load_dataset(out)


@needs_data
def test_real_windows_need_more_than_32_agent_slots(real_tiny):
    _, data = real_tiny
    assert data.manifest["obs_config"] == {"max_agents": 64}
    assert data.obs["agents"].shape[1] == 64
    assert (data.obs["agents_mask"].sum(axis=1) > 32).all()  # nuScenes windows: 36-62 agents within 64 m
    assert data.labels["epdms"][:, 0].mean() > 0.8  # the logged expert scores well
    assert (data.labels["epdms"][:, 1:].min(axis=1) < data.labels["epdms"][:, 0]).all()  # worse candidates exist


@needs_data
def test_64_slots_observe_the_agents_plans_collide_with(real_tiny):
    """The diagnosis behind ``max_agents=64``: in nuScenes windows the 32 nearest agents are mostly pedestrians, and
    a vehicle a candidate hits can be missing from a 32-slot observation; with 64 slots every agent present at t0
    is observed."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.scenes.source import SceneSource

    work, data = real_tiny
    store = SceneSource(str(work / "stores" / "nuscenes"))
    hits = 0
    for i in range(len(data)):
        scene = store.load(int(data.scenes[i]))
        res = score_plans(scene, data.plans[i].astype(np.float64), human_filter=True,
                          reference_progress=float(data.labels["reference_progress"][i, 0]))
        seen = data.obs["agents"][i][data.obs["agents_mask"][i].astype(bool), :2]
        for k in np.flatnonzero(np.asarray(res.nc) < 1):
            a = int(res.collision_agent[k])
            if a < 0 or not scene.agents.valid[0, a]:
                continue
            hits += 1
            assert np.hypot(*(seen - scene.agents.boxes[0, a, :2]).T).min() < 0.5, f"window {i}: agent {a} unseen"
    assert hits > 0


@needs_data
def test_eval_real_table_on_a_few_windows(real_tiny, tmp_path):
    from reward_models.real import run_eval_real

    work, _ = real_tiny
    table, rows = run_eval_real(EvalRealConfig(work=str(work), ckpt=("default", "again=default"),
                                               data_dir=str(DATA), sources=("nuscenes",), synthetic_scenes=0,
                                               windows=2, draws=200, breakdown=True, out=str(tmp_path)))
    assert [r["set"] for r in rows if r["label"] == "default"] == ["nuscenes", "nuscenes: ego moving"]
    assert rows[0]["scenes"] == 2
    for k in ("spearman", "gap", "expert_first"):
        mean, lo, hi = rows[0][k]
        assert lo <= mean + 1e-9 and mean <= hi + 1e-9
    assert "| default | nuscenes | 2 |" in table and (tmp_path / "table.md").is_file()
    paired = json.loads((tmp_path / "table.json").read_text())["paired"]
    assert [d["label"] for d in paired] == ["again"] and paired[0]["gap"] == [0.0, 0.0, 0.0]  # the same model


def test_loso_and_eval_real_flags_default_to_their_configs():
    from irlvla_gym.cli import build_parser
    from irlvla_gym.configs import from_args
    from reward_models.real import FineTuneConfig, LosoConfig

    parser = build_parser()
    loso = from_args(LosoConfig, parser.parse_args(["rwm", "loso", "--work", "w"]))
    assert loso == LosoConfig(work="w") and loso.train == FineTuneConfig()
    assert (loso.train.epochs, loso.train.lr, loso.max_agents, loso.agent_geometry) == (10, 5e-4, 64, "box")
    tuned = from_args(LosoConfig, parser.parse_args(["rwm", "loso", "--work", "w", "--holdouts", "all", "--lr",
                                                      "1e-3", "--init", "none"]))
    assert (tuned.holdouts, tuned.train.lr, tuned.init) == (("all",), 1e-3, "none")
    ev = from_args(EvalRealConfig, parser.parse_args(["rwm", "eval-real", "--work", "w", "--ckpt", "default", "x=y"]))
    assert ev == EvalRealConfig(work="w", ckpt=("default", "x=y"))


def test_shipped_real_checkpoint_observes_64_agents():
    """The ``real`` checkpoint records its observation settings and the scene reward builds observations with
    them (the model consumes up to 64 agents; the other shipped models keep the 32-slot default)."""
    from reward_models.reward_fn import SceneRewardFn, load_model

    model = load_model("real")
    assert model.config.obs_config == {"max_agents": 64} and model.config.agent_geometry == "box"
    assert SceneRewardFn("real").builder.config.max_agents == 64
    assert SceneRewardFn(None).builder.config.max_agents == 32
