"""Argoverse 2 sensor-log adapter: a synthetic log with known answers, the 4 real sample logs, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest
import shapely

from irlvla_gym.scenes import av2
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, NUM_TIMES, VEHICLE, Scene, wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

AV2_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "av2_sensor_logs"
REAL_LOGS = sorted(p for p in AV2_ROOT.iterdir() if p.is_dir()) if AV2_ROOT.is_dir() else []
needs_data = pytest.mark.skipif(len(REAL_LOGS) == 0, reason=f"AV2 sample logs not found at {AV2_ROOT}")


# --------------------------------------------------------------------------------------------------------------------
# A synthetic log with known answers
# --------------------------------------------------------------------------------------------------------------------

T_START = 315_970_000_000_000_000  # AV2-like (non-Unix) nanosecond clock
HEADING = 0.7  # rad, the ego's constant city-frame heading
EGO_SPEED = 10.0  # m/s
AGENT_SPEED = 5.0  # m/s, same direction, starts 20 m ahead
ORIGIN = np.array([1000.0, 2000.0])


def _pts(a: np.ndarray) -> list[dict]:
    return [{"x": float(x), "y": float(y), "z": 0.0} for x, y in a]


def _write_synthetic_log(log_dir: Path, duration_s: float = 12.0) -> None:
    """Ego drives straight at 10 m/s with heading 0.7 rad; one car 20 m ahead at 5 m/s; a straight two-way road."""
    (log_dir / "map").mkdir(parents=True)
    direction = np.array([np.cos(HEADING), np.sin(HEADING)])
    normal = np.array([-direction[1], direction[0]])  # to the left
    t_pose = np.arange(0.0, duration_s + 1e-9, 0.01)
    xy = ORIGIN + np.outer(EGO_SPEED * t_pose, direction)
    n = len(t_pose)
    feather.write_feather(pa.table({
        "timestamp_ns": T_START + np.round(t_pose * 1e9).astype(np.int64),
        "qw": np.full(n, np.cos(HEADING / 2)), "qx": np.zeros(n), "qy": np.zeros(n),
        "qz": np.full(n, np.sin(HEADING / 2)),
        "tx_m": xy[:, 0], "ty_m": xy[:, 1], "tz_m": np.zeros(n),
    }), log_dir / av2.POSE_FILE)
    t_sweep = t_pose[::10]  # 10 Hz, every sweep has an exact pose
    m = len(t_sweep)
    x_in_ego = 20.0 + (AGENT_SPEED - EGO_SPEED) * t_sweep
    feather.write_feather(pa.table({
        "timestamp_ns": T_START + np.round(t_sweep * 1e9).astype(np.int64),
        "track_uuid": ["car-1"] * m, "category": ["REGULAR_VEHICLE"] * m,
        "length_m": np.full(m, 4.5), "width_m": np.full(m, 1.9), "height_m": np.full(m, 1.5),
        "qw": np.ones(m), "qx": np.zeros(m), "qy": np.zeros(m), "qz": np.zeros(m),
        "tx_m": x_in_ego, "ty_m": np.zeros(m), "tz_m": np.zeros(m), "num_interior_pts": np.full(m, 100),
    }), log_dir / "annotations.feather")

    s = np.array([-300.0, 0.0, 300.0])
    line = lambda offset, reverse=False: (ORIGIN + np.outer(s[::-1] if reverse else s, direction) + offset * normal)
    lanes = {
        "1": {"id": 1, "is_intersection": False, "lane_type": "VEHICLE", "left_lane_boundary": _pts(line(1.75)),
              "right_lane_boundary": _pts(line(-1.75)), "left_lane_mark_type": "SOLID_YELLOW",
              "right_lane_mark_type": "SOLID_WHITE", "successors": [99], "predecessors": [],
              "left_neighbor_id": 2, "right_neighbor_id": 3},
        # opposite direction: AV2 links it as a neighbour, the scene must not
        "2": {"id": 2, "is_intersection": False, "lane_type": "VEHICLE", "left_lane_boundary": _pts(line(1.75, True)),
              "right_lane_boundary": _pts(line(5.25, True)), "left_lane_mark_type": "SOLID_YELLOW",
              "right_lane_mark_type": "SOLID_WHITE", "successors": [], "predecessors": [],
              "left_neighbor_id": 1, "right_neighbor_id": None},
        # bike lane: dropped
        "3": {"id": 3, "is_intersection": False, "lane_type": "BIKE", "left_lane_boundary": _pts(line(-1.75)),
              "right_lane_boundary": _pts(line(-3.25)), "left_lane_mark_type": "SOLID_WHITE",
              "right_lane_mark_type": "NONE", "successors": [], "predecessors": [],
              "left_neighbor_id": 1, "right_neighbor_id": None},
    }
    corners = np.array([line(5.5)[0], line(5.5)[-1], line(-3.5)[-1], line(-3.5)[0]])
    cw = ORIGIN + 60 * direction
    crossing = {"edge1": _pts([cw + 5.5 * normal, cw - 3.5 * normal]),
                "edge2": _pts([cw + 3 * direction + 5.5 * normal, cw + 3 * direction - 3.5 * normal]), "id": 7}
    archive = {"lane_segments": lanes, "drivable_areas": {"5": {"area_boundary": _pts(corners), "id": 5}},
               "pedestrian_crossings": {"7": crossing}}
    (log_dir / "map" / f"log_map_archive_{log_dir.name}____PIT_city_1.json").write_text(json.dumps(archive))


@pytest.fixture
def synthetic_log(tmp_path: Path) -> Path:
    log_dir = tmp_path / "synthetic-log-0001"
    _write_synthetic_log(log_dir)
    return log_dir


def test_synthetic_log_frames_velocities_and_map(synthetic_log: Path) -> None:
    log = av2.load_log(synthetic_log)
    scenes = list(av2.scenes_from_log(log))
    assert all(isinstance(s, Scene) for s in scenes)
    # 12 s of sweeps: t0 from 1.5 s to 8.0 s every 0.5 s.
    assert len(scenes) == 14
    s = scenes[0]
    assert s.metadata.token == f"{synthetic_log.name}-015"
    assert (s.metadata.source, s.metadata.map_name, s.metadata.licence) == ("av2", "PIT", av2.AV2_LICENCE)
    assert s.metadata.timestamp_us == (T_START + 1_500_000_000) // 1000
    t0 = 1.5

    # Ego: straight along +x at 10 m/s in its own frame.
    np.testing.assert_allclose(s.ego.future[:, 0], EGO_SPEED * 0.5 * np.arange(1, 9), atol=1e-6)
    np.testing.assert_allclose(s.ego.future[:, 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(s.ego.history[:, 0], EGO_SPEED * 0.5 * np.arange(-3, 1), atol=1e-6)
    np.testing.assert_allclose(s.ego.history_velocity, [[EGO_SPEED, 0.0]] * 4, atol=1e-6)
    np.testing.assert_allclose(s.ego.history_acceleration, 0.0, atol=1e-6)

    # Agent: 20 m ahead at t = 0 of the log, 5 m/s slower than the ego, heading along the road.
    a = s.agents
    assert len(a) == 1 and a.track_id[0] == "car-1" and a.category[0] == VEHICLE and a.valid.all()
    t = t0 + 0.5 * np.arange(NUM_TIMES)
    np.testing.assert_allclose(a.boxes[:, 0, 0], 20.0 + AGENT_SPEED * t - EGO_SPEED * t0, atol=1e-6)
    np.testing.assert_allclose(a.boxes[:, 0, 1:3], 0.0, atol=1e-6)
    np.testing.assert_allclose(a.boxes[:, 0, 3:6], [[4.5, 1.9, 1.5]] * NUM_TIMES)
    np.testing.assert_allclose(a.boxes[:, 0, 6:8], [[AGENT_SPEED, 0.0]] * NUM_TIMES, atol=1e-6)

    # Map: bike lane dropped, opposite-direction neighbour link removed, ego lane along +x, route = lane 1.
    mp = s.map
    assert sorted(mp.lane_ids) == ["1", "2"]
    ego_lane = int(np.flatnonzero(mp.lane_ids == "1")[0])
    assert mp.lane_left_neighbor[ego_lane] == -1 and mp.lane_right_neighbor[ego_lane] == -1
    assert len(set(mp.lane_group)) == 2
    assert mp.lane_successors.shape == (0, 2)  # the successor id 99 is not in the file
    centre = mp.lane_centerlines[ego_lane]
    np.testing.assert_allclose(centre[:, 1], 0.0, atol=1e-3)
    assert centre[-1, 0] > centre[0, 0]
    assert np.isnan(mp.lane_speed_limits).all() and (mp.lane_light_state == 0).all()
    assert mp.drivable_area.count == 1 and mp.crosswalks.count == 1 and mp.intersections.count == 0
    np.testing.assert_allclose(mp.crosswalks.exterior(0)[:, 0], [60 - 15, 60 - 15, 63 - 15, 63 - 15], atol=1e-3)
    assert list(s.route_lanes) == [ego_lane]
    assert s.command == COMMAND_STRAIGHT


def test_synthetic_log_stride_and_radius(synthetic_log: Path) -> None:
    log = av2.load_log(synthetic_log)
    assert len(list(av2.scenes_from_log(log, stride=2))) == 7
    # In the t0 frame of the first window the car is 12.5 m ahead at t0 and then moves away (x = 12.5 + 2.5 k):
    # an agent is kept (with all its valid steps) when it is inside the crop square at some step.
    assert len(next(iter(av2.scenes_from_log(log, map_radius=10.0))).agents) == 0
    kept = next(iter(av2.scenes_from_log(log, map_radius=13.0))).agents
    assert len(kept) == 1 and kept.valid.all()
    with pytest.raises(ValueError, match="stride"):
        list(av2.scenes_from_log(log, stride=0))


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------


def test_missing_annotations_file(synthetic_log: Path) -> None:
    (synthetic_log / "annotations.feather").unlink()
    with pytest.raises(FileNotFoundError, match="annotations.feather"):
        av2.load_log(synthetic_log)


def test_missing_column_names_file_and_column(synthetic_log: Path) -> None:
    path = synthetic_log / "annotations.feather"
    feather.write_feather(feather.read_table(path).drop_columns(["qz"]), path)
    with pytest.raises(ValueError, match=r"annotations\.feather.*'qz'"):
        av2.load_log(synthetic_log)


def test_nan_ego_pose_names_file_and_column(synthetic_log: Path) -> None:
    path = synthetic_log / av2.POSE_FILE
    table = feather.read_table(path)
    tx = table.column("tx_m").to_numpy().copy()
    tx[37] = np.nan
    feather.write_feather(table.set_column(table.column_names.index("tx_m"), "tx_m", pa.array(tx)), path)
    with pytest.raises(ValueError, match=r"city_SE3_egovehicle\.feather.*'tx_m'.*row 37"):
        av2.load_log(synthetic_log)


def test_missing_map_and_malformed_map_field(synthetic_log: Path) -> None:
    map_file = next((synthetic_log / "map").glob("*.json"))
    raw = json.loads(map_file.read_text())
    del raw["lane_segments"]["1"]["left_lane_boundary"]
    map_file.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"log_map_archive.*lane_segments\['1'\].*left_lane_boundary"):
        av2.load_log(synthetic_log)
    map_file.unlink()
    with pytest.raises(FileNotFoundError, match="log_map_archive"):
        av2.load_log(synthetic_log)


def test_iter_scenes_skips_a_bad_log_and_continues(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ("a-bad", "b-good"):
        _write_synthetic_log(root / name)
    (root / "a-bad" / "annotations.feather").unlink()
    (root / "not-a-log").mkdir()  # ignored: no AV2 files
    items = list(av2.iter_scenes(root))
    skipped = [i for i in items if isinstance(i, SkippedItem)]
    assert len(skipped) == 1 and "a-bad" in skipped[0].item and "annotations.feather" in skipped[0].error
    assert items[0] is skipped[0]
    assert sum(isinstance(i, Scene) for i in items) == 14
    assert len(list(av2.iter_scenes(root / "b-good"))) == 14  # a single log directory works too
    with pytest.raises(FileNotFoundError):
        list(av2.iter_scenes(tmp_path / "nowhere"))


def test_category_table_covers_all_av2_classes() -> None:
    av2_classes = ("ANIMAL ARTICULATED_BUS BICYCLE BICYCLIST BOLLARD BOX_TRUCK BUS CONSTRUCTION_BARREL "
                   "CONSTRUCTION_CONE DOG LARGE_VEHICLE MESSAGE_BOARD_TRAILER MOBILE_PEDESTRIAN_CROSSING_SIGN "
                   "MOTORCYCLE MOTORCYCLIST "
                   "OFFICIAL_SIGNALER PEDESTRIAN RAILED_VEHICLE REGULAR_VEHICLE SCHOOL_BUS SIGN STOP_SIGN STROLLER "
                   "TRAFFIC_LIGHT_TRAILER TRUCK TRUCK_CAB VEHICULAR_TRAILER WHEELCHAIR WHEELED_DEVICE WHEELED_RIDER")
    assert set(av2.AV2_CATEGORY_TO_SCENE) == set(av2_classes.split())
    assert set(av2.AV2_CATEGORY_TO_SCENE.values()) == set(AGENT_CATEGORIES)


# --------------------------------------------------------------------------------------------------------------------
# The 4 real sample logs
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_scenes() -> dict[str, list[Scene]]:
    out = {}
    for log_dir in REAL_LOGS:
        items = list(av2.iter_scenes(log_dir))
        assert not [i for i in items if isinstance(i, SkippedItem)], items
        out[log_dir.name] = items
    return out


@needs_data
def test_real_logs_window_counts_and_metadata(real_scenes: dict[str, list[Scene]]) -> None:
    assert len(real_scenes) == 4
    tokens = set()
    for log_id, scenes in real_scenes.items():
        assert 18 <= len(scenes) <= 24, (log_id, len(scenes))  # ~15.5 s logs: t0 over ~10 s at 2 Hz
        stamps = np.array([s.metadata.timestamp_us for s in scenes])
        np.testing.assert_allclose(np.diff(stamps), 500_000, atol=60_000)
        for s in scenes:
            m = s.metadata
            assert (m.source, m.log_name, m.licence) == ("av2", log_id, av2.AV2_LICENCE)
            assert m.map_name in ("PIT", "MIA") and m.token.startswith(log_id)
            tokens.add(m.token)
    assert len(tokens) == sum(map(len, real_scenes.values()))


@needs_data
def test_real_expert_stays_on_drivable_area(real_scenes: dict[str, list[Scene]]) -> None:
    inside = total = 0
    for scenes in real_scenes.values():
        for s in scenes:
            area = shapely.union_all(s.map.drivable_area.to_shapely())
            f = s.ego.future[:, :2]
            inside += int(shapely.contains_xy(area, f[:, 0], f[:, 1]).sum())
            total += len(f)
    assert inside / total >= 0.95, inside / total


@needs_data
def test_real_command_agrees_with_expert_lateral_displacement(real_scenes: dict[str, list[Scene]]) -> None:
    scenes = [s for v in real_scenes.values() for s in v]
    y = np.array([s.ego.future[-1, 1] for s in scenes])
    expected = np.where(y > 2.0, COMMAND_LEFT, np.where(y < -2.0, COMMAND_RIGHT, COMMAND_STRAIGHT))
    got = np.array([s.command for s in scenes])
    assert np.mean(got == expected) >= 0.95, [(s.token, s.command_name, yy) for s, yy in zip(scenes, y)
                                              if s.command != COMMAND_STRAIGHT or abs(yy) > 2]
    assert (expected != COMMAND_STRAIGHT).any()  # the sample logs do contain turns


@needs_data
def test_real_route_starts_at_the_ego_and_follows_the_graph(real_scenes: dict[str, list[Scene]]) -> None:
    connected = transitions = 0
    for scenes in real_scenes.values():
        for s in scenes:
            assert len(s.route_lanes) >= 2, s.token
            first = s.map.lane_polygons.to_shapely()[int(s.route_lanes[0])]
            assert first.distance(shapely.Point(0.0, 0.0)) < 1.0, s.token
            edges = {tuple(e) for e in s.map.lane_successors.tolist()}
            for a, b in zip(s.route_lanes[:-1], s.route_lanes[1:]):
                neighbours = (s.map.lane_left_neighbor[a], s.map.lane_right_neighbor[a])
                connected += (int(a), int(b)) in edges or b in neighbours
                transitions += 1
            # The route reaches beyond the expert's 4 s path.
            line = s.route_centerline()
            assert np.linalg.norm(np.diff(line, axis=0), axis=1).sum() > np.linalg.norm(s.ego.future[-1, :2])
    assert connected / transitions >= 0.95


@needs_data
def test_real_agents_are_plausible(real_scenes: dict[str, list[Scene]]) -> None:
    on_road = vehicles = 0
    yaw_errors = []
    for scenes in real_scenes.values():
        for s in scenes:
            a = s.agents
            assert len(a) > 0
            in_square = a.valid & (np.abs(a.boxes[..., :2]).max(axis=-1) <= 100.0)
            assert in_square.any(axis=0).all()  # every agent is inside the crop square at some step
            area = shapely.union_all(s.map.drivable_area.to_shapely())
            veh = (a.category == VEHICLE) & a.valid[0]
            xy = a.boxes[0, veh, :2]
            on_road += int(shapely.contains_xy(area, xy[:, 0], xy[:, 1]).sum())
            vehicles += int(veh.sum())
            b = a.boxes
            speed = np.hypot(b[..., 6], b[..., 7])
            moving = a.valid & (speed > 3.0) & (a.category == VEHICLE)[None]
            yaw_errors.append(np.abs(wrap_angle(np.arctan2(b[..., 7], b[..., 6]) - b[..., 2]))[moving])
    assert on_road / vehicles >= 0.75, on_road / vehicles
    assert np.median(np.concatenate(yaw_errors)) < 0.1  # moving vehicles head where they go


@needs_data
def test_real_ego_heading_matches_motion_and_speed(real_scenes: dict[str, list[Scene]]) -> None:
    for scenes in real_scenes.values():
        for s in scenes:
            poses = np.r_[s.ego.history, s.ego.future]
            step = np.diff(poses[:, :2], axis=0)
            moving = np.linalg.norm(step, axis=1) > 1.0
            heading = np.arctan2(step[:, 1], step[:, 0])
            assert np.all(np.abs(wrap_angle(heading - 0.5 * (poses[1:, 2] + poses[:-1, 2])))[moving] < 0.1)
            # Body-frame speed at t0 agrees with the displacement around t0 (finite difference, 0.5 s steps).
            v_fd = np.linalg.norm(s.ego.future[0, :2] - s.ego.history[-2, :2]) / 1.0
            assert abs(s.ego.speed - v_fd) < 1.0, s.token


@needs_data
def test_real_stride_and_single_parse(tmp_path: Path) -> None:
    log = av2.load_log(REAL_LOGS[0])
    every = list(av2.scenes_from_log(log))
    half = list(av2.scenes_from_log(log, stride=2))
    assert len(half) == (len(every) + 1) // 2
    assert [s.token for s in half] == [s.token for s in every[::2]]
    # A copy holding annotations_with_ego.feather: EGO_VEHICLE rows never become agents.
    with_ego = next((d for d in REAL_LOGS if (d / "annotations_with_ego.feather").exists()), None)
    if with_ego is not None:
        log2 = av2.load_log(with_ego)
        assert "EGO_VEHICLE" not in set(log2.track_uuid) and len(log2.track_uuid) > 0
        ego_track = feather.read_table(with_ego / "annotations_with_ego.feather")
        cats = ego_track.column("category").to_pylist()
        ego_ids = {u for u, c in zip(ego_track.column("track_uuid").to_pylist(), cats) if c == "EGO_VEHICLE"}
        assert not ego_ids & set(log2.track_uuid)
    # A real log with a broken pose file is skipped with the file and column named.
    broken = tmp_path / REAL_LOGS[0].name
    shutil.copytree(REAL_LOGS[0], broken)
    (broken / av2.POSE_FILE).chmod(0o644)
    table = feather.read_table(broken / av2.POSE_FILE)
    feather.write_feather(table.drop_columns(["qw"]), broken / av2.POSE_FILE)
    items = list(av2.iter_scenes(broken))
    assert len(items) == 1 and isinstance(items[0], SkippedItem) and "'qw'" in items[0].error
