"""The privileged ``agents_future`` entry of the ``agents`` observation (ObsConfig.agents_future = "logged")."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.obs.common import agents_at_time, world_to_ego
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.obs.registry import ObservationBuilder
from irlvla_gym.obs.vectors import AGENTS_FUTURE_TIMES

from tests.obs.conftest import busy_road_scene


def test_default_observation_has_no_future():
    obs = ObservationBuilder(("agents",)).observe(busy_road_scene())
    assert "agents_future" not in obs


def test_logged_future_follows_the_log_slot_by_slot():
    scene = busy_road_scene()
    builder = ObservationBuilder(("agents",), ObsConfig(agents_future="logged"))
    obs = builder.observe(scene)
    future = obs["agents_future"]
    assert future.shape == (32, 8, 4) and future.dtype == np.float32
    assert builder.space.contains(obs)
    n = int(obs["agents_mask"].sum())
    assert n == 4
    start, _ = agents_at_time(scene, 0.0)
    # slot i holds the scene agent nearest to its t0 position; its future is that agent's logged track
    slot_agent = np.hypot(*(start[:, None, :2] - obs["agents"][None, :n, :2]).transpose(2, 0, 1)).argmin(0)
    for k, t in enumerate(AGENTS_FUTURE_TIMES):
        boxes, _ = agents_at_time(scene, float(t))
        np.testing.assert_allclose(future[:n, k, :2], world_to_ego(boxes[slot_agent, :2], np.zeros(3)), atol=1e-4)
        np.testing.assert_allclose(future[:n, k, 2:], boxes[slot_agent, 6:8], atol=1e-4)
    assert np.all(future[n:, :, :2] == 200.0) and np.all(future[n:, :, 2:] == 0.0)  # empty slots: far away


def test_unlogged_times_are_far_away():
    scene = busy_road_scene()
    valid = scene.agents.valid.copy()
    valid[4:, 0] = False  # the lead car leaves the log after 1.5 s (samples every 0.5 s)
    scene = scene.replace(agents=scene.agents.__class__(**{**scene.agents.__dict__, "valid": valid}))
    obs = ObservationBuilder(("agents",), ObsConfig(agents_future="logged")).observe(scene)
    slot = int(np.argmin(np.hypot(obs["agents"][:4, 0] - 20.0, obs["agents"][:4, 1])))
    assert np.all(obs["agents_future"][slot, :3, 0] < 40.0)
    assert np.all(obs["agents_future"][slot, 4:, :2] == 200.0)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="agents_future"):
        ObsConfig(agents_future="forecast")
