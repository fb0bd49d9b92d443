"""BEV raster content: geometry, channels, rotation, caching."""

from __future__ import annotations

import numpy as np

from irlvla_gym.obs.bev import (
    AGENTS_PAST, BEV_CHANNELS, DRIVABLE, EGO, ROUTE, TRAFFIC_LIGHTS, VEHICLES, VULNERABLE_STATIC, BevRenderer,
)
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.testing import straight_road_scene


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def test_agent_ahead_is_above_ego_and_left_is_left():
    scene = straight_road_scene(agents=[dict(x=20.0, y=0.0), dict(x=0.0, y=10.0)])
    frame = BevRenderer().render(scene)
    assert frame.shape == (len(BEV_CHANNELS), 128, 128) and frame.dtype == np.uint8
    ego = _centroid(frame[EGO] > 0)
    # ego rear axle at row 48 m / 0.5 m = 96, column 64; box centre 1.46 m ahead of the axle
    np.testing.assert_allclose(ego, [96 - 1.461 / 0.5 - 0.5, 63.5], atol=0.6)
    cars = frame[VEHICLES] > 0
    ahead, left = cars[:, 56:72].copy(), cars.copy()
    left[:, 56:72] = False
    assert _centroid(ahead)[0] < ego[0] - 35  # 20 m ahead = 40 rows up
    assert _centroid(left)[1] < ego[1] - 15  # 10 m left = 20 columns left


def test_drivable_channel_on_and_off_road():
    scene = straight_road_scene(num_lanes=2)  # road spans y in [-5.25, 1.75]
    frame = BevRenderer().render(scene)
    assert frame[DRIVABLE, 96, 64] == 255  # under the ego
    assert frame[DRIVABLE, 96, 10] == 0 and frame[DRIVABLE, 96, 120] == 0  # 27 m left / 28 m right: off road
    assert frame[ROUTE, 40, 64] == 255 and frame[ROUTE, 40, 70] == 0  # ego lane on route, right lane not


def test_yaw_rotates_picture_consistently():
    scene = straight_road_scene(agents=[dict(x=20.0, y=0.0)])
    renderer = BevRenderer()
    straight = renderer.render(scene)
    # Turned +90 deg (facing scene +y) the car at scene (20, 0) is 20 m to the ego's right.
    turned = renderer.render(scene, [0.0, 0.0, np.pi / 2])
    car = _centroid(turned[VEHICLES] > 0)
    np.testing.assert_allclose(car, [96 - 0.5, 64 + 40 - 0.5], atol=1.0)
    # The road (along scene x) becomes horizontal: rotating the drivable channel by 90 deg about the ego agrees.
    assert turned[DRIVABLE, 96, 100] == 255 and turned[DRIVABLE, 60, 64] == 0
    # Moving the ego 10 m forward shifts the car down by 20 rows.
    moved = renderer.render(scene, [10.0, 0.0, 0.0])
    shift = _centroid(moved[VEHICLES] > 0) - _centroid(straight[VEHICLES] > 0)
    np.testing.assert_allclose(shift, [20.0, 0.0], atol=0.6)


def test_time_interpolation_and_past():
    scene = straight_road_scene(agents=[dict(x=10.0, y=0.0, vx=4.0)])
    renderer = BevRenderer()
    at_0, at_1_25 = renderer.render(scene, None, 0.0), renderer.render(scene, None, 1.25)
    shift = _centroid(at_1_25[VEHICLES] > 0) - _centroid(at_0[VEHICLES] > 0)
    np.testing.assert_allclose(shift, [-10.0, 0.0], atol=0.6)  # 5 m forward = 10 rows up
    past = at_0[AGENTS_PAST]
    assert set(np.unique(past)) == {0, 85, 170}  # extrapolated back 0.5 s (170) and 1.0 s (85)
    assert _centroid(past == 85)[0] > _centroid(past == 170)[0]  # the older box lies further back


def test_lights_and_vulnerable(scenes):
    frame = BevRenderer().render(scenes[0])  # busy road: red light 40 m ahead, pedestrian, cone
    lights = frame[TRAFFIC_LIGHTS]
    assert lights.max() == 255 and _centroid(lights > 0)[0] < 96 - 65  # stop line ~38 m ahead
    vulnerable = frame[VULNERABLE_STATIC]
    assert set(np.unique(vulnerable)) == {0, 128, 255}  # pedestrian 255, cone 128


def test_cached_equals_uncached_and_config(scenes):
    cached, uncached = BevRenderer(), BevRenderer(cache=False)
    poses = np.array([[0.0, 0.0, 0.0], [3.0, -1.0, 0.3]])
    for scene in scenes:
        for pose in poses:
            np.testing.assert_array_equal(cached.render(scene, pose, 0.5), uncached.render(scene, pose, 0.5))
            np.testing.assert_array_equal(cached.render(scene, pose, 0.5), cached.render(scene, pose, 0.5))
    small = BevRenderer(ObsConfig(bev_size=(32, 48)))
    assert small.render(scenes[0]).shape == (8, 32, 48)
