"""Tests of the procedural scene generator (irlvla_gym.scenes.synthetic)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from shapely import unary_union
from shapely.geometry import Point, Polygon

from irlvla_gym.scenes.scene import (
    COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, DT, LIGHT_RED, PEDESTRIAN, Scene, command_from_lateral,
)
from irlvla_gym.scenes.sources import SkippedItem
from irlvla_gym.scenes.synthetic import (
    HARD_CONFIG, LAYOUTS, SPLITS, SyntheticConfig, generate_scene, iter_scenes, scene_layout, split_size,
)


def _box(x: float, y: float, yaw: float, length: float, width: float) -> Polygon:
    c, s = np.cos(yaw), np.sin(yaw)
    corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
    return Polygon(np.c_[x + corners[:, 0] * c - corners[:, 1] * s, y + corners[:, 0] * s + corners[:, 1] * c])


def _ego_box(scene: Scene, pose: np.ndarray) -> Polygon:
    v = scene.ego.vehicle
    x, y, yaw = pose
    return _box(x + np.cos(yaw) * v.rear_axle_to_center, y + np.sin(yaw) * v.rear_axle_to_center, yaw, v.length,
                v.width)


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    return [s for s in iter_scenes("synthetic-train", num=150) if isinstance(s, Scene)]


@pytest.fixture(scope="module")
def hard_scenes() -> list[Scene]:
    return [s for s in iter_scenes("synthetic-hard", num=60) if isinstance(s, Scene)]


@pytest.fixture(scope="module")
def mixed_scenes(train_scenes, hard_scenes) -> list[Scene]:
    return train_scenes + hard_scenes


def test_deterministic_by_seed():
    a, b = generate_scene(17).to_arrays(), generate_scene(17).to_arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = generate_scene(18).to_arrays()
    assert any(a[k].shape != c[k].shape or not np.array_equal(a[k], c[k]) for k in a)


def test_round_trip_through_arrays():
    s = generate_scene(3, split="synthetic-val")
    back = Scene.from_arrays(s.to_arrays())
    for k, v in s.to_arrays().items():
        np.testing.assert_array_equal(v, back.to_arrays()[k], err_msg=k)


def test_metadata_and_tokens():
    s = next(iter_scenes("synthetic-test", num=1, start=7))
    assert s.token == "synthetic-test-00007"
    m = s.metadata
    assert (m.source, m.map_name, m.split) == ("synthetic", "synthetic", "synthetic-test")
    assert "CC0" in m.licence
    assert scene_layout(s) in LAYOUTS


def test_every_layout_appears_early(train_scenes):
    seen = {scene_layout(s) for s in train_scenes[:100]}
    assert seen == set(LAYOUTS)


def test_splits_sizes_and_disjoint_seeds():
    assert {n: split_size(n) for n in SPLITS} == {
        "synthetic-train": 5000, "synthetic-val": 500, "synthetic-test": 500, "synthetic-hard": 500,
        "synthetic-train-hard": 5000}
    ranges = sorted((s.first_seed, s.first_seed + s.size) for s in SPLITS.values())
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a1 <= b0
    tokens = [next(iter_scenes(n, num=1, start=split_size(n) - 1)).token for n in SPLITS]
    assert len(set(tokens)) == len(tokens)
    assert SPLITS["synthetic-hard"].config is HARD_CONFIG
    assert SPLITS["synthetic-train-hard"].config is HARD_CONFIG  # training scenes of the hard distribution


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="synthetic-train"):
        split_size("synthetic-nope")
    with pytest.raises(ValueError):
        next(iter_scenes("nope"))
    with pytest.raises(ValueError):
        generate_scene(0, split="nope")
    with pytest.raises(ValueError):
        SyntheticConfig(layout_weights=(1.0,))


def test_iter_scenes_bounds():
    items = list(iter_scenes("synthetic-val", num=3, start=498))
    assert [s.token for s in items] == ["synthetic-val-00498", "synthetic-val-00499"]
    assert all(not isinstance(s, SkippedItem) for s in items)


def test_expert_stays_in_drivable_area(mixed_scenes):
    inside = total = 0
    for s in mixed_scenes:
        area = unary_union(s.map.drivable_area.to_shapely())
        inside += sum(area.contains(Point(p[0], p[1])) for p in s.ego.future)
        total += len(s.ego.future)
    assert inside / total >= 0.95


def test_command_agrees_with_expert(mixed_scenes):
    agree = [command_from_lateral(float(s.ego.future[-1, 1])) == s.command for s in mixed_scenes]
    assert np.mean(agree) >= 0.95
    commands = {s.command for s in mixed_scenes}
    assert {COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT} <= commands


def test_expert_never_overlaps_agents(mixed_scenes):
    for s in mixed_scenes:
        for k, pose in enumerate(s.ego.future):
            ego = _ego_box(s, pose)
            for j in np.flatnonzero(s.agents.valid[k + 1]):
                b = s.agents.boxes[k + 1, j]
                assert not ego.intersects(_box(*b[:5])), (s.token, k, s.agents.track_id[j])


def test_no_agents_overlap_at_t0(mixed_scenes):
    for s in mixed_scenes:
        idx = np.flatnonzero(s.agents.valid[0])
        boxes = [_box(*s.agents.boxes[0, j, :5]) for j in idx]
        for (a, pa), (b, pb) in itertools.combinations(zip(idx, boxes), 2):
            assert not pa.intersects(pb), (s.token, s.agents.track_id[a], s.agents.track_id[b])
        assert len(set(s.agents.track_id)) == len(s.agents)
        assert not _ego_box(s, np.zeros(3)).intersects(unary_union(boxes)) if boxes else True


def test_expert_comfort(mixed_scenes):
    """Finite differences over the 0.5 s poses (history + plan) stay inside NAVSIM's comfort bounds."""
    for s in mixed_scenes:
        poses = np.concatenate([s.ego.history, s.ego.future])
        speed = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1) / DT
        accel = np.diff(speed) / DT
        yaw_rate = np.diff(np.unwrap(poses[:, 2])) / DT
        assert -4.05 < accel.min() and accel.max() < 2.4, s.token
        assert np.abs(np.diff(accel) / DT).max() < 8.37, s.token
        assert np.abs(yaw_rate).max() < 0.95, s.token
        assert np.abs(np.diff(yaw_rate) / DT).max() < 1.93, s.token
        assert np.abs(speed[1:] * yaw_rate[1:]).max() < 4.89, s.token
        # body-frame history velocity agrees with the poses
        assert abs(s.ego.speed - speed[2]) < 1.5, s.token


