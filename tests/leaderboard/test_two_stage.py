"""Two-stage pseudo-simulation: the aggregation checked by hand, the stage-2 scenes, a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irlvla_gym.leaderboard.report import summarise, two_stage_scene_scores
from irlvla_gym.leaderboard.two_stage import (
    StartPerturbation, aggregate_two_stage, stage_two_scene, stage_two_weights, transform_boxes,
)

# Three groups, by hand (variance 0.1 m^2, w = exp(-d^2 / 0.2)):
#  g1: stage 1 = 0.8, endpoint (0, 0); stage-2 starts (0, 0), (0.5, 0) -> w ~ (1, e^-1.25) / sum; scores (1.0, 0.5)
#  g2: stage 1 = 1.0, endpoint (10, 10), far from both starts -> weights ~0 -> uniform; scores (0.2, 0.6)
#  g3: stage 1 = 0.5, no stage-2 scenes -> its stage-1 score alone
E = math.exp(-1.25)
W1 = (1.0 / (1.0 + E), E / (1.0 + E))
G1 = 0.8 * (W1[0] * 1.0 + W1[1] * 0.5)
G2 = 1.0 * 0.4
EXPECTED = (G1 + G2 + 0.5) / 3


def test_weights_by_hand():
    np.testing.assert_allclose(stage_two_weights(np.zeros(2), np.array([[0.0, 0.0], [0.5, 0.0]])), W1)
    np.testing.assert_allclose(stage_two_weights(np.array([10.0, 10.0]), np.array([[0.0, 0.0], [1.0, 0.0]])),
                               [0.5, 0.5])
    assert W1[0] == pytest.approx(0.777299, abs=1e-6)


def test_aggregation_by_hand():
    got = aggregate_two_stage([0.8, 1.0, 0.5], [np.zeros(2), np.array([10.0, 10.0]), np.zeros(2)],
                              [[1.0, 0.5], [0.2, 0.6], []],
                              [np.array([[0.0, 0.0], [0.5, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]),
                               np.zeros((0, 2))])
    assert got == pytest.approx(EXPECTED)
    assert got == pytest.approx(0.5369732, abs=1e-6)


def _entry(stage1, endpoint, stage2):
    zero = {n: 1.0 for n in ("pdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec")}
    return {"scores": {**zero, "epdms": stage1}, "error": None, "endpoint": list(endpoint), "plan_seconds": 0.0,
            "stage2": [{"token": f"s2-{i}", "start": list(start), "scores": {**zero, "epdms": s}, "error": None}
                       for i, (start, s) in enumerate(stage2)]}


def test_summary_row_by_hand():
    records = [
        {"index": 0, "token": "g1", "scene_error": None,
         "agents": {"a": _entry(0.8, (0, 0), [((0, 0), 1.0), ((0.5, 0), 0.5)])}},
        {"index": 1, "token": "g2", "scene_error": None,
         "agents": {"a": _entry(1.0, (10, 10), [((0, 0), 0.2), ((1, 0), 0.6)])}},
        {"index": 2, "token": "g3", "scene_error": None, "agents": {"a": _entry(0.5, (0, 0), [])}},
    ]
    (row,) = summarise(records, ["a"], two_stage=True)
    assert row["epdms"] == pytest.approx(EXPECTED)
    assert row["stage1_epdms"] == pytest.approx((0.8 + 1.0 + 0.5) / 3)
    assert row["stage2_epdms"] == pytest.approx((W1[0] + W1[1] * 0.5 + 0.4) / 2)
    assert row["stage2_scenes"] == 4 and row["scenes"] == 3 and row["errors"] == 0
    per_scene = [two_stage_scene_scores(r["agents"]["a"]) for r in records]
    np.testing.assert_allclose([p["epdms"] for p in per_scene], [G1, G2, 0.5])
    assert np.mean([p["epdms"] for p in per_scene]) == pytest.approx(row["epdms"])
    assert math.isnan(per_scene[2]["stage2_epdms"]) and per_scene[1]["stage2_epdms"] == pytest.approx(0.4)


@pytest.fixture(scope="module")
def hard_scene():
    from irlvla_gym.scenes.synthetic import generate_scene, SPLITS

    return generate_scene(SPLITS["synthetic-hard"].first_seed + 1, split="synthetic-hard")


def test_stage_two_scene_is_re_anchored(hard_scene):
    s2 = stage_two_scene(hard_scene, StartPerturbation("left", lateral=0.75, heading=0.1))
    assert s2 is not None
    end = hard_scene.ego.future[-1]
    c, s = math.cos(end[2]), math.sin(end[2])
    np.testing.assert_allclose(s2.start[:2], end[:2] + 0.75 * np.array([-s, c]), atol=1e-9)
    assert s2.start[2] == pytest.approx(end[2] + 0.1)
    scene = s2.scene
    assert scene.token == f"{hard_scene.token}~s2-left"
    np.testing.assert_array_equal(scene.ego.history[-1], 0.0)
    # Agents at the stage-2 t0 are the stage-1 agents at 4 s seen from the start pose.
    valid = hard_scene.agents.valid[-1]
    expected = transform_boxes(hard_scene.agents.boxes[-1], s2.start)
    np.testing.assert_allclose(scene.agents.boxes[0][valid][:, :3], expected[valid][:, :3], atol=1e-6)
    # Lights hold their 4 s state.
    assert np.all(scene.map.lane_light_state == hard_scene.map.lane_light_state[-1])
    assert scene.ego.future.shape == (8, 3) and np.all(np.isfinite(scene.ego.future))


def test_two_stage_run_end_to_end():
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    perts = (StartPerturbation("on-expert"), StartPerturbation("left", lateral=0.75, heading=0.1))
    result = run_leaderboard(LeaderboardConfig(split="synthetic-hard", agents=("human", "constant-velocity"),
                                               num_scenes=1, two_stage=True, perturbations=perts, progress=False))
    (record,) = result.records
    human = record["agents"]["human"]
    assert [s["perturbation"] for s in human["stage2"]] == ["on-expert", "left"]
    assert human["endpoint"] == pytest.approx(human["stage2"][0]["start"])
    for row in result.rows:
        entry = record["agents"][row["agent"]]
        expected = aggregate_two_stage([entry["scores"]["epdms"]], [np.array(entry["endpoint"])],
                                       [[s["scores"]["epdms"] for s in entry["stage2"]]],
                                       [np.array([s["start"] for s in entry["stage2"]])])
        assert row["epdms"] == pytest.approx(expected)
        assert row["stage2_scenes"] == 2
