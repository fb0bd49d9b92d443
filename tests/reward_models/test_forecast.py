"""Agent forecasts of the reward world model's plan features (reward_models.forecast)."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models.forecast import forecast_agents

TIMES = np.arange(1, 9, dtype=np.float32) * 0.5


def _map(polylines: list[np.ndarray], P: int = 8, L: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Map entry (1, P, L, 11) of lane centrelines (each (L, 2)) + mask."""
    mp = np.zeros((1, P, L, 11), np.float32)
    mask = np.zeros((1, P), np.uint8)
    for p, line in enumerate(polylines):
        d = np.gradient(line, axis=0)
        mp[0, p, :, :2] = line
        mp[0, p, :, 2:4] = d / np.linalg.norm(d, axis=1, keepdims=True)
        mp[0, p, :, 4] = 1.0  # lane
        mask[0, p] = 1
    return mp, mask


def _agent(x: float, y: float, vx: float, vy: float, category: int = 0, N: int = 4):
    ag = np.zeros((1, N, 14), np.float32)
    yaw = np.arctan2(vy, vx)
    ag[0, 0, :8] = [x, y, np.cos(yaw), np.sin(yaw), vx, vy, 4.5, 2.0]
    ag[0, 0, 8 + category] = 1.0
    mask = np.zeros((1, N), np.uint8)
    mask[0, 0] = 1
    return ag, mask


def _arc(radius: float, start: float, stop: float, L: int = 20) -> np.ndarray:
    a = np.linspace(start, stop, L)
    return np.stack([radius * np.sin(a), radius - radius * np.cos(a)], 1).astype(np.float32)  # left turn from (0,0)


def test_constant_velocity_is_xy_plus_t_v():
    ag, amask = _agent(3.0, -1.0, 5.0, 0.5)
    mp, mmask = _map([])
    out = forecast_agents(ag, amask, mp, mmask, TIMES, "cv")
    assert out.shape == (1, 4, 8, 4)
    np.testing.assert_allclose(out[0, 0, :, 0], 3.0 + 5.0 * TIMES, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, :, 1], -1.0 + 0.5 * TIMES, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, :, 2:], np.tile([5.0, 0.5], (8, 1)), atol=1e-6)


def test_lane_forecast_follows_a_curve_across_two_pieces():
    radius, v = 30.0, 10.0
    first, second = _arc(radius, 0.0, 0.6), _arc(radius, 0.6, 1.4)  # the second piece starts where the first ends
    mp, mmask = _map([second, first])  # order must not matter
    ag, amask = _agent(0.0, 0.3, v, 0.0)  # 0.3 m beside the centreline, heading along it
    out = forecast_agents(ag, amask, mp, mmask, TIMES, "lane")[0, 0]
    # on the arc (chords of 20-point pieces sag by < 0.1 m), and the travelled arc length is v * t
    r = np.hypot(out[:, 0], out[:, 1] - radius)
    assert np.abs(r - radius).max() < 0.1
    arc = radius * np.arctan2(out[:, 0], radius - out[:, 1])
    np.testing.assert_allclose(arc, v * TIMES, atol=0.15)
    assert out[-1, 1] > 5.0  # beyond the first piece (0.6 rad x 30 m = 18 m) it turned with the second one
    # velocity along the tangent with the agent's speed
    np.testing.assert_allclose(np.hypot(out[:, 2], out[:, 3]), v, rtol=1e-4)
    cv = forecast_agents(ag, amask, mp, mmask, TIMES, "cv")[0, 0]
    assert np.abs(cv[-1, 1] - 0.3) < 1e-5  # constant velocity goes straight off the lane


def test_lane_forecast_goes_straight_after_the_last_piece():
    line = np.stack([np.linspace(0, 19, 20), np.zeros(20)], 1).astype(np.float32)
    mp, mmask = _map([line])
    ag, amask = _agent(10.0, 0.0, 8.0, 0.0)
    out = forecast_agents(ag, amask, mp, mmask, TIMES, "lane")[0, 0]
    np.testing.assert_allclose(out[:, 0], 10.0 + 8.0 * TIMES, atol=1e-4)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-5)


@pytest.mark.parametrize("case", ["slow", "pedestrian", "against_lane", "off_lane"])
def test_lane_forecast_keeps_constant_velocity(case):
    line = np.stack([np.linspace(0, 38, 20), np.zeros(20)], 1).astype(np.float32)
    mp, mmask = _map([line])
    x, y, vx, vy, cat = {"slow": (5, 0, 0.5, 0, 0), "pedestrian": (5, 0, 1.5, 0, 1),
                         "against_lane": (20, 0, -8, 0, 0), "off_lane": (5, 6, 8, 0, 0)}[case]
    ag, amask = _agent(x, y, vx, vy, cat)
    np.testing.assert_allclose(forecast_agents(ag, amask, mp, mmask, TIMES, "lane"),
                               forecast_agents(ag, amask, mp, mmask, TIMES, "cv"), atol=1e-5)


def test_unknown_forecast_is_refused():
    ag, amask = _agent(0, 0, 1, 0)
    mp, mmask = _map([])
    with pytest.raises(ValueError, match="agent forecast"):
        forecast_agents(ag, amask, mp, mmask, TIMES, "idm")


def test_lane_forecast_is_closer_to_the_logged_future_on_synthetic_scenes():
    """Lateral error of the moving agents' forecasts at 4 s vs their logged boxes (synthetic-val, 30 scenes)."""
    from reward_models.forecast import forecast_errors

    err = forecast_errors("synthetic-val", 30)
    assert err["cv"]["agents"] == err["lane"]["agents"] > 30
    assert err["lane"]["lateral_4s"] < 0.5 * err["cv"]["lateral_4s"], err
    assert err["lane"]["ade"] < err["cv"]["ade"]
