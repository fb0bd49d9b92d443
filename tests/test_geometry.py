"""The lowest floor: irlvla_gym.geometry (planar helpers) and irlvla_gym.cache (the LRU), and that the old names
still point at them."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym import geometry as g
from irlvla_gym.cache import LRU


# ---------------------------------------------------------------------------------------------------------------- angles


def test_wrap_angle_range_and_shape() -> None:
    a = np.array([-3 * np.pi, -np.pi, -0.5, 0.0, 0.5, np.pi, 3 * np.pi, 7.0, -7.0])
    w = g.wrap_angle(a)
    assert w.shape == a.shape
    assert np.all(w >= -np.pi) and np.all(w < np.pi)  # [-pi, pi): +pi maps to -pi
    assert g.wrap_angle(np.pi) == pytest.approx(-np.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-12)
    assert g.wrap_angle(np.zeros((2, 3))).shape == (2, 3)
    assert float(g.wrap_angle(0.25)) == 0.25


def test_wrap_angle_is_the_one_everyone_imports() -> None:
    from irlvla_gym.scenes import scene

    assert scene.wrap_angle is g.wrap_angle


# ----------------------------------------------------------------------------------------------------------------- boxes


def test_box_corners_orders() -> None:
    box = np.array([[1.0, 2.0, 0.0, 4.0, 2.0]])
    ccw = g.box_corners(box)[0]
    np.testing.assert_allclose(ccw, [[3, 3], [-1, 3], [-1, 1], [3, 1]])  # FL, RL, RR, FR
    cw = g.box_corners(box, clockwise=True)[0]
    np.testing.assert_allclose(cw, [[3, 3], [3, 1], [-1, 1], [-1, 3]])  # FL, FR, RR, RL
    # shoelace sign: counter-clockwise positive, clockwise negative
    area = lambda r: 0.5 * np.sum(r[:, 0] * np.roll(r[:, 1], -1) - np.roll(r[:, 0], -1) * r[:, 1])  # noqa: E731
    assert area(ccw) == pytest.approx(8.0) and area(cw) == pytest.approx(-8.0)


def test_box_corners_rotation_batch_and_extra_columns() -> None:
    rng = np.random.default_rng(0)
    boxes = rng.normal(size=(3, 5, 8))
    boxes[..., 3:5] = np.abs(boxes[..., 3:5]) + 0.5
    corners = g.box_corners(boxes)
    assert corners.shape == (3, 5, 4, 2) and corners.dtype == np.float64
    np.testing.assert_allclose(corners.mean(axis=-2), boxes[..., :2], atol=1e-12)  # centre-based
    front_mid = 0.5 * (corners[..., 0, :] + corners[..., 3, :])
    heading = np.stack([np.cos(boxes[..., 2]), np.sin(boxes[..., 2])], -1)
    np.testing.assert_allclose(front_mid - boxes[..., :2], 0.5 * boxes[..., 3:4] * heading, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(corners[..., 0, :] - corners[..., 3, :], axis=-1), boxes[..., 4])


def test_oriented_box_corners_off_centre_reference() -> None:
    # reference point 1 m behind the front face and 3 m ahead of the rear face, heading +y
    c = g.oriented_box_corners(0.0, 0.0, np.pi / 2, 1.0, 3.0, 1.0, clockwise=True)
    np.testing.assert_allclose(c, [[-1, 1], [1, 1], [1, -3], [-1, -3]], atol=1e-12)
    c = g.oriented_box_corners(np.zeros(4), np.zeros(4), np.zeros(4), 1.0, 2.0, 0.5)
    assert c.shape == (4, 4, 2)


def test_old_corner_helpers_are_the_shared_ones() -> None:
    from irlvla_gym.obs.common import box_corners
    from irlvla_gym.sim.geometry import agent_corners, ego_corners
    from irlvla_gym.scenes.scene import PACIFICA

    assert box_corners is g.box_corners
    boxes = np.array([[1.0, -2.0, 0.3, 4.5, 1.9, 1.5, 0.0, 0.0]])
    np.testing.assert_array_equal(agent_corners(boxes), g.box_corners(boxes, clockwise=True))
    pose = np.array([[2.0, 1.0, -0.4]])
    expect = g.oriented_box_corners(2.0, 1.0, -0.4, PACIFICA.front_length, PACIFICA.rear_length,
                                    0.5 * PACIFICA.width, clockwise=True)
    np.testing.assert_array_equal(ego_corners(pose)[0], expect)


# ------------------------------------------------------------------------------------------------------------- polylines


def test_polyline_lengths() -> None:
    line = np.array([[0.0, 0.0, 9.0], [3.0, 4.0, 9.0], [3.0, 4.0, 9.0], [3.0, 10.0, 9.0]])  # extra column ignored
    np.testing.assert_allclose(g.segment_lengths(line), [5.0, 0.0, 6.0])
    assert g.polyline_length(line) == 11.0
    np.testing.assert_allclose(g.arc_length(line), [0.0, 5.0, 5.0, 11.0])
    assert g.polyline_length(line[:1]) == 0.0 and g.polyline_length(line[:0]) == 0.0
    np.testing.assert_array_equal(g.arc_length(line[:1]), [0.0])
    assert g.arc_length(np.zeros((0, 2))).shape == (0,)
    assert isinstance(g.polyline_length(line.astype(np.float32)), float)


def test_polyline_length_is_the_one_adapters_import() -> None:
    from irlvla_gym.scenes import geometry as scene_geometry

    assert scene_geometry.polyline_length is g.polyline_length


# ------------------------------------------------------------------------------------------------------------------ LRU


def test_lru_get_make_evicts_least_recently_used() -> None:
    calls: list[str] = []

    def make(v: str):
        return lambda: calls.append(v) or v.upper()

    lru: LRU[str] = LRU(2)
    assert lru.get("a", make("a")) == "A"
    assert lru.get("b", make("b")) == "B"
    assert lru.get("a", make("a")) == "A"  # hit: "a" is now the most recently used
    assert calls == ["a", "b"] and len(lru) == 2
    lru.get("c", make("c"))  # evicts "b"
    assert "b" not in lru and "a" in lru and "c" in lru and len(lru) == 2
    lru.get("b", make("b"))
    assert calls == ["a", "b", "c", "b"]
    lru.clear()
    assert len(lru) == 0


def test_lru_size_zero_keeps_nothing_and_size_can_grow() -> None:
    calls = []
    lru = LRU(0)
    for _ in range(3):
        lru.get("k", lambda: calls.append(1) or 1)
    assert len(calls) == 3 and len(lru) == 0
    lru.size = 3  # envs grow shared caches in place
    for k in "abcd":
        lru.get(k, lambda: 0)
    assert len(lru) == 3
    lru.size = 1  # a smaller size applies at the next insertion
    lru.get("e", lambda: 0)
    assert len(lru) == 1 and "e" in lru


def test_observation_builders_use_the_shared_lru() -> None:
    from irlvla_gym.obs.bev import BevRenderer
    from irlvla_gym.obs.camera import CameraRenderer
    from irlvla_gym.obs.vectors import MapObservation

    assert isinstance(BevRenderer()._prepared, LRU) and isinstance(BevRenderer()._static, LRU)
    assert isinstance(CameraRenderer()._prepared, LRU)
    assert isinstance(MapObservation()._prepared, LRU)
    assert BevRenderer(cache=False)._static.size == 0
