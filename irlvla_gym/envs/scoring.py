"""The env side of scoring: per-scene precompute (:class:`SceneBundle`), scoring simulated ego states with the
EPDMS scorer, and the time-shifted views the closed-loop env needs.

**EP reference.** NAVSIM normalises EP by PDM-Closed's progress; with a single plan and no reference, the scorer
normalises EP over the batch (K = 1: EP is always 1). The envs pass ``reference_progress`` = the logged expert's
4 s progress x its multiplicative product (NC * DAC * DDC * TLC), computed once per scene from t0, so EP = how far
the plan gets relative to the human (clipped to 1). The reward of the plan-once env therefore equals
``score_plans(scene, plan, human_filter=..., traffic=..., reference_progress=bundle.reference_progress).epdms[0]``.

**Map index.** The scorer answers its point-in-polygon queries through a raster index per scene
(:class:`irlvla_gym.metrics.polyindex.PolygonIndex`, exact at any cell size: on 38,400 plans in 150 scenes every raw
sub-score and per-step flag was identical with 0.5, 1 and 2 m cells). The envs choose the cell size for how they
batch a step's map queries (:func:`map_pack_mode`, :data:`INDEX_RESOLUTION_M`): a pool of scenes that is revisited
is packed once into the scorer's process-wide pack, and 1 m cells answer fastest there (warm native x256 +5-10 %
over the scorer's 0.5 m default, 2.5x cheaper to build); a stream of mostly new scenes (a pool larger than the scene
cache, e.g. the default 5,000-scene store) packs each step's scenes afresh, and 2 m cells (5.6 vs 25 ms to build,
~120 kB vs 1.4 MB per scene) make that pack cheap (cold native x256 ~1,000 vs ~800 env-steps per CPU-second with
1 m cells). The index is persisted with the scene (:mod:`irlvla_gym.envs.prepared`), keyed by its cell size, and
every env path (fresh, persisted) of one configuration uses the same one, so they agree bit for bit.

**Adapter.** :func:`score_states` calls the fast implementation (``irlvla_gym.metrics.score_scene``)
and ``irlvla_gym.metrics.finalize`` directly with the expert's evaluation computed once per scene, instead of
``irlvla_gym.metrics.score_states``, which re-scores the expert on every call (same numbers, half the work).

**Closed loop: scoring a plan made at time t > 0.** The scorer works in the scene's t0 frame on 41 states at 0.1 s
and agents over the same 41 steps, but nothing in it requires the first state to be the origin at t0. So at time
t = 0.5 k the env simulates the plan from the *current* simulated ego state (pose in the t0 frame) and scores
those 41 states (absolute times t .. t + 4 s) with a time-shifted scoring context (:func:`context_at`):

* agents: the 41 steps of t .. t + 4 s; log replay (or the IDM rollout) covers 0 .. 4 s, later steps extrapolate
  each agent's last box at constant velocity (:func:`extend_track`);
* traffic lights: the red on-route connectors of t .. t + 4 s (the 4 s state held afterwards);
* HC history: the 1.5 s the ego actually drove before t (logged history for times before t0);
* EC: the previous plan's simulated states (made at t - 0.5 s), exactly the comparison NAVSIM's two-frame EC makes;
* EP reference and human filter: the expert's, from t0 (no logged expert exists from a state the policy reached).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from irlvla_gym.metrics import AgentTracks, ScoreResult, ScoringContext, agent_tracks, finalize, prepare_scene, score_scene
from irlvla_gym.metrics.config import SUB_SCORES
from irlvla_gym.scenes.geometry import to_local, transform_boxes, transform_map
from irlvla_gym.scenes.scene import DT, NUM_FUTURE, NUM_TIMES, Agents, EgoState, Scene, route_command, wrap_angle

SIM_DT = 0.1
STEPS_PER_REPLAN = int(round(DT / SIM_DT))  # 5
NUM_STATES = 41
MAX_REPLANS = NUM_FUTURE  # 8 replans = 4 s of log
EXTENDED_STEPS = STEPS_PER_REPLAN * (MAX_REPLANS - 1) + NUM_STATES  # 76: windows for t = 0 .. 3.5 s
PACK_MODES = ("shared", "step", "none")
INDEX_RESOLUTION_M = {"shared": 1.0, "step": 2.0, "none": 1.0}
"""Cell size (m) of the envs' per-scene map index for each way of packing the map queries (module docs)."""
DEFAULT_INDEX_RESOLUTION_M = INDEX_RESOLUTION_M["shared"]
POLYGON_INDEX_SLOT = "polygon_index"
"""The :attr:`ScoringContext.cache` entry :func:`irlvla_gym.metrics.maps.polygon_index` reads and fills (a
persisted or coarser index placed there is used instead of building one; tests/envs/test_prepared.py checks that the
scorer still reads this slot)."""


