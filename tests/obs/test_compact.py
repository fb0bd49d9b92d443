"""The ``compact`` feature vector: in its space, batch equals singles, and the features say what the scene holds."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.obs import FEATURE_TYPES, ObservationBuilder
from irlvla_gym.obs.compact import AGENT_VALUES, AGENTS, COMPACT_DIM, EGO, LEAD, LIGHTS, LIMIT, ROUTE
from irlvla_gym.scenes.testing import straight_road_scene


def test_space_batch_and_singles(scenes):
    builder = ObservationBuilder(("compact",))
    assert "compact" in FEATURE_TYPES and builder.space["compact"].shape == (COMPACT_DIM,)
    rng = np.random.default_rng(0)
    poses = np.c_[rng.uniform(-5, 15, len(scenes)), rng.uniform(-2, 2, len(scenes)), rng.uniform(-0.5, 0.5,
                                                                                                 len(scenes))]
    times = rng.uniform(0, 4, len(scenes))
    batch = builder.observe_batch(scenes, poses, times)
    for i, scene in enumerate(scenes):
        single = builder.observe(scene, poses[i], times[i])
        assert builder.space.contains(single), scene.token
        np.testing.assert_array_equal(batch["compact"][i], single["compact"])


def test_features_of_a_busy_road(scenes):
    busy = scenes[0]  # red light on the ego's lane, a lead car 20 m ahead at 5 m/s
    obs = ObservationBuilder(("compact",)).observe(busy)["compact"]
    assert obs[EGO][0] == pytest.approx(1.0)  # 10 m/s / 10
    route = obs[ROUTE]
    assert route[0] == 1.0 and abs(route[1]) < 1e-6 and abs(route[2]) < 1e-6
    np.testing.assert_allclose(route[4:6], [5 / 20, 0.0], atol=1e-6)  # centreline 5 m ahead
    assert obs[LIGHTS][1] == 1.0  # red ahead (the ego's lane: distance 0)
    gap = 20.0 - busy.ego.vehicle.front_length - 4.5 / 2
    np.testing.assert_allclose(obs[LEAD], [gap / 50, 0.5, -0.5, 1.0], atol=1e-5)
    agents = obs[AGENTS].reshape(-1, AGENT_VALUES)
    assert agents[:, -1].sum() == 4  # four agents within 50 m
    assert np.all(obs[LIMIT] >= 0)


def test_empty_road_has_no_lead():
    obs = ObservationBuilder(("compact",)).observe(straight_road_scene())["compact"]
    np.testing.assert_array_equal(obs[LEAD], [2.0, 0.0, 0.0, 0.0])
    assert obs[LIGHTS][1] == 0.0 and not obs[AGENTS].any()
