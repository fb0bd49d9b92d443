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

:class:`PackedPolygonIndex` concatenates the indexes of several scenes so points of different scenes are answered
in one pass; both classes run the same query (:func:`_query`), so a packed answer equals the per-scene one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely

_ORIGIN_JITTER = 0.318309886  # 1/pi of a cell: keeps cell centres off round-number map coordinates
_MAX_CELLS = 4_000_000


def expand_csr(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR expansion: rows ``i`` with ``counts[i]`` items starting at ``starts[i]`` (int arrays (n,)).

    Returns:
        (row index, item index), both (sum(counts),) int64, rows in order and items consecutive within a row.
    """
    total = int(counts.sum())
    row = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    item = np.arange(total) - np.repeat(first - starts, counts)
    return row, item


def cross2(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o), row-wise: (M, 2) arrays (m) -> (M,) (m^2)."""
    return (a[:, 0] - o[:, 0]) * (b[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (b[:, 0] - o[:, 0])


def on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether p lies exactly on segment a-b (zero cross product, within the bounding box). (M, 2) -> (M,) bool."""
    return ((cross2(a, b, p) == 0.0)
            & (p[:, 0] >= np.minimum(a[:, 0], b[:, 0])) & (p[:, 0] <= np.maximum(a[:, 0], b[:, 0]))
            & (p[:, 1] >= np.minimum(a[:, 1], b[:, 1])) & (p[:, 1] <= np.maximum(a[:, 1], b[:, 1])))


def segments_cross(c: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segment c-p crosses segment a-b, with a half-open rule at vertices so that a path through a shared
    polygon vertex is counted once (each test uses ``> 0`` on both sides consistently). (M, 2) inputs (m),
    (M,) bool."""
    side_a = cross2(c, p, a) > 0
    side_b = cross2(c, p, b) > 0
    side_c = cross2(a, b, c) > 0
    side_p = cross2(a, b, p) > 0
    return (side_a != side_b) & (side_c != side_p)


# ---------------------------------------------------------------------------------------------------------------------
# Building one index
# ---------------------------------------------------------------------------------------------------------------------


def _clean_polygons(polygons: list[list[np.ndarray]]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[shapely.Polygon]]:
    """Edges of the polygons' rings without closing duplicates or area-less rings.

    Returns:
        edge starts a (E, 2), ends b (E, 2) (m), owning polygon (E,) int64, and one shapely polygon per input
        (empty where the exterior is degenerate).
    """
    starts, ends, owner = [np.zeros((0, 2))], [np.zeros((0, 2))], [np.zeros(0, np.int64)]
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
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(owner).astype(np.int64), shapes


def _grid(a: np.ndarray, resolution: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Cell size (m, grown until the grid has at most 4 M cells), origin (2,) (m) and shape (nx, ny) of a grid
    covering the edge starts ``a`` (E, 2) with a 2-cell margin."""
    allpts = a if len(a) else np.zeros((1, 2))
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    res = float(resolution)
    while np.prod(np.ceil((hi - lo) / res) + 4) > _MAX_CELLS:
        res *= 1.5
    origin = lo - (2.0 + _ORIGIN_JITTER) * res
    return res, origin, np.ceil((hi - origin) / res).astype(np.int64) + 2


def _register_edges(a: np.ndarray, b: np.ndarray, origin: np.ndarray, res: float, nx: int) -> np.ndarray:
    """(cell, edge) pairs (n, 2) int64, unique and sorted: every cell an edge may touch. Each edge is cut into
    pieces of at most res / 2 and registered with the cells its pieces' bounding boxes overlap (conservative)."""
    seg_len = np.linalg.norm(b - a, axis=1)
    pieces = np.maximum(1, np.ceil(seg_len / (0.5 * res)).astype(np.int64))
    edge_of_piece = np.repeat(np.arange(len(a)), pieces)
    if not len(edge_of_piece):
        return np.zeros((0, 2), np.int64)
    k = np.arange(len(edge_of_piece)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    f0 = (k / pieces[edge_of_piece])[:, None]
    f1 = ((k + 1) / pieces[edge_of_piece])[:, None]
    d = (b - a)[edge_of_piece]
    p0 = a[edge_of_piece] + f0 * d
    p1 = a[edge_of_piece] + f1 * d
    eps = 1e-9
    cmin = np.floor((np.minimum(p0, p1) - origin) / res - eps).astype(np.int64)
    cmax = np.floor((np.maximum(p0, p1) - origin) / res + eps).astype(np.int64)
    cells, edges = [], []
    for dx in (0, 1):  # a piece spans at most 2 x 2 cells
        for dy in (0, 1):
            ix, iy = cmin[:, 0] + dx, cmin[:, 1] + dy
            ok = (ix <= cmax[:, 0]) & (iy <= cmax[:, 1])
            cells.append(iy[ok] * nx + ix[ok])
            edges.append(edge_of_piece[ok])
    return np.unique(np.stack([np.concatenate(cells), np.concatenate(edges)], 1), axis=0)


def _polygon_entries(shapes: list[shapely.Polygon], a: np.ndarray, edge_owner: np.ndarray,
                     boundary_key: np.ndarray, origin: np.ndarray, res: float, nx: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (cell, polygon) entries: cells of each polygon's bounding box that its boundary touches (partial) or
    whose centre it contains (full; exact, shapely).

    Returns:
        key = cell * P + polygon (n,) int64 sorted, partial (n,) bool, centre inside (n,) bool.
    """
    P = len(shapes)
    keys, partial, centre_in = [], [], []
    for p, poly in enumerate(shapes):
        pa = a[edge_owner == p]
        if not len(pa):
            continue
        c0 = np.floor((pa.min(axis=0) - origin) / res).astype(np.int64) - 1
        c1 = np.floor((pa.max(axis=0) - origin) / res).astype(np.int64) + 1
        ix, iy = np.meshgrid(np.arange(c0[0], c1[0] + 1), np.arange(c0[1], c1[1] + 1), indexing="xy")
        ix, iy = ix.ravel(), iy.ravel()
        inside = shapely.contains_xy(poly, origin[0] + (ix + 0.5) * res, origin[1] + (iy + 0.5) * res)
        key = (iy * nx + ix) * P + p
        is_boundary = np.isin(key, boundary_key, assume_unique=True)
        take = inside | is_boundary
        keys.append(key[take])
        partial.append(is_boundary[take])
        centre_in.append(inside[take])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool)
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    return key[order], np.concatenate(partial)[order], np.concatenate(centre_in)[order]


INDEX_ARRAYS = ("origin", "shape", "edge_a", "edge_b", "entry_partial", "entry_centre_inside", "entry_polygon",
                "cell_start", "entry_edges", "entry_edge_start")
"""The array attributes of a :class:`PolygonIndex` (with the scalars ``num_polygons`` and ``resolution``: all of it)."""
WIDE_ARRAYS = ("cell_start", "entry_polygon", "entry_edges", "entry_edge_start")
"""The int64 arrays of :data:`INDEX_ARRAYS` that :meth:`PolygonIndex.from_arrays` accepts narrowed."""


class PolygonIndex:
    """Raster index over P polygons for exact batched containment queries (see module docs).

    Args:
        polygons: ``[[exterior, hole, ...], ...]`` rings as (n, 2) float64 arrays (open or closed), m.
        resolution: cell size (m); grown automatically to keep the grid under 4 M cells.

    Attributes (CSR over cells, then over entries):
        origin (2,) m, resolution m, shape (nx, ny); cell_start (nx * ny + 1,) -> entries; per entry:
        entry_polygon, entry_partial, entry_centre_inside, entry_edge_start (n + 1,) -> entry_edges (edge ids);
        edge_a / edge_b (E, 2) m.
    """

    def __init__(self, polygons: list[list[np.ndarray]], resolution: float = 0.5):
        self.num_polygons = P = len(polygons)
        a, b, edge_owner, shapes = _clean_polygons(polygons)
        self.resolution, self.origin, self.shape = _grid(a, resolution)
        nx, ny = int(self.shape[0]), int(self.shape[1])
        self.edge_a, self.edge_b = a, b
        cell_edge = _register_edges(a, b, self.origin, self.resolution, nx)
        edge_key = cell_edge[:, 0] * P + edge_owner[cell_edge[:, 1]]  # (cell, polygon) of each registration
        key, self.entry_partial, self.entry_centre_inside = _polygon_entries(
            shapes, a, edge_owner, np.unique(edge_key), self.origin, self.resolution, nx)
        self.entry_polygon = key % max(P, 1)
        self.cell_start = np.searchsorted(key // max(P, 1), np.arange(nx * ny + 1)).astype(np.int64)
        # Edges of each partial entry (CSR).
        entry_of_edge = np.searchsorted(key, edge_key)
        order = np.argsort(entry_of_edge, kind="stable")
        self.entry_edges = cell_edge[order, 1]
        self.entry_edge_start = np.searchsorted(entry_of_edge[order], np.arange(len(key) + 1)).astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as plain arrays (``num_polygons``, ``resolution`` and :data:`INDEX_ARRAYS`), for persisting it
        (npz / npy, no pickle); :meth:`from_arrays` restores it exactly, without rebuilding. The CSR offsets are
        kept as offsets, not counts: restoring them from counts (a cumsum, ~25 us per scene) cost more than reading
        the 2-byte offsets a cache narrows them to (:mod:`irlvla_gym.envs.prepared`)."""
        out = {"num_polygons": np.int64(self.num_polygons), "resolution": np.float64(self.resolution)}
        out.update({name: getattr(self, name) for name in INDEX_ARRAYS})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PolygonIndex":
        """The index :meth:`to_arrays` wrote (same attributes, values and dtypes; nothing recomputed).

        Integer arrays of :data:`WIDE_ARRAYS` may come narrowed (any integer dtype holding the values, e.g. a
        cache's uint16 offsets): they are kept as given and widened to int64 on first access of the attribute,
        and :class:`PackedPolygonIndex` copies them into its int64 arrays without widening them first (one pass,
        not two, over ~20 kB of narrow offsets per scene a first visit)."""
        index = cls.__new__(cls)
        index.num_polygons = int(arrays["num_polygons"])
        index.resolution = float(arrays["resolution"])
        narrow = {}
        for name in INDEX_ARRAYS:
            a = arrays[name]
            if name in WIDE_ARRAYS and a.dtype != np.int64:
                narrow[name] = a  # widened by __getattr__ when read
            else:
                setattr(index, name, a)
        if narrow:
            index.narrow = narrow
        return index

    def __getattr__(self, name: str) -> np.ndarray:
        # Only called for attributes not set: a narrowed array of from_arrays, widened (int64) and kept.
        narrow = self.__dict__.get("narrow")
        if narrow is None or name not in narrow:
            raise AttributeError(name)
        wide = narrow[name].astype(np.int64)
        setattr(self, name, wide)
        return wide

    def stored(self, name: str) -> np.ndarray:
        """Array attribute ``name`` as held: an int64 array, or a narrowed one not yet widened (same values)."""
        a = self.__dict__.get(name)
        return a if a is not None else self.narrow[name]

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.cell_start, self.entry_polygon, self.entry_partial,
                                      self.entry_centre_inside, self.entry_edges, self.entry_edge_start,
                                      self.edge_a, self.edge_b))

    @property
    def num_cells(self) -> int:
        return int(self.shape[0]) * int(self.shape[1])  # not np.prod: ~4 us, read per scene of a step's pack

    def contains(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (point, polygon) containment pairs.

        Args:
            points: (M, 2) float64 (m).

        Returns:
            point_index (Q,), polygon_index (Q,) int64, sorted by point index.
        """
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return _query(self, pts, self.origin, self.resolution, int(self.shape[0]), int(self.shape[1]), 0)


class PackedPolygonIndex:
    """Several :class:`PolygonIndex` concatenated (polygon ids offset by ``poly_base``), queried in one pass for
    points that each belong to one of them (``slot``). Answers equal each index's own, polygon ids shifted.

    Args:
        indexes: the S per-scene indexes.
    """

    def __init__(self, indexes: Sequence[PolygonIndex]):
        idx = list(indexes)
        self.origin = np.stack([i.origin for i in idx]) if idx else np.zeros((0, 2))
        self.res = np.array([i.resolution for i in idx], np.float64)
        self.nx = np.array([int(i.shape[0]) for i in idx], np.int64)
        self.ny = np.array([int(i.shape[1]) for i in idx], np.int64)
        cells = self.nx * self.ny
        self.num_cells = int(cells.sum())
        self.cell_base = np.cumsum(cells) - cells
        n_entries = np.array([len(i.entry_partial) for i in idx], np.int64)
        n_edges = np.array([len(i.edge_a) for i in idx], np.int64)
        n_entry_edges = np.array([len(i.stored("entry_edges")) for i in idx], np.int64)
        n_poly = np.array([i.num_polygons for i in idx], np.int64)
        self.poly_base = np.cumsum(n_poly) - n_poly
        self.num_polygons = int(n_poly.sum())
        # Each index's ids shifted by the sizes of those before it, written in place (:func:`_shifted`), read as
        # stored (a persisted index's narrowed offsets are not widened first).
        self.cell_start = _shifted([i.stored("cell_start")[:-1] for i in idx], np.cumsum(n_entries) - n_entries,
                                   cells, int(n_entries.sum()))
        self.entry_polygon = _shifted([i.stored("entry_polygon") for i in idx], self.poly_base, n_entries)
        self.entry_partial = _cat([i.entry_partial for i in idx], bool)
        self.entry_centre_inside = _cat([i.entry_centre_inside for i in idx], bool)
        self.entry_edge_start = _shifted([i.stored("entry_edge_start")[:-1] for i in idx],
                                         np.cumsum(n_entry_edges) - n_entry_edges, n_entries, int(n_entry_edges.sum()))
        self.entry_edges = _shifted([i.stored("entry_edges") for i in idx], np.cumsum(n_edges) - n_edges,
                                    n_entry_edges)
        self.edge_a = _cat([i.edge_a for i in idx], np.float64, (0, 2))
        self.edge_b = _cat([i.edge_b for i in idx], np.float64, (0, 2))

    def contains(self, points: np.ndarray, slot: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`PolygonIndex.contains` of points (Q, 2) (m), each in the index ``slot`` (Q,) (or one int for
        all): (point index, packed polygon id), sorted by point."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if np.ndim(slot) == 0:  # one index: scalars, as PolygonIndex.contains (same numbers, no gathers)
            s = int(slot)
            return _query(self, pts, self.origin[s], float(self.res[s]), int(self.nx[s]), int(self.ny[s]),
                          int(self.cell_base[s]))
        return _query(self, pts, self.origin[slot], self.res[slot][:, None], self.nx[slot], self.ny[slot],
                      self.cell_base[slot])


def _cat(parts: list, dtype, empty: tuple[int, ...] = (0,)) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty, dtype)


def _shifted(parts: list[np.ndarray], base: np.ndarray, sizes: np.ndarray, end: int | None = None) -> np.ndarray:
    """int64 concatenation of integer arrays ``parts`` with ``base[s]`` added to part s (of length ``sizes[s]``),
    then ``end`` appended when given (a CSR offset array's last entry). Each part is written into its place and
    shifted there while in cache (a concatenation, a repeated base and an addition: three passes over ~1.4 M cells a
    step; a mixed-type add of a narrowed part: a buffered loop)."""
    out = np.empty(int(np.sum(sizes)) + (end is not None), np.int64)
    start = 0
    for part, shift, size in zip(parts, base.tolist(), sizes.tolist()):
        piece = out[start:start + size]
        piece[...] = part  # a narrowed part (uint8 / uint16) cast exactly, then shifted in int64
        piece += shift
        start += size
    if end is not None:
        out[-1] = end
    return out


def _query(index: PolygonIndex | PackedPolygonIndex, pts: np.ndarray, origin: np.ndarray, res, nx, ny,
           cell_base) -> tuple[np.ndarray, np.ndarray]:
    """The containment query of both index classes.

    Args:
        index: the raster arrays (``cell_start``, ``entry_*``, ``edge_a`` / ``edge_b``).
        pts: (Q, 2) points (m).
        origin: (2,) or (Q, 2) grid origin per point (m); res: cell size, scalar or (Q, 1) (m); nx, ny: grid
            shape, ints or (Q,); cell_base: first cell of the point's grid in ``cell_start``, int or (Q,).

    Returns:
        (point index, polygon id) pairs, sorted by point.
    """
    cxy = np.floor((pts - origin) / res)
    ix, iy = cxy[:, 0], cxy[:, 1]
    in_grid = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    cell = np.where(in_grid, iy * nx + ix, 0).astype(np.int64) + cell_base
    start = index.cell_start[cell]
    count = np.where(in_grid, index.cell_start[cell + 1] - start, 0)
    point_of, entry = expand_csr(start, count)
    inside = ~index.entry_partial[entry]
    sel = np.flatnonzero(~inside)
    if len(sel):
        # Partial cells: the cell centre's side (exact, precomputed) XOR the parity of edge crossings of the segment
        # from the centre to the point.
        pe = entry[sel]
        pp = point_of[sel]
        e_start = index.entry_edge_start[pe]
        row, item = expand_csr(e_start, index.entry_edge_start[pe + 1] - e_start)
        edge = index.entry_edges[item]
        q = pp[row]
        p = pts[q]
        per_point = origin.ndim == 2
        c = (origin[q] if per_point else origin) + (cxy[q] + 0.5) * (res[q] if per_point else res)
        ea, eb = index.edge_a[edge], index.edge_b[edge]
        parity = np.bincount(row, weights=segments_cross(c, p, ea, eb), minlength=len(sel)).astype(np.int64) & 1
        # A point exactly on an edge is outside, as shapely ``contains`` has it.
        on_edge = np.bincount(row, weights=on_segment(p, ea, eb), minlength=len(sel)) > 0
        inside[sel] = (index.entry_centre_inside[pe] ^ parity.astype(bool)) & ~on_edge
    return point_of[inside], index.entry_polygon[entry[inside]]
