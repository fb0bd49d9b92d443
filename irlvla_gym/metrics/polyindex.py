"""Exact batched point-in-polygon queries against many polygons: a raster with an exact fallback near edges.

Build once per scene; each query answers "which polygons contain each point" for hundreds of thousands of points
with a few numpy passes and no Python loop over points or polygons.

How it works:

* The map is covered by square cells (``resolution`` m). For every (cell, polygon) pair the polygon touches, the
  cell is either *full* (no polygon edge touches the cell, and the cell centre is inside) or *partial* (some edge
  touches it). Cells a polygon neither touches nor covers hold no entry for it.
* A point in a full cell is inside. A point ``p`` in a partial cell is inside iff the cell centre ``c`` is inside
  (precomputed exactly with shapely) XOR the segment ``c -> p`` crosses an odd number of the polygon's edges. The
  segment stays inside the cell, so only the edges registered with that cell can cross it.
* Edges are registered conservatively (every cell the bounding box of a sub-``resolution`` piece of the edge
  overlaps), so no crossing is missed; extra edges only cost time.

Boundary convention: a point exactly on an edge (zero cross product) is outside, as NAVSIM's shapely ``contains``
has it. Near-degenerate cases where rounding decides (a point within ~1e-15 m of a slanted edge) may differ from
GEOS's robust predicates; they have measure zero for simulated states. The grid origin is offset by an irrational
fraction of a cell so cell centres do not fall on axis-aligned map edges.
"""

from __future__ import annotations

import numpy as np
import shapely

