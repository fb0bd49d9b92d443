"""Traffic models: log replay and reactive IDM agents."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.scenes.scene import BARRIER, PEDESTRIAN, Agents
from irlvla_gym.scenes.testing import straight_road_scene
from irlvla_gym.sim import IDMParams, StateIndex, TrafficConfig
from irlvla_gym.sim.geometry import agent_corners, ego_corners
from irlvla_gym.sim.traffic import IDMTraffic, idm_acceleration, log_replay, simulate_idm_agents

PARAMS = IDMParams()


def _ego_rollout(x0: float, speed: float, K: int = 1) -> np.ndarray:
    """(K, 41, 11) ego states driving straight along +x at constant speed from x0."""
    states = np.zeros((K, 41, 11))
    states[..., StateIndex.X] = x0 + speed * np.arange(41) * 0.1
    states[..., StateIndex.VELOCITY_X] = speed
    return states


def test_idm_acceleration_limits():
    assert idm_acceleration(0.0, np.inf, 0.0, 10.0, PARAMS) == pytest.approx(1.0)
    assert idm_acceleration(10.0, np.inf, 0.0, 10.0, PARAMS) == pytest.approx(0.0)
    assert idm_acceleration(10.0, 2.0, 0.0, 10.0, PARAMS) == pytest.approx(-2.0)  # clipped to the max deceleration
    # Equilibrium behind a stopped leader at the minimum gap.
    assert idm_acceleration(0.0, PARAMS.min_gap_to_lead_agent, 0.0, 10.0, PARAMS) == pytest.approx(0.0)
    # A much faster leader does not repel (Treiber's max(0, .) in the desired gap).
    assert idm_acceleration(5.0, 10.0, 20.0, 10.0, PARAMS) > 0.0
    out = idm_acceleration(np.zeros((3, 4)), np.full((3, 4), np.inf), np.zeros((3, 4)), 10.0, PARAMS)
    assert out.shape == (3, 4)


def test_idm_rollout_settles_at_min_gap_behind_stopped_leader():
    # Forward-Euler IDM (as in the traffic loop) for 60 s behind a stopped leader 40 m ahead.
    gap, speed, dt = 40.0, 8.0, 0.1
    gaps = []
    for _ in range(600):
        accel = idm_acceleration(speed, gap, 0.0, 10.0, PARAMS)
        gap -= speed * dt
        speed = max(speed + accel * dt, 0.0)
        gaps.append(gap)
    assert min(gaps) >= PARAMS.min_gap_to_lead_agent - 1e-6
    assert gaps[-1] == pytest.approx(PARAMS.min_gap_to_lead_agent, abs=0.3) and speed < 0.05


def test_log_replay_matches_scene_at_samples_and_interpolates():
    scene = straight_road_scene(agents=[dict(x=10.0, y=0.0, vx=4.0), dict(x=-5.0, y=-3.5, vx=2.0, yaw=np.pi - 0.05)])
    boxes = scene.agents.boxes.copy()
    valid = scene.agents.valid.copy()
    boxes[:, 1, 2] = np.where(np.arange(9) % 2 == 0, np.pi - 0.05, -np.pi + 0.05)  # yaw flips across the seam
    valid[3, 0] = False
    boxes[3, 0] = 0.0
    scene = scene.replace(agents=Agents(boxes, valid, scene.agents.category, scene.agents.track_id))
    track = log_replay(scene)
    assert track.boxes.shape == (41, 2, 8) and track.valid.shape == (41, 2)
    samples = track.boxes[::5]
    np.testing.assert_array_equal(samples[valid], boxes[valid])  # bit for bit at valid samples
    # NAVSIM bridges the missing sample 3 (interpolating between samples 2 and 4 over its observed samples).
    assert track.valid[:, 0].all()
    np.testing.assert_allclose(track.boxes[10:21, 0, 0], 10.0 + 4.0 * np.arange(10, 21) * 0.1)
    # Linear position, shortest-arc yaw.
    np.testing.assert_allclose(track.boxes[2, 0, 0], 10.0 + 4.0 * 0.2)
    assert np.all(np.abs(np.abs(track.boxes[:, 1, 2]) - np.pi) <= 0.05 + 1e-12)


def test_log_replay_presence_and_single_samples_as_navsim():
    scene = straight_road_scene(agents=[dict(x=10.0, y=0.0, vx=4.0), dict(x=30.0, y=-3.5, vx=5.0),
                                        dict(x=-20.0, y=0.0, vx=3.0)])
    boxes, valid = scene.agents.boxes.copy(), scene.agents.valid.copy()
    valid[:, 1] = False
    valid[8, 1] = True  # seen once, at 4 s
    valid[:2, 2] = False
    valid[6:, 2] = False  # seen at 1.0 .. 2.5 s only
    boxes[~valid] = 0.0
    scene = scene.replace(agents=Agents(boxes, valid, scene.agents.category, scene.agents.track_id))
    track = log_replay(scene)
    # A track seen in one sample is held there (velocity included) for the whole horizon.
    assert track.valid[:, 1].all()
    np.testing.assert_array_equal(track.boxes[:, 1], np.broadcast_to(boxes[8, 1], (41, 8)))
    # Otherwise present from its first to its last sample only.
    assert not track.valid[:10, 2].any() and track.valid[10:26, 2].all() and not track.valid[26:, 2].any()
    assert np.all(track.boxes[~track.valid] == 0.0)
    shown_once = log_replay(scene, hold_single_samples=False)
    assert shown_once.valid[:, 1].tolist() == [t == 40 for t in range(41)]


def test_follower_stops_behind_stopped_ego_with_min_gap():
    # Agent at 6 m/s, 25 m behind the rear bumper of an ego standing still: IDM must stop >= 1 m behind it.
    scene = straight_road_scene(speed=0.1, agents=[dict(x=-35.0, y=0.0, vx=6.0)])
    ego = _ego_rollout(x0=-8.0, speed=0.0)
    track = simulate_idm_agents(scene, ego, TrafficConfig(use_lane_speed_limit=False))
    assert track.boxes.shape == (1, 41, 1, 8) and track.reactive.tolist() == [True]
    agent_front = track.boxes[0, :, 0, 0] + track.boxes[0, :, 0, 3] / 2
    ego_rear = ego_corners(ego[0])[:, 2, 0]
    gap = ego_rear - agent_front
    assert gap.min() >= PARAMS.min_gap_to_lead_agent - 1e-6
    assert np.all(np.diff(track.boxes[0, :, 0, 0]) >= 0.0)
    speed = track.boxes[0, :, 0, 6]
    assert np.all(np.diff(speed) < 0.0) and speed[-1] < 3.0  # braking all along (IDM approaches gently)


def test_follower_never_passes_through_static_object():
    # A barrier blocks the lane close ahead of a fast agent: bounded IDM braking cannot stop in time; the agent must
    # still never enter the barrier box.
    scene = straight_road_scene(agents=[dict(x=0.0, y=-3.5, vx=12.0),
                                        dict(x=22.0, y=-3.5, length=0.5, width=3.0, category=BARRIER)], ego_lane=0)
    track = simulate_idm_agents(scene, None)
    assert track.reactive.tolist() == [True, False]
    front = track.boxes[0, :, 0, 0] + track.boxes[0, :, 0, 3] / 2
    barrier_rear = 22.0 - 0.25
    assert front.max() <= barrier_rear + 1e-9
    np.testing.assert_array_equal(track.boxes[0, :, 1], log_replay(scene).boxes[:, 1])


def test_free_road_agent_accelerates_to_target():
    scene = straight_road_scene(agents=[dict(x=-40.0, y=-3.5, vx=2.0)])
    track = simulate_idm_agents(scene, None, TrafficConfig(use_lane_speed_limit=False))
    speed = track.boxes[0, :, 0, 6]
    accel = np.diff(speed) / 0.1
    assert np.all(accel > 0.0) and accel.max() <= PARAMS.accel_max + 1e-9
    assert accel[:5].min() > 0.9  # near the maximum when far below the target
    assert speed[-1] < PARAMS.target_velocity
    assert np.all(np.abs(track.boxes[0, :, 0, 1] + 3.5) < 1e-6)  # stays on its lane centre
    # With the lane speed limit (15 m/s here) as the target it accelerates harder later on.
    limit = simulate_idm_agents(scene, None).boxes[0, -1, 0, 6]
    assert limit > speed[-1]


def test_reactive_agents_react_to_each_ego_rollout():
    scene = straight_road_scene(agents=[dict(x=-30.0, y=0.0, vx=10.0),
                                        dict(x=5.0, y=6.0, vx=1.0, category=PEDESTRIAN)])
    egos = np.concatenate([_ego_rollout(0.0, 10.0), _ego_rollout(0.0, 0.0), _ego_rollout(0.0, 5.0)])
    traffic = IDMTraffic(scene, TrafficConfig(use_lane_speed_limit=False))
    batch = traffic.simulate(egos)
    assert batch.boxes.shape == (3, 41, 2, 8) and batch.valid.shape == (3, 41, 2)
    end_x = batch.boxes[:, -1, 0, 0]
    assert end_x[1] < end_x[2] < end_x[0]  # follows a stopped ego least far
    for k in range(3):
        np.testing.assert_allclose(traffic.simulate(egos[k:k + 1]).boxes[0], batch.boxes[k], atol=1e-12)
    # The pedestrian is replayed identically in every rollout.
    for k in range(3):
        np.testing.assert_array_equal(batch.boxes[k, :, 1], log_replay(scene).boxes[:, 1])
    np.testing.assert_array_equal(batch.boxes[:, 0], np.broadcast_to(scene.agents.boxes[0], (3, 2, 8)))
    # No agent box ever overlaps the ego (all egos ahead of the follower).
    agent_front = batch.boxes[:, :, 0, 0] + 2.25
    ego_rear = ego_corners(egos)[..., 2, 0]
    assert np.all(agent_front <= ego_rear)


def test_agent_corners_of_simulated_boxes():
    scene = straight_road_scene(agents=[dict(x=-30.0, y=-3.5, vx=5.0)])
    track = simulate_idm_agents(scene, _ego_rollout(0.0, 10.0, K=2))
    assert agent_corners(track.boxes).shape == (2, 41, 1, 4, 2)


def test_red_light_stops_agent():
    from irlvla_gym.scenes.scene import LIGHT_RED, MapData
    # Two chained lanes on one line: lane 0 (x in [-100, 0]) -> lane 1 (x in [0, 100]), lane 1 red.
    base = straight_road_scene(agents=[dict(x=-25.0, y=0.0, vx=6.0)])
    xs0, xs1 = np.array([-100.0, 0.0]), np.array([0.0, 100.0])
    def line(xs, y):
        return np.stack([xs, np.full(2, y)], 1)
    light = np.zeros((9, 2), np.int8)
    light[:, 1] = LIGHT_RED
    mp = MapData.from_lists(lane_ids=["a", "b"], centerlines=[line(xs0, 0), line(xs1, 0)],
                            left_boundaries=[line(xs0, 1.75), line(xs1, 1.75)],
                            right_boundaries=[line(xs0, -1.75), line(xs1, -1.75)],
                            drivable_area=base.map.drivable_area, speed_limits=[10.0, 10.0], successors=[(0, 1)],
                            light_state=light)
    scene = base.replace(map=mp, route_lanes=np.array([0, 1]))
    track = simulate_idm_agents(scene, None)
    front = track.boxes[0, :, 0, 0] + 2.25
    speed = track.boxes[0, :, 0, 6]
    assert front.max() <= 0.0 and np.all(np.diff(speed[20:]) < 0.0) and speed[-1] < 3.0
    free = simulate_idm_agents(scene, None, TrafficConfig(stop_at_red_lights=False))
    assert (free.boxes[0, :, 0, 0] + 2.25).max() > 0.0


def test_who_is_reactive():
    from irlvla_gym.scenes.scene import BICYCLE
    scene = straight_road_scene(agents=[
        dict(x=20.0, y=0.0, vx=5.0),  # vehicle on its lane: IDM
        dict(x=30.0, y=0.0, vx=-5.0, yaw=np.pi),  # wrong-way vehicle: no lane matches its heading -> replayed
        dict(x=10.0, y=-3.5, vx=4.0, category=BICYCLE),  # bicycles are replayed
        dict(x=5.0, y=30.0, vx=5.0),  # far off any lane -> replayed
    ])
    track = simulate_idm_agents(scene)
    assert track.reactive.tolist() == [True, False, False, False]
    replay = log_replay(scene)
    np.testing.assert_array_equal(track.boxes[0][:, 1:], replay.boxes[:, 1:])
    np.testing.assert_array_equal(track.valid[0], np.ones((41, 4), bool))


def test_empty_scene_traffic():
    scene = straight_road_scene()
    track = simulate_idm_agents(scene, _ego_rollout(0.0, 10.0, K=2))
    assert track.boxes.shape == (2, 41, 0, 8) and track.valid.shape == (2, 41, 0)
    assert log_replay(scene).boxes.shape == (41, 0, 8)
