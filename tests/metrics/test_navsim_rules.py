"""Rules where NAVSIM's code differs from a plain reading of the metric (issue "parity"); each test pins the
behaviour of navsim/planning/simulation/planner/pdm_planner/scoring/* and navsim/evaluate/pdm_score.py, on both
scorer implementations where a whole score is involved."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import savgol_filter

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics import prepare_scene, score_states
from irlvla_gym.metrics.comfort import comfort_series, extended_comfort, history_comfort
from irlvla_gym.metrics.config import COMFORT_NAMES, DEFAULT_CONFIG
from irlvla_gym.metrics.context import AgentTracks
from irlvla_gym.metrics.result import STOPPED_TRACK
from irlvla_gym.metrics.testing import constant_velocity_tracks, line_states, random_states
from irlvla_gym.scenes.scene import PACIFICA, VEHICLE
from irlvla_gym.scenes.testing import straight_road_scene

IMPLS = ("reference", "fast")
LON = COMFORT_NAMES.index("lon_accel")


@pytest.fixture(scope="module")
def road():
    """Two same-direction lanes (y = 0 ego lane on the route, y = -3.5 its sibling), drivable y in [-5.25, 1.75]."""
    return prepare_scene(straight_road_scene(num_lanes=2))


@pytest.mark.parametrize("impl", IMPLS)
def test_lane_keeping_measures_distance_to_the_route_centreline(road, impl):
    # Driving the whole horizon centred in the sibling lane: inside a lane, but 3.5 m off the route centreline.
    sibling = line_states(10.0, y0=-3.5)
    on_route = line_states(10.0, y0=0.3)
    r = score_states(road, np.concatenate([sibling, on_route]), constant_velocity_tracks([]), impl=impl)
    assert r.lk_deviation[0] == pytest.approx(np.full(41, 3.5))
    assert r.lk_deviation[1] == pytest.approx(np.full(41, 0.3))
    assert r.lk.tolist() == [0.0, 1.0]
    assert r.oncoming[0].sum() == 0  # the sibling lane is on route (same lane group), so only LK notices


def _alongside(speed_first: float, speed_later: float) -> AgentTracks:
    """A car overlapping the ego's right flank the whole time (moving with it at 5 m/s), whose recorded velocity
    is ``speed_first`` at its first step and ``speed_later`` afterwards."""
    tracks = constant_velocity_tracks([dict(x=0.5, y=-2.1, vx=5.0)])
    boxes = tracks.boxes.copy()
    boxes[:, 0, 6] = speed_later
    boxes[0, 0, 6] = speed_first
    return AgentTracks(boxes, tracks.valid, np.array([VEHICLE]))


@pytest.mark.parametrize("impl", IMPLS)
def test_stopped_track_is_decided_by_the_agent_as_first_seen(road, impl):
    ego = line_states(5.0)
    # Moving when first seen, "stopped" later: a lateral contact inside the ego lane, not at fault.
    r = score_states(road, ego, _alongside(5.0, 0.0), impl=impl)
    assert r.nc[0] == 1.0 and not r.at_fault_collision[0].any()
    # Stopped when first seen: a stopped-track collision (at fault) at every step, whatever it does later.
    r = score_states(road, ego, _alongside(0.0, 5.0), impl=impl)
    assert r.nc[0] == 0.0 and r.collision_type[0] == STOPPED_TRACK


def _comfort_case(yaw_rate: float, accel: float) -> tuple[np.ndarray, np.ndarray]:
    """States turning at a constant yaw rate with constant rear-axle acceleration, history the same."""
    t = np.arange(55) * 0.1
    full = np.zeros((1, 55, 11))
    full[..., B.YAW] = yaw_rate * t
    full[..., B.VX] = 3.0
    full[..., B.AX] = accel
    full[..., B.YAW_RATE] = yaw_rate
    history = full[0, :15].copy()
    history[:, B.YAW_RATE] = 0.0  # logged history states carry no yaw rate (as NAVSIM's EgoState defaults)
    return full[:, 14:], history


def test_longitudinal_acceleration_is_taken_at_the_box_centre():
    states, history = _comfort_case(yaw_rate=0.9, accel=1.5)
    d = PACIFICA.rear_axle_to_center
    assert d == pytest.approx(1.461)
    hc, ok, vmin, vmax = history_comfort(states, history, DEFAULT_CONFIG, d)
    # 1.5 + 1.461 * 0.9^2 = 2.68 > 2.40 at the centre once the simulated states start; 1.5 at the rear axle.
    full = np.concatenate([history[None, :14], states], axis=1)
    series = comfort_series(full, DEFAULT_CONFIG, d)["lon_accel"][0]
    assert series[-10:] == pytest.approx(np.full(10, 1.5 + d * 0.81), abs=1e-6)
    assert vmax[0, LON] == series.max() > 2.4
    assert not ok[0, LON] and hc[0] == 0.0
    hc_axle, ok_axle, _, vmax_axle = history_comfort(states, history, DEFAULT_CONFIG, 0.0)
    assert ok_axle[0, LON] and vmax_axle[0, LON] == pytest.approx(1.5)


def test_yaw_rate_uses_navsims_window_of_five():
    rng = np.random.default_rng(0)
    heading = np.cumsum(rng.normal(0.0, 0.02, (2, 55)), axis=1)
    states = np.zeros((2, 55, 11))
    states[..., B.YAW] = heading
    s = comfort_series(states, DEFAULT_CONFIG)
    want = np.round(savgol_filter(heading, 5, 2, deriv=1, delta=0.1, axis=-1), 8)
    np.testing.assert_allclose(s["yaw_rate"], want, atol=1e-9)
    want_acc = np.round(savgol_filter(heading, 5, 3, deriv=2, delta=0.1, axis=-1), 8)
    np.testing.assert_allclose(s["yaw_accel"], want_acc, atol=1e-6)


def test_history_comfort_uses_14_history_states():
    rng = np.random.default_rng(1)
    states = random_states(rng, 3)
    history = np.zeros((15, 11))
    history[:, B.VX] = 5.0
    base = history_comfort(states, history, DEFAULT_CONFIG)
    last = history.copy()
    last[14, B.AX] = 30.0  # -0.1 s: NAVSIM drops it
    np.testing.assert_array_equal(history_comfort(states, last, DEFAULT_CONFIG)[3], base[3])
    earlier = history.copy()
    earlier[13, B.AX] = 30.0  # -0.2 s: used
    assert history_comfort(states, earlier, DEFAULT_CONFIG)[0].tolist() == [0.0, 0.0, 0.0]


def test_scene_history_states_have_no_yaw_rate():
    ctx = prepare_scene(straight_road_scene())
    assert ctx.history_states.shape == (15, 11)
    assert not ctx.history_states[:, [B.STEER, B.STEER_RATE, B.YAW_RATE, B.YAW_ACC]].any()


@pytest.mark.parametrize("impl", IMPLS)
def test_human_filter_never_neutralises_history_comfort(road, impl):
    assert "hc" not in DEFAULT_CONFIG.human_filtered
    jerky = line_states(10.0)
    jerky[0, 20:, B.AX] = -9.0  # braking beyond the -4.05 bound
    r = score_states(road, jerky, constant_velocity_tracks([]), human_states=jerky, impl=impl)
    assert r.human["hc"] == 0.0 and r.hc[0] == 0.0


def test_extended_comfort_is_computed_on_the_overlap_only():
    rng = np.random.default_rng(2)
    current, previous = random_states(rng, 2)[:1], random_states(rng, 2)[1:]
    ec, rms = extended_comfort(current, previous, DEFAULT_CONFIG)
    # States outside the overlap (previous 0..4, current 36..40) do not enter the smoothing.
    prev2, cur2 = previous.copy(), current.copy()
    prev2[:, :5, B.AX] += 3.0
    cur2[:, 36:, B.AX] -= 3.0
    np.testing.assert_array_equal(extended_comfort(cur2, prev2, DEFAULT_CONFIG)[1], rms)
    # EC's yaw acceleration: window 5, polynomial order 2 (NAVSIM's extract_features), on the 36 overlapping states.
    def yaw_accel(states):
        return np.round(savgol_filter(np.unwrap(states[0, :, B.YAW]), 5, 2, deriv=2, delta=0.1), 8)

    want = np.sqrt(np.mean((yaw_accel(current[:, :36]) - yaw_accel(previous[:, 5:])) ** 2))
    assert rms[0, 3] == pytest.approx(want, abs=1e-9) and want > 0.0
    assert ec[0] == float(np.all(rms[0] <= [0.7, 0.5, 0.1, 0.1]))
