"""The vectorised EPDMS scorer: R rows (scene context, simulated states, agents) in one numpy pass, no Python loop
over plans, steps or agents. The spec it must agree with is :mod:`irlvla_gym.metrics.reference`.

Two entry points, one implementation:

* :func:`score_rows` — rows of possibly different scenes (the N envs of a vector env);
* :func:`score_scene` — K plans of one scene (``score_states`` / ``score_plans``, planners, leaderboard): the same
  pass with K rows sharing one context and one agent track.

The driver only arranges the rows; each sub-score family lives in its own module:

==============  ========================================================================================
``area``        ego-area flags (one containment query for all box points), DAC, DDC
``lights``      TLC (red connectors: corner hits and edge overlaps)
``route``       centres against the route centreline (distance: pruned, exact; arc length), for LK and EP
``lanes``       LK; ``progress``: raw progress and EP normalisation
``agents``      per-track agent arrays (cached) packed over rows; ``collisions``: NC, TTC
``comfort``     HC, EC
``maps``        :class:`~irlvla_gym.metrics.maps.MapPack`: map queries of one or many scenes
==============  ========================================================================================

Map queries run once per *map pack*: rows whose scene is in the process-wide pack (vector envs) in one pass, other
rows once per distinct scene (through the scene's own cached pack). Agents are packed over rows (one track's arrays
are computed once and reused). Everything downstream is row-wise. EP normalisation, the human filter and the
aggregates are :func:`irlvla_gym.metrics.result.finalize_rows` (``finalize`` for one scene).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.agents import pack_agents, tracks_arrays
from irlvla_gym.metrics.area import area_flags, score_dac, score_ddc
from irlvla_gym.metrics.collisions import EgoRows, score_nc, score_ttc
from irlvla_gym.metrics.comfort import extended_comfort, history_comfort
from irlvla_gym.metrics.context import AgentTracks, ScoringContext
from irlvla_gym.metrics.lanes import score_lk
from irlvla_gym.metrics.lights import red_light_steps, score_tlc
from irlvla_gym.metrics.maps import MapPack, packed_maps, scene_key, scene_maps
from irlvla_gym.metrics.progress import route_progress
from irlvla_gym.metrics.result import ScoreResult, empty_result
from irlvla_gym.metrics.route import route_distance


class Rows(NamedTuple):
    """R rows described by distinct objects and per-row indices into them (so K plans of one scene cost no
    per-row Python work).

    Attributes:
        contexts: distinct scoring contexts; ctx_of_row: (R,) index into them. All share one ``ScorerConfig``.
        tracks: distinct agent tracks; track_of_row: (R,) index; plan_of_row: (R,) plan of a per-plan track
            ((P, 41, N, 8) boxes), 0 for shared tracks.
        previous: (R, T, 11) previous plan states for EC (rows without are ignored) or None; has_ec: (R,) bool.
    """

    contexts: list[ScoringContext]
    ctx_of_row: np.ndarray
    tracks: list[AgentTracks]
    track_of_row: np.ndarray
    plan_of_row: np.ndarray
    previous: np.ndarray | None
    has_ec: np.ndarray


class MapGroup(NamedTuple):
    """Rows answered through one map pack: ``rows`` (Ru,) (None: all rows, in order), ``slot`` (Ru,) their scene."""

    pack: MapPack
    rows: np.ndarray | None
    slot: np.ndarray


def score_scene(ctx: ScoringContext, states: np.ndarray, agents: AgentTracks,
                previous_states: np.ndarray | None = None) -> ScoreResult:
    """Raw evaluation (before :func:`~irlvla_gym.metrics.result.finalize`) of K plans in one scene.

    Args:
        ctx: :func:`~irlvla_gym.metrics.prepare_scene` output.
        states: (K, 41, 11) simulated ego states (rear axle, t0 ego frame).
        agents: boxes (41, N, 8) shared by all plans (log replay), or (K, 41, N, 8) per plan (reactive traffic).
        previous_states: (K or 1, 41, 11) states of the plan made 0.5 s earlier (in this frame), or None (no EC).

    Returns:
        A :class:`ScoreResult` with every sub-score except EP filled, EP = 1 and ``progress`` set; equal to
        :func:`irlvla_gym.metrics.reference.score_states_reference` (tests/metrics/test_agreement.py).
    """
    states = np.asarray(states, np.float64)
    K = len(states)
    plan_of_row = np.arange(K) if agents.boxes.ndim == 4 else np.zeros(K, np.int64)
    previous = None
    if previous_states is not None:
        previous = (previous_states if len(previous_states) == K
                    else np.broadcast_to(previous_states[:1], states.shape))
    rows = Rows([ctx], np.zeros(K, np.int64), [agents], np.zeros(K, np.int64), plan_of_row, previous,
                np.full(K, previous_states is not None))
    res = _evaluate(rows, states, [MapGroup(scene_maps(ctx), None, np.zeros(K, np.int64))])
    res.has_ec = previous_states is not None
    return res


def score_rows(contexts: Sequence[ScoringContext], states: np.ndarray, agents: Sequence[AgentTracks],
               previous_states: Sequence[np.ndarray | None] | None = None, *,
               use_pack: bool = True) -> tuple[ScoreResult, np.ndarray]:
    """Raw evaluation (before EP normalisation / human filter) of R rows of possibly different scenes.

    Args:
        contexts: R scoring contexts (the same object may repeat; contexts made by ``dataclasses.replace`` from one
            scene share its map cache). All must share one :class:`ScorerConfig`.
        states: (R, 41, 11) simulated ego states, row r in the frame of ``contexts[r]``.
        agents: R agent tracks, boxes (41, N_r, 8) (or (1, 41, N_r, 8)): row r's agents (its scene's log replay,
            or the agents reacting to row r's plan).
        previous_states: None, or R entries (41, 11) / None: the previous plan's states for EC (closed loop).
        use_pack: query the map through the process-wide pack (:func:`~irlvla_gym.metrics.maps.packed_maps`, one
            pass for all its scenes); False: one query per distinct scene (same numbers).

    Returns:
        (result, has_ec): a :class:`ScoreResult` with R rows, equal row by row to
        ``score_scene(contexts[r], states[r:r+1], agents[r], previous_states[r])``; and (R,) bool, rows scored
        with EC. Aggregate with :func:`~irlvla_gym.metrics.result.finalize_rows`.
    """
    states = np.asarray(states, np.float64)
    R, T, _ = states.shape
    if len(contexts) != R or len(agents) != R:
        raise ValueError(f"need one context and one agent track per row: {len(contexts)}, {len(agents)} for {R}")
    has_ec = np.zeros(R, bool)
    if R == 0:
        return empty_result(0, T), has_ec
    cfg = contexts[0].config
    if any(c.config is not cfg and c.config != cfg for c in contexts):
        raise ValueError("all rows must share one ScorerConfig")
    unique_ctx, ctx_of_row = _distinct(contexts)
    unique_tracks, track_of_row = _distinct(agents)
    previous = None
    if previous_states is not None:
        has_ec[:] = [p is not None for p in previous_states]
        if has_ec.any():
            previous = np.zeros_like(states)
            for r in np.flatnonzero(has_ec):
                previous[r] = np.asarray(previous_states[r], np.float64).reshape(T, -1)
    rows = Rows(unique_ctx, ctx_of_row, unique_tracks, track_of_row, np.zeros(R, np.int64), previous, has_ec)
    res = _evaluate(rows, states, _map_groups(unique_ctx, ctx_of_row, use_pack))
    res.has_ec = bool(has_ec.all())
    return res, has_ec


def _distinct(items: Sequence) -> tuple[list, np.ndarray]:
    """Distinct objects (by identity) in first-seen order, and each item's index among them."""
    first: dict[int, int] = {}
    index = np.empty(len(items), np.int64)
    for r, item in enumerate(items):
        index[r] = first.setdefault(id(item), len(first))
    unique = [None] * len(first)
    for r, item in enumerate(items):
        unique[index[r]] = item
    return unique, index


