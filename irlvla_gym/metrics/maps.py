"""Map arrays of the vectorised scorer: one :class:`MapPack` answers the map queries of rows from one or many scenes.

A pack holds, for S scenes, their polygon indexes concatenated (:class:`~irlvla_gym.metrics.polyindex.
PackedPolygonIndex`), the polygon attributes the ego-area flags read (lane, on-route, intersection), the route
centrelines as segments (lane keeping, progress) and, per scene, the edges of its red-light connectors. Every query
takes a *slot* per row (which scene), so rows of different scenes are answered in one pass; a pack of one scene is
the same code with one slot.

* :func:`scene_maps` — the pack of one scene, built once and cached in ``ScoringContext.cache`` (contexts made with
  ``dataclasses.replace`` share it);
* :func:`packed_maps` — the process-wide pack of the scenes a vector env keeps scoring (its scene pool), grown with
  amortised rebuilds and bounded by :data:`PACK_MAX_CELLS`; :func:`clear_packed_maps` drops it.

Answers do not depend on which pack a row is queried through (``tests/metrics/test_vectorised.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from irlvla_gym.metrics.context import ScoringContext
from irlvla_gym.metrics.polyindex import PackedPolygonIndex, PolygonIndex

PACK_MAX_CELLS = 48_000_000
"""Budget of the process-wide pack (grid cells over all packed scenes; ~4 bytes each plus ~15 bytes per entry):
scenes beyond it are queried through their own :func:`scene_maps`."""

PACK_MIN_GROWTH = 8
"""New scenes collected before the process-wide pack is rebuilt with them (at least this many, or half the pack)."""


def polygon_index(ctx: ScoringContext) -> PolygonIndex:
    """The scene's :class:`PolygonIndex` over ``ctx.polygons`` (cached in ``ctx.cache``)."""
    if "polygon_index" not in ctx.cache:
        ctx.cache["polygon_index"] = PolygonIndex(ctx.polygons)
    return ctx.cache["polygon_index"]


def scene_key(ctx: ScoringContext) -> int:
    """Identity of a scene's map (contexts derived with ``dataclasses.replace`` share it)."""
    return id(polygon_index(ctx))


class RedEdges:
    """Edges of a scene's connector polygons, computed on first use per lane (only red connectors are asked for).

    ``edges(lane)`` -> (a (E, 2), b (E, 2), lo (2,), hi (2,)) (m): edge starts and ends of all rings of the lane's
    polygon and their bounding box.
    """

    def __init__(self, ctx: ScoringContext):
        self._polygons = ctx.polygons
        self._edges: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def edges(self, lane: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if lane not in self._edges:
            rings = self._polygons[lane]
            a = np.concatenate([np.asarray(r, np.float64) for r in rings])
            b = np.concatenate([np.roll(np.asarray(r, np.float64), -1, axis=0) for r in rings])
            self._edges[lane] = (a, b, a.min(axis=0), a.max(axis=0))
        return self._edges[lane]


def red_edges(ctx: ScoringContext) -> RedEdges:
    """The scene's :class:`RedEdges` (cached in ``ctx.cache``)."""
    if "red_edges" not in ctx.cache:
        ctx.cache["red_edges"] = RedEdges(ctx)
    return ctx.cache["red_edges"]


def _cat(parts: list, dtype, empty: tuple[int, ...] = (0,)) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty, dtype)


