"""Waymo (WOMD via ScenarioNet) on the real sample in ../shared/data: lane widths the file marks unknown (0) are
inferred, so the logged human passes drivable-area compliance with the human filter OFF (issue real-data, 1), also
for an older-converter variant of the same file; and the width inference on a hand-built chain of lanes."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")

from irlvla_gym.scenes.scenarionet import (  # noqa: E402
    DEFAULT_HALF_WIDTH, load_scenario, scenes_from_scenario,
)
from irlvla_gym.scenes.scene import Scene  # noqa: E402
from irlvla_gym.scenes.sources import SkippedItem  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scenarionet_waymo"
SAMPLES = sorted(DATA.glob("sd_waymo_*.pkl")) if DATA.is_dir() else []
needs_sample = pytest.mark.skipif(not SAMPLES, reason=f"Waymo ScenarioNet sample not found in {DATA}")


def human_dac(scenes: list[Scene], *, with_reference: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(K,) DAC of the logged human's plan with the human filter OFF and (K,) PDM-Closed reference progress (m; NaN
    unless ``with_reference``), as ``irlvla check-scorer`` scores the human."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import HumanPlanner, PDMClosedConfig, PDMClosedPlanner

    pdm = PDMClosedPlanner(PDMClosedConfig())
    dac, reference = [], []
    for scene in scenes:
        ctx = pdm.context(scene)
        ref = pdm.run(scene, ctx).reference_progress if with_reference else None
        result = score_plans(scene, HumanPlanner().plan(scene), human_filter=False, reference_progress=ref,
                             context=ctx)
        dac.append(float(result.take(0)["dac"]))
        reference.append(float("nan") if ref is None else ref)
    return np.asarray(dac), np.asarray(reference)


@pytest.fixture(scope="module")
def waymo_scenario() -> dict:
    if not SAMPLES:
        pytest.skip(f"Waymo ScenarioNet sample not found in {DATA}")
    return load_scenario(SAMPLES[0])


@pytest.fixture(scope="module")
def waymo_scenes(waymo_scenario) -> list[Scene]:
    items = list(scenes_from_scenario(waymo_scenario, source=str(SAMPLES[0])))
    skipped = [str(i) for i in items if isinstance(i, SkippedItem)]
    assert not skipped, skipped
    return items


@needs_sample
def test_the_sample_marks_many_widths_unknown(waymo_scenario):
    """The premise: WOMD writes 0 (unknown) for a large share of per-vertex lane widths."""
    widths = np.concatenate([np.asarray(f["width"]).reshape(-1) for f in waymo_scenario["map_features"].values()
                             if str(f["type"]).startswith("LANE") and "width" in f])
    assert 0.05 < np.mean(widths <= 0) < 0.5


@needs_sample
def test_no_lane_is_a_thin_strip(waymo_scenes):
    """Every lane is >= 2 m wide at every vertex (the old 0.5 m floor made ~1 m strips where the file says 0)."""
    assert len(waymo_scenes) == 29  # 19.9 s at 10 Hz: t0 = 1.5 .. 15.5 s
    for scene in waymo_scenes:
        m = scene.map
        width = np.concatenate([np.linalg.norm(m.lane_left_boundaries[i] - m.lane_right_boundaries[i], axis=1)
                                for i in range(m.num_lanes)])
        assert width.min() >= 2.0, (scene.token, width.min())


@needs_sample
def test_human_passes_dac_with_the_filter_off_and_pdm_makes_progress(waymo_scenes):
    """Measured: 29 / 29 windows (was 25 / 29 with the 0.5 m floor), PDM-Closed reference progress > 0 in all 29
    (was 0 in one)."""
    dac, reference = human_dac(waymo_scenes, with_reference=True)
    assert np.mean(dac == 1.0) >= 0.98, [s.token for s, d in zip(waymo_scenes, dac) if d < 1]
    assert np.all(reference > 0.0), [s.token for s, r in zip(waymo_scenes, reference) if not r > 0]


def _as_older_converter(scenario: dict) -> dict:
    """The same scenario as older ScenarioNet / MetaDrive versions wrote it (data-formats.md section 2): no lane
    ``width`` column, per-track ``size`` (T, 3) instead of length / width / height, CROSS_WALK polylines, and the
    v0.3 traffic-light layout (Waymo enum ints with per-step lane ids)."""
    old = copy.deepcopy(scenario)
    for feat in old["map_features"].values():
        feat.pop("width", None)
        if feat.get("type") == "CROSSWALK":
            feat["type"] = "CROSS_WALK"
            feat["polyline"] = feat.pop("polygon")
    for track in old["tracks"].values():
        st = track["state"]
        T = len(st["position"])
        st["size"] = np.stack([np.asarray(st.pop(k), np.float32).reshape(T) for k in ("length", "width", "height")],
                              axis=1)
    enum = {"LANE_STATE_UNKNOWN": 0, "LANE_STATE_ARROW_STOP": 1, "LANE_STATE_ARROW_CAUTION": 2,
            "LANE_STATE_ARROW_GO": 3, "LANE_STATE_STOP": 4, "LANE_STATE_CAUTION": 5, "LANE_STATE_GO": 6}
    for light in old["dynamic_map_states"].values():
        states = light["state"]["object_state"]
        T = len(states)
        light["state"] = {"object_state": np.array([enum.get(s, 0) if s else 0 for s in states], np.int64),
                          "lane": np.full(T, int(light.pop("lane")), np.int64),
                          "stop_point": np.tile(np.asarray(light.pop("stop_point"), np.float32), (T, 1))}
    return old


@needs_sample
def test_older_converter_layout_of_the_same_scenario(waymo_scenario, waymo_scenes):
    """Widths then come from the boundary features: the human still passes DAC in >= 98 % of windows."""
    items = list(scenes_from_scenario(_as_older_converter(waymo_scenario), source="old-layout"))
    scenes = [i for i in items if isinstance(i, Scene)]
    assert len(scenes) == len(waymo_scenes), [str(i) for i in items if isinstance(i, SkippedItem)]
    dac, _ = human_dac(scenes)
    assert np.mean(dac == 1.0) >= 0.98, [s.token for s, d in zip(scenes, dac) if d < 1]
    lights = np.stack([s.map.lane_light_state.max() for s in scenes])
    assert lights.max() > 0  # the old-format light states were read


# --------------------------------------------------------------------------------------------------------------------
# Width inference on a hand-built chain of lanes (no data needed)
# --------------------------------------------------------------------------------------------------------------------


def _chain_scenario(widths_b: np.ndarray, widths_c: np.ndarray) -> dict:
    """Three lanes along +x (A: x -60..0, B: 0..30, C: 30..120), A -> B -> C, the sdc driving along y = 0 at 8 m/s.
    A has half widths 1.9 m; B and C get ``widths_b`` / ``widths_c`` (n, 2) and no boundary features."""
    T = 91
    ts = np.arange(T) * 0.1
    x = -20.0 + 8.0 * ts
    sdc = {"type": "VEHICLE", "metadata": {},
           "state": {"position": np.c_[x, np.zeros(T), np.zeros(T)], "heading": np.zeros(T),
                     "velocity": np.tile([8.0, 0.0], (T, 1)), "valid": np.ones(T, bool),
                     "length": np.full(T, 4.8), "width": np.full(T, 2.0), "height": np.full(T, 1.6)}}

    def lane(x0: float, x1: float, n: int, width: np.ndarray, entry: list, exit_: list) -> dict:
        xs = np.linspace(x0, x1, n)
        return {"type": "LANE_SURFACE_STREET", "polyline": np.c_[xs, np.zeros(n), np.zeros(n)],
                "width": width, "entry_lanes": entry, "exit_lanes": exit_}

    return {"id": "chain", "metadata": {"ts": ts, "sdc_id": "0", "coordinate": "waymo", "dataset": "waymo"},
            "tracks": {"0": sdc}, "dynamic_map_states": {},
            "map_features": {"1": lane(-60, 0, 13, np.full((13, 2), 1.9), [], [2]),
                             "2": lane(0, 30, len(widths_b), widths_b, [1], [3]),
                             "3": lane(30, 120, len(widths_c), widths_c, [2], [])}}


def _half_widths(scene: Scene, lane_id: str) -> np.ndarray:
    i = list(scene.map.lane_ids).index(lane_id)
    return scene.map.lane_left_boundaries[i][:, 1] - scene.map.lane_centerlines[i][:, 1]


def test_unknown_widths_are_inferred_not_floored():
    """Lane B records only zeros: it continues A's 1.9 m (its predecessor) to C's start width; lane C's zeros in
    the middle are interpolated between its known 1.5 and 2.1 m; a lane with no information anywhere near gets the
    default."""
    widths_c = np.zeros((10, 2))
    widths_c[:3] = 1.5
    widths_c[-2:] = 2.1
    scene = next(s for s in scenes_from_scenario(_chain_scenario(np.zeros((7, 2)), widths_c)))
    np.testing.assert_allclose(_half_widths(scene, "2"), np.linspace(1.9, 1.5, 7), atol=0.02)
    c = _half_widths(scene, "3")
    np.testing.assert_allclose(c[:3], 1.5, atol=1e-3)
    np.testing.assert_allclose(c[3:8], 1.5 + (2.1 - 1.5) * np.arange(1, 6) / 6, atol=1e-3)
    assert c.min() > 1.0  # never the 0.5 m floor
    alone = _chain_scenario(np.zeros((7, 2)), np.zeros((10, 2)))
    alone["map_features"]["1"]["width"] = np.zeros((13, 2))
    scene = next(s for s in scenes_from_scenario(alone))
    np.testing.assert_allclose(_half_widths(scene, "2"), DEFAULT_HALF_WIDTH, atol=1e-3)
    assert math.isclose(float(_half_widths(scene, "1")[0]), DEFAULT_HALF_WIDTH, abs_tol=1e-3)
