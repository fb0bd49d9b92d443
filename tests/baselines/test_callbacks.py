"""Sub-scores, rule-based EPDMS and the learned-reward gap reach TensorBoard and curve.csv (baselines.callbacks),
standalone, in the baselines' PPO runs and in plug-in runs."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from baselines.callbacks import SCORE_NAMES, RuleScorer, SubscoreCallback
from baselines.hooks import CurveWriter

from .conftest import tiny_overrides

TINY_ENV = {"num_scenes": 2, "scenes": "synthetic-train"}
SCORE_TAGS = {"rollout/epdms", *(f"rollout/subscore_{n}" for n in SCORE_NAMES)}


def scalars(tb_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag (-> values) of the TensorBoard event files under ``tb_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[float]] = {}
    for events in sorted(Path(tb_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


def constant_reward(scene, plan) -> float:
    """A stand-in learned reward (``info["rewards"] == {"custom": 0.9}``)."""
    return 0.9


def _ppo(env, tb_dir: Path, callback) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
        tensorboard_log=str(tb_dir)).learn(64, callback=callback)


def test_ppo_logs_every_subscore_and_epdms(tmp_path):
    import irlvla_gym  # noqa: F401  (registers the ids)

    curve = CurveWriter(tmp_path / "curve.csv")
    _ppo(gym.make("IRLVLA-Navsim-Residual-v2", **TINY_ENV), tmp_path / "tb", SubscoreCallback(min_steps=1,
                                                                                               curve=curve))
    logged = scalars(tmp_path / "tb")
    assert SCORE_TAGS <= set(logged)
    assert "rollout/reward_gap" not in logged  # the rule-based reward has no gap
    assert all(0.0 <= v <= 1.0 for tag in SCORE_TAGS for v in logged[tag])
    rows = curve.rows()
    assert len(rows) == 2 and all(0.0 <= r["epdms"] <= 1.0 and math.isnan(r["reward_gap"]) for r in rows)
    # the rule-based reward *is* EPDMS: the curve's reward and epdms columns agree
    assert rows[0]["reward_mean"] == pytest.approx(rows[0]["epdms"])


def test_learned_reward_logs_the_gap_to_the_scorer(tmp_path):
    import irlvla_gym  # noqa: F401

    env_kwargs = {**TINY_ENV, "reward": constant_reward}
    callback = SubscoreCallback(RuleScorer(env_kwargs), min_steps=1, max_rule_scored=4)
    _ppo(gym.make("IRLVLA-Navsim-Residual-v2", **env_kwargs), tmp_path / "tb", callback)
    logged = scalars(tmp_path / "tb")
    assert {"rollout/reward_gap", "rollout/epdms", "rollout/subscore_nc"} <= set(logged)
    np.testing.assert_allclose(logged["rollout/reward_gap"], 0.9 - np.asarray(logged["rollout/epdms"]), atol=1e-6)


def test_rule_scorer_equals_the_env_reward():
    """RuleScorer re-scores a transition exactly as the env's built-in reward did (same protocol)."""
    import irlvla_gym  # noqa: F401

    env = gym.make("IRLVLA-Navsim-v2", obs_keys=("ego",), **TINY_ENV)
    scorer = RuleScorer(TINY_ENV)
    for i in range(2):
        env.reset(options={"scene_index": i})
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        again = scorer(info["scene_index"], info["plan"])
        assert again["epdms"] == pytest.approx(reward, abs=1e-9)
        assert again["ep"] == pytest.approx(info["rewards"]["ep"], abs=1e-9)


def test_baselines_rwm_run_and_plugin_run_log_scores(tmp_path, checkpoints):
    """The runner's PPO (learned reward) and an SB3 plug-in: TensorBoard tags and curve.csv score columns."""
    from baselines.config import load_config
    from baselines.runner import run_dir_of, train_run

    cfg = load_config("ppo-vla-rwm", "quick", tiny_overrides("ppo-vla-rwm", checkpoints))
    train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    run = run_dir_of(tmp_path, "ppo-vla-rwm", 0)
    assert {"rollout/reward_gap", "rollout/epdms", "rollout/subscore_hc"} <= set(scalars(run / "tb"))
    rows = CurveWriter(run / "curve.csv").rows()
    assert rows and all(0.0 <= r["epdms"] <= 1.0 and not math.isnan(r["reward_gap"]) for r in rows)

    cfg = load_config("plugin-a2c", "quick", ["total_timesteps=128", "env.num_scenes=2", "plugin_kwargs.n_steps=8"])
    train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    run = run_dir_of(tmp_path, "plugin-a2c", 0)
    assert SCORE_TAGS <= set(scalars(run / "tb"))
    rows = CurveWriter(run / "curve.csv").rows()
    assert rows and all(0.0 <= r["subscore_nc"] <= 1.0 for r in rows)

    from baselines.report import plot_curves, read_curves

    curves = read_curves(tmp_path, ["ppo-vla-rwm", "plugin-a2c"], [0])
    assert not np.isnan(curves["ppo-vla-rwm"][0]["epdms"]).any()
    png = plot_curves(tmp_path, ["ppo-vla-rwm", "plugin-a2c"], [0], tmp_path / "learning_curves.png")
    assert png is not None and png.is_file()