@dataclass
class SceneBundle:
    """Everything the envs precompute once per scene (kept in an LRU).

    Attributes:
        index: scene index in the env's source.
        scene_or_loader: the scene, or a function that loads it (a bundle read back from a persisted cache,
            :mod:`irlvla_gym.envs.prepared`); read it as :attr:`scene`.
        ctx: scoring context (map index cached inside; ``ctx.token`` is the scene's token).
        start_state: (11,) simulator state at t0.
        log_agents: log replay over the 41 steps.
        human_states: (1, 41, 11) the simulated expert plan.
        human_raw_or_view: the expert's evaluation (before EP normalisation) for the human filter, or (a bundle
            read back from a persisted cache) a view of it whose attributes are its fields' arrays and whose
            ``result()`` builds it; read it as :attr:`human_raw`.
        reference_progress: expert progress x product (m), the EP reference.
        extras: per-env lazily filled slots (cached observation, extended tracks).
    """

    index: int
    scene_or_loader: Scene | Callable[[], Scene]
    ctx: ScoringContext
    start_state: np.ndarray
    log_agents: AgentTracks
    human_states: np.ndarray
    human_raw_or_view: Any
    reference_progress: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def scene(self) -> Scene:
        """The scene, loaded on first access when the bundle was made with a loader. Why: a plan-once step reads
        only the scene's token (``ctx.token``) once the bundle and t0 observation come from the persisted cache;
        reading the scene from its store as well cost ~45 us of a cold first visit's ~250 us."""
        if not isinstance(self.scene_or_loader, Scene):
            self.scene_or_loader = self.scene_or_loader()
        return self.scene_or_loader

    @property
    def human_raw(self) -> ScoreResult:
        """The expert's evaluation, built on first access from a persisted view (:attr:`human_scores` serves the
        step's human filter without it: ~35 field arrays a first visit does not read)."""
        if not isinstance(self.human_raw_or_view, ScoreResult):
            self.human_raw_or_view = self.human_raw_or_view.result()
        return self.human_raw_or_view

    @property
    def human_scores(self) -> Any:
        """The expert's evaluation as the human filter reads it (``getattr(x, sub_score)[0]``,
        :func:`irlvla_gym.metrics.human_zero_mask`): the :class:`ScoreResult` or its persisted view."""
        return self.human_raw_or_view


def map_pack_mode(num_scenes: int, scene_cache_size: int) -> str:
    """How an env batches its steps' map queries (:func:`score_bundle_rows` ``pack``): ``"step"`` when its pool of
    ``num_scenes`` scenes is larger than its in-memory scene cache (it keeps meeting scenes the scorer has not
    packed: growing the process-wide pack would rebuild it on nearly every step), else ``"shared"``."""
    return "step" if num_scenes > scene_cache_size else "shared"


def attach_polygon_index(ctx: ScoringContext, index: Any = None,
                         resolution: float = DEFAULT_INDEX_RESOLUTION_M) -> None:
    """Put the scene's map index in ``ctx``'s cache before the scorer builds its own: ``index`` (a persisted one),
    else a new :class:`~irlvla_gym.metrics.polyindex.PolygonIndex` with ``resolution`` (m) cells."""
    if index is None:
        from irlvla_gym.metrics.polyindex import PolygonIndex

        index = PolygonIndex(ctx.polygons, resolution=resolution)
    ctx.cache[POLYGON_INDEX_SLOT] = index


