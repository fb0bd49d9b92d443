"""benchmarks.plan_shift's count of plans that end behind the start (reversing), overall and in slow scenes."""

from __future__ import annotations

import numpy as np

from benchmarks.plan_shift import REVERSE_M, SLOW_MPS, reversing
from irlvla_gym.scenes.synthetic import iter_scenes


def test_reversing_counts_plans_ending_behind_the_start_and_the_slow_scenes():
    scenes = list(iter_scenes("synthetic-val", num=6))
    speeds = np.array([s.ego.speed for s in scenes])
    plans = np.zeros((6, 8, 3))
    plans[:, :, 0] = np.linspace(0.5, 4.0, 8)  # forward
    plans[0, :, 0] = -np.linspace(0.1, 2.0, 8)  # reverses 2 m
    plans[1, -1, 0] = -REVERSE_M / 2  # ends behind, but within the tolerance
    result = reversing(scenes, plans, "agent", "synthetic-val", (0.5, 0.6))
    assert result.value == 1.0 and result.extra["slow"] == int((speeds < SLOW_MPS).sum())
    assert result.extra["epdms_forward_only"] == 0.6 and "0.6000 if it never reversed" in result.note
    assert result.extra["behind_slow"] == int(speeds[0] < SLOW_MPS)
    assert result.name == "synthetic-val: agent plans ending behind the start"


def test_forward_only_keeps_forward_plans_and_stops_reversing_ones():
    from benchmarks.plan_shift import forward_only

    plans = np.zeros((2, 8, 3))
    plans[0, :, 0] = np.linspace(0.5, 4.0, 8)
    plans[0, :, 1] = 0.3
    plans[1, :, 0] = [0.4, 0.6, 0.5, 0.2, -0.3, -1.0, -1.5, -2.0]
    out = forward_only(plans)
    np.testing.assert_array_equal(out[0], plans[0])  # a forward plan is unchanged, y and yaw too
    np.testing.assert_array_equal(out[1, :, 0], [0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])  # it stops where it was
    np.testing.assert_array_equal(out[1, :, 1:], plans[1, :, 1:])
