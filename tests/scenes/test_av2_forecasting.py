"""Argoverse 2 motion-forecasting adapter (issue real-data, 3 and 4): a hand-written scenario with known answers, the
real sample in ../shared/data (windows, map, route, the logged human's DAC with the filter OFF), bad input, and the
``irlvla scenes build --source av2-forecasting`` command (windows built, dropped windows counted per reason, an empty
result is a failure with a reason)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

shapely = pytest.importorskip("shapely")

from irlvla_gym.scenes import av2_forecasting as fc  # noqa: E402
from irlvla_gym.scenes.av2 import AV2_EGO_VEHICLE  # noqa: E402
from irlvla_gym.scenes.scene import (  # noqa: E402
    BICYCLE, COMMAND_STRAIGHT, PEDESTRIAN, VEHICLE, Scene, command_from_lateral,
)
from irlvla_gym.scenes.sources import SkippedItem  # noqa: E402

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "av2_forecasting"
SAMPLE_DIRS = sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []
needs_sample = pytest.mark.skipif(not SAMPLE_DIRS, reason=f"AV2 forecasting sample not found in {ROOT}")

SCENARIO_ID = "synthetic-0001"
T = 110
AV_SPEED = 10.0  # m/s along +x from x = -30
CAR_SPEED = 12.0  # m/s, 20 m ahead of the AV at the start, pulling away
T0_NS = 315_970_000_000_000_000


def _points(xs: np.ndarray, y: float) -> list[dict]:
    return [{"x": float(x), "y": y, "z": 0.0} for x in xs]


def write_scenario(folder: Path, *, steps: int = T, av_gap: tuple[int, int] | None = None,
                   drop_column: str | None = None, with_map: bool = True) -> Path:
    """A straight two-lane road along +x (y = 0 and y = 3.6), the AV at 10 m/s in the right lane, a car 20 m ahead
    at 12 m/s (the focal track), a pedestrian standing at (40, 8) and a cyclist; ``av_gap`` removes AV rows."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(steps) * 0.1
    rows: dict[str, list] = {k: [] for k in ("observed", "track_id", "object_type", "object_category", "timestep",
                                              "position_x", "position_y", "heading", "velocity_x", "velocity_y")}

    def track(tid: str, kind: str, category: int, x: np.ndarray, y: float, vx: float, skip: range = range(0)):
        for k in range(steps):
            if k in skip:
                continue
            for key, value in (("observed", k < 50), ("track_id", tid), ("object_type", kind),
                               ("object_category", category), ("timestep", k), ("position_x", float(x[k])),
                               ("position_y", y), ("heading", 0.0), ("velocity_x", vx), ("velocity_y", 0.0)):
                rows[key].append(value)

    track("AV", "vehicle", 1, -30.0 + AV_SPEED * t, 0.0, AV_SPEED, range(*av_gap) if av_gap else range(0))
    track("car", "vehicle", 3, -10.0 + CAR_SPEED * t, 0.0, CAR_SPEED)
    track("ped", "pedestrian", 0, np.full(steps, 40.0), 8.0, 0.0)
    track("bike", "cyclist", 0, np.full(steps, 10.0) + 3.0 * t, 3.6, 3.0)
    n = len(rows["timestep"])
    rows.update(scenario_id=[SCENARIO_ID] * n, start_timestamp=[float(T0_NS)] * n,
                end_timestamp=[float(T0_NS + (steps - 1) * 100_000_000)] * n, num_timestamps=[steps] * n,
                focal_track_id=["car"] * n, city=["PIT"] * n, map_id=[1] * n, slice_id=["s"] * n)
    if drop_column:
        rows.pop(drop_column)
    path = folder / f"scenario_{SCENARIO_ID}.parquet"
    pq.write_table(pa.table(rows), path)
    if with_map:
        xs = np.linspace(-100.0, 200.0, 31)
        lanes = {}
        for lane_id, y, left, right in ((1, 0.0, 2, None), (2, 3.6, None, 1)):
            lanes[str(lane_id)] = {
                "id": lane_id, "is_intersection": False, "lane_type": "VEHICLE",
                "left_lane_boundary": _points(xs, y + 1.8), "right_lane_boundary": _points(xs, y - 1.8),
                "left_lane_mark_type": "DASHED_WHITE", "right_lane_mark_type": "SOLID_WHITE",
                "successors": [], "predecessors": [], "left_neighbor_id": left, "right_neighbor_id": right}
        ring = [{"x": -100.0, "y": -1.8, "z": 0}, {"x": 200.0, "y": -1.8, "z": 0}, {"x": 200.0, "y": 5.4, "z": 0},
                {"x": -100.0, "y": 5.4, "z": 0}]
        crossing = {"id": 7, "edge1": _points(np.array([30.0, 30.0]), 0.0),
                    "edge2": _points(np.array([33.0, 33.0]), 0.0)}
        crossing["edge1"][0]["y"] = crossing["edge2"][0]["y"] = -1.8
        crossing["edge1"][1]["y"] = crossing["edge2"][1]["y"] = 5.4
        (folder / f"log_map_archive_{SCENARIO_ID}.json").write_text(json.dumps({
            "lane_segments": lanes, "drivable_areas": {"5": {"id": 5, "area_boundary": ring}},
            "pedestrian_crossings": {"7": crossing}}))
    return path


