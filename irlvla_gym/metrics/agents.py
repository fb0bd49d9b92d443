"""Other agents of R rows packed along one agent axis, for the collision family (NC, TTC).

Each row scores against one :class:`AgentTracks` — its scene's log replay (shared by all rows of the scene) or
agents reacting to its plan (one plan of a (P, 41, N, 8) track). Per track, the arrays NC and TTC need are computed
once and cached on the track (:func:`track_arrays`; a scene's replay is scored many times). A call then packs the
agents of every row along one axis A (row id and in-row index per agent, no padding to the largest N), keeping only
agents that can come near their row's ego (:func:`pack_agents`), so each ego-agent test is one array operation over
all rows.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from irlvla_gym.geometry import box_corners, short_axis_max
from irlvla_gym.metrics.config import ScorerConfig
from irlvla_gym.metrics.context import AgentTracks
from irlvla_gym.metrics.polyindex import expand_csr

SMALL_TRACK = 4096
"""Tracks with at most this many boxes (plans x agents x steps) keep all their corners at once."""
PREFILTER_MIN = 256
"""Below this many (row, agent) pairs the far-agent prefilter of :func:`pack_agents` costs more than it saves."""


class TrackArrays:
    """Per-agent arrays of one :class:`AgentTracks` with P plans x N agents, flattened to G = P * N rows (plan-major).

    Attributes:
        num_agents: N.
        boxes: (G, T, 8) [x, y, yaw, length, width, height, vx, vy] (of a batch: a strided view of the track's
            boxes); cx, cy, radius (bounding circle): (G, T) m;
            valid: (G, T) bool.
        stopped: (G,) bool, "stopped track" as first seen; static: (G,) bool; category: (G,) int64.
        reach: (G, Tt) m, the agent's largest bounding radius plus displacement over the TTC projection steps
            after each of the first Tt steps (the TTC prefilter; computed on first use, :meth:`reach_of` for some
            agents only).
        bbox: (G, 4) [xmin, ymin, xmax, ymax] of the valid centres (m); radius_max: (G,) largest valid radius (m).
        uses: calls that asked for these arrays; from the second on (a track scored again, e.g. a scene's log
            replay in an env) all box corners (and reaches) are computed once and kept, before only those tested
            (small tracks keep them at once, unless made in a batch: :meth:`batch`).
    """

    def __init__(self, agents: AgentTracks, cfg: ScorerConfig, T: int):
        boxes = np.asarray(agents.boxes, np.float64)
        valid = np.asarray(agents.valid, bool)
        boxes, valid = (boxes, valid) if boxes.ndim == 4 else (boxes[None], valid[None])  # (P, T, N, 8), (P, T, N)
        P, _, N, _ = boxes.shape
        G = P * N
        bt = np.ascontiguousarray(boxes.transpose(0, 2, 1, 3)).reshape(G, T, 8)
        vt = np.ascontiguousarray(valid.transpose(0, 2, 1)).reshape(G, T)
        static = np.tile(agents.is_static, P) if P > 1 else agents.is_static
        category = np.asarray(agents.category, np.int64)
        self._set(N, bt, vt, static, np.tile(category, P) if P > 1 else category,
                  *_per_agent_arrays(bt, vt, static, cfg), _reach_steps(cfg, T))
        self._reach = _reach_rows(self.cx, self.cy, self.radius, self._later)
        if G * T <= SMALL_TRACK:  # one call for all corners costs what one call for the tested ones does
            self.keep_corners()

    def _set(self, num_agents: int, boxes: np.ndarray, valid: np.ndarray, static: np.ndarray, category: np.ndarray,
             radius: np.ndarray, stopped: np.ndarray, cx: np.ndarray, cy: np.ndarray, later: np.ndarray) -> None:
        self.num_agents = num_agents
        self.boxes, self.valid, self.static, self.category = boxes, valid, static, category
        self.radius, self.stopped, self.cx, self.cy = radius, stopped, cx, cy
        self._later = later  # (Tt, S) the steps each of the first Tt steps projects to (TTC)
        self._reach: np.ndarray | None = None
        self.uses = 0
        self.kept_corners: np.ndarray | None = None  # (G, T, 4, 2) once kept
        self._extent: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def batch(cls, tracks: Sequence[AgentTracks], cfg: ScorerConfig, T: int) -> list[TrackArrays]:
        """The :class:`TrackArrays` of several single-plan tracks ((T, N, 8) boxes each), computed over all their
        agents at once and handed out as views (the same values as one :class:`TrackArrays` per track: every
        operation is per agent). Why: a step of a large pool meets ~250 new scenes; per track the ~40 small array
        operations cost ~170 us, batched ~25 us. The extents (:attr:`bbox`) are computed here too, since a call
        with many rows (many new tracks) always reads them; the corners are not (all of them for ~250 tracks cost
        ~10 ms, the few the circle tests pass ~0.1 ms; a track scored again keeps them, as usual). Each track's
        :attr:`boxes` is its (N, T, 8) transposed view, not a copy: only the six box columns the per-agent arrays
        read are concatenated (a step's ~2,700 new agents: ~7 MB of (G, T, 8) copies less)."""
        counts = [t.boxes.shape[1] for t in tracks]
        bounds = np.r_[0, np.cumsum(counts)].tolist()
        views = [np.asarray(t.boxes, np.float64).transpose(1, 0, 2) for t in tracks]  # (N, T, 8) each, no copy
        vt = np.concatenate([np.asarray(t.valid, bool).T for t in tracks])  # (G, T)
        category = np.concatenate([np.asarray(t.category, np.int64) for t in tracks])
        static = _static_categories(category)
        x, y, length, width, vx, vy = (np.concatenate([b[..., k] for b in views]) for k in (0, 1, 3, 4, 6, 7))
        radius, stopped, cx, cy = _per_agent_columns(x, y, length, width, vx, vy, vt, static, cfg)
        later = _reach_steps(cfg, T)
        bbox, radius_max = _extents(vt, cx, cy, radius)
        out = []
        for u, track in enumerate(tracks):
            g = slice(bounds[u], bounds[u + 1])
            if "is_static" not in track.cache:  # the same np.isin, over all tracks at once
                track.cache["is_static"] = static[g]
            arrays = cls.__new__(cls)
            arrays._set(counts[u], views[u], vt[g], track.is_static, category[g], radius[g], stopped[g], cx[g], cy[g],
                        later)
            arrays._extent = bbox[g], radius_max[g]
            out.append(arrays)
        return out

    @property
    def reach(self) -> np.ndarray:
        """(G, Tt) m: see the class docs (computed on first use)."""
        if self._reach is None:
            self._reach = _reach_rows(self.cx, self.cy, self.radius, self._later)
        return self._reach

    def reach_of(self, agent: np.ndarray) -> np.ndarray:
        """(E, Tt) m: :attr:`reach` of agents ``agent`` (E,) (only theirs computed when it is not yet: the
        prefilter of :func:`pack_agents` keeps a few of a step's new agents)."""
        if self._reach is not None:
            return self._reach[agent]
        return _reach_rows(self.cx[agent], self.cy[agent], self.radius[agent], self._later)

    @property
    def bbox(self) -> np.ndarray:
        """(G, 4) [xmin, ymin, xmax, ymax] of the valid centres (m) (computed on first use)."""
        return self._extent_arrays()[0]

    @property
    def radius_max(self) -> np.ndarray:
        """(G,) largest valid bounding radius (m) (computed on first use)."""
        return self._extent_arrays()[1]

    def _extent_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._extent is None:
            self._extent = _extents(self.valid, self.cx, self.cy, self.radius)
        return self._extent

    def keep_corners(self) -> None:
        """Compute and keep the corners (G, T, 4, 2) of every box (a track that is scored repeatedly)."""
        if self.kept_corners is None:
            self.kept_corners = box_corners(self.boxes)

    def corners_at(self, agent: np.ndarray, step: np.ndarray) -> np.ndarray:
        """(E, 4, 2) corners (m, :func:`irlvla_gym.geometry.box_corners` order) of agents (E,) at steps (E,)."""
        if self.kept_corners is not None:
            return self.kept_corners[agent, step]
        return box_corners(self.boxes[agent, step])


def _static_categories(category: np.ndarray) -> np.ndarray:
    """(N,) bool: static object categories (:attr:`AgentTracks.is_static`) of (N,) category indices."""
    from irlvla_gym.scenes.scene import STATIC_CATEGORIES

    return np.isin(category, STATIC_CATEGORIES)


def _per_agent_arrays(bt: np.ndarray, vt: np.ndarray, static: np.ndarray, cfg: ScorerConfig) -> tuple[np.ndarray, ...]:
    """radius, stopped, cx, cy of :class:`TrackArrays` from boxes (G, T, 8), valid (G, T) and static (G,)
    (row-wise operations only: rows of several tracks may be stacked)."""
    return _per_agent_columns(bt[..., 0], bt[..., 1], bt[..., 3], bt[..., 4], bt[..., 6], bt[..., 7], vt, static,
                              cfg)


def _per_agent_columns(x: np.ndarray, y: np.ndarray, length: np.ndarray, width: np.ndarray, vx: np.ndarray,
                       vy: np.ndarray, vt: np.ndarray, static: np.ndarray, cfg: ScorerConfig) -> tuple[np.ndarray, ...]:
    """:func:`_per_agent_arrays` from the box columns x, y, length, width (m), vx, vy (m/s), each (G, T)."""
    G = len(vt)
    radius = 0.5 * np.hypot(length, width)
    # NC's "stopped track": static objects always; others when the speed where the agent is first seen in the
    # T steps is <= collision_stopped_speed (NAVSIM classifies with PDMObservation.unique_objects).
    first = (np.arange(G), np.argmax(vt, axis=1))
    stopped = static | (np.hypot(vx[first], vy[first]) <= cfg.collision_stopped_speed)
    return radius, stopped, np.ascontiguousarray(x), np.ascontiguousarray(y)


def _reach_steps(cfg: ScorerConfig, T: int) -> np.ndarray:
    """(Tt, S) int: for each of the first Tt steps, the steps its TTC projections reach (clipped to T - 1)."""
    Tt = min(cfg.ttc_num_steps, T)
    steps = np.asarray(cfg.ttc_projection_steps)
    return np.minimum(np.arange(Tt)[:, None] + steps[None, :], T - 1)


def _reach_rows(cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, later: np.ndarray) -> np.ndarray:
    """(G, Tt) m: :attr:`TrackArrays.reach` of agents with centres cx, cy (G, T) and radii (G, T), row-wise."""
    Tt = len(later)
    travel = short_axis_max(np.hypot(cx[:, later] - cx[:, :Tt, None], cy[:, later] - cy[:, :Tt, None]), 2)
    return short_axis_max(radius[:, later], 2) + travel


def _extents(vt: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G, 4) bbox of the valid centres and (G,) largest valid radius (:attr:`TrackArrays.bbox`), row-wise."""
    x_in, y_in = np.where(vt, cx, np.inf), np.where(vt, cy, np.inf)
    x_out, y_out = np.where(vt, cx, -np.inf), np.where(vt, cy, -np.inf)
    bbox = np.stack([x_in.min(axis=1), y_in.min(axis=1), x_out.max(axis=1), y_out.max(axis=1)], axis=1)
    return bbox, np.where(vt, radius, 0.0).max(axis=1, initial=0.0)


def _track_key(cfg: ScorerConfig, T: int) -> tuple:
    return ("track_arrays", T, cfg.collision_stopped_speed, cfg.ttc_num_steps, tuple(cfg.ttc_projection_steps))


def _count_use(arrays: TrackArrays) -> TrackArrays:
    arrays.uses += 1
    if arrays.uses == 2:  # scored again: keep what a batch computed only for the agents it tested
        arrays.keep_corners()
        arrays.reach  # noqa: B018 - computes and keeps it
    return arrays


def track_arrays(agents: AgentTracks, cfg: ScorerConfig, T: int) -> TrackArrays:
    """:class:`TrackArrays` of ``agents`` over T steps (cached in ``agents.cache``; counts its uses)."""
    key = _track_key(cfg, T)
    out = agents.cache.get(key)
    if out is None:
        out = agents.cache[key] = TrackArrays(agents, cfg, T)
    return _count_use(out)


def tracks_arrays(tracks: Sequence[AgentTracks], cfg: ScorerConfig, T: int) -> list[TrackArrays]:
    """:func:`track_arrays` of distinct ``tracks``, those of single-plan tracks not cached yet computed together
    (:meth:`TrackArrays.batch`: the same values)."""
    key = _track_key(cfg, T)
    new = [t for t in tracks if key not in t.cache and np.ndim(t.boxes) == 3 and len(t.boxes) == T]
    if len(new) > 1:
        for track, arrays in zip(new, TrackArrays.batch(new, cfg, T)):
            track.cache[key] = arrays
    return [track_arrays(t, cfg, T) for t in tracks]


class AgentRows(NamedTuple):
    """The agents of R rows that can come near their row's ego, packed along A.

    Attributes:
        row: (A,) row; local: (A,) index of the agent in its row's tracks (reported as collision / TTC agent).
        cx, cy, radius: (A, T) m; valid: (A, T) bool; stopped, static: (A,) bool; category: (A,) int64;
            reach: (A, Tt) m (see :class:`TrackArrays`).
        track, index: when all rows share one track, it and each packed agent's row in it (no copies of boxes);
            else corners: the packed agents' corners (A, T, 4, 2) when every track keeps them, or boxes (A, T, 8).
            Only the (agent, step) pairs that pass the circle tests read them (:meth:`corners_at`).
    """

    row: np.ndarray
    local: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    valid: np.ndarray
    stopped: np.ndarray
    static: np.ndarray
    category: np.ndarray
    reach: np.ndarray
    track: TrackArrays | None
    index: np.ndarray | None
    corners: np.ndarray | None
    boxes: np.ndarray | None

    def corners_at(self, agent: np.ndarray, step: np.ndarray) -> np.ndarray:
        """(E, 4, 2) corners (m) of packed agents ``agent`` (E,) at steps ``step`` (E,)."""
        if self.track is not None:
            return self.track.corners_at(self.index[agent], step)
        if self.corners is not None:
            return self.corners[agent, step]
        return box_corners(self.boxes[agent, step])


def pack_agents(tracks: Sequence[TrackArrays], track_of_row: np.ndarray, plan_of_row: np.ndarray,
                ego_lo: np.ndarray, ego_hi: np.ndarray, ego_reach: np.ndarray) -> AgentRows:
    """Pack the agents of R rows, dropping those that stay far from their row's ego.

    Args:
        tracks: U distinct tracks' arrays; track_of_row: (R,) which one each row uses; plan_of_row: (R,) which of
            its plans (0 for shared log replay).
        ego_lo, ego_hi: (R, 2) bounding box of the row's ego centres over all steps (m).
        ego_reach: (R,) m, ego bounding radius + its largest TTC projection (speed x 0.9 s).

    An agent whose valid centres all stay farther from the row's ego centres than ego_reach + its largest radius
    (+ 1 m against rounding) can neither collide (NC tests valid steps only) nor be hit by a projected ego (TTC's
    exact tests use the agent's valid steps); dropping it changes no number (applied above
    :data:`PREFILTER_MIN` row-agent pairs).
    """
    one = len(tracks) == 1
    n_of = np.array([t.num_agents for t in tracks], np.int64)
    G = np.array([len(t.static) for t in tracks], np.int64)
    g_base = np.cumsum(G) - G
    count = n_of[track_of_row]
    first = g_base[track_of_row] + plan_of_row * count  # (R,) the row's first agent in the concatenation
    row, g = expand_csr(first, count)
    if len(g) > PREFILTER_MIN:
        bbox = tracks[0].bbox if one else np.concatenate([t.bbox for t in tracks])
        radius_max = tracks[0].radius_max if one else np.concatenate([t.radius_max for t in tracks])
        bound = ego_reach[row] + radius_max[g] + 1.0
        b = bbox[g]
        gx = np.maximum(0.0, np.maximum(b[:, 0] - ego_hi[row, 0], ego_lo[row, 0] - b[:, 2]))
        gy = np.maximum(0.0, np.maximum(b[:, 1] - ego_hi[row, 1], ego_lo[row, 1] - b[:, 3]))
        keep = np.flatnonzero(gx * gx + gy * gy <= bound * bound)
        row, g = row[keep], g[keep]
    local = g - first[row]
    if one:
        t = tracks[0]
        return AgentRows(row, local, t.cx[g], t.cy[g], t.radius[g], t.valid[g], t.stopped[g], t.static[g],
                         t.category[g], t.reach_of(g), t, g, None, None)
    # Several tracks: group the agents by track, so each array is gathered from its own track.
    order = np.argsort(g, kind="stable")
    row, g, local = row[order], g[order], local[order]
    track = np.searchsorted(g_base, g, side="right") - 1
    pieces = [(tracks[u], g[track == u] - g_base[u]) for u in np.unique(track)]

    def gather(name: str) -> np.ndarray:
        parts = [getattr(t, name)[i] for t, i in pieces]
        if parts:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        shape = getattr(tracks[0], name).shape[1:]
        return np.zeros((0,) + shape, getattr(tracks[0], name).dtype)

    kept = all(t.kept_corners is not None for t, _ in pieces)
    cx, cy, radius = gather("cx"), gather("cy"), gather("radius")
    # The packed agents' reaches in one call (row-wise: the values each track's own would hold).
    reach = _reach_rows(cx, cy, radius, tracks[0]._later)
    return AgentRows(row, local, cx, cy, radius, gather("valid"), gather("stopped"),
                     gather("static"), gather("category"), reach, None, None,
                     gather("kept_corners") if kept and pieces else None, None if kept and pieces else gather("boxes"))
