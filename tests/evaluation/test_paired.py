"""Paired comparisons with hierarchical bootstrap CIs (irlvla_gym.evaluation.paired): known answers, coverage,
errors, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from irlvla_gym.evaluation.paired import bootstrap_means, markdown_table, paired_comparison


def _scores(n=200, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 0.9, n)


def test_identical_agents_have_delta_zero_and_ci_zero():
    base = _scores()
    same_three_seeds = {0: base.copy(), 1: base.copy(), 2: base.copy()}  # deterministic across seeds
    result = paired_comparison({"bc": {0: base}, "copy": {0: base.copy()}, "copy3": same_three_seeds}, "bc")
    for name in ("bc", "copy", "copy3"):
        row = result.row(name)
        assert row.delta == 0.0 and row.delta_ci == (0.0, 0.0)
        assert row.improved == 0.0 and row.worsened == 0.0
        assert row.mean == pytest.approx(100 * base.mean())
    assert result.row("copy3").seeds == 3 and result.row("bc").scenes == 200


def test_constant_shift_gives_that_delta_with_a_tight_ci():
    base = _scores()
    result = paired_comparison({"bc": base, "better": base + 0.1}, "bc")
    row = result.row("better")
    assert row.delta == pytest.approx(10.0)
    assert row.delta_ci[0] == pytest.approx(10.0, abs=1e-9) and row.delta_ci[1] == pytest.approx(10.0, abs=1e-9)
    assert row.improved == 1.0 and row.worsened == 0.0
    # the mean itself still has the scene spread in its CI, and the shift moves it by exactly 10 points
    assert row.mean_ci[1] - row.mean_ci[0] > 3.0
    np.testing.assert_allclose(np.subtract(row.mean_ci, result.row("bc").mean_ci), 10.0, atol=1e-9)


def test_nan_is_a_failed_scene_counted_as_zero():
    base = _scores(50)
    agent = base.copy()
    agent[[3, 7]] = np.nan
    row = paired_comparison({"bc": base, "a": agent}, "bc").row("a")
    assert row.failed == 2
    assert row.mean == pytest.approx(100 * np.nan_to_num(agent).mean())
    assert row.delta == pytest.approx(-100 * base[[3, 7]].sum() / 50)
    assert row.worsened == pytest.approx(2 / 50)


def test_ci_covers_the_true_delta_at_roughly_the_nominal_rate():
    """Simulated recipes: scene difficulty (cancels in the pairing) + a true effect + a per-seed offset + noise;
    the true delta is the effect. 95 % intervals over 200 independent experiments (fixed seed)."""
    rng = np.random.default_rng(123)
    effect, n, seeds, hits, trials = 0.03, 200, 5, 0, 200
    for k in range(trials):
        difficulty = rng.uniform(0.2, 0.9, n)
        base = difficulty + rng.normal(0, 0.05, n)
        agent = {s: difficulty + effect + rng.normal(0, 0.01) + rng.normal(0, 0.1, n) for s in range(seeds)}
        row = paired_comparison({"base": base, "agent": agent}, "base", resamples=500, seed=k).row("agent")
        hits += row.delta_ci[0] <= 100 * effect <= row.delta_ci[1]
    assert 0.85 <= hits / trials <= 0.99, hits / trials


def test_seed_level_widens_the_interval():
    """Seed-to-seed spread must show up in the CI: the same scene noise with large seed offsets gives a wider
    interval than with none."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.9, 300)
    noise = rng.normal(0, 0.05, (3, 300))
    flat = {s: base + noise[s] for s in range(3)}
    spread = {s: base + noise[s] + offset for s, offset in enumerate((-0.05, 0.0, 0.05))}
    width = {}
    for name, agent in (("flat", flat), ("spread", spread)):
        ci = paired_comparison({"b": base, name: agent}, "b").row(name).delta_ci
        width[name] = ci[1] - ci[0]
    assert width["spread"] > 3 * width["flat"]


def test_seeded_and_independent_of_the_other_agents():
    base = _scores()
    rng = np.random.default_rng(1)
    agent = {s: base + rng.normal(0.02, 0.05, base.size) for s in range(3)}
    one = paired_comparison({"bc": base, "a": agent}, "bc", seed=7).row("a")
    two = paired_comparison({"bc": base, "other": base * 0.5, "a": agent}, "bc", seed=7).row("a")
    assert one == two
    assert paired_comparison({"bc": base, "a": agent}, "bc", seed=8).row("a").delta_ci != one.delta_ci