def test_rule_scorer_reads_the_env_split(tmp_path):
    """The scorer of the learned-reward gap reads the env's own scenes: ``split`` (a split name or a store) when no
    ``scenes`` are given, not the default training split."""
    from baselines.callbacks import RuleScorer
    from irlvla_gym.scenes.store import build_store
    from irlvla_gym.scenes.synthetic import iter_scenes

    store = tmp_path / "val"
    build_store(iter_scenes("synthetic-val", 2), store, split="synthetic-val", source="synthetic", progress=False)
    scorer = RuleScorer({"split": str(store), "num_scenes": 2})
    assert scorer.bundle(1).scene.token == "synthetic-val-00001"
    assert RuleScorer({"split": "synthetic-val"}).bundle(0).scene.token == "synthetic-val-00000"


def test_rule_scorer_reuses_the_env_bundles_with_the_same_scores():
    """In the training process the scorer reads the envs' prepared scenes instead of preparing them again; the
    scores equal those of a scorer that prepares its own."""
    import irlvla_gym  # noqa: F401
    from irlvla_gym.cache import clear_shared_caches

    env = gym.make("IRLVLA-Navsim-v2", obs_keys=("ego",), **TINY_ENV)
    env.reset(options={"scene_index": 1})
    plan = env.step(np.full(env.action_space.shape, 0.1, np.float32))[4]["plan"]
    clear_shared_caches()  # no env bundles in this process: the scorer prepares the scene itself
    alone = RuleScorer(TINY_ENV)
    own_bundle, own_scores = alone.bundle(1), alone(1, plan)
    env = gym.make("IRLVLA-Navsim-v2", obs_keys=("ego",), **TINY_ENV)
    env.reset(options={"scene_index": 1})
    scorer = RuleScorer(TINY_ENV)
    assert scorer.bundle(1) is env.unwrapped.get_bundle(1) is not own_bundle
    assert scorer(1, plan) == own_scores


@pytest.mark.parametrize("traffic", ["log", "idm"])
def test_rule_scorer_scores_many_transitions_at_once_as_one_by_one(traffic):
    """The rollout gap's batched scoring (one tracker and one multi-scene scorer call) equals ``score_plans`` of each
    plan alone under the env's protocol (EP relative to the logged expert), and the rollout summary uses it."""
    from baselines.callbacks import RolloutScores
    from irlvla_gym.metrics import score_plans

    kwargs = {**TINY_ENV, "traffic": traffic}
    scorer = RuleScorer(kwargs)
    rng = np.random.default_rng(0)
    t = np.arange(1, 9) * 0.5
    plans = np.stack([np.stack([t * (4.0 + 2 * k), rng.normal(0, 0.3, 8), np.zeros(8)], 1) for k in range(5)])
    indices = [0, 1, 0, 1, 1]
    many = scorer.score_many(indices, plans)
    for r, (i, plan) in enumerate(zip(indices, plans)):
        b = scorer.bundle(i)
        alone = score_plans(b.scene, plan, human_filter=True, traffic=traffic, reference_progress=b.reference_progress)
        for name in many:
            assert many[name][r] == pytest.approx(float(np.asarray(getattr(alone, name))[0]), abs=1e-12), (r, name)
        assert scorer(i, plan)["epdms"] == many["epdms"][r]
    scores = RolloutScores(scorer, max_rule_scored=5)
    scores.add([{"rewards": {"custom": 0.5}, "plan": p, "scene_index": i} for i, p in zip(indices, plans)],
               np.full(5, 0.5))
    assert scores.summary()["epdms"] == pytest.approx(float(np.mean(many["epdms"])), abs=1e-12)