def make_bundle(index: int, scene: Scene, traffic: str = "log",
                resolution: float = DEFAULT_INDEX_RESOLUTION_M, ctx: ScoringContext | None = None) -> SceneBundle:
    """Precompute a scene for the envs (scoring context with its map index of ``resolution`` (m) cells, replayed
    agents, expert rollout and its evaluation). :mod:`irlvla_gym.envs.prepared` persists exactly these values.
    ``ctx``: a prepared scoring context of ``scene`` to use as it is (e.g. one with its own map index)."""
    from irlvla_gym.sim import initial_state, simulate_plans

    if ctx is None:
        ctx = prepare_scene(scene)
        attach_polygon_index(ctx, resolution=resolution)
    log = agent_tracks(scene, "log")
    human = simulate_plans(scene, scene.ego.future[None])
    human_agents = log if traffic == "log" else agent_tracks(scene, "idm", human)
    human_raw = score_scene(ctx, human, human_agents, None)
    product = float(human_raw.nc[0] * human_raw.dac[0] * human_raw.ddc[0] * human_raw.tlc[0])
    return SceneBundle(index, scene, ctx, initial_state(scene), log, human, human_raw,
                       float(human_raw.progress[0]) * product)


def score_states(bundle: SceneBundle, states: np.ndarray, agents: AgentTracks, *,
                 previous_states: np.ndarray | None = None, human_filter: bool = True,
                 ctx: ScoringContext | None = None) -> ScoreResult:
    """EPDMS of simulated states (K, 41, 11) against ``agents`` (see module docs for the reference and filter)."""
    context = ctx if ctx is not None else bundle.ctx
    raw = score_scene(context, np.asarray(states, np.float64), agents, previous_states)
    return finalize(raw, context.config, reference_progress=bundle.reference_progress,
                    human=bundle.human_raw if human_filter else None)


def score_bundle_rows(bundles: Sequence[SceneBundle], states: np.ndarray, agents: Sequence[AgentTracks],
                      contexts: Sequence[ScoringContext] | None = None,
                      previous_states: Sequence[np.ndarray | None] | None = None, *,
                      human_filter: bool = True, pack: str = "shared") -> tuple[ScoreResult, dict[str, np.ndarray]]:
    """EPDMS of R rows, row r = simulated states (41, 11) in the scene of ``bundles[r]``, in one multi-scene scorer
    call (:func:`irlvla_gym.metrics.score_rows`); row r equals :func:`score_states` of that row alone.

    Args:
        bundles: R scene precomputes (EP reference and human filter of each row; a bundle may repeat).
        states: (R, 41, 11) simulated ego states (t0 frame of each row's scene).
        agents: R agent tracks over the rows' 41 steps.
        contexts: R scoring contexts (None: each bundle's t0 context; the closed loop passes time-shifted ones).
        previous_states: None or R entries (41, 11) / None: the previous plan's states (EC, closed loop).
        human_filter: apply NAVSIM v2's human filter with each bundle's expert evaluation.
        pack: how the map queries of the rows' scenes are batched (the numbers are the same, only the speed
            differs): ``"shared"``: the scorer's process-wide multi-scene pack, grown with the scenes it meets (fast
            for a pool of scenes that is revisited); ``"step"``: a pack of this call's scenes only (the process-wide
            pack is dropped first: a stream of mostly new scenes would make it grow and rebuild on every call);
            ``"none"``: one query per distinct scene.

    Returns:
        (raw, final): the raw :class:`ScoreResult` of the R rows (per-step flags, e.g. ``at_fault_collision`` (R, 41))
        and name -> (R,) float64 columns (nine sub-scores, ``epdms``, ``pdms``, ``progress`` (m)).
    """
    from irlvla_gym.metrics import finalize_rows, human_zero_mask, score_rows

    contexts = [b.ctx for b in bundles] if contexts is None else contexts
    if pack not in PACK_MODES:
        raise ValueError(f"pack must be one of {PACK_MODES}, got {pack!r}")
    if pack == "step":
        from irlvla_gym.metrics.maps import clear_packed_maps

        clear_packed_maps()
    raw, has_ec = score_rows(contexts, states, agents, previous_states, use_pack=pack != "none")
    cfg = contexts[0].config
    human = human_zero_mask([b.human_scores for b in bundles], cfg) if human_filter else None
    final = finalize_rows(raw, cfg, np.array([b.reference_progress for b in bundles]), human, has_ec)
    return raw, final


