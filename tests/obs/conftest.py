"""Shared scenes for the observation tests: hand-built ones, plus synthetic ones when the generator is importable."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.scenes.scene import LIGHT_RED, NUM_TIMES, PEDESTRIAN, TRAFFIC_CONE, MapData, PolygonSet, Scene
from irlvla_gym.scenes.testing import straight_road_scene


def busy_road_scene() -> Scene:
    """Three lanes, a lead car, a car to the right, a pedestrian on a crosswalk, a cone, a red light 40 m ahead."""
    base = straight_road_scene(
        num_lanes=3, length_ahead=40.0, token="busy-road",
        agents=[dict(x=20.0, y=0.0, vx=5.0), dict(x=12.0, y=-3.5, vx=8.0),
                dict(x=36.0, y=1.0, category=PEDESTRIAN, length=0.7, width=0.7, height=1.8),
                dict(x=8.0, y=-8.0, category=TRAFFIC_CONE, length=0.5, width=0.5, height=0.8)])
    light = np.zeros((NUM_TIMES, base.map.num_lanes), np.int8)
    light[:, 0] = LIGHT_RED
    crosswalk = PolygonSet.from_exteriors([np.array([[34.0, -10.0], [38.0, -10.0], [38.0, 3.0], [34.0, 3.0]])])
    return base.replace(map=MapData(**{**base.map.__dict__, "lane_light_state": light, "crosswalks": crosswalk}))


def synthetic_scenes(n: int) -> list[Scene]:
    try:
        from irlvla_gym.scenes.synthetic import generate_scene
    except ImportError:
        return []
    return [generate_scene(seed) for seed in range(n)]


@pytest.fixture(scope="session")
def scenes() -> list[Scene]:
    """A few varied scenes (hand-built + up to 4 synthetic)."""
    return [busy_road_scene(), straight_road_scene(), straight_road_scene(agents=[dict(x=-5.0, y=3.5, vx=12.0)],
                                                                          num_lanes=1, token="one-lane")] \
        + synthetic_scenes(4)
