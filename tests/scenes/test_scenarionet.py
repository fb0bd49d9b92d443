"""ScenarioNet adapter: the real nuScenes sample (with its GeoJSON drivable area), synthetic WOMD-like variant files
written here, and bad input (one clear error naming file and field; iteration continues past bad files)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")

from irlvla_gym.scenes.scenarionet import (  # noqa: E402
    ScenarioNetFormatError, iter_scenes, load_scenario, scenes_from_scenario,
)
from irlvla_gym.scenes.scene import (  # noqa: E402
    BARRIER, COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, LIGHT_GREEN, LIGHT_NONE, LIGHT_RED, PEDESTRIAN, VEHICLE,
    Scene, command_from_lateral,
)
from irlvla_gym.scenes.sources import SkippedItem  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scenarionet_nuscenes"
SAMPLE = DATA / "sd_nuscenes_v1.0-mini_scene-0103.pkl"
GEOJSON = DATA / "boston_drivable_area.json"
needs_sample = pytest.mark.skipif(not (SAMPLE.is_file() and GEOJSON.is_file()),
                                  reason="shared nuScenes ScenarioNet sample not available")


# ------------------------------------------------------------------------------------------------------------------
# Real sample
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_scenes() -> list:
    if not (SAMPLE.is_file() and GEOJSON.is_file()):
        pytest.skip("shared nuScenes ScenarioNet sample not available")
    return list(iter_scenes(DATA, drivable_area=GEOJSON))


@needs_sample
def test_real_sample_produces_scenes(real_scenes):
    scenes = [s for s in real_scenes if isinstance(s, Scene)]
    skipped = [s for s in real_scenes if isinstance(s, SkippedItem)]
    assert not skipped, [str(s) for s in skipped]
    # 19.5 s at 10 Hz: t0 = 1.5 .. 15.5 s on the 0.5 s keyframe grid.
    assert len(scenes) == 29
    assert len({s.token for s in scenes}) == len(scenes)
    s = scenes[0]
    assert s.metadata.source == "scenarionet"
    assert s.metadata.log_name == "scene-0103"
    assert s.metadata.map_name == "boston-seaport"
    assert "CC BY-NC-SA 4.0" in s.metadata.licence and "nuScenes" in s.metadata.licence
    # nuScenes ego length/width are swapped in the file (1.73 x 4.08): swapped back.
    assert s.ego.vehicle.length == pytest.approx(4.08, abs=0.01)
    assert s.ego.vehicle.width == pytest.approx(1.73, abs=0.01)
    for sc in scenes:
        assert sc.map.num_lanes > 10 and len(sc.route_lanes) >= 2
        # the expert future moves forward, consistent with the logged speed
        assert sc.ego.future[-1, 0] > 0
        assert sc.ego.history_velocity[-1, 0] > 1.0 and abs(sc.ego.history_velocity[-1, 1]) < 0.5


@needs_sample
def test_real_sample_expert_inside_drivable_area(real_scenes):
    inside, total = 0, 0
    for s in (x for x in real_scenes if isinstance(x, Scene)):
        da = shapely.unary_union(s.map.drivable_area.to_shapely())
        inside += int(shapely.contains_xy(da, s.ego.future[:, 0], s.ego.future[:, 1]).sum())
        total += len(s.ego.future)
    assert inside / total >= 0.95, inside / total


@needs_sample
def test_real_sample_command_agrees_with_expert(real_scenes):
    scenes = [s for s in real_scenes if isinstance(s, Scene)]
    agree = [s.command == command_from_lateral(float(s.ego.future[-1, 1])) for s in scenes]
    assert np.mean(agree) >= 0.95, [(s.token, s.command_name, s.ego.future[-1, 1]) for s in scenes]


@needs_sample
def test_real_sample_route_follows_expert(real_scenes):
    """The route centreline passes within a lane half-width of the expert's future poses."""
    for s in (x for x in real_scenes if isinstance(x, Scene)):
        route = shapely.LineString(s.route_centerline())
        d = shapely.distance(shapely.points(s.ego.future[:, :2]), route)
        assert np.median(d) < 1.75, (s.token, d)


