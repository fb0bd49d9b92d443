"""End to end: score_plans (simulation + traffic + scoring), EC from previous plans, explain(), two-stage score."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.metrics import (
    prepare_scene, score_plans, score_states, two_stage_score,
)
from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.testing import constant_velocity_tracks, intersection_scene, line_states
from irlvla_gym.scenes.testing import straight_road_scene


def test_state_columns_match_the_simulator():
    from irlvla_gym.sim import StateIndex

    assert (B.X, B.Y, B.YAW, B.VX, B.VY, B.AX, B.AY) == (
        StateIndex.X, StateIndex.Y, StateIndex.HEADING, StateIndex.VELOCITY_X, StateIndex.VELOCITY_Y,
        StateIndex.ACCELERATION_X, StateIndex.ACCELERATION_Y)
    assert (B.YAW_RATE, B.YAW_ACC) == (StateIndex.ANGULAR_VELOCITY, StateIndex.ANGULAR_ACCELERATION)


def test_score_plans_end_to_end_both_implementations():
    scene = straight_road_scene(agents=[dict(x=30.0, y=0.0, vx=2.0), dict(x=20.0, y=-3.5, vx=10.0)])
    expert = scene.ego.future
    off_road = expert.copy()
    off_road[:, 1] = np.linspace(0.5, 6.0, 8)
    stay = np.zeros((8, 3))
    plans = np.stack([expert, off_road, stay])
    ctx = prepare_scene(scene)
    fast = score_plans(scene, plans, context=ctx)
    ref = score_plans(scene, plans, context=ctx, impl="reference")
    for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "epdms"):
        np.testing.assert_array_equal(fast.subscores().get(name, getattr(fast, name)), getattr(ref, name))
    assert fast.dac[1] == 0.0 and fast.epdms[1] == 0.0
    assert "DAC 0" in fast.explain(1)
    assert fast.human is not None  # the filter ran
    # The expert rear-ends the slow car at x = 30: the human got NC 0, so NC is neutralised for every plan.
    assert fast.human["nc"] == 0.0 and "nc" in fast.filtered and fast.nc.tolist() == [1.0, 1.0, 1.0]
    unfiltered = score_plans(scene, plans, context=ctx, human_filter=False)
    assert unfiltered.nc[0] == 0.0 and unfiltered.epdms[0] == 0.0
    assert unfiltered.filtered == () and unfiltered.human is None


def test_previous_plans_enable_extended_comfort():
    scene = straight_road_scene()
    plan = scene.ego.future[None]
    r = score_plans(scene, plan, previous_plans=plan)  # same plan 0.5 s earlier, in its own frame
    assert r.has_ec and r.ec[0] == 1.0
    assert np.all(np.isfinite(r.ec_rms))
    without = score_plans(scene, plan)
    assert not without.has_ec and np.isnan(without.ec_rms).all()


def test_reactive_traffic_runs():
    scene = straight_road_scene(agents=[dict(x=-15.0, y=0.0, vx=12.0)])
    r = score_plans(scene, np.zeros((2, 8, 3)), traffic="idm")
    assert r.nc.shape == (2,)
    with pytest.raises(ValueError):
        score_plans(scene, np.zeros((1, 8, 3)), traffic="teleport")


def test_red_light_explained():
    ctx = prepare_scene(intersection_scene())
    r = score_states(ctx, line_states(10.0), constant_velocity_tracks([]))
    assert r.tlc[0] == 0.0 and r.epdms[0] == 0.0
    assert "TLC 0: entered a red on-route connector at t=1.6 s" in r.explain(0)


def test_two_stage_score():
    stage1 = np.array([1.0, 0.5])
    endpoints = np.array([[0.0, 0.0], [10.0, 0.0]])
    near_far = [np.array([1.0, 0.0]), np.array([0.8])]
    starts = [np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[100.0, 0.0]])]
    # Group 0: weights exp(0) vs exp(-45) -> ~1.0; group 1: all weights ~0 -> uniform -> 0.8.
    assert two_stage_score(stage1, endpoints, near_far, starts) == pytest.approx((1.0 + 0.5 * 0.8) / 2)
    # Equal distances -> equal weights.
    assert two_stage_score(np.array([1.0]), np.zeros((1, 2)), [np.array([1.0, 0.0])],
                           [np.array([[0.1, 0.0], [-0.1, 0.0]])]) == pytest.approx(0.5)
