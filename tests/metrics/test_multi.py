"""Multi-scene scorer (:mod:`irlvla_gym.metrics.multi`) vs the single-scene fast scorer, row by row, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from irlvla_gym.metrics import agent_tracks, finalize, prepare_scene
from irlvla_gym.metrics.fast import score_states_fast
from irlvla_gym.metrics.multi import finalize_rows, human_zero_mask, score_rows
from irlvla_gym.metrics.result import ScoreResult
from irlvla_gym.metrics.testing import intersection_scene, line_states, random_states
from irlvla_gym.scenes.scene import TRAFFIC_CONE
from irlvla_gym.scenes.testing import straight_road_scene

ROW_FIELDS = [f.name for f in dataclasses.fields(ScoreResult)
              if f.name not in ("has_ec", "dt", "epdms", "pdms", "human", "filtered", "unfiltered", "ep",
                                "multiplicative", "ep_normaliser")]  # ep and aggregates: compared after finalize


def _scenes():
    from irlvla_gym.scenes.synthetic import generate_scene

    return [straight_road_scene(num_lanes=3, ego_lane=1, agents=[
                dict(x=15, y=0, vx=4), dict(x=-12, y=0, vx=12), dict(x=8, y=3.5, vx=9, vy=-0.5),
                dict(x=25, y=-3.5, category=TRAFFIC_CONE, length=0.5, width=0.5)]),
            intersection_scene(agents=[dict(x=30, y=-25, vy=6, yaw=np.pi / 2), dict(x=60, y=3.5, vx=-8, yaw=np.pi),
                                       dict(x=8, y=0, vx=3)]),
            straight_road_scene(token="empty")] + [generate_scene(2000 + s) for s in range(4)]


def _assert_row_equal(multi: ScoreResult, r: int, single: ScoreResult, label: str) -> None:
    for name in ROW_FIELDS:
        value = getattr(multi, name)
        if isinstance(value, np.ndarray) and value.ndim:
            np.testing.assert_array_equal(value[r], getattr(single, name)[0], err_msg=f"{label}: {name}")


@pytest.mark.parametrize("seed,use_pack", [(0, True), (1, True), (2, False)])
def test_rows_of_many_scenes_equal_single_scene_scoring(seed, use_pack):
    rng = np.random.default_rng(seed)
    scenes = _scenes()
    contexts = [prepare_scene(s) for s in scenes]
    tracks = [agent_tracks(s) for s in scenes]
    rows = rng.integers(len(scenes), size=48)  # scenes repeat, in random order
    states = random_states(rng, 48, lateral=4.0, yaw_spread=0.3)
    previous = [random_states(rng, 1)[0] if rng.random() < 0.5 else None for _ in rows]
    # Closed-loop rows: a context shifted in time shares the scene's map cache but not its red lights / history.
    ctx_rows = []
    for i, r in enumerate(rows):
        ctx = contexts[r]
        if i % 5 == 0:
            ctx = dataclasses.replace(ctx, red_connectors=np.roll(ctx.red_connectors, -7, axis=0),
                                      history_states=ctx.history_states + 0.1)
        ctx_rows.append(ctx)
    multi, has_ec = score_rows(ctx_rows, states, [tracks[r] for r in rows], previous, use_pack=use_pack)
    np.testing.assert_array_equal(has_ec, [p is not None for p in previous])
    human = score_states_fast(contexts[1], line_states(8.0), tracks[1], None)
    reference = rng.uniform(0.0, 40.0, len(rows))
    humans = [human if i % 2 else None for i in range(len(rows))]
    final = finalize_rows(multi, ctx_rows[0].config, reference, human_zero_mask(humans, ctx_rows[0].config), has_ec)
    for i, r in enumerate(rows):
        single = score_states_fast(ctx_rows[i], states[i:i + 1], tracks[r],
                                   None if previous[i] is None else previous[i][None])
        _assert_row_equal(multi, i, single, f"row {i} ({scenes[r].token})")
        finalize(single, ctx_rows[i].config, reference_progress=float(reference[i]), human=humans[i])
        for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms", "pdms", "progress"):
            assert final[name][i] == getattr(single, name)[0], (i, name)
    # The rows exercise the interesting cases.
    assert multi.nc.min() < 1 and multi.dac.min() == 0 and multi.ttc.min() == 0


def test_reactive_rows_and_empty_batches():
    from irlvla_gym.sim import simulate_plans

    scene = straight_road_scene(agents=[dict(x=-15, y=0, vx=12), dict(x=30, y=0, vx=5)])
    ctx = prepare_scene(scene)
    plans = np.tile(scene.ego.future[None], (6, 1, 1))
    plans[..., 0] *= np.linspace(0.0, 1.6, 6)[:, None]
    states = simulate_plans(scene, plans)
    rows = [agent_tracks(scene, "idm", states[k:k + 1]) for k in range(6)]  # (1, 41, N, 8) per row
    multi, _ = score_rows([ctx] * 6, states, rows)
    for k in range(6):
        _assert_row_equal(multi, k, score_states_fast(ctx, states[k:k + 1], rows[k]), f"idm {k}")
    empty, has_ec = score_rows([], np.zeros((0, 41, 11)), [])
    assert empty.nc.shape == (0,) and has_ec.shape == (0,)


def test_packed_index_budget_and_growth(monkeypatch):
    """The packed index grows with new scenes, restarts when over budget, and is skipped when even one batch's
    scenes exceed it (rows then go scene by scene); numbers never change."""
    from irlvla_gym.metrics import multi

    scenes = _scenes()
    contexts = [prepare_scene(s) for s in scenes]
    tracks = [agent_tracks(s) for s in scenes]
    rng = np.random.default_rng(5)
    states = random_states(rng, len(scenes), lateral=3.0)
    multi.clear_packed_maps()
    a, _ = score_rows(contexts[:3], states[:3], tracks[:3])
    assert len(multi._PACK[0].contexts) == 3
    b, _ = score_rows(contexts, states, tracks)  # 4 new scenes: pending (scored scene by scene), not packed yet
    assert len(multi._PACK[0].contexts) == 3 and len(multi._PENDING) == len(scenes) - 3
    monkeypatch.setattr(multi, "PACK_MIN_GROWTH", 0)  # grow at the next call
    b2, _ = score_rows(contexts, states, tracks)
    assert len(multi._PACK[0].contexts) == len(scenes)
    monkeypatch.setattr(multi, "PACK_MAX_CELLS", 0)
    c, _ = score_rows(contexts, states, tracks)  # over budget: scene by scene
    for name in ("nc", "dac", "lk_deviation", "progress", "red_light", "oncoming", "multiple_lanes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name)[:3])
        np.testing.assert_array_equal(getattr(b, name), getattr(c, name))
        np.testing.assert_array_equal(getattr(b2, name), getattr(c, name))
    multi.clear_packed_maps()