@needs_sample
def test_real_sample_agents_plausible(real_scenes):
    scenes = [s for s in real_scenes if isinstance(s, Scene)]
    on_road, n_veh, aligned = 0, 0, []
    for s in scenes:
        a = s.agents
        assert len(a) > 0
        v0 = a.valid[0]
        # inside the crop square at some valid time
        assert np.all(np.any(a.valid & (np.abs(a.boxes[..., :2]) <= 100.0).all(-1), axis=0))
        size = a.boxes[..., 3:6][a.valid]
        assert np.all((size > 0.1) & (size < 20))
        speed = np.hypot(a.boxes[..., 6], a.boxes[..., 7])[a.valid]
        assert speed.max() < 30
        veh = v0 & (a.category == VEHICLE)
        da = shapely.unary_union(s.map.drivable_area.to_shapely())
        # Moving vehicles well inside the crop (where the clipped drivable area is complete) are on the road;
        # parked ones may stand in car parks / driveways outside the nuScenes drivable area.
        moving = veh & (np.hypot(a.boxes[0, :, 6], a.boxes[0, :, 7]) > 1.0)
        xy = a.boxes[0, moving & (np.abs(a.boxes[0, :, :2]) < 60).all(-1), :2]
        on_road += int(shapely.contains_xy(shapely.buffer(da, 1.0), xy[:, 0], xy[:, 1]).sum())
        n_veh += len(xy)
        # moving vehicles: heading agrees with velocity direction
        dyaw = np.arctan2(a.boxes[0, moving, 7], a.boxes[0, moving, 6]) - a.boxes[0, moving, 2]
        aligned.extend(np.abs((dyaw + np.pi) % (2 * np.pi) - np.pi) < 0.3)
    assert n_veh > 0 and on_road / n_veh >= 0.95, on_road / n_veh
    assert np.mean(aligned) >= 0.95  # one car in this log reverses slowly for a moment
    cats = np.concatenate([s.agents.category for s in scenes])
    assert {VEHICLE, PEDESTRIAN} <= set(cats.tolist())


@needs_sample
def test_real_sample_stride_and_radius():
    full = [s for s in iter_scenes(SAMPLE, drivable_area=GEOJSON) if isinstance(s, Scene)]
    strided = [s for s in iter_scenes(SAMPLE, drivable_area=GEOJSON, stride=3, map_radius=40.0)
               if isinstance(s, Scene)]
    assert [s.token for s in strided] == [s.token for s in full[::3]]
    for s in strided:
        assert np.abs(s.map.drivable_area.rings.points).max() <= 40.0 + 1e-3
        assert np.all(np.any(s.agents.valid & (np.abs(s.agents.boxes[..., :2]) <= 40.0).all(-1), axis=0))


# ------------------------------------------------------------------------------------------------------------------
# Synthetic WOMD-like variant files
# ------------------------------------------------------------------------------------------------------------------

T = 91  # 9.1 s at 10 Hz
SPEED = 8.0
RADIUS = 20.0