def zero_scores() -> dict[str, float]:
    """Sub-scores of an invalid action: every component and EPDMS 0."""
    return {**{name: 0.0 for name in SUB_SCORES}, "epdms": 0.0, "pdms": 0.0}


def score_dict(result: ScoreResult, k: int = 0) -> dict[str, float]:
    """Named components of plan k (nine sub-scores, EPDMS, PDMS) plus ``progress`` (m)."""
    out = result.take(k)
    out["progress"] = float(result.progress[k])
    return out


# ---- closed-loop helpers ----------------------------------------------------------------------------------------


def extend_track(boxes: np.ndarray, valid: np.ndarray, total: int = EXTENDED_STEPS,
                 dt: float = SIM_DT) -> tuple[np.ndarray, np.ndarray]:
    """Extend (T, N, 8) boxes / (T, N) valid to ``total`` steps: the last box moves on at its constant velocity."""
    T = boxes.shape[0]
    if total <= T:
        return boxes[:total], valid[:total]
    j = np.arange(1, total - T + 1, dtype=np.float64)[:, None]
    last = boxes[-1]
    extra = np.repeat(last[None], total - T, axis=0)
    extra[..., 0] = last[None, :, 0] + last[None, :, 6] * j * dt
    extra[..., 1] = last[None, :, 1] + last[None, :, 7] * j * dt
    extra *= valid[-1][None, :, None]
    return (np.concatenate([boxes, extra]), np.concatenate([valid, np.repeat(valid[-1][None], total - T, axis=0)]))


def window(boxes: np.ndarray, valid: np.ndarray, category: np.ndarray, step: int) -> AgentTracks:
    """Agents over the 41 steps from absolute 0.1 s step ``step`` (extended tracks)."""
    return AgentTracks(boxes[step:step + NUM_STATES], valid[step:step + NUM_STATES], category)


def context_at(bundle: SceneBundle, step: int, history_states: np.ndarray) -> ScoringContext:
    """The scoring context for plans starting at absolute 0.1 s ``step`` (module docs): red connectors of
    ``step .. step + 40`` (last state held) and the driven ``history_states`` (15, 11). The map index is shared."""
    if step == 0:
        return bundle.ctx
    red = bundle.ctx.red_connectors
    idx = np.minimum(np.arange(step, step + NUM_STATES), len(red) - 1)
    return dataclasses.replace(bundle.ctx, red_connectors=red[idx], history_states=np.asarray(history_states))


def route_remaining(bundle: SceneBundle, xy: np.ndarray) -> float:
    """Metres of route centreline left ahead of the point ``xy`` (t0 frame); inf without a route."""
    line = bundle.ctx.route_centerline
    if len(line) < 2:
        return float("inf")
    from irlvla_gym.metrics import project_on_polyline

    s = float(project_on_polyline(np.asarray(xy, np.float64).reshape(1, 2), line)[0])
    return float(bundle.ctx.route_cumulative_length[-1]) - s