class MapPack:
    """Map arrays of S scenes with per-scene offsets (see module docs).

    Attributes:
        contexts: the S packed contexts (kept alive, so the scene keys stay unique while packed).
        slot: scene key (:func:`scene_key`) -> slot.
        index: the packed polygon index; polygon ids are global (scene s owns ``poly_base[s]`` ..).
        num_lanes: (S,) L per scene. Per global polygon (P,): ``poly_is_lane`` bool, ``poly_local`` its index in
            its scene (= lane id for lanes), ``poly_on_route`` / ``poly_intersection`` float64 0/1 (bincount
            weights).
        route_count: (S,) segments of each scene's route centreline (0: no route). Per scene and segment, padded
            to the longest route (S, W): ``seg_ax`` / ``seg_ay`` start, ``seg_dx`` / ``seg_dy`` end - start (m),
            ``seg_L2`` squared length (m^2) and ``seg_L2_safe`` (1 where 0, the projection's divisor), ``seg_cum`` arc length of the start along the route (m),
            ``seg_lo_x`` .. ``seg_hi_y`` bounding box (m; +-inf in the padding), ``seg_valid`` (S, W) bool.
        red: per slot, the scene's :class:`RedEdges`.
        num_cells: grid cells of all packed indexes (the budget unit).
    """

    def __init__(self, contexts: Sequence[ScoringContext]):
        self.contexts = list(contexts)
        indexes = [polygon_index(c) for c in self.contexts]
        self.slot = {id(ix): s for s, ix in enumerate(indexes)}
        self.index = PackedPolygonIndex(indexes)
        self.num_cells = self.index.num_cells
        self.poly_base = self.index.poly_base
        n_poly = np.array([ix.num_polygons for ix in indexes], np.int64)
        self.num_lanes = np.array([c.num_lanes for c in self.contexts], np.int64)
        # each polygon's index in its scene and whether it is a lane, for all scenes at once
        self.poly_local = np.arange(int(n_poly.sum()), dtype=np.int64) - np.repeat(self.poly_base, n_poly)
        self.poly_is_lane = self.poly_local < np.repeat(self.num_lanes, n_poly)
        self.poly_on_route = _cat([c.polygon_is_on_route for c in self.contexts], np.float64)
        self.poly_intersection = _cat([c.polygon_is_intersection for c in self.contexts], np.float64)
        self._pack_routes()
        self.red = [red_edges(c) for c in self.contexts]

    def _pack_routes(self) -> None:
        """Route centrelines as segments, one padded row per scene (quantities of ``project_on_polyline``).

        All scenes' segments at once (element-wise operations on their concatenation, scattered into the padded
        rows; the arc lengths accumulate along each row, the order one scene's own cumsum adds in): the same
        numbers as scene by scene, without ~15 small operations per scene of a step's ~250."""
        lines = [np.asarray(c.route_centerline, np.float64) for c in self.contexts]
        self.route_count = np.array([len(line) - 1 if len(line) >= 2 else 0 for line in lines], np.int64)
        S = len(lines)
        width = max(int(self.route_count.max()) if S else 0, 1)
        self.seg_valid = valid = np.arange(width)[None, :] < self.route_count[:, None]  # (S, W), row-major = order
        routed = [line for line in lines if len(line) >= 2]
        a = np.concatenate([line[:-1] for line in routed]) if routed else np.zeros((0, 2))
        b = np.concatenate([line[1:] for line in routed]) if routed else np.zeros((0, 2))
        d = b - a
        ax, ay, dx, dy, L2 = (np.zeros((S, width)) for _ in range(5))
        lo_x, lo_y = np.full((S, width), np.inf), np.full((S, width), np.inf)
        hi_x, hi_y = np.full((S, width), -np.inf), np.full((S, width), -np.inf)
        ax[valid], ay[valid], dx[valid], dy[valid] = a[:, 0], a[:, 1], d[:, 0], d[:, 1]
        L2[valid] = np.einsum("sd,sd->s", d, d)  # padding keeps L2 = 0: its offsets are finite
        lo_x[valid], lo_y[valid] = np.minimum(a[:, 0], b[:, 0]), np.minimum(a[:, 1], b[:, 1])
        hi_x[valid], hi_y[valid] = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
        cum = np.zeros((S, width))
        cum[:, 1:] = np.cumsum(np.sqrt(L2), axis=1)[:, :-1]  # arc length at each segment's start
        cum[~valid] = 0.0
        self.seg_ax, self.seg_ay, self.seg_dx, self.seg_dy, self.seg_L2, self.seg_cum = ax, ay, dx, dy, L2, cum
        self.seg_L2_safe = np.where(L2 > 0, L2, 1.0)  # projection divisor: zero-length segments are their start
        self.seg_lo_x, self.seg_lo_y, self.seg_hi_x, self.seg_hi_y = lo_x, lo_y, hi_x, hi_y

    def __contains__(self, ctx: ScoringContext) -> bool:
        return scene_key(ctx) in self.slot

    def slot_of(self, ctx: ScoringContext) -> int:
        return self.slot[scene_key(ctx)]

    def contains(self, points: np.ndarray, slot: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(point index, global polygon id) of every polygon strictly containing a point; points (Q, 2) (m) in
        the scenes ``slot`` ((Q,) or one int), sorted by point."""
        if len(self.contexts) == 1:
            slot = 0  # one scene: scalar grid parameters, no per-point gathers
        return self.index.contains(points, slot)

    def in_intersection(self, points: np.ndarray, slot: np.ndarray | int) -> np.ndarray:
        """(Q,) bool: the points (Q, 2) lie strictly inside an intersection polygon of their scene."""
        point_idx, poly = self.contains(points, slot)
        return np.bincount(point_idx, weights=self.poly_intersection[poly], minlength=len(points)) > 0


def scene_maps(ctx: ScoringContext) -> MapPack:
    """The one-scene :class:`MapPack` of ``ctx``'s scene (cached in ``ctx.cache``)."""
    if "maps" not in ctx.cache:
        ctx.cache["maps"] = MapPack([ctx])
    return ctx.cache["maps"]


_PACK: list[MapPack | None] = [None]
_PENDING: dict[int, ScoringContext] = {}  # scenes scored since the last rebuild but not packed yet


def packed_maps(contexts: Sequence[ScoringContext]) -> MapPack | None:
    """The process's pack for scoring ``contexts`` (rows whose scene it lacks go through :func:`scene_maps`).

    Growth is amortised: scenes not in the pack are collected, and the pack is rebuilt with them once they number
    at least half the pack (or :data:`PACK_MIN_GROWTH`), so a pool of S scenes costs O(S) packing in total however
    it is visited. When the union would exceed :data:`PACK_MAX_CELLS` the pack restarts from this call's scenes (if
    they fit; else there is no pack)."""
    pack = _PACK[0]
    for c in contexts:
        key = scene_key(c)
        if (pack is None or key not in pack.slot) and key not in _PENDING:
            _PENDING[key] = c
    if not _PENDING:
        return pack
    if pack is not None and len(_PENDING) < max(PACK_MIN_GROWTH, len(pack.contexts) // 2):
        return pack
    pending = list(_PENDING.values())
    _PENDING.clear()
    base = [] if pack is None else pack.contexts
    if (pack.num_cells if pack is not None else 0) + sum(polygon_index(c).num_cells for c in pending) \
            <= PACK_MAX_CELLS:
        members = base + pending
    else:
        unique: dict[int, ScoringContext] = {}
        for c in contexts:
            unique.setdefault(scene_key(c), c)
        if sum(polygon_index(c).num_cells for c in unique.values()) > PACK_MAX_CELLS:
            _PACK[0] = None
            return None
        members = list(unique.values())
    _PACK[0] = MapPack(members)
    return _PACK[0]


def current_pack() -> MapPack | None:
    """The process-wide pack as it is now (None before the first multi-scene call)."""
    return _PACK[0]


def pending_scenes() -> int:
    """Scenes scored through their own maps since the last rebuild, waiting to be packed."""
    return len(_PENDING)


def clear_packed_maps() -> None:
    """Drop the process-wide pack (frees its memory; rebuilt on the next multi-scene call)."""
    _PACK[0] = None
    _PENDING.clear()