# --------------------------------------------------------------------------------------------------------------------
# Hand-written scenario
# --------------------------------------------------------------------------------------------------------------------


def test_synthetic_scenario_known_answers(tmp_path):
    write_scenario(tmp_path / SCENARIO_ID)
    items = list(fc.iter_scenes(tmp_path))
    scenes = [i for i in items if isinstance(i, Scene)]
    assert len(scenes) == len(items) == 11  # 11 s at 10 Hz: t0 = 1.5 .. 6.5 s
    s = scenes[0]
    assert s.token == f"av2f-{SCENARIO_ID}-015" and s.metadata.source == "av2-forecasting"
    assert s.metadata.map_name == "PIT" and s.metadata.timestamp_us == (T0_NS + 1_500_000_000) // 1000
    assert s.ego.vehicle == AV2_EGO_VEHICLE
    # The AV's poses are rear-axle poses: no shift; 10 m/s straight ahead.
    np.testing.assert_allclose(s.ego.future[:, 0], AV_SPEED * 0.5 * np.arange(1, 9), atol=1e-6)
    np.testing.assert_allclose(s.ego.future[:, 1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(s.ego.history[:, 0], AV_SPEED * 0.5 * np.arange(-3, 1), atol=1e-6)
    np.testing.assert_allclose(s.ego.history_velocity, [[AV_SPEED, 0.0]] * 4, atol=1e-3)
    np.testing.assert_allclose(s.ego.history_acceleration, 0.0, atol=1e-3)
    # Agents in the t0 ego frame with category defaults for the sizes the files do not carry.
    ids = list(s.agents.track_id)
    assert set(ids) == {"car", "ped", "bike"}
    car = ids.index("car")
    gap_t0 = 20.0 + (CAR_SPEED - AV_SPEED) * 1.5  # car centre ahead of the AV's rear axle at t0 = 1.5 s
    np.testing.assert_allclose(s.agents.boxes[:, car, 0], gap_t0 + CAR_SPEED * 0.5 * np.arange(9), atol=1e-6)
    np.testing.assert_allclose(s.agents.boxes[:, car, 3:8], [[4.5, 2.0, 1.6, CAR_SPEED, 0.0]] * 9, atol=1e-6)
    assert [s.agents.category[ids.index(k)] for k in ("car", "ped", "bike")] == [VEHICLE, PEDESTRIAN, BICYCLE]
    # Map and route through the sensor-log adapter's code.
    assert s.map.num_lanes == 2 and s.map.drivable_area.count == 1 and s.map.crosswalks.count == 1
    assert s.map.lane_left_neighbor.tolist() == [1, -1]
    assert len(s.route_lanes) == 1 and s.map.lane_ids[s.route_lanes[0]] == "1"
    assert s.command == COMMAND_STRAIGHT


def test_focal_track_as_ego(tmp_path):
    """ego='focal': the focal car's centre positions are moved back to its rear axle; the AV becomes an agent."""
    write_scenario(tmp_path / SCENARIO_ID)
    s = next(fc.iter_scenes(tmp_path, ego="focal"))
    assert s.token.endswith("-015-car")
    np.testing.assert_allclose(s.ego.future[:, 0], CAR_SPEED * 0.5 * np.arange(1, 9), atol=1e-6)
    av = list(s.agents.track_id).index("AV")  # the AV seen from the focal car's rear axle, which is 1.46 m behind
    np.testing.assert_allclose(s.agents.boxes[0, av, 0], -(20.0 + 2.0 * 1.5) + AV2_EGO_VEHICLE.rear_axle_to_center,
                               atol=1e-6)


def test_windows_the_ego_does_not_cover_are_reported(tmp_path):
    """A 1 s hole in the AV track: every window touching it is a SkippedItem with its reason, the rest are built."""
    write_scenario(tmp_path / SCENARIO_ID, av_gap=(60, 70))
    items = list(fc.iter_scenes(tmp_path))
    skipped = [i for i in items if isinstance(i, SkippedItem)]
    assert len(items) == 11 and len(skipped) == 10  # only t0 = 1.5 s ends (5.5 s) before the hole
    assert {i.reason for i in skipped} == {"ego not valid through the window"}
    assert "@t=2.0s" in skipped[0].item


def test_test_split_scenario_is_reported_too_short(tmp_path):
    write_scenario(tmp_path / SCENARIO_ID, steps=50)
    items = list(fc.iter_scenes(tmp_path))
    assert len(items) == 1 and isinstance(items[0], SkippedItem) and "5.5 s" in items[0].error


def test_bad_input_names_file_and_field(tmp_path):
    path = write_scenario(tmp_path / "a", drop_column="heading")
    with pytest.raises(ValueError, match=r"scenario_synthetic-0001\.parquet: missing column 'heading'"):
        fc.load_scenario(path)
    path = write_scenario(tmp_path / "b", with_map=False)
    with pytest.raises(FileNotFoundError, match=r"log_map_archive_\*\.json: file not found"):
        fc.load_scenario(path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "scenario_x.parquet").write_bytes(b"not parquet")
    items = list(fc.iter_scenes(tmp_path / "c"))
    assert len(items) == 1 and "cannot read as parquet" in items[0].error
    with pytest.raises(FileNotFoundError):
        list(fc.iter_scenes(tmp_path / "missing"))


# --------------------------------------------------------------------------------------------------------------------
# The real sample
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_scenes() -> list[Scene]:
    if not SAMPLE_DIRS:
        pytest.skip(f"AV2 forecasting sample not found in {ROOT}")
    items = list(fc.iter_scenes(ROOT))
    skipped = [str(i) for i in items if isinstance(i, SkippedItem)]
    assert not skipped, skipped
    return items


@needs_sample
def test_real_sample_builds_windows(real_scenes):
    assert len(real_scenes) == 11
    s = real_scenes[0]
    assert s.metadata.map_name == "austin" and s.metadata.source == "av2-forecasting"
    for scene in real_scenes:
        assert scene.map.num_lanes > 5 and len(scene.route_lanes) >= 1 and len(scene.agents) > 10
        assert scene.map.drivable_area.count > 0 and scene.map.crosswalks.count > 0
    cats = set(np.concatenate([s.agents.category for s in real_scenes]).tolist())
    assert {VEHICLE, PEDESTRIAN, BICYCLE} <= cats


@needs_sample
def test_real_sample_expert_in_drivable_area_command_and_human_dac(real_scenes):
    """Measured: 88 / 88 future poses inside the drivable area, commands agree 11 / 11, the human passes DAC
    (filter off) in 11 / 11 windows."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import HumanPlanner

    inside = 0
    for s in real_scenes:
        area = shapely.unary_union(s.map.drivable_area.to_shapely())
        inside += int(shapely.contains_xy(area, s.ego.future[:, 0], s.ego.future[:, 1]).sum())
    assert inside / (8 * len(real_scenes)) >= 0.95
    agree = np.mean([s.command == command_from_lateral(float(s.ego.future[-1, 1])) for s in real_scenes])
    assert agree >= 0.9
    dac = np.array([float(score_plans(s, HumanPlanner().plan(s), human_filter=False).take(0)["dac"])
                    for s in real_scenes])
    assert np.mean(dac == 1.0) >= 0.98, [s.token for s, d in zip(real_scenes, dac) if d < 1]


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def _build(tmp_path: Path, capsys, *args: str) -> tuple[int, str, str]:
    from irlvla_gym.cli import main

    code = main(["scenes", "build", *args, "--out", str(tmp_path / "store"), "--no-progress", "--no-hooks"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_sample
def test_cli_builds_the_sample(tmp_path, capsys):
    code, out, _ = _build(tmp_path, capsys, "--source", "av2-forecasting", "--path", str(ROOT))
    assert code == 0 and "av2-forecasting: 11 scene(s) built, 0 item(s) dropped" in out, out
    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(tmp_path / "store")
    assert len(store) == 11 and store.source == "av2-forecasting"


def test_cli_counts_dropped_windows_per_reason(tmp_path, capsys):
    write_scenario(tmp_path / "in" / SCENARIO_ID, av_gap=(60, 70))
    code, out, _ = _build(tmp_path, capsys, "--source", "av2-forecasting", "--path", str(tmp_path / "in"))
    assert code == 0
    assert "1 scene(s) built, 10 item(s) dropped, by reason:" in out and "10 x ego not valid through the window" in out


def test_cli_empty_result_fails_with_a_reason(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _build(tmp_path, capsys, "--source", "av2-forecasting", "--path", str(tmp_path / "empty"))
    assert code == 1 and "no scene was stored" in err and "no scenario_*.parquet" in err


@needs_sample
def test_cli_sensor_log_source_on_forecasting_data_says_why(tmp_path, capsys):
    code, _, err = _build(tmp_path, capsys, "--source", "av2", "--path", str(ROOT))
    assert code == 1 and "--source av2-forecasting" in err
