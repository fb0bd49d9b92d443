"""Ego centres against each row's route centreline: the distances lane keeping (LK) needs and the arc lengths
progress (EP) needs (shapely ``LineString.distance`` / ``project`` on NAVSIM's route centreline).

Distances of every step's centre, :func:`route_distance`. Small batches (at most :data:`DENSE_MAX` point-segment
pairs) test every segment in one dense pass. Larger ones prune segments exactly, per group of points:

* a segment's box-to-box gap to the group's bounding box is a lower bound of its distance to every point of it;
* the group's least-bound segment (its *seed*) gives an upper bound of every point's nearest distance (the largest
  distance of the group's points to it), so segments whose lower bound exceeds it are never a point's nearest and
  are dropped (with a 1e-9 relative + 1e-9 m margin against rounding);
* groups are first rows (their 41 centres, against the whole route), then chunks of :data:`CHUNK` steps (against
  their row's survivors); the chunks' survivors are then visited rank by rank, one pass over the chunks still
  active per rank.

``hypot`` is the slow part of a distance; it is evaluated only where the squared offset comes within 1e-12 of the
running minimum (:class:`_RunningMinimum`). Minima are exact, so the distance equals the full search's bit for bit.

Arc lengths of the first and last centre, :func:`route_arc_length`: one dense (points x segments) pass, the first
segment at the minimum distance, as :func:`project_on_polyline`.
"""

from __future__ import annotations

import numpy as np

from irlvla_gym.metrics.maps import MapPack
from irlvla_gym.metrics.polyindex import expand_csr

CHUNK = 8
"""Steps per chunk (smaller: fewer surviving segments per chunk, more chunks to bound)."""
DENSE_MAX = 120_000
"""Up to this many (point, segment) pairs the distances are computed densely, without pruning (same minimum)."""


def segment_offset(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray, dx: np.ndarray,
                   dy: np.ndarray, L2_safe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ex, ey) (m): from the nearest point of segments starting at (ax, ay) with direction (dx, dy) to points
    (px, py); all broadcast. ``L2_safe``: the squared length (m^2), 1 for zero-length segments (their start is
    their nearest point)."""
    rx, ry = px - ax, py - ay
    t = np.clip((rx * dx + ry * dy) / L2_safe, 0.0, 1.0)
    return rx - t * dx, ry - t * dy


def segment_distance(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray, dx: np.ndarray,
                     dy: np.ndarray, L2: np.ndarray) -> np.ndarray:
    """Distance (m) of points (px, py) to segments starting at (ax, ay) with direction (dx, dy) and squared length
    ``L2`` (m^2); all broadcast (shapely ``LineString.distance`` of one segment)."""
    return np.hypot(*segment_offset(px, py, ax, ay, dx, dy, np.where(L2 > 0, L2, 1.0)))


class _RunningMinimum:
    """Minimum of ``hypot`` over segments, evaluating ``hypot`` (slow) only where it can matter.

    Each candidate's squared offset (two products and a sum) is compared with the running minimum of squared
    offsets; ``hypot`` is evaluated only where it is within a relative 1e-12 (+1e-300 m^2 for underflow) of it.
    Squared offsets and ``hypot`` differ by a few ulps, far inside that margin, and the running minimum only falls,
    so every segment whose ``hypot`` could be the final minimum is evaluated: the result equals the plain minimum
    of ``hypot`` bit for bit.

    Args:
        ex, ey: (G, n) offsets (m) of the points (n per group) to a first segment each.
    """

    def __init__(self, ex: np.ndarray, ey: np.ndarray):
        self.d2 = ex * ex + ey * ey
        self.value = np.hypot(ex, ey)

    @classmethod
    def from_arrays(cls, d2: np.ndarray, value: np.ndarray) -> _RunningMinimum:
        """A running minimum with these squared offsets (m^2) and distances (m)."""
        out = cls.__new__(cls)
        out.d2, out.value = d2, value
        return out

    def permute(self, rows: np.ndarray) -> None:
        """Reorder the groups as ``rows`` (G,)."""
        self.d2, self.value = self.d2[rows], self.value[rows]

    def update(self, ex: np.ndarray, ey: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Fold in one candidate segment per group: offsets ex, ey (m), (g, n), for the groups ``rows`` (g,), or
        for the first g groups when ``rows`` is None (contiguous views, no copies)."""
        g = len(ex)
        d2_run = self.d2[:g] if rows is None else self.d2[rows]
        value = self.value[:g] if rows is None else self.value[rows]
        d2 = ex * ex + ey * ey
        near = np.flatnonzero(d2 <= d2_run * (1.0 + 1e-12) + 1e-300)
        np.minimum(d2_run, d2, out=d2_run)
        if len(near):
            flat = value.reshape(-1)  # a view of value (contiguous)
            flat[near] = np.minimum(flat[near], np.hypot(ex.reshape(-1)[near], ey.reshape(-1)[near]))
        if rows is not None:
            self.d2[rows], self.value[rows] = d2_run, value