def expert_future(bundle: SceneBundle, k: int) -> np.ndarray:
    """(8, 3) logged expert poses at t = 0.5 (k + 1) .. 0.5 (k + 8) s in the t0 frame.

    Beyond the 4 s log the expert continues along the route centreline at its last logged speed (heading = the
    centreline's), or straight on when the scene has no route.
    """
    scene = bundle.scene
    expert = np.concatenate([np.zeros((1, 3)), scene.ego.future])  # t = 0 .. 4 s
    idx = np.arange(k + 1, k + 1 + NUM_FUTURE)
    out = expert[np.minimum(idx, NUM_FUTURE)].copy()
    beyond = idx > NUM_FUTURE
    if not beyond.any():
        return out
    last, prev = expert[-1], expert[-2]
    step_len = float(np.hypot(*(last[:2] - prev[:2])))
    extra = (idx[beyond] - NUM_FUTURE) * step_len
    line = np.asarray(bundle.ctx.route_centerline, np.float64)
    if len(line) >= 2:
        from irlvla_gym.metrics import project_on_polyline

        cum = bundle.ctx.route_cumulative_length
        s = float(project_on_polyline(last[None, :2], line)[0]) + extra
        s_clip = np.minimum(s, cum[-1])
        xs, ys = np.interp(s_clip, cum, line[:, 0]), np.interp(s_clip, cum, line[:, 1])
        seg = np.clip(np.searchsorted(cum, s_clip, side="right") - 1, 0, len(line) - 2)
        d = line[seg + 1] - line[seg]
        yaw = np.arctan2(d[:, 1], d[:, 0])
        over = s - s_clip  # past the route's end: straight on along the last segment
        out[beyond, 0] = xs + over * np.cos(yaw)
        out[beyond, 1] = ys + over * np.sin(yaw)
        out[beyond, 2] = yaw
    else:
        out[beyond, 0] = last[0] + extra * np.cos(last[2])
        out[beyond, 1] = last[1] + extra * np.sin(last[2])
        out[beyond, 2] = last[2]
    return out


def scene_at(bundle: SceneBundle, step: int, trace: np.ndarray, boxes: np.ndarray, valid: np.ndarray) -> Scene:
    """A :class:`Scene` as seen at absolute 0.1 s ``step`` from the current ego state, in the current ego frame.

    Used to hand custom reward callables ``(scene, plan)`` a scene whose frame matches the plan in the closed loop.
    Args: ``trace`` (S, 11) driven states at 0.1 s from t = -1.5 s (index 15 = t0) through the current state;
    ``boxes`` / ``valid`` extended agent tracks (:func:`extend_track`). Agents beyond the 4 s log move at constant
    velocity; the expert future beyond the log follows :func:`expert_future`; lights hold their 4 s state.
    """
    scene = bundle.scene
    if step == 0:
        return scene
    pose = trace[-1, :3]
    k_hist = len(trace) - 1 - np.arange(3, -1, -1) * STEPS_PER_REPLAN  # t-1.5, t-1, t-0.5, t
    hist_states = trace[k_hist]
    hist = np.empty((4, 3))
    hist[:, :2] = to_local(hist_states[:, :2], pose[:2], float(pose[2]))
    hist[:, 2] = wrap_angle(hist_states[:, 2] - pose[2])
    hist[-1] = 0.0
    k = step // STEPS_PER_REPLAN
    fut_t0 = expert_future(bundle, k)
    fut = np.empty((NUM_FUTURE, 3))
    fut[:, :2] = to_local(fut_t0[:, :2], pose[:2], float(pose[2]))
    fut[:, 2] = wrap_angle(fut_t0[:, 2] - pose[2])
    ego = EgoState(hist, hist_states[:, 3:5].copy(), hist_states[:, 5:7].copy(), fut, scene.ego.vehicle)
    samples = step + np.arange(NUM_TIMES) * STEPS_PER_REPLAN
    ag = scene.agents
    agents = Agents(transform_boxes(boxes[samples], pose), valid[samples].copy(), ag.category, ag.track_id)
    mp = scene.map
    new_map = transform_map(mp, pose, mp.lane_light_state[np.minimum(k + np.arange(NUM_TIMES), NUM_TIMES - 1)])
    route = np.asarray(bundle.ctx.route_centerline)
    speed = float(np.hypot(*trace[-1, 3:5]))
    command = route_command(to_local(route, pose[:2], float(pose[2])), max(4.0 * speed, 10.0)) if len(route) else \
        scene.command
    meta = dataclasses.replace(scene.metadata, token=f"{scene.token}@t{step * SIM_DT:.1f}")
    return Scene(meta, ego, agents, new_map, scene.route_lanes, int(command), dict(scene.cameras), validate=False)


__all__ = [
    "DEFAULT_INDEX_RESOLUTION_M", "INDEX_RESOLUTION_M", "PACK_MODES", "POLYGON_INDEX_SLOT", "SceneBundle",
    "attach_polygon_index", "make_bundle", "map_pack_mode", "score_states", "score_bundle_rows", "zero_scores",
    "score_dict", "extend_track", "window", "context_at", "route_remaining", "scene_at", "expert_future",
]
