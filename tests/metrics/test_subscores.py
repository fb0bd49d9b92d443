"""Hand-built scenarios, one per sub-score rule and collision class; every case runs on both implementations."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics import prepare_scene, score_states
from irlvla_gym.metrics.result import ACTIVE_FRONT, ACTIVE_LATERAL, STOPPED_TRACK
from irlvla_gym.metrics.testing import (
    constant_velocity_tracks, intersection_scene, line_states, states_from_poses,
)
from irlvla_gym.scenes.scene import BARRIER, EgoState, LIGHT_GREEN, PEDESTRIAN, TRAFFIC_CONE
from irlvla_gym.scenes.testing import straight_road_scene

IMPLS = ("reference", "fast")
FRONT = 4.049  # rear axle to front bumper (m)
REAR = 1.127
HALF_W = 2.297 / 2


@pytest.fixture(scope="module")
def road():
    """Two same-direction lanes (y = 0 ego lane, y = -3.5), drivable y in [-5.25, 1.75]."""
    return prepare_scene(straight_road_scene(num_lanes=2))


@pytest.fixture(scope="module")
def crossing():
    return prepare_scene(intersection_scene())


def run(ctx, states, agents=None, **kw):
    agents = agents if agents is not None else constant_velocity_tracks([])
    out = {impl: score_states(ctx, states, agents, impl=impl, **kw) for impl in IMPLS}
    for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms"):
        np.testing.assert_array_equal(getattr(out["fast"], name), getattr(out["reference"], name), err_msg=name)
    return out["fast"]


# ---- NC ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_rear_ended_by_follower_is_not_at_fault(road, impl):
    states = line_states(5.0)
    # A faster car behind in the same lane catches up and overlaps the ego's rear.
    follower = constant_velocity_tracks([dict(x=-REAR - 2.25 - 1.0, y=0.0, vx=8.0)])
    r = score_states(road, states, follower, impl=impl)
    assert r.nc[0] == 1.0
    assert r.collision_step[0] == -1


@pytest.mark.parametrize("impl", IMPLS)
def test_hitting_a_stopped_car_scores_zero(road, impl):
    states = line_states(10.0)
    r = score_states(road, states, constant_velocity_tracks([dict(x=25.0, y=0.0)]), impl=impl)
    assert r.nc[0] == 0.0
    assert r.collision_type[0] == STOPPED_TRACK
    # Front bumper reaches the car's rear (x = 22.75) when the rear axle passes 18.70 m: step 19.
    assert r.collision_step[0] == 19 and r.collision_agent[0] == 0
    assert "NC 0" in r.explain(0)


@pytest.mark.parametrize("impl", IMPLS)
def test_hitting_a_cone_scores_half(road, impl):
    states = line_states(10.0)
    r = score_states(road, states, constant_velocity_tracks(
        [dict(x=25.0, y=0.0, length=0.4, width=0.4, category=TRAFFIC_CONE)]), impl=impl)
    assert r.nc[0] == 0.5
    assert r.epdms[0] == pytest.approx(0.5 * r.epdms[0] / 0.5)


@pytest.mark.parametrize("impl", IMPLS)
def test_front_bumper_hits_slower_moving_car(road, impl):
    states = line_states(10.0)
    r = score_states(road, states, constant_velocity_tracks([dict(x=20.0, y=0.0, vx=3.0)]), impl=impl)
    assert r.nc[0] == 0.0 and r.collision_type[0] == ACTIVE_FRONT


@pytest.mark.parametrize("impl", IMPLS)
def test_lateral_contact_in_own_lane_is_not_at_fault(road, impl):
    states = line_states(10.0)
    # A car alongside at the same speed drifts left into the ego's flank.
    side = constant_velocity_tracks([dict(x=1.5, y=-3.5, vx=10.0, vy=1.0)])
    r = score_states(road, states, side, impl=impl)
    assert r.nc[0] == 1.0
    assert not r.multiple_lanes[0].any()


@pytest.mark.parametrize("impl", IMPLS)
def test_lateral_contact_while_straddling_lanes_is_at_fault(road, impl):
    states = line_states(10.0, y0=-1.75)  # centred on the lane divider
    side = constant_velocity_tracks([dict(x=1.5, y=-5.5, vx=10.0, vy=0.6)])
    r = score_states(road, states, side, impl=impl)
    assert r.multiple_lanes[0].all()
    assert r.nc[0] == 0.0 and r.collision_type[0] == ACTIVE_LATERAL


@pytest.mark.parametrize("impl", IMPLS)
def test_stopped_ego_is_never_at_fault_and_collided_agent_is_ignored(road, impl):
    stopped = line_states(0.0)
    r = score_states(road, stopped, constant_velocity_tracks([dict(x=12.0, y=0.0, vx=-4.0)]), impl=impl)
    assert r.nc[0] == 1.0
    # Rear-ended first (not at fault), then the same agent would count as a stopped track: ignored.
    states = line_states(5.0)
    tracks = constant_velocity_tracks([dict(x=-4.0, y=0.0, vx=8.0)])
    tracks.boxes[20:, 0, 6] = 0.0  # the follower reports zero speed from step 20 while still overlapping
    tracks.boxes[20:, 0, 0] = tracks.boxes[19, 0, 0] + 5.0 * 0.1 * np.arange(1, 22)
    r = score_states(road, states, tracks, impl=impl)
    assert r.nc[0] == 1.0


@pytest.mark.parametrize("impl", IMPLS)
def test_pedestrian_counts_as_agent(road, impl):
    states = line_states(10.0)
    r = score_states(road, states, constant_velocity_tracks(
        [dict(x=25.0, y=0.0, length=0.6, width=0.6, category=PEDESTRIAN)]), impl=impl)
    assert r.nc[0] == 0.0


# ---- DAC / DDC / TLC -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_off_road_fails_dac(road, impl):
    on_road = line_states(10.0)
    off_road = line_states(10.0, yaw=0.1)  # drifts across the road edge at y = 1.75
    r = score_states(road, np.concatenate([on_road, off_road]), constant_velocity_tracks([]), impl=impl)
    assert r.dac.tolist() == [1.0, 0.0]
    assert r.epdms[1] == 0.0
    assert "DAC 0" in r.explain(1)


def _oncoming_states(speed: float) -> np.ndarray:
    """Ego in the oncoming lane (y = 3.5) of the crossing scene, driving +x, well before the intersection."""
    return line_states(speed, x0=-50.0, y0=3.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("speed, expected", [(1.5, 1.0), (1.9, 0.5), (3.0, 0.5), (5.6, 0.0), (6.5, 0.0)])
def test_driving_direction(crossing, impl, speed, expected):
    r = score_states(crossing, _oncoming_states(speed), constant_velocity_tracks([]), impl=impl)
    assert r.oncoming[0].all()
    # NAVSIM's window holds the displacements of steps t - 10 .. t: 11 steps of 0.1 s.
    assert r.oncoming_progress[0] == pytest.approx(speed * 1.1)
    assert r.ddc[0] == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_oncoming_inside_intersection_does_not_count(crossing, impl):
    # Heading north across the box, off every on-route lane, centre inside the intersection all along.
    inside = line_states(3.0, x0=21.0, y0=-6.0, yaw=np.pi / 2)
    outside = line_states(3.0, x0=-40.0, y0=3.5)  # same motion in the oncoming lane before the box
    r = score_states(crossing, np.concatenate([inside, outside]), constant_velocity_tracks([]), impl=impl)
    assert r.in_intersection[0].all() and r.oncoming[0].sum() > 20
    assert r.oncoming_progress.tolist() == pytest.approx([0.0, 3.3])
    assert r.ddc.tolist() == [1.0, 0.5]


@pytest.mark.parametrize("impl", IMPLS)
def test_entering_red_connector_fails_tlc(crossing, impl):
    through = line_states(10.0)
    stop = line_states(10.0, accel=-7.0)  # stops after ~7 m, front bumper at ~11 m < 20 m
    r = score_states(crossing, np.concatenate([through, stop]), constant_velocity_tracks([]), impl=impl)
    assert r.tlc.tolist() == [0.0, 1.0]
    assert r.red_light[0].argmax() == 16  # front bumper crosses x = 20 between steps 15 and 16
    green = prepare_scene(intersection_scene(light=LIGHT_GREEN))
    assert score_states(green, through, constant_velocity_tracks([]), impl=impl).tlc[0] == 1.0


# ---- EP --------------------------------------------------------------------------------------------------------------

def test_progress_normalisation(road):
    states = line_states([10.0, 5.0, 0.0])
    r = run(road, states)
    assert r.progress == pytest.approx([40.0, 20.0, 0.0])
    assert r.ep == pytest.approx([1.0, 0.5, 0.0])
    r = score_states(road, states, constant_velocity_tracks([]), reference_progress=80.0)
    assert r.ep == pytest.approx([0.5, 0.25, 0.0])
    slow = line_states([1.0])  # 4 m < 5 m threshold: EP 1
    assert run(road, slow).ep[0] == 1.0


# ---- TTC -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_ttc_stopped_car_ahead(road, impl):
    # Ego at 10 m/s brakes hard to stop just short of a stopped car; within 0.9 s the projection reaches it.
    states = line_states(10.0, accel=-4.0)  # stops after 12.5 m, front at 16.55 m
    tracks = constant_velocity_tracks([dict(x=19.0, y=0.0)])  # rear at 16.75 m
    r = score_states(road, states, tracks, impl=impl)
    assert r.nc[0] == 1.0
    assert r.ttc[0] == 0.0 and r.ttc_agent[0] == 0
    far = constant_velocity_tracks([dict(x=60.0, y=0.0)])
    assert score_states(road, states, far, impl=impl).ttc[0] == 1.0
    # A stopped ego never violates TTC.
    assert score_states(road, line_states(0.0), constant_velocity_tracks([dict(x=6.0, y=0.0)]),
                        impl=impl).ttc[0] == 1.0


# ---- LK --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("off_steps, expected", [(25, 0.0), (15, 1.0)])
def test_lane_keeping(road, impl, off_steps, expected):
    states = line_states(10.0)
    states[0, :off_steps, B.Y] = -0.8  # 0.8 m off the lane centre, inside the lane
    r = score_states(road, states, constant_velocity_tracks([]), impl=impl)
    assert r.lk[0] == expected
    assert r.lk_deviation[0, 0] == pytest.approx(0.8)


@pytest.mark.parametrize("impl", IMPLS)
def test_lane_keeping_skips_intersection_steps_without_resetting(crossing, impl):
    states = line_states(0.0, x0=24.0, y0=-0.8, num=41)
    states[0, :, B.X] = np.r_[np.full(12, 4.0), np.full(17, 24.0), np.full(12, 4.5)]
    # 12 + 12 = 24 deviating steps outside the intersection around 17 steps inside: the run is not reset.
    r = score_states(crossing, states, constant_velocity_tracks([]), impl=impl)
    assert r.in_intersection[0, 12:29].all() and not r.in_intersection[0, :12].any()
    assert r.lk[0] == 0.0
    states[0, 29:, B.Y] = 0.0  # back on the centreline after the intersection: a run of 12 only
    assert score_states(crossing, states, constant_velocity_tracks([]), impl=impl).lk[0] == 1.0


# ---- HC / EC ---------------------------------------------------------------------------------------------------------

def _steady_accel_scene(accel: float):
    base = straight_road_scene()
    e = base.ego
    ego = EgoState(e.history, e.history_velocity, np.tile([accel, 0.0], (4, 1)), e.future)
    return prepare_scene(base.replace(ego=ego))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("accel, expected", [(2.39, 1.0), (2.41, 0.0), (-4.04, 1.0), (-4.06, 0.0)])
def test_history_comfort_bounds(impl, accel, expected):
    ctx = _steady_accel_scene(accel)
    states = line_states(10.0)
    states[..., B.AX] = accel
    r = score_states(ctx, states, constant_velocity_tracks([]), impl=impl)
    assert r.hc[0] == expected
    assert r.comfort_ok[0, 0] == bool(expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_history_comfort_yaw_rate(road, impl):
    t = np.arange(41) * 0.1
    ok = np.stack([t, np.zeros_like(t), 0.9 * t], -1)
    bad = np.stack([t, np.zeros_like(t), 1.0 * t], -1)
    states = states_from_poses(np.stack([ok, bad]))
    states[..., B.AX:B.AY + 1] = 0.0
    r = score_states(road, states, constant_velocity_tracks([]), impl=impl)
    assert r.comfort_ok[:, 5].tolist() == [True, False]


@pytest.mark.parametrize("impl", IMPLS)
def test_extended_comfort(road, impl):
    states = line_states(10.0, accel=1.0)
    same = line_states(10.0 - 0.5, accel=1.0)  # the same motion, started 0.5 s earlier
    r = score_states(road, states, constant_velocity_tracks([]), previous_states=same, impl=impl)
    assert r.has_ec and r.ec[0] == 1.0
    jumpy = same.copy()
    jumpy[..., B.AX] = 3.0  # EC compares acceleration magnitudes (NAVSIM: acceleration_coordinate="magnitude")
    r2 = score_states(road, states, constant_velocity_tracks([]), previous_states=jumpy, impl=impl)
    assert r2.ec[0] == 0.0 and r2.ec_rms[0, 0] == pytest.approx(2.0)
    # EC has weight 2 of 16 when present.
    assert r.epdms[0] - r2.epdms[0] == pytest.approx(2.0 / 16.0)


# ---- aggregation and the human filter ----------------------------------------------------------------------------

def test_epdms_weights(road):
    states = line_states([10.0, 10.0])
    states[1, :25, B.Y] = -0.8  # LK fails
    r = run(road, states)
    assert r.epdms.tolist() == pytest.approx([1.0, 12.0 / 14.0])
    assert r.pdms.tolist() == pytest.approx([1.0, 1.0])


def test_human_filter(road):
    states = line_states([10.0, 10.0], accel=-4.0)
    tracks = constant_velocity_tracks([dict(x=19.0, y=0.0)])
    human = line_states(10.0, accel=-4.0)  # the human also brakes late: TTC 0
    filtered = score_states(road, states, tracks, human_states=human)
    unfiltered = score_states(road, states, tracks)
    assert unfiltered.ttc.tolist() == [0.0, 0.0]
    assert "ttc" in filtered.filtered and filtered.ttc.tolist() == [1.0, 1.0]
    assert filtered.unfiltered["ttc"].tolist() == [0.0, 0.0]
    assert (filtered.epdms > unfiltered.epdms).all()
    clean = score_states(road, states, tracks, human_states=line_states(2.0))
    assert clean.filtered == ()


def test_static_obstacle_halves_epdms(road):
    states = line_states(10.0)
    tracks = constant_velocity_tracks([dict(x=25.0, y=0.0, length=0.5, width=0.5, category=BARRIER)])
    r = run(road, states, tracks)
    assert r.nc[0] == 0.5
    assert r.epdms[0] == pytest.approx(0.5 * (5 * r.ep[0] + 5 * r.ttc[0] + 2 * r.lk[0] + 2 * r.hc[0]) / 14)
