"""The vectorised scorer's multi-scene path: rows of many scenes against the reference (row by row) and against
the single-scene path (bit for bit), through the process-wide map pack or scene by scene; the exact pruned route
search against the dense one.

(Replaces test_multi.py, which compared the former multi-scene module with the former single-scene one.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely

from irlvla_gym.metrics import (
    agent_tracks, finalize, finalize_rows, human_zero_mask, prepare_scene, project_on_polyline, score_rows,
    score_scene,
)
from irlvla_gym.metrics import maps, route
from irlvla_gym.metrics.boxes import CENTER, ego_box_points
from irlvla_gym.metrics.reference import score_states_reference
from irlvla_gym.metrics.result import ScoreResult
from irlvla_gym.metrics.testing import intersection_scene, line_states, random_states
from irlvla_gym.scenes.scene import TRAFFIC_CONE
from irlvla_gym.scenes.testing import straight_road_scene

ROW_FIELDS = [f.name for f in dataclasses.fields(ScoreResult)
              if f.name not in ("has_ec", "dt", "epdms", "pdms", "human", "filtered", "unfiltered", "ep",
                                "multiplicative", "ep_normaliser")]  # ep and aggregates: compared after finalize
EXACT = ("nc", "dac", "ddc", "tlc", "ttc", "lk", "hc", "ec", "non_drivable", "multiple_lanes", "oncoming",
         "in_intersection", "red_light", "at_fault_collision", "ttc_infraction", "collision_step", "collision_agent",
         "collision_type", "collision_category", "ttc_step", "ttc_agent", "comfort_ok")
CLOSE = ("progress", "oncoming_progress", "lk_deviation")  # shapely's arithmetic vs numpy's: within 1e-9 m


def _scenes():
    from irlvla_gym.scenes.synthetic import generate_scene

    return [straight_road_scene(num_lanes=3, ego_lane=1, agents=[
                dict(x=15, y=0, vx=4), dict(x=-12, y=0, vx=12), dict(x=8, y=3.5, vx=9, vy=-0.5),
                dict(x=25, y=-3.5, category=TRAFFIC_CONE, length=0.5, width=0.5)]),
            intersection_scene(agents=[dict(x=30, y=-25, vy=6, yaw=np.pi / 2), dict(x=60, y=3.5, vx=-8, yaw=np.pi),
                                       dict(x=8, y=0, vx=3)]),
            straight_road_scene(token="empty")] + [generate_scene(2000 + s) for s in range(4)]


def _rows(seed: int, num: int = 48):
    """Rows of random scenes (repeating, in random order), every 5th a closed-loop context shifted in time (shares
    the scene's maps, not its red lights / history), half of them with a previous plan (EC)."""
    rng = np.random.default_rng(seed)
    scenes = _scenes()
    contexts = [prepare_scene(s) for s in scenes]
    tracks = [agent_tracks(s) for s in scenes]
    rows = rng.integers(len(scenes), size=num)
    states = random_states(rng, num, lateral=4.0, yaw_spread=0.3)
    previous = [random_states(rng, 1)[0] if rng.random() < 0.5 else None for _ in rows]
    ctx_rows = []
    for i, r in enumerate(rows):
        ctx = contexts[r]
        if i % 5 == 0:
            ctx = dataclasses.replace(ctx, red_connectors=np.roll(ctx.red_connectors, -7, axis=0),
                                      history_states=ctx.history_states + 0.1)
        ctx_rows.append(ctx)
    return scenes, contexts, tracks, rows, ctx_rows, states, previous, rng


def _assert_row_equal(multi: ScoreResult, r: int, single: ScoreResult, label: str) -> None:
    for name in ROW_FIELDS:
        value = getattr(multi, name)
        if isinstance(value, np.ndarray) and value.ndim:
            np.testing.assert_array_equal(value[r], getattr(single, name)[0], err_msg=f"{label}: {name}")


@pytest.mark.parametrize("seed,use_pack", [(0, True), (1, True), (2, False)])
def test_rows_of_many_scenes_equal_the_single_scene_path(seed, use_pack):
    scenes, contexts, tracks, rows, ctx_rows, states, previous, rng = _rows(seed)
    multi, has_ec = score_rows(ctx_rows, states, [tracks[r] for r in rows], previous, use_pack=use_pack)
    np.testing.assert_array_equal(has_ec, [p is not None for p in previous])
    human = score_scene(contexts[1], line_states(8.0), tracks[1])
    reference = rng.uniform(0.0, 40.0, len(rows))
    humans = [human if i % 2 else None for i in range(len(rows))]
    final = finalize_rows(multi, ctx_rows[0].config, reference, human_zero_mask(humans, ctx_rows[0].config), has_ec)
    for i, r in enumerate(rows):
        single = score_scene(ctx_rows[i], states[i:i + 1], tracks[r], None if previous[i] is None else previous[i][None])
        _assert_row_equal(multi, i, single, f"row {i} ({scenes[r].token})")
        finalize(single, ctx_rows[i].config, reference_progress=float(reference[i]), human=humans[i])
        for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms", "pdms", "progress"):
            assert final[name][i] == getattr(single, name)[0], (i, name)
    # The rows exercise the interesting cases.
    assert multi.nc.min() < 1 and multi.dac.min() == 0 and multi.ttc.min() == 0


def test_rows_of_many_scenes_agree_with_the_reference():
    scenes, contexts, tracks, rows, ctx_rows, states, previous, _ = _rows(7, num=24)
    multi, _ = score_rows(ctx_rows, states, [tracks[r] for r in rows], previous)
    for i, r in enumerate(rows):
        ref = score_states_reference(ctx_rows[i], states[i:i + 1], tracks[r],
                                     None if previous[i] is None else previous[i][None])
        for name in EXACT:
            np.testing.assert_array_equal(getattr(multi, name)[i], getattr(ref, name)[0], err_msg=f"{i}: {name}")
        for name in CLOSE:
            np.testing.assert_allclose(getattr(multi, name)[i], getattr(ref, name)[0], atol=1e-9, err_msg=name)


def test_reactive_rows_and_empty_batches():
    from irlvla_gym.sim import simulate_plans

    scene = straight_road_scene(agents=[dict(x=-15, y=0, vx=12), dict(x=30, y=0, vx=5)])
    ctx = prepare_scene(scene)
    plans = np.tile(scene.ego.future[None], (6, 1, 1))
    plans[..., 0] *= np.linspace(0.0, 1.6, 6)[:, None]
    states = simulate_plans(scene, plans)
    rows = [agent_tracks(scene, "idm", states[k:k + 1]) for k in range(6)]  # (1, 41, N, 8) per row
    multi, _ = score_rows([ctx] * 6, states, rows)
    per_plan = score_scene(ctx, states, agent_tracks(scene, "idm", states))  # (6, 41, N, 8): plan k's agents
    for k in range(6):
        _assert_row_equal(multi, k, score_scene(ctx, states[k:k + 1], rows[k]), f"idm {k}")
        for name in ROW_FIELDS:
            np.testing.assert_array_equal(getattr(per_plan, name)[k], getattr(multi, name)[k], err_msg=name)
    empty, has_ec = score_rows([], np.zeros((0, 41, 11)), [])
    assert empty.nc.shape == (0,) and has_ec.shape == (0,)


def test_packed_maps_budget_and_growth(monkeypatch):
    """The process-wide pack grows with new scenes, restarts when over budget, and is skipped when even one batch's
    scenes exceed it (rows then go scene by scene); numbers never change."""
    scenes = _scenes()
    contexts = [prepare_scene(s) for s in scenes]
    tracks = [agent_tracks(s) for s in scenes]
    states = random_states(np.random.default_rng(5), len(scenes), lateral=3.0)
    maps.clear_packed_maps()
    a, _ = score_rows(contexts[:3], states[:3], tracks[:3])
    assert len(maps.current_pack().contexts) == 3
    b, _ = score_rows(contexts, states, tracks)  # 4 new scenes: pending (scored scene by scene), not packed yet
    assert len(maps.current_pack().contexts) == 3 and maps.pending_scenes() == len(scenes) - 3
    monkeypatch.setattr(maps, "PACK_MIN_GROWTH", 0)  # grow at the next call
    b2, _ = score_rows(contexts, states, tracks)
    assert len(maps.current_pack().contexts) == len(scenes)
    monkeypatch.setattr(maps, "PACK_MAX_CELLS", 0)
    c, _ = score_rows(contexts, states, tracks)  # nothing new: the pack stays
    maps.clear_packed_maps()
    d, _ = score_rows(contexts, states, tracks)  # over budget from the start: scene by scene
    assert maps.current_pack() is None
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name)[:3], err_msg=name)
        np.testing.assert_array_equal(getattr(b, name), getattr(c, name), err_msg=name)
        np.testing.assert_array_equal(getattr(b2, name), getattr(c, name), err_msg=name)
        np.testing.assert_array_equal(getattr(d, name), getattr(c, name), err_msg=name)
    maps.clear_packed_maps()