def _projection(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                L2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction t along the segment, distance (m) to the nearest point a + t d) of points against segments,
    broadcasting (the formula of :func:`project_on_polyline`)."""
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.where(L2 > 0, L2, 1.0), 0.0, 1.0)
    return t, np.hypot(px - (ax + t * dx), py - (ay + t * dy))


def project_on_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Arc length (m) of the nearest point of a polyline (shapely ``LineString.project``): points (M, 2),
    line (n >= 2, 2) (m) -> (M,). The nearest segment is the first one at the minimum distance."""
    a, d = line[:-1], line[1:] - line[:-1]
    L2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]
    t, dist = _projection(points[:, :1], points[:, 1:2], a[:, 0], a[:, 1], d[:, 0], d[:, 1], L2)
    k = np.argmin(dist, axis=1)
    cum = np.r_[0.0, np.cumsum(np.sqrt(L2))]
    return cum[k] + t[np.arange(len(points)), k] * np.sqrt(L2[k])


def _segments_of(pack: MapPack, slot: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
    """The pack's padded per-scene segment arrays ``names`` for rows of scenes ``slot`` (n,): (n, w), or (1, w)
    (broadcast, no gather) when the pack holds one scene; w = the longest route among those rows (the padding
    beyond it is never needed)."""
    w = max(int(pack.route_count[slot].max()) if len(slot) else 0, 1)
    if len(pack.route_count) == 1:
        return [getattr(pack, n)[:, :w] for n in names]
    return [getattr(pack, n)[slot, :w] for n in names]


def route_distance(pack: MapPack, slot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(R, T) distance (m) of each centre (R, T, 2) to its row's route centreline, row r in the scene
    ``slot[r]`` of ``pack``; inf for rows without a route."""
    R, T = centre.shape[:2]
    has_route = pack.route_count[slot] > 0
    if not has_route.any():
        return np.full((R, T), np.inf)
    W = int(pack.route_count[slot].max())
    # Small batches: every segment at once (pruning costs a few dozen numpy calls per pass).
    out = _dense_distance(pack, slot, centre) if R * T * W <= DENSE_MAX else _pruned_distance(pack, slot, centre)
    out[~has_route] = np.inf
    return out


def _dense_distance(pack: MapPack, slot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """:func:`route_distance` over all segments at once; ``hypot`` only near the minimum squared offset (as
    :class:`_RunningMinimum`). One scene: (W, R, T) offsets, segments on the leading axis (element-wise minimum);
    several: (row, segment) pairs of the rows' own routes (no padding to the longest), minima by ``reduceat``."""
    if len(pack.route_count) == 1:
        valid, *seg = _segments_of(pack, slot, ("seg_valid",) + _PARAMS)
        ex, ey = segment_offset(centre[None, :, :, 0], centre[None, :, :, 1], *(p.T[:, :, None] for p in seg))
        valid = valid.T[:, :, None]
        d2 = ex * ex + ey * ey
        near = (d2 <= np.where(valid, d2, np.inf).min(axis=0) * (1.0 + 1e-12) + 1e-300) & valid
        return np.hypot(ex, ey, out=np.full(d2.shape, np.inf), where=near).min(axis=0)
    R, T = centre.shape[:2]
    count = pack.route_count[slot]
    row, seg = expand_csr(np.zeros(R, np.int64), count)  # pairs grouped by row, in segment order
    flat = slot[row] * pack.seg_valid.shape[1] + seg
    ex, ey = segment_offset(centre[row, :, 0], centre[row, :, 1], *(p[flat][:, None] for p in _flat(pack, _PARAMS)))
    d2 = ex * ex + ey * ey  # (pairs, T)
    has = count > 0
    first = (np.cumsum(count) - count)[has]
    group = np.cumsum(has) - 1  # rank of each row among the rows with a route
    near = d2 <= np.minimum.reduceat(d2, first, axis=0)[group[row]] * (1.0 + 1e-12) + 1e-300
    out = np.full((R, T), np.inf)
    out[has] = np.minimum.reduceat(np.hypot(ex, ey, out=np.full(d2.shape, np.inf), where=near), first, axis=0)
    return out


_PARAMS = ("seg_ax", "seg_ay", "seg_dx", "seg_dy", "seg_L2_safe")
_BOXES = ("seg_lo_x", "seg_lo_y", "seg_hi_x", "seg_hi_y")


def _flat(pack: MapPack, names: tuple[str, ...]) -> list[np.ndarray]:
    """The pack's (S, W) segment arrays ``names`` flattened: segment s of slot k at k * W + s."""
    return [getattr(pack, n).reshape(-1) for n in names]


def _bound2(X: np.ndarray, Y: np.ndarray, boxes: list[np.ndarray], flat: np.ndarray) -> np.ndarray:
    """(G, w) squared box-to-box gap (m^2) between each group's points X, Y (G, n) and its candidate segments
    ``flat`` (G, w) (flat ids): a lower bound of the squared distance of the segment to every point of the group."""
    lo_x, lo_y, hi_x, hi_y = (b[flat] for b in boxes)
    gx = np.maximum(lo_x - X.max(axis=1)[:, None], X.min(axis=1)[:, None] - hi_x)
    gy = np.maximum(lo_y - Y.max(axis=1)[:, None], Y.min(axis=1)[:, None] - hi_y)
    np.maximum(gx, 0.0, out=gx)
    np.maximum(gy, 0.0, out=gy)
    gx *= gx
    gy *= gy
    return np.add(gx, gy, out=gx)


def _compact(flat: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's kept candidates moved to the front, in order: (G, w') flat ids and their (G, w') mask."""
    count = keep.sum(axis=1)
    width = max(int(count.max()) if len(count) else 0, 1)
    row, col = np.nonzero(keep)
    out = np.zeros((len(flat), width), np.int64)
    out[row, np.cumsum(keep, axis=1)[row, col] - 1] = flat[row, col]
    return out, np.arange(width)[None, :] < count[:, None]


def _pruned_distance(pack: MapPack, slot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """:func:`route_distance` by pruned segments (module docs): first per row (its 41 centres), then per chunk of
    :data:`CHUNK` steps among the row's survivors; the survivors are then visited rank by rank."""
    R, T = centre.shape[:2]
    W = pack.seg_valid.shape[1]  # stride of the flat segment arrays
    w = int(pack.route_count[slot].max())  # the longest route among these rows
    boxes, params = _flat(pack, _BOXES), _flat(pack, _PARAMS)
    rows = np.arange(R)
    H = -(-T // CHUNK)
    pad = np.minimum(np.arange(H * CHUNK), T - 1)  # repeat the last step: no new points, same bounding boxes
    X = centre[:, pad, 0]  # (R, H * CHUNK) = (G, CHUNK) reshaped; contiguous copies
    Y = centre[:, pad, 1]
    # Level 1: each row against its whole route, seeded with its least-bound segment.
    flat = slot[:, None] * W + np.arange(w)[None, :]
    bound2 = _bound2(X, Y, boxes, flat)
    bound2[~pack.seg_valid[slot, :w]] = np.inf
    seed = flat[rows, np.argmin(bound2, axis=1)]  # (R,)
    best = _RunningMinimum(*segment_offset(X, Y, *(p[seed][:, None] for p in params)))
    upper = np.sqrt(best.d2.max(axis=1)) * (1.0 + 1e-9) + 1e-9  # margin covers the rounding
    flat, ok = _compact(flat, bound2 <= (upper * upper)[:, None])
    # Level 2: chunks against their row's survivors; a chunk whose least-bound segment is not its row's seed
    # folds that one in first, so its upper bound is tight.
    G = R * H
    X, Y = X.reshape(G, CHUNK), Y.reshape(G, CHUNK)
    best = _RunningMinimum.from_arrays(best.d2.reshape(G, CHUNK), best.value.reshape(G, CHUNK))
    flat, ok = np.repeat(flat, H, axis=0), np.repeat(ok, H, axis=0)
    row_seed = np.repeat(seed, H)
    bound2 = _bound2(X, Y, boxes, flat)
    bound2[~ok] = np.inf
    chunk_seed = flat[np.arange(G), np.argmin(bound2, axis=1)]
    new = np.flatnonzero(chunk_seed != row_seed)
    if len(new):
        best.update(*segment_offset(X[new], Y[new], *(p[chunk_seed[new]][:, None] for p in params)), new)
    upper = np.sqrt(best.d2.max(axis=1)) * (1.0 + 1e-9) + 1e-9
    keep = (bound2 <= (upper * upper)[:, None]) & (flat != row_seed[:, None]) & (flat != chunk_seed[:, None])
    # Survivors rank by rank: chunks sorted by survivor count (descending), so the chunks still active at rank j
    # are a prefix and each rank costs only its active chunks.
    count = keep.sum(axis=1)
    by_count = np.argsort(-count, kind="stable")
    order, _ = _compact(flat[by_count], keep[by_count])
    X, Y = X[by_count], Y[by_count]
    best.permute(by_count)
    active = np.searchsorted(-count[by_count], -np.arange(order.shape[1]), side="left")  # chunks with count > j
    for j, n in enumerate(active):
        s = order[:n, j]
        best.update(*segment_offset(X[:n], Y[:n], *(p[s][:, None] for p in params)))
    out = np.empty((G, CHUNK))
    out[by_count] = best.value
    return out.reshape(R, H * CHUNK)[:, :T]


def route_arc_length(pack: MapPack, slot: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(R, P) arc length (m) of points (R, P, 2) along their row's route (the first segment at the minimum
    distance, as :func:`project_on_polyline`); NaN for rows without a route."""
    R, P = points.shape[:2]
    ax, ay, dx, dy, L2, cum, valid = _segments_of(pack, np.repeat(slot, P), ("seg_ax", "seg_ay", "seg_dx", "seg_dy",
                                                                             "seg_L2", "seg_cum", "seg_valid"))
    px, py = points[..., 0].reshape(R * P, 1), points[..., 1].reshape(R * P, 1)
    t, dist = _projection(px, py, ax, ay, dx, dy, L2)
    k = np.argmin(np.where(valid, dist, np.inf), axis=1)  # padding sits after the valid segments: first-min kept
    n = np.arange(R * P)
    pick = (lambda a: a[0, k]) if len(ax) == 1 else (lambda a: a[n, k])
    s = pick(cum) + t[n, k] * np.sqrt(pick(L2))
    return np.where(pack.route_count[np.repeat(slot, P)] > 0, s, np.nan).reshape(R, P)