def _map_groups(contexts: list[ScoringContext], ctx_of_row: np.ndarray, use_pack: bool) -> list[MapGroup]:
    """Rows of scenes in the process-wide pack as one group, the others one group per distinct scene."""
    pack = packed_maps(contexts) if use_pack else None
    slot_of_ctx = np.array([pack.slot_of(c) if pack is not None and c in pack else -1 for c in contexts])
    slot = slot_of_ctx[ctx_of_row]
    groups = []
    if (slot >= 0).any():
        packed = np.flatnonzero(slot >= 0)
        groups.append(MapGroup(pack, None if len(packed) == len(slot) else packed, slot[packed]))
    by_scene: dict[int, list[int]] = {}
    for c in np.flatnonzero(slot_of_ctx < 0):
        by_scene.setdefault(scene_key(contexts[c]), []).append(int(c))
    for members in by_scene.values():
        rows = np.flatnonzero(np.isin(ctx_of_row, members))
        groups.append(MapGroup(scene_maps(contexts[members[0]]), None if len(rows) == len(slot) else rows,
                               np.zeros(len(rows), np.int64)))
    return groups


def _ego_rows(rows: Rows, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box points (R, T, 5, 2) (m) with each row's vehicle, and the bounding radii (R,) (m)."""
    vehicles, vehicle_of_row = _distinct([c.vehicle for c in rows.contexts])
    offsets = [B.ego_offsets(v) for v in vehicles]
    if len(offsets) == 1:
        lon, lat, radius = offsets[0]
        return B.box_points(states, lon, lat), np.full(len(states), radius)
    which = vehicle_of_row[rows.ctx_of_row]
    lon = np.stack([o[0] for o in offsets])[which]
    lat = np.stack([o[1] for o in offsets])[which]
    return B.box_points(states, lon[:, None, :], lat[:, None, :]), np.array([o[2] for o in offsets])[which]


def _map_families(res: ScoreResult, rows: Rows, group: MapGroup, pts: np.ndarray) -> None:
    """Map-based per-step flags of one group's rows: ego areas, red lights, LK deviation, progress."""
    sel = slice(None) if group.rows is None else group.rows
    gpts = pts if group.rows is None else pts[group.rows]
    R, T = gpts.shape[:2]
    area = area_flags(group.pack, group.slot, gpts)
    res.non_drivable[sel] = area.non_drivable.reshape(R, T)
    res.multiple_lanes[sel] = area.multiple_lanes.reshape(R, T)
    res.oncoming[sel] = area.oncoming.reshape(R, T)
    res.in_intersection[sel] = area.in_intersection.reshape(R, T)
    ctx_of_row = rows.ctx_of_row[sel]
    tables, table_of_row = _distinct([c.red_connectors for c in rows.contexts])
    res.red_light[sel] = red_light_steps(group.pack, group.slot, gpts[..., :4, :], area, tables,
                                         np.asarray(table_of_row)[ctx_of_row]).reshape(R, T)
    centre = gpts[..., B.CENTER, :]
    res.lk_deviation[sel] = route_distance(group.pack, group.slot, centre)
    res.progress[sel] = route_progress(group.pack, group.slot, centre)


def _rear_axle_query(groups: list[MapGroup], states: np.ndarray):
    """(rows, steps) -> bool: the rear axle lies in an intersection of the row's scene (through its group's
    pack)."""
    if len(groups) == 1:
        group = groups[0]
        slot = group.slot if group.rows is None else None

        def query_one(rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
            return group.pack.in_intersection(states[rows, steps, :2], slot[rows])

        if slot is not None:
            return query_one
    R = len(states)
    group_of_row = np.zeros(R, np.int64)
    slot_of_row = np.zeros(R, np.int64)
    for g, group in enumerate(groups):
        sel = slice(None) if group.rows is None else group.rows
        group_of_row[sel] = g
        slot_of_row[sel] = group.slot

    def query(rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        out = np.zeros(len(rows), bool)
        for g in np.unique(group_of_row[rows]):
            mine = np.flatnonzero(group_of_row[rows] == g)
            out[mine] = groups[g].pack.in_intersection(states[rows[mine], steps[mine], :2], slot_of_row[rows[mine]])
        return out

    return query


def _agent_families(res: ScoreResult, rows: Rows, states: np.ndarray, pts: np.ndarray, radius: np.ndarray,
                    groups: list[MapGroup]) -> None:
    """NC and TTC (needs the area flags in ``res``)."""
    cfg = rows.contexts[0].config
    T = states.shape[1]
    tracks = tracks_arrays(rows.tracks, cfg, T)
    speed = np.hypot(states[..., B.VX], states[..., B.VY])  # (R, T)
    centre = pts[..., B.CENTER, :]
    Tt = min(cfg.ttc_num_steps, T)
    reach = radius + speed[:, :Tt].max(axis=1) * int(max(cfg.ttc_projection_steps)) * cfg.dt
    agents = pack_agents(tracks, rows.track_of_row, rows.plan_of_row, centre.min(axis=1), centre.max(axis=1), reach)
    if not len(agents.row):
        return
    ego = EgoRows(states, pts[..., :4, :], centre[..., 0], centre[..., 1], radius, speed, states[..., B.YAW],
                  res.multiple_lanes | res.non_drivable)
    score_nc(res, ego, agents, cfg)
    score_ttc(res, ego, agents, cfg, _rear_axle_query(groups, states))


def _comfort_families(res: ScoreResult, rows: Rows, states: np.ndarray) -> None:
    """HC over each row's history + plan; EC against the previous plan where the row has one."""
    cfg = rows.contexts[0].config
    histories, history_of_ctx = _distinct([c.history_states for c in rows.contexts])
    history = histories[0] if len(histories) == 1 else np.stack(histories)[history_of_ctx[rows.ctx_of_row]]
    d = np.array([c.vehicle.rear_axle_to_center for c in rows.contexts])
    d = d[0] if len(d) == 1 else d[rows.ctx_of_row]
    res.hc[:], res.comfort_ok[:], res.comfort_min[:], res.comfort_max[:] = history_comfort(states, history, cfg, d)
    if rows.previous is not None and rows.has_ec.any():
        if rows.has_ec.all():
            res.ec[:], res.ec_rms[:] = extended_comfort(states, rows.previous, cfg)
        else:
            ec_rows = np.flatnonzero(rows.has_ec)
            res.ec[ec_rows], res.ec_rms[ec_rows] = extended_comfort(states[ec_rows], rows.previous[ec_rows], cfg)


def _evaluate(rows: Rows, states: np.ndarray, groups: list[MapGroup]) -> ScoreResult:
    """The scorer: every family over all rows (see module docs)."""
    cfg = rows.contexts[0].config
    R, T, _ = states.shape
    res = empty_result(R, T)
    res.dt = cfg.dt
    if R == 0:
        return res
    pts, radius = _ego_rows(rows, states)
    for group in groups:
        _map_families(res, rows, group, pts)
    res.dac[:] = score_dac(res.non_drivable)
    res.tlc[:] = score_tlc(res.red_light)
    _agent_families(res, rows, states, pts, radius, groups)
    res.ddc[:], res.oncoming_progress[:] = score_ddc(res.oncoming, res.in_intersection, pts[..., B.CENTER, :], cfg)
    res.lk[:] = score_lk(res.lk_deviation, res.in_intersection, cfg)
    _comfort_families(res, rows, states)
    return res
