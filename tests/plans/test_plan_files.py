"""Plan files (``irlvla_gym.plans.files``): the format ``irlvla score`` reads and ``irlvla bc --target-plans`` trains
on; the reward's greedy picks written in it (``irlvla rwm greedy-plans``)."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.plans.files import load_plans, plans_for_tokens, save_plans


def _plans(n: int) -> np.ndarray:
    t = np.arange(1, 9) * 0.5
    return np.stack([np.stack([t * (5.0 + i), np.zeros(8), np.zeros(8)], axis=1) for i in range(n)])


def test_save_then_read_back_in_any_token_order(tmp_path):
    plans = _plans(3)
    path = save_plans(tmp_path / "p.npz", ["a", "b", "c"], plans)
    assert set(load_plans(path)) == {"a", "b", "c"}
    np.testing.assert_array_equal(plans_for_tokens(path, ["c", "a"]), plans[[2, 0]])
    with pytest.raises(ValueError, match="must be \\(2, 8, 3\\)"):
        save_plans(tmp_path / "q.npz", ["a", "b"], plans)
    with pytest.raises(ValueError, match=".npz"):
        save_plans(tmp_path / "q.json", ["a", "b", "c"], plans)


def test_missing_and_invalid_plans_are_named(tmp_path):
    plans = _plans(2)
    plans[1, 3, 0] = np.nan
    path = save_plans(tmp_path / "p.npz", ["a", "b"], plans)
    with pytest.raises(ValueError, match=r"p.npz: 1 token\(s\) without a plan \(e.g. \['z'\]\) and 1 invalid plan"):
        plans_for_tokens(path, ["a", "b", "z"])


def test_score_cli_reads_the_same_format():
    from irlvla_gym.evaluation import score_cli

    assert score_cli.load_plans is load_plans


def test_greedy_pick_never_trades_predicted_safety():
    from reward_models.greedy import pick_index

    reward = np.array([[0.5, 0.9, 0.7], [0.5, 0.4, 0.3]])
    safety = {"nc": np.array([[1.0, 0.5, 0.99], [1.0, 1.0, 1.0]])}
    assert pick_index(reward, safety, 0.02).tolist() == [2, 0]  # 0.9 predicts a collision; row 2: nothing better
    assert pick_index(reward, safety, None).tolist() == [1, 0]


def test_greedy_plans_of_a_policy_with_the_shipped_reward(tmp_path):
    """``irlvla rwm greedy-plans``: one pick per scene, the policy's own plan when there are no samples, never a
    predicted loss; the file is readable by the scorer's reader."""
    from irlvla_gym.agents import load_agent
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.greedy import GreedyPlansConfig, greedy_plans, run_greedy_plans
    from reward_models.reward_fn import SceneRewardFn

    agent, reward = load_agent("bc_default"), SceneRewardFn()
    source = SceneSource(split="synthetic-val", num_scenes=4)
    own = greedy_plans(agent, reward, source, samples=0, progress=False)
    picks = greedy_plans(agent, reward, source, samples=6, chunk=3, progress=False)
    assert own.picked.tolist() == [0, 0, 0, 0] and picks.plans.shape == (4, 8, 3)
    assert (picks.predicted_gain >= 0).all() and picks.tokens == [f"synthetic-val-0000{i}" for i in range(4)]
    kept = picks.picked == 0
    np.testing.assert_allclose(picks.plans[kept], own.plans[kept])
    out = run_greedy_plans(GreedyPlansConfig(out=str(tmp_path / "g.npz"), split="synthetic-val", num_scenes=4,
                                             samples=6, progress=False))
    np.testing.assert_allclose(plans_for_tokens(tmp_path / "g.npz", out.tokens), picks.plans, atol=1e-5)


def test_the_rule_based_scorer_as_the_teacher_never_picks_a_worse_plan():
    """``reward="epdms"`` (comparisons only): the picks' true EPDMS is at least the policy plan's, scene by scene."""
    from irlvla_gym.agents import load_agent
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import pdm_reference_progress
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.greedy import candidate_scores_of, greedy_plans

    source = SceneSource(split="synthetic-val", num_scenes=3)
    agent = load_agent("bc_default")
    own = greedy_plans(agent, candidate_scores_of("epdms"), source, samples=0, progress=False)
    picks = greedy_plans(agent, candidate_scores_of("epdms"), source, samples=6, progress=False)
    for i in range(3):
        scene = source.load(i)
        ref = pdm_reference_progress(scene)
        before, after = (float(score_plans(scene, p[i], reference_progress=ref).epdms[0]) for p in (own.plans,
                                                                                                 picks.plans))
        assert after >= before - 1e-9
        assert abs(picks.predicted_gain[i] - (after - before)) < 1e-6


def test_checked_picks_report_the_scorers_view_without_changing_the_picks():
    """``irlvla rwm greedy-plans --check``: the rule-based scorer's EPDMS of the policy's plan, the pick and the best
    candidate, scene by scene; the picks are those of the unchecked run."""
    from irlvla_gym.agents import load_agent
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.greedy import candidate_scores_of, greedy_plans
    from reward_models.reward_fn import SceneRewardFn

    source, agent = SceneSource(split="synthetic-val", num_scenes=3), load_agent("bc_default")
    plain = greedy_plans(agent, SceneRewardFn(), source, samples=4, progress=False)
    checked = greedy_plans(agent, SceneRewardFn(), source, samples=4, progress=False, check=True)
    oracle = greedy_plans(agent, candidate_scores_of("epdms"), source, samples=4, progress=False)
    np.testing.assert_array_equal(plain.picked, checked.picked)
    c = checked.check
    assert sorted(c) == ["epdms_best", "epdms_own", "epdms_pick", "nc_own", "nc_pick"] and plain.check == {}
    assert (c["epdms_best"] >= c["epdms_pick"]).all() and (c["epdms_best"] >= c["epdms_own"]).all()
    np.testing.assert_allclose(c["epdms_best"] - c["epdms_own"], oracle.predicted_gain, atol=1e-9)
    assert "rule-based scorer" in checked.summary() and "rule-based scorer" not in plain.summary()