_ORIGIN_JITTER = 0.318309886  # 1/pi of a cell: keeps cell centres off round-number map coordinates
_MAX_CELLS = 4_000_000


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR expansion: for rows with ``counts[i]`` items starting at ``starts[i]``, return (row index, item index)
    of every item, rows in order."""
    total = int(counts.sum())
    row = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    item = np.arange(total) - np.repeat(first - starts, counts)
    return row, item


class PolygonIndex:
    """Raster index over P polygons for exact batched containment queries (see module docs).

    Args:
        polygons: ``[[exterior, hole, ...], ...]`` rings as (n, 2) float64 arrays (open or closed), m.
        resolution: cell size (m); grown automatically to keep the grid under 4 M cells.
    """

    def __init__(self, polygons: list[list[np.ndarray]], resolution: float = 0.5):
        self.num_polygons = P = len(polygons)
        starts, ends, owner = [], [], []
        shapes = []
        for p, rings in enumerate(polygons):
            clean = []
            for r, ring in enumerate(rings):
                ring = np.asarray(ring, np.float64)
                ring = ring[:, :2] if ring.ndim == 2 else ring.reshape(-1, 2)
                if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
                    ring = ring[:-1]
                if len(np.unique(ring, axis=0)) < 3:
                    # A ring with fewer than 3 distinct vertices encloses no area (a hole of 2 points read back from
                    # a GeoPackage, say): it changes no point's containment, so it is skipped; a degenerate exterior
                    # leaves an empty polygon that contains nothing.
                    if r == 0:
                        break
                    continue
                clean.append(ring)
                starts.append(ring)
                ends.append(np.roll(ring, -1, axis=0))
                owner.append(np.full(len(ring), p))
            shapes.append(shapely.Polygon(clean[0], clean[1:]) if clean else shapely.Polygon())
        if P == 0:
            starts, ends, owner = [np.zeros((0, 2))], [np.zeros((0, 2))], [np.zeros(0, np.int64)]
        if not starts:
            starts, ends, owner = [np.zeros((0, 2))], [np.zeros((0, 2))], [np.zeros(0, np.int64)]
        a, b = np.concatenate(starts), np.concatenate(ends)
        edge_owner = np.concatenate(owner).astype(np.int64)
        allpts = a if len(a) else np.zeros((1, 2))
        lo, hi = allpts.min(axis=0), allpts.max(axis=0)
        res = float(resolution)
        while np.prod(np.ceil((hi - lo) / res) + 4) > _MAX_CELLS:
            res *= 1.5
        self.resolution = res
        self.origin = lo - (2.0 + _ORIGIN_JITTER) * res
        self.shape = (np.ceil((hi - self.origin) / res).astype(np.int64) + 2)  # (nx, ny)
        nx, ny = int(self.shape[0]), int(self.shape[1])
        self.edge_a, self.edge_b = a, b

        # ---- register edges with the cells they may touch (pieces <= res / 2, each piece's bbox) -------------------
        seg_len = np.linalg.norm(b - a, axis=1)
        pieces = np.maximum(1, np.ceil(seg_len / (0.5 * res)).astype(np.int64))
        edge_of_piece = np.repeat(np.arange(len(a)), pieces)
        k = np.arange(len(edge_of_piece)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        f0 = (k / pieces[edge_of_piece])[:, None]
        f1 = ((k + 1) / pieces[edge_of_piece])[:, None]
        d = (b - a)[edge_of_piece]
        p0 = a[edge_of_piece] + f0 * d
        p1 = a[edge_of_piece] + f1 * d
        eps = 1e-9
        cmin = np.floor((np.minimum(p0, p1) - self.origin) / res - eps).astype(np.int64)
        cmax = np.floor((np.maximum(p0, p1) - self.origin) / res + eps).astype(np.int64)
        cells, edges = [], []
        for dx in (0, 1):
            for dy in (0, 1):
                ix, iy = cmin[:, 0] + dx, cmin[:, 1] + dy
                ok = (ix <= cmax[:, 0]) & (iy <= cmax[:, 1])
                cells.append(iy[ok] * nx + ix[ok])
                edges.append(edge_of_piece[ok])
        cell_edge = np.unique(np.stack([np.concatenate(cells), np.concatenate(edges)], 1), axis=0) \
            if len(edge_of_piece) else np.zeros((0, 2), np.int64)
        boundary_key = np.unique(cell_edge[:, 0] * P + edge_owner[cell_edge[:, 1]])

        # ---- per polygon: cells of its bbox, centre inside? -> full / partial entries ----------------------------
        keys, partial, centre_in = [], [], []
        for p, poly in enumerate(shapes):
            pa = a[edge_owner == p]
            if not len(pa):
                continue
            c0 = np.floor((pa.min(axis=0) - self.origin) / res).astype(np.int64) - 1
            c1 = np.floor((pa.max(axis=0) - self.origin) / res).astype(np.int64) + 1
            ix, iy = np.meshgrid(np.arange(c0[0], c1[0] + 1), np.arange(c0[1], c1[1] + 1), indexing="xy")
            ix, iy = ix.ravel(), iy.ravel()
            cx = self.origin[0] + (ix + 0.5) * res
            cy = self.origin[1] + (iy + 0.5) * res
            inside = shapely.contains_xy(poly, cx, cy)
            key = (iy * nx + ix) * P + p
            is_boundary = np.isin(key, boundary_key, assume_unique=True)
            take = inside | is_boundary
            keys.append(key[take])
            partial.append(is_boundary[take])
            centre_in.append(inside[take])
        if keys:
            key = np.concatenate(keys)
            order = np.argsort(key, kind="stable")
            key = key[order]
            self.entry_partial = np.concatenate(partial)[order]
            self.entry_centre_inside = np.concatenate(centre_in)[order]
        else:
            key = np.zeros(0, np.int64)
            self.entry_partial = self.entry_centre_inside = np.zeros(0, bool)
        self.entry_polygon = key % max(P, 1)
        entry_cell = key // max(P, 1)
        self.cell_start = np.searchsorted(entry_cell, np.arange(nx * ny + 1)).astype(np.int64)

        # ---- edges of each partial entry (CSR) --------------------------------------------------------------------
        edge_key = cell_edge[:, 0] * P + edge_owner[cell_edge[:, 1]]
        entry_of_edge = np.searchsorted(key, edge_key)
        order = np.argsort(entry_of_edge, kind="stable")
        self.entry_edges = cell_edge[order, 1]
        self.entry_edge_start = np.searchsorted(entry_of_edge[order], np.arange(len(key) + 1)).astype(np.int64)

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.cell_start, self.entry_polygon, self.entry_partial,
                                      self.entry_centre_inside, self.entry_edges, self.entry_edge_start,
                                      self.edge_a, self.edge_b))

    def contains(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (point, polygon) containment pairs.

        Args:
            points: (M, 2) float64 (m).

        Returns:
            point_index (Q,), polygon_index (Q,) int64, sorted by point index.
        """
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        res = self.resolution
        nx, ny = int(self.shape[0]), int(self.shape[1])
        cxy = np.floor((pts - self.origin) / res)
        ix, iy = cxy[:, 0], cxy[:, 1]
        in_grid = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        cell = np.where(in_grid, iy * nx + ix, 0).astype(np.int64)
        start = self.cell_start[cell]
        count = np.where(in_grid, self.cell_start[cell + 1] - start, 0)
        point_of, entry = _expand(start, count)
        inside = ~self.entry_partial[entry]

        sel = np.flatnonzero(~inside)
        if len(sel):
            pe = entry[sel]
            pp = point_of[sel]
            e_start = self.entry_edge_start[pe]
            e_count = self.entry_edge_start[pe + 1] - e_start
            row, item = _expand(e_start, e_count)
            edge = self.entry_edges[item]
            p = pts[pp[row]]
            c = self.origin + (cxy[pp[row]] + 0.5) * res
            ea, eb = self.edge_a[edge], self.edge_b[edge]
            crosses = _segments_cross(c, p, ea, eb)
            parity = np.bincount(row, weights=crosses, minlength=len(sel)).astype(np.int64) & 1
            # A point exactly on an edge is outside, as shapely ``contains`` has it.
            on_edge = np.bincount(row, weights=_on_segment(p, ea, eb), minlength=len(sel)) > 0
            inside[sel] = (self.entry_centre_inside[pe] ^ parity.astype(bool)) & ~on_edge
        return point_of[inside], self.entry_polygon[entry[inside]]


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o), row-wise for (M, 2) arrays."""
    return (a[:, 0] - o[:, 0]) * (b[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (b[:, 0] - o[:, 0])


def _on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether p lies exactly on segment a-b (zero cross product, within the bounding box). (M, 2) -> (M,) bool."""
    return ((_cross(a, b, p) == 0.0)
            & (p[:, 0] >= np.minimum(a[:, 0], b[:, 0])) & (p[:, 0] <= np.maximum(a[:, 0], b[:, 0]))
            & (p[:, 1] >= np.minimum(a[:, 1], b[:, 1])) & (p[:, 1] <= np.maximum(a[:, 1], b[:, 1])))


def _segments_cross(c: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segment c-p crosses segment a-b, with a half-open rule at vertices so that a path through a shared
    polygon vertex is counted once (each test uses ``> 0`` on both sides consistently). (M, 2) inputs, (M,) bool."""
    side_a = _cross(c, p, a) > 0
    side_b = _cross(c, p, b) > 0
    side_c = _cross(a, b, c) > 0
    side_p = _cross(a, b, p) > 0
    return (side_a != side_b) & (side_c != side_p)
