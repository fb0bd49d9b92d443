"""The canonical Scene: construction, validation errors naming scene and field, flat-array round trip."""

import dataclasses

import numpy as np
import pytest

from irlvla_gym.scenes.scene import (
    COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, COMMAND_UNKNOWN, LIGHT_RED, EgoState, PolygonSet, Ragged, Scene,
    SceneValidationError, route_command, wrap_angle,
)
from irlvla_gym.scenes.testing import straight_road_scene


def _arrays_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_straight_road_scene_is_valid_and_round_trips():
    scene = straight_road_scene(agents=[dict(x=20, y=0, vx=5), dict(x=-15, y=-3.5, vx=12, category=3)])
    assert scene.map.num_lanes == 2 and len(scene.agents) == 2
    arrays = scene.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    again = Scene.from_arrays(arrays)
    assert _arrays_equal(arrays, again.to_arrays())
    assert again.cameras == scene.cameras and again.metadata == scene.metadata


def test_cameras_and_metadata_survive_round_trip():
    scene = straight_road_scene().replace(cameras={"CAM_F0": "a/b=c.jpg", "CAM_B0": "x.jpg"})
    assert Scene.from_arrays(scene.to_arrays()).cameras == {"CAM_F0": "a/b=c.jpg", "CAM_B0": "x.jpg"}


@pytest.mark.parametrize("mutate, field", [
    (lambda e: dataclasses.replace(e, future=np.where(np.arange(24).reshape(8, 3) == 7, np.nan, e.future)),
     "ego.future"),
    (lambda e: dataclasses.replace(e, future=e.future[:6]), "future"),
    (lambda e: dataclasses.replace(e, history_velocity=e.history_velocity * 100), "ego.history_velocity"),
    (lambda e: dataclasses.replace(e, future=e.future * [100.0, 1, 1]), "ego.future"),  # cm instead of m
    (lambda e: dataclasses.replace(e, future=e.future + [0, 0, 90.0]), "ego.future[:, 2]"),  # degrees
])
def test_bad_ego_is_named(mutate, field):
    scene = straight_road_scene(token="tok-1")
    with pytest.raises(SceneValidationError) as err:
        scene.replace(ego=mutate(scene.ego))
    assert err.value.token == "tok-1" and err.value.field == field
    assert "tok-1" in str(err.value) and field in str(err.value)


def test_bad_agents_and_map_are_named():
    scene = straight_road_scene(agents=[dict(x=20, y=0)], token="tok-2")
    boxes = scene.agents.boxes.copy()
    boxes[3, 0, 3] = -1.0
    with pytest.raises(SceneValidationError, match="length, width"):
        scene.replace(agents=dataclasses.replace(scene.agents, boxes=boxes))
    with pytest.raises(SceneValidationError, match="drivable_area"):
        scene.replace(map=dataclasses.replace(scene.map, drivable_area=PolygonSet.empty()))
    with pytest.raises(SceneValidationError, match="route_lanes"):
        scene.replace(route_lanes=np.array([5]))
    with pytest.raises(SceneValidationError, match="lane_light_state"):
        scene.replace(map=dataclasses.replace(scene.map, lane_light_state=np.full((9, 2), 7)))
    bad_centres = Ragged(scene.map.lane_centerlines.points, np.array([0, 1, 4]))
    with pytest.raises(SceneValidationError, match="lane_centerlines"):
        scene.replace(map=dataclasses.replace(scene.map, lane_centerlines=bad_centres))
    with pytest.raises(SceneValidationError, match="command"):
        scene.replace(command=9)


def test_t0_pose_must_be_origin():
    scene = straight_road_scene()
    hist = scene.ego.history.copy()
    hist[-1, 0] = 1.0
    with pytest.raises(SceneValidationError, match="origin"):
        scene.replace(ego=dataclasses.replace(scene.ego, history=hist))


def test_invalid_agent_rows_may_hold_anything_finite_but_valid_rows_are_checked():
    scene = straight_road_scene(agents=[dict(x=20, y=0)])
    valid = scene.agents.valid.copy()
    valid[5:] = False
    boxes = scene.agents.boxes.copy()
    boxes[5:] = 0.0  # zero-filled invalid rows (length 0) are fine
    scene.replace(agents=dataclasses.replace(scene.agents, boxes=boxes, valid=valid))


def test_polygon_set_holes_round_trip_through_shapely():
    from shapely.geometry import Polygon

    outer = [(0, 0), (10, 0), (10, 10), (0, 10)]
    hole = [(4, 4), (6, 4), (6, 6), (4, 6)]
    ps = PolygonSet.from_shapely([Polygon(outer, [hole]), Polygon([(20, 0), (21, 0), (21, 1)])])
    assert ps.count == 2 and ps.ring_is_hole.tolist() == [False, True, False]
    polys = ps.to_shapely()
    assert polys[0].area == pytest.approx(96.0) and polys[1].area == pytest.approx(0.5)


def test_route_command_classifies_lateral_displacement():
    s = np.linspace(0, 60, 61)
    straight = np.stack([s - 10, np.zeros_like(s)], 1)
    left = np.stack([s - 10, 0.02 * np.maximum(s - 10, 0) ** 2], 1)
    assert route_command(straight, 30) == COMMAND_STRAIGHT
    assert route_command(left, 30) == COMMAND_LEFT
    assert route_command(left * [1, -1], 30) == COMMAND_RIGHT
    assert route_command(np.zeros((1, 2)), 30) == COMMAND_UNKNOWN


def test_wrap_angle():
    np.testing.assert_allclose(wrap_angle(np.array([0.0, 3 * np.pi / 2, -3 * np.pi / 2])), [0, -np.pi / 2, np.pi / 2])


def test_red_light_state_is_kept():
    scene = straight_road_scene()
    lights = np.zeros((9, 2), np.int8)
    lights[:, 0] = LIGHT_RED
    again = scene.replace(map=dataclasses.replace(scene.map, lane_light_state=lights))
    assert again.map.lane_light_state.dtype == np.int8 and again.map.lane_light_state[4, 0] == LIGHT_RED


def test_ego_state_properties():
    scene = straight_road_scene(speed=7.0)
    assert isinstance(scene.ego, EgoState)
    assert scene.ego.speed == pytest.approx(7.0)
    assert scene.ego.vehicle.length == pytest.approx(5.176)
