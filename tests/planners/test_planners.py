"""Rule planners: constant velocity, human, PDM-Closed (free road, stopped car, red light), the EP normaliser."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.metrics import score_plans
from irlvla_gym.planners import (
    ConstantVelocityPlanner, HumanPlanner, PDMClosedConfig, PDMClosedPlanner, Planner, default_planner, make_planner,
    pdm_reference_progress,
)
from irlvla_gym.planners.pdm_closed import scene_cache_key
from irlvla_gym.scenes.scene import LIGHT_RED, NUM_TIMES, Agents, EgoState, MapData, PolygonSet, Scene, SceneMetadata
from irlvla_gym.scenes.testing import straight_road_scene

FRONT = 4.049  # Pacifica rear axle to front bumper (m)


def _speeds(plan: np.ndarray) -> np.ndarray:
    """(8,) speeds (m/s) between consecutive poses, origin first."""
    return np.linalg.norm(np.diff(np.vstack([np.zeros(2), plan[:, :2]]), axis=0), axis=1) / 0.5


def red_light_scene(speed: float = 10.0, stop_line_x: float = 30.0) -> Scene:
    """Straight single-lane road along +x: lane [-60, stop_line_x], a red connector [stop_line_x, +15 m], then a lane
    to x = 150. The ego drives at ``speed`` at the origin; the route follows all three."""
    x_edges = [(-60.0, stop_line_x), (stop_line_x, stop_line_x + 15.0), (stop_line_x + 15.0, 150.0)]
    centers = [np.array([[a, 0.0], [b, 0.0]]) for a, b in x_edges]
    lefts = [c + [0.0, 1.75] for c in centers]
    rights = [c - [0.0, 1.75] for c in centers]
    light = np.zeros((NUM_TIMES, 3), np.int8)
    light[:, 1] = LIGHT_RED
    drivable = PolygonSet.from_exteriors([np.array([[-60.0, -1.75], [150.0, -1.75], [150.0, 1.75], [-60.0, 1.75]])])
    mp = MapData.from_lists(lane_ids=["in", "connector", "out"], centerlines=centers, left_boundaries=lefts,
                            right_boundaries=rights, drivable_area=drivable, speed_limits=[15.0] * 3,
                            is_connector=[False, True, False], is_intersection=[False, True, False],
                            successors=[(0, 1), (1, 2)], light_state=light)
    hist = np.zeros((4, 3))
    hist[:, 0] = np.arange(-3, 1) * 0.5 * speed
    fut = np.zeros((8, 3))
    fut[:, 0] = np.arange(1, 9) * 0.5 * speed
    ego = EgoState(hist, np.tile([speed, 0.0], (4, 1)), np.zeros((4, 2)), fut)
    return Scene(SceneMetadata("red-light", "handmade"), ego, Agents.empty(), mp, np.array([0, 1, 2]), 1)


# --------------------------------------------------------------------------------------------------------------------
# Simple planners
# --------------------------------------------------------------------------------------------------------------------


def test_constant_velocity_extrapolates_exactly() -> None:
    scene = straight_road_scene(speed=7.0)
    plan = ConstantVelocityPlanner().plan(scene)
    t = np.arange(1, 9) * 0.5
    np.testing.assert_array_equal(plan, np.stack([7.0 * t, np.zeros(8), np.zeros(8)], axis=1))
    # NAVSIM's agent: speed = |(vx, vy)| straight ahead along the current heading.
    moving_sideways = scene.replace(ego=EgoState(scene.ego.history, np.tile([3.0, 4.0], (4, 1)),
                                                 scene.ego.history_acceleration, scene.ego.future))
    np.testing.assert_allclose(ConstantVelocityPlanner().plan(moving_sideways)[:, 0], 5.0 * t)
    batch = ConstantVelocityPlanner().plan_batch([scene, moving_sideways])
    assert batch.shape == (2, 8, 3)


def test_stand_still_stays_at_the_t0_pose() -> None:
    scene = straight_road_scene(speed=7.0)
    np.testing.assert_array_equal(make_planner("stand_still").plan(scene), np.zeros((8, 3)))
    assert make_planner("stand_still").plan_batch([scene, scene]).shape == (2, 8, 3)
    assert make_planner("stand_still").plan_batch([]).shape == (0, 8, 3)
    # on an open road where PDM-Closed (the EP normaliser) drives on 36 m, the tracked ego brakes from 7 m/s: it
    # still rolls ~8 m (little progress) and the braking is too hard for comfort
    result = score_plans(scene, np.zeros((8, 3)), reference_progress=pdm_reference_progress(scene))
    assert result.ep[0] < 0.3 and result.hc[0] == 0.0


def test_human_planner_returns_the_logged_future_and_protocol() -> None:
    scene = straight_road_scene(speed=5.0)
    plan = HumanPlanner().plan(scene)
    np.testing.assert_array_equal(plan, scene.ego.future)
    plan[0, 0] = 99.0  # a copy: the scene is untouched
    assert scene.ego.future[0, 0] == 2.5
    for name in ("human", "constant_velocity", "stand_still", "pdm_closed"):
        planner = make_planner(name)
        assert isinstance(planner, Planner) and planner.name == name
    with pytest.raises(ValueError, match="unknown planner"):
        make_planner("nope")


# --------------------------------------------------------------------------------------------------------------------
# PDM-Closed
# --------------------------------------------------------------------------------------------------------------------


def test_pdm_closed_free_road_drives_near_the_speed_limit_in_lane() -> None:
    scene = straight_road_scene(speed=10.0, token="free-road")
    out = PDMClosedPlanner().run(scene)
    plan = out.plan
    assert plan.shape == (8, 3) and np.all(np.isfinite(plan))
    assert out.proposals.shape == (15, 8, 3) and out.proposal_poses.shape == (15, 41, 3)
    assert out.offsets[out.best] == 0.0 and out.fractions[out.best] == 1.0
    np.testing.assert_allclose(plan[:, 1:], 0.0, atol=1e-9)  # on the lane centre, heading along it
    speeds = _speeds(plan)
    # Accelerates towards 15 m/s (NAVSIM's IDM: exponent 10, a 0.1 s brake at the first step from its zero-initialised
    # leader, and the end of the 180 m route acting as a leader).
    assert np.all(np.diff(speeds) > -1e-9) and 12.5 < speeds[-1] <= 15.0 + 1e-6
    result = score_plans(scene, plan, human_filter=False, reference_progress=out.reference_progress)
    # ~1: the 8 poses at 0.5 s, tracked as an agent's plan, progress slightly less than the 0.1 s trajectory that
    # sets the normaliser (as in NAVSIM).
    assert result.epdms[0] == pytest.approx(1.0, abs=2e-3)


def test_pdm_closed_stops_behind_a_stopped_car() -> None:
    car_x, car_length = 30.0, 4.5
    scene = straight_road_scene(speed=10.0, agents=[dict(x=car_x, y=0.0, length=car_length)], token="stopped-car")
    planner = PDMClosedPlanner()
    plan = planner.plan(scene)
    assert plan.shape == (8, 3) and np.all(np.isfinite(plan))
    speeds = _speeds(plan)
    # IDM closes in smoothly: decelerating all the way, slow at 4 s, front bumper short of the car's rear.
    assert np.all(np.diff(speeds) < 0) and speeds[-1] < 2.5
    assert plan[-1, 0] + FRONT < car_x - car_length / 2
    result = score_plans(scene, plan, human_filter=False, reference_progress=planner.reference_progress(scene))
    assert result.nc[0] == 1.0 and result.ttc[0] == 1.0
    # The oracle variant (log-replayed future) stops too.
    oracle = PDMClosedPlanner(PDMClosedConfig(agent_forecast="log")).plan(scene)
    assert oracle[-1, 0] + FRONT < car_x - car_length / 2


def test_pdm_closed_stops_at_a_red_light() -> None:
    scene = red_light_scene(speed=10.0, stop_line_x=30.0)
    planner = PDMClosedPlanner()
    plan = planner.plan(scene)
    speeds = _speeds(plan)
    assert np.all(np.isfinite(plan)) and np.all(np.diff(speeds) < 0) and speeds[-1] < 2.5
    assert plan[-1, 0] + FRONT < 30.0  # front bumper before the stop line
    result = score_plans(scene, plan, human_filter=False, reference_progress=planner.reference_progress(scene))
    assert result.tlc[0] == 1.0 and result.nc[0] == 1.0
    # The logged expert drives through the red connector: TLC 0 for it, so the test scene is a real test.
    assert score_plans(scene, scene.ego.future, human_filter=False).tlc[0] == 0.0


def test_pdm_closed_handles_a_standing_start_and_no_route() -> None:
    standing = straight_road_scene(speed=0.0, token="standing")
    plan = PDMClosedPlanner().plan(standing)
    assert np.all(np.isfinite(plan)) and plan[-1, 0] > 5.0  # IDM accelerates from rest
    no_route = straight_road_scene(speed=8.0, token="no-route").replace(route_lanes=np.zeros(0, np.int64))
    plan = PDMClosedPlanner().plan(no_route)
    assert np.all(np.isfinite(plan)) and abs(plan[-1, 1]) < 1.5  # falls back to the heading line (+- an offset)


def test_pdm_reference_progress_is_positive_and_cached() -> None:
    scene = straight_road_scene(speed=10.0, token="reference-progress")
    value = pdm_reference_progress(scene)
    assert value > 30.0  # ~4 s at 10-15 m/s
    assert scene_cache_key(scene) in default_planner()._outputs
    assert pdm_reference_progress(scene) == value
    planner = PDMClosedPlanner()
    assert planner.reference_progress(scene) == pytest.approx(value)
    # The normaliser comes from the 0.1 s trajectory (NAVSIM re-simulates metric_cache.trajectory); the returned 8
    # poses at 0.5 s, re-scored as an agent's plan, give nearly the same progress.
    result = score_plans(scene, planner.plan(scene), human_filter=False)
    assert result.progress[0] * result.multiplicative[0] == pytest.approx(value, abs=0.3)


def test_pdm_reference_progress_cache_follows_the_scene_content() -> None:
    """A scene changed under the same token (here: a stopped car placed ahead) gets a fresh normaliser."""
    free = straight_road_scene(speed=10.0, token="same-token")
    blocked = straight_road_scene(speed=10.0, agents=[dict(x=30.0, y=0.0, length=4.5)], token="same-token")
    assert free.token == blocked.token and scene_cache_key(free) != scene_cache_key(blocked)
    assert scene_cache_key(free) == scene_cache_key(straight_road_scene(speed=10.0, token="same-token"))
    v_free = pdm_reference_progress(free)
    v_blocked = pdm_reference_progress(blocked)
    assert v_blocked < v_free - 10.0  # stops behind the car instead of reusing the free-road value
    assert v_blocked == pytest.approx(PDMClosedPlanner().reference_progress(blocked))
    assert pdm_reference_progress(free) == v_free
    # Edits of the ego state or the map change the key too.
    moved = free.replace(ego=EgoState(free.ego.history, free.ego.history_velocity * 0.5,
                                      free.ego.history_acceleration, free.ego.future))
    assert scene_cache_key(moved) != scene_cache_key(free)
    assert pdm_reference_progress(moved) < v_free


def test_pdm_closed_idm_follows_navsim_batch_idm_policy() -> None:
    """NAVSIM's proposal unrolling (PDMGenerator + BatchIDMPolicy), checked on a free straight road against values
    computed by hand from the official formulas: forward Euler, exponent 10, no speed clamp, the leader searched every
    second step and zero (progress 0, speed 0, rear length 0) at the first step, the route end as the free-road leader
    with the ego's half length as its rear length."""
    speed = 10.0
    scene = straight_road_scene(speed=speed, token="idm-parity")
    cfg = PDMClosedConfig()
    prop = PDMClosedPlanner(cfg).proposals(scene)
    centre = prop["centerline"]
    length = float(np.linalg.norm(np.diff(centre[:, :2], axis=0), axis=1).sum())
    p0 = -centre[0, 0]  # ego (origin) projected on the straight centreline
    a, b, gap0, T = 1.5, 3.0, 1.0, 1.5
    vehicle = scene.ego.vehicle
    half_length = 0.5 * (vehicle.front_length + vehicle.rear_length)
    for k, frac in enumerate(cfg.speed_fractions):
        target = frac * 15.0
        x, v = p0, speed
        xs, vs = [x], [v]
        for t in range(1, 41):
            lead, lead_rear = (0.0, 0.0) if t == 1 else (length, half_length)
            s_star = gap0 + v * T + v * v / (2 * np.sqrt(a * b))
            s_alpha = max(lead - x - lead_rear, gap0)
            acc = float(np.clip(a * (1 - (v / target) ** 10 - (s_star / s_alpha) ** 2), -b, a))
            x, v = x + 0.1 * v, v + 0.1 * acc
            xs.append(x)
            vs.append(v)
        np.testing.assert_allclose(prop["progress"][k], xs, atol=1e-9)
        np.testing.assert_allclose(prop["speeds"][k], vs, atol=1e-9)
        np.testing.assert_allclose(prop["poses"][k, :, 0], np.asarray(xs) - p0, atol=1e-9)
    assert prop["speeds"][4, 1] == pytest.approx(speed - 0.3)  # the first-step brake (-3 m/s^2 for 0.1 s)


def test_pdm_closed_tracks_the_0p1s_proposal_states_from_their_path_projection() -> None:
    """As NAVSIM's PDMSimulator: the 41 proposal states at 0.1 s are the tracker's reference, pose 0 being the
    ego's projection on each proposal path (not the ego pose), while the simulation starts at the ego."""
    scene = straight_road_scene(speed=10.0, token="pose0")
    out = PDMClosedPlanner().run(scene)
    assert out.proposal_poses.shape == (15, 41, 3) and out.states.shape == (15, 41, 11)
    np.testing.assert_allclose(out.proposal_poses[:5, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(out.proposal_poses[5:10, 0, 1], -1.0, atol=1e-9)  # offset path starts 1 m right
    np.testing.assert_allclose(out.proposal_poses[10:, 0, 1], 1.0, atol=1e-9)
    np.testing.assert_allclose(out.states[:, 0, :3], 0.0, atol=1e-12)  # tracking starts at the ego