@pytest.mark.parametrize("num", [1, 40, 160])
def test_pruned_route_distance_equals_the_dense_one(num, monkeypatch):
    """Both strategies of route.route_distance give the same bits, single scene and packed, and match shapely."""
    scenes = _scenes()
    contexts = [prepare_scene(s) for s in scenes]
    rng = np.random.default_rng(num)
    states = random_states(rng, num, lateral=6.0, yaw_spread=0.5)
    centre = ego_box_points(states, contexts[0].vehicle)[..., CENTER, :]
    for pack, slot in [(maps.scene_maps(c), np.zeros(num, np.int64)) for c in contexts] + [
            (maps.MapPack(contexts), rng.integers(len(contexts), size=num))]:
        monkeypatch.setattr(route, "DENSE_MAX", 10**12)
        dense = route.route_distance(pack, slot, centre)
        monkeypatch.setattr(route, "DENSE_MAX", 0)
        pruned = route.route_distance(pack, slot, centre)
        np.testing.assert_array_equal(pruned, dense)
        for r in range(0, num, max(1, num // 8)):
            line = pack.contexts[slot[r]].route_centerline
            expect = [shapely.LineString(line).distance(shapely.Point(p)) for p in centre[r]] if len(line) >= 2 \
                else np.full(len(centre[r]), np.inf)
            np.testing.assert_allclose(dense[r], expect, atol=1e-9)


def test_project_on_polyline_matches_shapely():
    rng = np.random.default_rng(0)
    line = np.cumsum(rng.normal(0.0, 3.0, (30, 2)), axis=0)
    points = rng.uniform(line.min(axis=0) - 5, line.max(axis=0) + 5, (200, 2))
    expect = [shapely.LineString(line).project(shapely.Point(p)) for p in points]
    np.testing.assert_allclose(project_on_polyline(points, line), expect, atol=1e-9)


def test_track_arrays_batched_equal_one_by_one():
    """TrackArrays.batch (the tracks of a step's new scenes at once) gives every array bit for bit as one
    TrackArrays per track, the extents and the corners (computed on demand in a batch) included."""
    from irlvla_gym.geometry import box_corners
    from irlvla_gym.metrics.agents import SMALL_TRACK, TrackArrays, tracks_arrays
    from irlvla_gym.metrics.config import DEFAULT_CONFIG
    from irlvla_gym.metrics.context import AgentTracks

    rng = np.random.default_rng(3)
    tracks = [agent_tracks(s) for s in _scenes()]
    big = AgentTracks(rng.normal(0, 20, (41, SMALL_TRACK // 41 + 3, 8)), rng.random((41, SMALL_TRACK // 41 + 3)) < 0.8,
                      rng.integers(0, 4, SMALL_TRACK // 41 + 3))
    tracks.insert(2, big)  # a track too large to keep its corners at once
    fresh = [AgentTracks(t.boxes, t.valid, t.category) for t in tracks]
    batched = TrackArrays.batch(tracks, DEFAULT_CONFIG, 41)
    for one, arrays, track in zip(fresh, batched, tracks):
        ref = TrackArrays(one, DEFAULT_CONFIG, 41)
        assert arrays.kept_corners is None and arrays._reach is None
        some = np.arange(0, ref.num_agents, 2)
        assert np.array_equal(arrays.reach_of(some), ref.reach[some])
        agent, step = np.divmod(np.arange(ref.boxes.shape[0] * 41), 41)
        assert np.array_equal(arrays.corners_at(agent, step), box_corners(ref.boxes).reshape(-1, 4, 2))
        arrays.keep_corners()
        ref.keep_corners()
        for name in ("boxes", "valid", "static", "category", "radius", "stopped", "cx", "cy", "reach", "bbox",
                     "radius_max", "kept_corners"):
            a, b = getattr(arrays, name), getattr(ref, name)
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), name
        assert arrays.num_agents == ref.num_agents and np.array_equal(track.is_static, one.is_static)
    again = tracks_arrays(fresh, DEFAULT_CONFIG, 41)
    assert all(a.uses == 1 for a in again) and tracks_arrays(fresh, DEFAULT_CONFIG, 41)[0] is again[0]