def test_scene_content(mixed_scenes):
    """Map and agent structure: lanes, connectors with lights (red for the ego sometimes), crosswalks, agents."""
    red_for_ego = pedestrians = lane_changes = 0
    for s in mixed_scenes:
        m = s.map
        assert len(s.route_lanes) >= 1
        assert m.drivable_area.count >= 1
        assert np.all(np.isfinite(m.lane_speed_limits))
        route_conn = [int(i) for i in s.route_lanes if m.lane_is_connector[i]]
        if route_conn:
            assert m.intersections.count >= 1 and m.crosswalks.count >= 1
            assert all(m.lane_is_intersection[i] for i in route_conn)
            red_for_ego += bool(np.any(m.lane_light_state[:, route_conn] == LIGHT_RED))
        pedestrians += bool(np.any(s.agents.category == PEDESTRIAN))
        groups = m.lane_group[s.route_lanes]
        lane_changes += scene_layout(s) == "lane_change"
        # every route step is either a successor edge or a lane change between roadblocks
        edges = {tuple(e) for e in m.lane_successors.tolist()}
        for a, b in zip(s.route_lanes[:-1], s.route_lanes[1:]):
            assert (int(a), int(b)) in edges or groups[0] != m.lane_group[b], s.token
        # coordinates are in the ego frame around the ego
        assert np.abs(m.lane_centerlines.points).max() < 400
    assert red_for_ego >= 10 and pedestrians >= 10 and lane_changes >= 5


def test_lane_change_needs_route_switch(train_scenes):
    scenes = [s for s in train_scenes if scene_layout(s) == "lane_change"]
    assert scenes
    for s in scenes:
        m = s.map
        if len(s.route_lanes) >= 2:
            a, b = int(s.route_lanes[0]), int(s.route_lanes[1])
            # the route continues in the neighbour of the current lane's successor
            succ = m.successors(a)
            assert b not in succ
            assert any(b in (m.lane_left_neighbor[c], m.lane_right_neighbor[c]) for c in succ)


def test_iter_scenes_reports_failures(monkeypatch):
    import irlvla_gym.scenes.synthetic as syn

    def boom(*args, **kwargs):
        raise RuntimeError("bad luck")

    monkeypatch.setattr(syn, "generate_scene", boom)
    items = list(syn.iter_scenes("synthetic-val", num=2))
    assert all(isinstance(i, SkippedItem) for i in items)
    assert "seed 1000000" in items[0].item and "bad luck" in items[0].error