def _path(s: np.ndarray, turn: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 2) and headings (n,) at arc length s along: +x up to 0, then (turn) a left quarter circle of radius
    RADIUS to (R, R), then +y; or straight on."""
    s = np.asarray(s, dtype=np.float64)
    xy = np.stack([s, np.zeros_like(s)], -1)
    h = np.zeros_like(s)
    if turn:
        arc = math.pi / 2 * RADIUS
        a = np.clip(s, 0, arc) / RADIUS
        on_arc = (s > 0) & (s <= arc)
        xy[on_arc] = np.stack([RADIUS * np.sin(a[on_arc]), RADIUS * (1 - np.cos(a[on_arc]))], -1)
        h[on_arc] = a[on_arc]
        after = s > arc
        xy[after] = np.stack([np.full(after.sum(), RADIUS), RADIUS + (s[after] - arc)], -1)
        h[after] = math.pi / 2
    return xy, h


def womd_like(turn: bool = False) -> dict:
    """A small scenario dict in the WOMD sd_/old v0.3 style: float32, bool valid, ``size`` (T, 3) columns, int
    entry/exit ids, old-format traffic lights, CROSS_WALK polyline, unwrapped headings."""
    ts = (np.arange(T) * 0.1).astype(np.float32)
    s0 = -40.0
    s = s0 + SPEED * ts.astype(np.float64)
    xy, h = _path(s, turn)
    # ScenarioNet positions are box centres: centre = rear axle + rear_axle_to_center ahead (Pacifica-proportioned
    # 5.176 m car: 1.461 m).
    c = xy + 1.461 * np.stack([np.cos(h), np.sin(h)], -1)

    def track(kind: str, pos: np.ndarray, heading: np.ndarray, vel: np.ndarray, size: tuple, valid=None) -> dict:
        return {
            "type": kind,
            "state": {
                "position": np.c_[pos, np.zeros(T)].astype(np.float32),
                "heading": heading.astype(np.float32),
                "velocity": vel.astype(np.float32),
                "valid": np.ones(T, bool) if valid is None else valid,
                "size": np.tile(np.asarray(size, np.float32), (T, 1)),
            },
            "metadata": {"type": kind, "object_id": "x", "track_length": T},
        }

    v_ego = SPEED * np.stack([np.cos(h), np.sin(h)], -1)
    lead_s = s + 20.0
    lxy, lh = _path(lead_s, turn)
    ped_valid = np.zeros(T, bool)
    ped_valid[20:70] = True
    tracks = {
        "sdc": track("VEHICLE", c, h + 2 * np.pi, v_ego, (5.176, 2.297, 1.777)),  # unwrapped heading
        "1001": track("VEHICLE", lxy + 2.2 * np.stack([np.cos(lh), np.sin(lh)], -1), lh, v_ego, (4.5, 2.0, 1.6)),
        "1002": track("PEDESTRIAN", np.tile([-5.0, 8.0], (T, 1)), np.full(T, -np.pi / 2), np.zeros((T, 2)),
                      (0.5, 0.5, 1.8), ped_valid),
        "1003": track("TRAFFIC_BARRIER", np.tile([10.0, -4.0], (T, 1)), np.zeros(T), np.zeros((T, 2)),
                      (2.0, 0.4, 1.0)),
        "1004": track("CYCLIST", np.tile([900.0, 900.0], (T, 1)), np.zeros(T), np.zeros((T, 2)), (1.8, 0.7, 1.5)),
    }
    xs = np.linspace(-150, 0, 31)
    lane_a = np.c_[xs, np.zeros_like(xs), np.zeros_like(xs)].astype(np.float32)
    s_b = np.linspace(0, math.pi / 2 * RADIUS if turn else 200.0, 41)
    b_xy, _ = _path(s_b, turn)
    lane_b = np.c_[b_xy, np.zeros(len(b_xy))].astype(np.float32)
    mf: dict = {
        "100": {"type": "LANE_SURFACE_STREET", "polyline": lane_a, "exit_lanes": [101], "entry_lanes": [],
                "left_neighbor": [{"feature_id": "102", "self_start_index": "0", "self_end_index": "30",
                                   "neighbor_start_index": "0", "neighbor_end_index": "30"}],
                "right_neighbor": [],
                "left_boundaries": [{"lane_start_index": "0", "lane_end_index": "30",
                                     "boundary_type": "ROAD_LINE_BROKEN_SINGLE_WHITE", "boundary_feature_id": "300"}],
                "right_boundaries": [{"lane_start_index": "0", "lane_end_index": "30",
                                      "boundary_type": "ROAD_EDGE_BOUNDARY", "boundary_feature_id": "301"}],
                "speed_limit_mph": 25.0},
        "101": {"type": "LANE_SURFACE_STREET", "polyline": lane_b, "entry_lanes": [100], "exit_lanes": [],
                "width": np.full((len(lane_b), 2), 1.8, np.float32), "speed_limit_kmh": 50.0},
        "102": {"type": "LANE_SURFACE_STREET", "polyline": lane_a + np.array([0, 3.6, 0], np.float32),
                "right_neighbor": [{"feature_id": "100", "self_start_index": "0", "self_end_index": "30"}]},
        "300": {"type": "ROAD_LINE_BROKEN_SINGLE_WHITE", "polyline": (lane_a + [0, 1.8, 0]).astype(np.float32)},
        "301": {"type": "ROAD_EDGE_BOUNDARY", "polyline": (lane_a - [0, 2.0, 0]).astype(np.float32)},
        "400": {"type": "CROSS_WALK", "polyline": np.array([[-10, -3, 0], [-7, -3, 0], [-7, 6, 0], [-10, 6, 0]],
                                                          np.float32)},
    }
    if turn:  # a straight-on continuation the route must not take, and the exit leg
        ys = np.linspace(RADIUS, 200, 20)
        mf["103"] = {"type": "LANE_SURFACE_STREET", "polyline": np.c_[np.full_like(ys, RADIUS), ys, 0 * ys]
                     .astype(np.float32), "entry_lanes": [101]}
        mf["101"]["exit_lanes"] = [103]
        mf["104"] = {"type": "LANE_SURFACE_STREET", "entry_lanes": [100],
                     "polyline": np.c_[np.linspace(0, 150, 20), np.zeros(20), np.zeros(20)].astype(np.float32)}
        mf["100"]["exit_lanes"] = [101, 104]
    light = np.full(T, 4, np.int64)  # LANE_STATE_STOP ...
    light[40:] = 6  # ... then LANE_STATE_GO
    dyn = {"7": {"type": "TRAFFIC_LIGHT",
                 "state": {"object_state": light, "lane": np.full(T, 101, np.int64),
                           "stop_point": np.zeros((T, 3), np.float32)}}}
    return {
        "id": "womd-like", "version": "v0.3", "length": T,
        "metadata": {"ts": ts, "sdc_id": "sdc", "coordinate": "waymo", "dataset": "waymo",
                     "current_time_index": 10, "scenario_id": "womd-like"},
        "tracks": tracks, "dynamic_map_states": dyn, "map_features": mf,
    }


def test_synthetic_womd_like_straight():
    scenes = list(scenes_from_scenario(womd_like(turn=False)))
    assert all(isinstance(s, Scene) for s in scenes), [str(s) for s in scenes if isinstance(s, SkippedItem)]
    # t0 = 1.5 .. 5.0 s
    assert len(scenes) == 8
    s = scenes[0]
    assert s.metadata.map_name == "waymo" and "Waymo" in s.metadata.licence
    # Rear axle at the origin; the file's centre positions were moved back by rear_axle_to_center.
    np.testing.assert_allclose(s.ego.future[:, 0], SPEED * 0.5 * np.arange(1, 9), atol=1e-3)
    np.testing.assert_allclose(s.ego.future[:, 1:], 0.0, atol=1e-4)
    np.testing.assert_allclose(s.ego.history[:, 0], SPEED * 0.5 * np.arange(-3, 1), atol=1e-3)
    np.testing.assert_allclose(s.ego.history_velocity, [[SPEED, 0.0]] * 4, atol=1e-3)
    np.testing.assert_allclose(s.ego.history_acceleration, 0.0, atol=1e-3)
    assert s.ego.vehicle.length == pytest.approx(5.176, abs=1e-3)
    assert s.ego.vehicle.rear_axle_to_center == pytest.approx(1.461, abs=1e-3)
    assert s.command == COMMAND_STRAIGHT
    # Agents: lead car centre 22.2 m ahead of the rear axle at t0, categories mapped, far cyclist cropped.
    a = s.agents
    ids = list(a.track_id)
    assert set(ids) == {"1001", "1002", "1003"}
    lead = ids.index("1001")
    np.testing.assert_allclose(a.boxes[:, lead, 0], 22.2 + SPEED * 0.5 * np.arange(9), atol=1e-3)  # t0 frame
    np.testing.assert_allclose(a.boxes[:, lead, 3:6], [[4.5, 2.0, 1.6]] * 9, atol=1e-5)
    np.testing.assert_allclose(a.boxes[:, lead, 6:8], [[SPEED, 0]] * 9, atol=1e-4)
    assert a.category[ids.index("1002")] == PEDESTRIAN and a.category[ids.index("1003")] == BARRIER
    assert not a.valid[0, ids.index("1002")] and a.valid[1, ids.index("1002")]  # pedestrian appears at t = 2 s
    assert np.all(a.boxes[:, ids.index("1002")][~a.valid[:, ids.index("1002")]] == 0)
    # Map: ids as str, successors from int exit/entry ids, neighbours, widths, speed limits, crosswalk.
    m = s.map
    lid = list(m.lane_ids)
    assert {"100", "101", "102"} <= set(lid)
    i100, i101, i102 = lid.index("100"), lid.index("101"), lid.index("102")
    assert [i100, i101] in m.lane_successors.tolist()
    assert m.lane_left_neighbor[i100] == i102 and m.lane_right_neighbor[i102] == i100
    assert m.lane_speed_limits[i100] == pytest.approx(25 * 0.44704, rel=1e-4)
    assert m.lane_speed_limits[i101] == pytest.approx(50 / 3.6, rel=1e-4)
    assert np.isnan(m.lane_speed_limits[i102])
    # lane 100 boundaries from the boundary features (+1.8 left, -2.0 right); lane 101 from `width` (1.8 both)
    np.testing.assert_allclose(m.lane_left_boundaries[i100][:, 1], 1.8, atol=1e-3)
    np.testing.assert_allclose(m.lane_right_boundaries[i100][:, 1], -2.0, atol=1e-3)
    np.testing.assert_allclose(m.lane_left_boundaries[i101][:, 1], 1.8, atol=1e-3)
    # lane 102 records no width: half its 3.6 m spacing to the listed right neighbour (not the 1.75 m default)
    np.testing.assert_allclose(m.lane_right_boundaries[i102][:, 1], 3.6 - 1.8, atol=1e-3)
    assert m.crosswalks.count == 1
    assert not m.lane_is_connector.any()
    # Old-format lights on lane 101: STOP until t = 4.0 s, GO after; t0 = 1.5 s -> red at t0..t0+2.0, green later.
    np.testing.assert_array_equal(m.lane_light_state[:, i101], [LIGHT_RED] * 5 + [LIGHT_GREEN] * 4)
    assert np.all(m.lane_light_state[:, i100] == LIGHT_NONE)
    # Route: lane 100 then 101.
    assert list(s.route_lanes[:2]) == [i100, i101]
    # Tokens unique; timestamps increase by 0.5 s.
    assert len({x.token for x in scenes}) == len(scenes)
    assert np.all(np.diff([x.metadata.timestamp_us for x in scenes]) == 500_000)


def test_synthetic_womd_like_left_turn():
    scenes = [s for s in scenes_from_scenario(womd_like(turn=True)) if isinstance(s, Scene)]
    assert len(scenes) == 8
    agree = [s.command == command_from_lateral(float(s.ego.future[-1, 1])) for s in scenes]
    assert np.mean(agree) >= 0.95
    assert any(s.command == COMMAND_LEFT for s in scenes)
    assert not any(s.command == COMMAND_RIGHT for s in scenes)
    # the route takes the turn (101), not the straight-on lane (104)
    s = scenes[-1]
    lid = list(s.map.lane_ids)
    assert lid.index("101") in s.route_lanes and lid.index("104") not in s.route_lanes
    assert lid.index("103") in s.route_lanes  # extended ahead through successors
    # turning yaw is wrapped and the heading agrees with the motion
    fut = s.ego.future
    d = np.diff(np.r_[[[0, 0]], fut[:, :2]], axis=0)
    course = np.arctan2(d[:, 1], d[:, 0])
    assert np.all(np.abs(fut[:, 2]) <= np.pi)
    assert np.median(np.abs((course - fut[:, 2] + np.pi) % (2 * np.pi) - np.pi)) < 0.1


def test_synthetic_variants_columns_and_valid(tmp_path):
    """(T, 1) float64 length/width/height columns, 0/1 float valid, list-of-lists polylines, current-format str
    traffic lights and a nuPlan-style connector convert like the array/`size` variant."""
    scn = womd_like(turn=False)
    for tr in scn["tracks"].values():
        st = tr["state"]
        size = st.pop("size").astype(np.float64)
        st["length"], st["width"], st["height"] = size[:, :1], size[:, 1:2], size[:, 2:3]
        st["valid"] = st["valid"].astype(np.float64)
        for k in ("position", "heading", "velocity"):
            st[k] = st[k].astype(np.float64)
    scn["metadata"]["ts"] = scn["metadata"]["ts"].astype(np.float64)
    scn["map_features"]["102"]["polyline"] = scn["map_features"]["102"]["polyline"].tolist()
    scn["map_features"]["101"]["type"] = "LANE_SURFACE_UNSTRUCTURE"
    states = ["LANE_STATE_STOP"] * 40 + ["LANE_STATE_ARROW_GO"] * 40 + [None] * (T - 80)
    scn["dynamic_map_states"] = {"101": {"type": "TRAFFIC_LIGHT", "state": {"object_state": states}, "lane": 101,
                                         "stop_point": np.zeros(3, np.float32)}}
    path = tmp_path / "sd_variant.pkl"
    path.write_bytes(pickle.dumps(scn, protocol=4))
    scenes = [s for s in iter_scenes(path) if isinstance(s, Scene)]
    ref = [s for s in scenes_from_scenario(womd_like(turn=False)) if isinstance(s, Scene)]
    assert len(scenes) == len(ref) == 8
    np.testing.assert_allclose(scenes[0].ego.future, ref[0].ego.future, atol=1e-4)
    np.testing.assert_allclose(scenes[0].agents.boxes, ref[0].agents.boxes, atol=1e-4)
    m = scenes[0].map
    i101 = list(m.lane_ids).index("101")
    assert m.lane_is_connector[i101] and m.lane_is_intersection[i101]
    np.testing.assert_array_equal(m.lane_light_state[:, i101], [LIGHT_RED] * 5 + [LIGHT_GREEN] * 4)
    # a dataset_summary.pkl next to it is skipped as an index
    (tmp_path / "dataset_summary.pkl").write_bytes(pickle.dumps({"sd_variant.pkl": {}}))
    (tmp_path / "dataset_mapping.pkl").write_bytes(pickle.dumps({"sd_variant.pkl": ""}))
    items = list(iter_scenes(tmp_path))
    assert not any(isinstance(x, SkippedItem) for x in items) and len(items) == 8


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


def _write(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _bad_variants() -> dict:
    missing_tracks = womd_like()
    del missing_tracks["tracks"]
    missing_sdc = womd_like()
    del missing_sdc["metadata"]["sdc_id"]
    nan_sdc = womd_like()
    nan_sdc["tracks"]["sdc"]["state"]["position"][30, 0] = np.nan
    return {"missing_tracks": (missing_tracks, "tracks"), "missing_sdc": (missing_sdc, "metadata.sdc_id"),
            "nan_sdc": (nan_sdc, "tracks['sdc'].state.position")}


@pytest.mark.parametrize("name", ["missing_tracks", "missing_sdc", "nan_sdc"])
def test_bad_scenario_one_clear_error(tmp_path, name):
    scn, fieldname = _bad_variants()[name]
    path = _write(tmp_path / f"sd_{name}.pkl", scn)
    with pytest.raises(ScenarioNetFormatError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg and fieldname in msg, msg
    assert info.value.field == fieldname


def test_not_a_pickle(tmp_path):
    path = tmp_path / "sd_text.pkl"
    path.write_text("this is not a pickle\n")
    with pytest.raises(ScenarioNetFormatError) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and "pickle" in str(info.value)


def test_unsafe_pickle_refused_by_loader(tmp_path):
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _write(tmp_path / "sd_evil.pkl", {"metadata": Evil()})
    with pytest.raises(ScenarioNetFormatError, match="unsafe"):
        load_scenario(path)
    assert not marker.exists()


def test_iter_scenes_skips_bad_files_and_continues(tmp_path):
    for name, (scn, _) in _bad_variants().items():
        _write(tmp_path / f"a_{name}.pkl", scn)
    (tmp_path / "b_text.pkl").write_text("garbage")
    _write(tmp_path / "c_good.pkl", womd_like())
    items = list(iter_scenes(tmp_path))
    skipped = [x for x in items if isinstance(x, SkippedItem)]
    scenes = [x for x in items if isinstance(x, Scene)]
    assert len(skipped) == 4 and len(scenes) == 8
    assert {Path(x.item).name for x in skipped} == {"a_missing_tracks.pkl", "a_missing_sdc.pkl", "a_nan_sdc.pkl",
                                                     "b_text.pkl"}
    assert all(x.item in x.error for x in skipped)  # the error names the file
    # a missing path is one skipped item, not an exception
    assert [type(x) for x in iter_scenes(tmp_path / "nope.pkl")] == [SkippedItem]


def test_sdc_never_valid_long_enough_gives_no_scene():
    scn = womd_like()
    scn["tracks"]["sdc"]["state"]["valid"][::10] = False  # a gap every second: no complete 5.5 s window
    items = list(scenes_from_scenario(scn))
    # no scene, and every window the file spans (t0 = 1.5 .. 5.0 s) is reported with its reason, not dropped silently
    assert items and all(isinstance(i, SkippedItem) for i in items)
    assert len(items) == 8 and all("not valid at every window time" in i.error for i in items)
    assert {i.reason for i in items} == {"ego not valid through the window"}


def test_stride_validation():
    with pytest.raises(ValueError, match="stride"):
        list(scenes_from_scenario(womd_like(), stride=0))


def test_neighbours_inferred_when_file_has_none():
    """nuScenes-style maps store no neighbours: parallel same-direction lanes 3.6 m apart are found geometrically,
    and neighbours share a lane group."""
    scn = womd_like()
    for f in scn["map_features"].values():
        f.pop("left_neighbor", None)
        f.pop("right_neighbor", None)
    ref = next(iter(scenes_from_scenario(womd_like())))
    s = next(iter(scenes_from_scenario(scn)))
    m = s.map
    lid = list(m.lane_ids)
    i100, i101, i102 = lid.index("100"), lid.index("101"), lid.index("102")
    assert m.lane_left_neighbor[i100] == i102 and m.lane_right_neighbor[i102] == i100
    assert m.lane_left_neighbor[i102] == -1 and m.lane_right_neighbor[i100] == -1
    assert m.lane_left_neighbor[i101] == -1  # successor-linked or too far: not a neighbour
    assert m.lane_group[i100] == m.lane_group[i102] != m.lane_group[i101]
    np.testing.assert_array_equal(m.lane_left_neighbor, ref.map.lane_left_neighbor)
    np.testing.assert_array_equal(m.lane_group, ref.map.lane_group)


def test_bad_window_is_skipped_and_agent_spikes_invalidated():
    scn = womd_like()
    # sdc speed spike at t = 3.0 s: every window with that history step fails validation -> SkippedItem, not a crash
    scn["tracks"]["sdc"]["state"]["velocity"][30] = [500.0, 0.0]
    # an agent velocity spike at t = 2.0 s is marked invalid instead of failing the windows
    scn["tracks"]["1001"]["state"]["velocity"][20] = [0.0, 900.0]
    items = list(scenes_from_scenario(scn, source="spiky.pkl"))
    skipped = [x for x in items if isinstance(x, SkippedItem)]
    scenes = [x for x in items if isinstance(x, Scene)]
    assert len(items) == 8 and skipped and scenes
    assert all("spiky.pkl@t=" in x.item and "history_velocity" in x.error for x in skipped)
    s = scenes[0]  # t0 = 1.5 s: the agent spike is step 1
    lead = list(s.agents.track_id).index("1001")
    assert not s.agents.valid[1, lead] and s.agents.valid[[0, 2], lead].all()