def test_shape_and_argument_errors_name_the_argument():
    base = _scores(10)
    with pytest.raises(ValueError, match=r"scores\['a'\] has 9 scenes per seed but the baseline has 10"):
        paired_comparison({"bc": base, "a": base[:9]}, "bc")
    with pytest.raises(ValueError, match=r"scores\['a'\]\[1\] has shape \(9,\)"):
        paired_comparison({"bc": base, "a": {0: base, 1: base[:9]}}, "bc")
    with pytest.raises(ValueError, match=r"scores\['a'\]\[0\] must be a 1-D array"):
        paired_comparison({"bc": base, "a": {0: base[None]}}, "bc")
    with pytest.raises(ValueError, match=r"scores\['a'\] has no seeds"):
        paired_comparison({"bc": base, "a": {}}, "bc")
    with pytest.raises(ValueError, match="baseline 'nope' is not one of the agents"):
        paired_comparison({"bc": base}, "nope")
    with pytest.raises(ValueError, match=r"scores\['bc'\] has infinite values"):
        paired_comparison({"bc": np.r_[base[:-1], np.inf]}, "bc")
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        paired_comparison({"bc": base}, "bc", resamples=0)
    with pytest.raises(ValueError, match="confidence must be in"):
        paired_comparison({"bc": base}, "bc", confidence=95)


def test_fast_enough_for_500_scenes_x_3_seeds():
    rng = np.random.default_rng(0)
    scores = {"bc": rng.random(500), **{f"r{k}": {s: rng.random(500) for s in range(3)} for k in range(4)}}
    paired_comparison(scores, "bc", resamples=50)  # warm-up
    t = time.perf_counter()
    paired_comparison(scores, "bc", resamples=2000)
    assert time.perf_counter() - t < 1.0


def test_bootstrap_means_share_the_scene_draw():
    """With one seed each, resampled means of x and 2x are exactly proportional: same scenes in every resample."""
    x = _scores(40)[None]
    boot = bootstrap_means({"x": x, "y": 2 * x}, resamples=100, seed=3)
    np.testing.assert_allclose(boot["y"], 2 * boot["x"])
    assert boot["x"].std() > 0


def test_markdown_table():
    base = _scores(20)
    result = paired_comparison({"bc": base, "a": {0: base + 0.1, 1: base + 0.1}}, "bc")
    text = markdown_table(result, extra={"NC": {"bc": 97.0, "a": 98.5}})
    lines = text.splitlines()
    assert lines[0] == "| agent | seeds | scenes | EPDMS [95% CI] | Δ vs bc [95% CI] | better / worse | NC |"
    assert lines[2].startswith("| bc | 1 | 20 |") and "(baseline)" in lines[2] and lines[2].endswith("| 97.0 |")
    assert lines[3].startswith("| a | 2 | 20 |") and "+10.0 [+10.0, +10.0]" in lines[3] and "100% / 0%" in lines[3]


def test_one_scene_per_cluster_is_the_scene_bootstrap():
    base, other = _scores(), _scores(seed=1)
    plain = paired_comparison({"bc": base, "a": other}, "bc")
    clustered = paired_comparison({"bc": base, "a": other}, "bc", clusters=[f"log{j}" for j in range(200)])
    assert clustered.row("a").delta_ci == pytest.approx(plain.row("a").delta_ci)
    assert clustered.clusters == 200 and plain.clusters is None


def test_clusters_widen_the_interval_of_correlated_scenes_and_keep_the_point_estimate():
    # 8 logs of 25 windows: each log's windows share one offset (what consecutive windows of one drive do)
    rng = np.random.default_rng(3)
    logs = np.repeat(np.arange(8), 25)
    base = _scores()
    other = np.clip(base + rng.normal(0.0, 0.1, 8)[logs] + rng.normal(0.0, 0.01, 200), 0.0, 1.0)
    plain = paired_comparison({"bc": base, "a": other}, "bc").row("a")
    clustered = paired_comparison({"bc": base, "a": other}, "bc", clusters=[f"log{k}" for k in logs]).row("a")
    assert clustered.delta == plain.delta and clustered.improved == plain.improved
    width = lambda r: r.delta_ci[1] - r.delta_ci[0]  # noqa: E731
    assert width(clustered) > 3 * width(plain)
    # a resample's scenes are whole logs: its mean difference is a mean of per-log means
    per_log = np.array([(other - base)[logs == k].mean() for k in range(8)]) * 100
    assert per_log.min() - 1e-9 <= clustered.delta_ci[0] and clustered.delta_ci[1] <= per_log.max() + 1e-9


def test_clusters_need_one_label_per_scene():
    base = _scores()
    with pytest.raises(ValueError, match="clusters has 3 labels but the scores have 200 scenes"):
        paired_comparison({"bc": base, "a": base}, "bc", clusters=["a", "b", "c"])
