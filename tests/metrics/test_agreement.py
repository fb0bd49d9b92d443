"""Reference (shapely loops) vs fast (numpy) on every sub-score and every per-step flag.

Random smooth motions plus adversarial states placed a hair inside / outside of agent boxes, lane and road edges
and a red connector, over hand-built and generated scenes. CI runs ~1,100 plans; ``IRLVLA_SLOW=1`` runs ~4,000.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from irlvla_gym.metrics import agent_tracks, prepare_scene, score_states
from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.testing import constant_velocity_tracks, intersection_scene, line_states, random_states
from irlvla_gym.scenes.scene import TRAFFIC_CONE
from irlvla_gym.scenes.testing import straight_road_scene

SLOW = bool(os.environ.get("IRLVLA_SLOW"))
SCALE = 4 if SLOW else 1
FRONT, REAR, HALF_W = 4.049, 1.127, 2.297 / 2
EPS = (-1e-6, 1e-6, -1e-3, 1e-3, 0.0)


def assert_agree(ref, fast, label: str = "") -> None:
    for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms", "pdms"):
        np.testing.assert_array_equal(fast.__dict__[name], ref.__dict__[name], err_msg=f"{label}: {name}")
    for name in ("non_drivable", "multiple_lanes", "oncoming", "in_intersection", "red_light", "at_fault_collision",
                 "ttc_infraction", "collision_step", "collision_agent", "collision_type", "collision_category",
                 "ttc_step", "ttc_agent", "comfort_ok"):
        np.testing.assert_array_equal(fast.__dict__[name], ref.__dict__[name], err_msg=f"{label}: {name}")
    np.testing.assert_allclose(fast.progress, ref.progress, atol=1e-9, err_msg=f"{label}: progress")
    np.testing.assert_allclose(fast.oncoming_progress, ref.oncoming_progress, atol=1e-9, err_msg=label)
    np.testing.assert_allclose(fast.lk_deviation, ref.lk_deviation, atol=1e-9, err_msg=f"{label}: lk_deviation")


def both(ctx, states, agents, **kw):
    return (score_states(ctx, states, agents, impl="reference", **kw),
            score_states(ctx, states, agents, impl="fast", **kw))


def _static_states(poses: np.ndarray, speed: float = 3.0) -> np.ndarray:
    """(K, 41, 11) states holding one pose each (with a nominal forward speed so faults apply)."""
    out = np.zeros((len(poses), 41, 11))
    out[..., :3] = poses[:, None, :]
    out[..., B.VX] = speed
    return out


def test_adversarial_touching_agents_and_edges():
    car_x, cone_x = 20.0, 40.0
    scene = straight_road_scene(num_lanes=2)
    ctx = prepare_scene(scene)
    tracks = constant_velocity_tracks([dict(x=car_x, y=0.0), dict(x=cone_x, y=-3.5, length=0.5, width=0.5,
                                                                   category=TRAFFIC_CONE),
                                       dict(x=car_x, y=-3.5, vx=2.0, yaw=0.3)])
    poses = []
    for e in EPS:
        poses.append([car_x - 2.25 - FRONT - e, 0.0, 0.0])  # front bumper at the car's rear face
        poses.append([cone_x - 0.25 - FRONT - e, -3.5, 0.0])  # at the cone
        poses.append([5.0, 1.75 - HALF_W + e, 0.0])  # left corners on the road edge
        poses.append([5.0, -1.75 + HALF_W + e, 0.0])  # right corners on the lane divider
        poses.append([5.0, -1.75 - HALF_W + e, 0.0])  # left corners on the divider from the other lane
        poses.append([car_x - 2.25 - FRONT - e, -1.75, 0.0])  # straddling, at the car
        poses.append([car_x - 2.25 - e, -1.0 - e, np.pi / 2])  # side-on to the car's corner
    poses = np.array(poses)
    states = np.concatenate([_static_states(poses), _static_states(poses, speed=0.0),
                             line_states(np.linspace(0, 15, 16))])
    ref, fast = both(ctx, states, tracks)
    assert_agree(ref, fast, "touching")
    assert set(ref.nc.tolist()) == {0.0, 0.5, 1.0}  # every class is exercised
    assert ref.dac.min() == 0.0 and ref.multiple_lanes.any()


def test_adversarial_red_connector_and_intersection():
    scene = intersection_scene()
    ctx = prepare_scene(scene)
    poses = []
    for e in EPS:
        poses.append([20.0 - FRONT + e, 0.0, 0.0])  # front bumper on the stop line
        poses.append([20.0 - FRONT + e, 0.0, 0.05])
        poses.append([25.0, 1.75 + HALF_W + e, 0.0])  # right side on the connector's left edge
        poses.append([10.0, 1.75 - e, 0.0])  # rear axle on the centre line, centre near the lane edge
        poses.append([20.0 - 1.461 + e, -8.0, np.pi / 2])  # centre on the intersection's edge
    poses = np.array(poses)
    states = np.concatenate([_static_states(poses), line_states(np.linspace(0, 14, 15)),
                             line_states(np.linspace(1, 8, 8), x0=-40.0, y0=3.5)])
    ref, fast = both(ctx, states, constant_velocity_tracks([dict(x=30.0, y=-20.0, vy=6.0, yaw=np.pi / 2)]))
    assert_agree(ref, fast, "red connector")
    assert ref.tlc.min() == 0.0 and ref.tlc.max() == 1.0
    assert set(ref.ddc.tolist()) >= {0.5, 1.0}


@pytest.mark.parametrize("seed", range(2))
def test_random_plans_hand_built_scenes(seed):
    rng = np.random.default_rng(seed)
    for scene in (straight_road_scene(num_lanes=3, ego_lane=1, agents=[
            dict(x=15, y=0, vx=4), dict(x=-12, y=0, vx=12), dict(x=8, y=3.5, vx=9, vy=-0.5),
            dict(x=25, y=-3.5, category=TRAFFIC_CONE, length=0.5, width=0.5)]),
                  intersection_scene(agents=[dict(x=30, y=-25, vy=6, yaw=np.pi / 2),
                                             dict(x=60, y=3.5, vx=-8, yaw=np.pi), dict(x=8, y=0, vx=3)])):
        ctx = prepare_scene(scene)
        states = random_states(rng, 100 * SCALE, lateral=4.0)
        previous = random_states(rng, 1)
        human = line_states(8.0)
        ref, fast = both(ctx, states, agent_tracks(scene), previous_states=previous, human_states=human)
        assert_agree(ref, fast, scene.token)


def _synthetic():
    try:
        from irlvla_gym.scenes.synthetic import generate_scene
    except ImportError:  # the generator is optional
        return None
    return generate_scene


@pytest.mark.parametrize("seed", range(8 * SCALE))
def test_random_plans_generated_scenes(seed):
    generate_scene = _synthetic()
    if generate_scene is None:
        pytest.skip("irlvla_gym.scenes.synthetic not available")
    scene = generate_scene(1000 + seed)
    ctx = prepare_scene(scene)
    rng = np.random.default_rng(seed)
    speed = float(np.hypot(*scene.ego.velocity))
    states = random_states(rng, 60, speed=(max(0.0, speed - 4), speed + 4), lateral=3.0, yaw_spread=0.3)
    ref, fast = both(ctx, states, agent_tracks(scene), human_states=states[:1])
    assert_agree(ref, fast, scene.token)


def test_reactive_agents_per_plan():
    """IDM traffic gives every plan its own agents (K, 41, N, 8); both implementations index them per plan."""
    from irlvla_gym.sim import simulate_plans

    scene = straight_road_scene(agents=[dict(x=-15, y=0, vx=12), dict(x=30, y=0, vx=5)])
    ctx = prepare_scene(scene)
    rng = np.random.default_rng(3)
    plans = np.tile(scene.ego.future[None], (12, 1, 1))
    plans[..., 0] *= rng.uniform(0.0, 1.6, (12, 1))
    states = simulate_plans(scene, plans)
    tracks = agent_tracks(scene, "idm", states)
    assert tracks.boxes.ndim == 4
    ref, fast = both(ctx, states, tracks)
    assert_agree(ref, fast, "idm")
