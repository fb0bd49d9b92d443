"""PolygonIndex with degenerate rings (a 2-point hole read back from a GeoPackage crashed it): such rings enclose
no area, so containment must equal shapely's on the polygon without them."""

from __future__ import annotations

import numpy as np
import shapely

from irlvla_gym.metrics.polyindex import PolygonIndex


def _grid(lo: float, hi: float, n: int = 41) -> np.ndarray:
    g = np.linspace(lo, hi, n) + 0.0137
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel()])


def test_two_point_hole_is_skipped_like_shapely() -> None:
    outer = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    hole = np.array([[4.0, 4.0], [6.0, 6.0], [4.0, 4.0]])  # 2 distinct points, closed
    real_hole = np.array([[2.0, 2.0], [3.0, 2.0], [3.0, 3.0], [2.0, 3.0]])
    idx = PolygonIndex([[outer, hole, real_hole]])
    pts = _grid(-2.0, 12.0)
    pi, _ = idx.contains(pts)
    got = np.zeros(len(pts), bool)
    got[pi] = True
    want = shapely.contains_xy(shapely.Polygon(outer, [real_hole]), pts[:, 0], pts[:, 1])
    assert np.array_equal(got, want)


def test_degenerate_exterior_contains_nothing() -> None:
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    idx = PolygonIndex([[np.array([[5.0, 5.0], [6.0, 6.0]])], [sq], [np.zeros((0, 2))]])
    pts = np.array([[0.5, 0.5], [5.5, 5.5], [3.0, 3.0]])
    pi, poly = idx.contains(pts)
    assert list(zip(pi.tolist(), poly.tolist())) == [(0, 1)]


def test_to_arrays_round_trip_is_exact():
    """Persisting the index (envs' prepared cache) restores every attribute, value and dtype without rebuilding."""
    square = [[np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]]),
               np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0]])]]  # with a hole
    built = PolygonIndex(square, resolution=0.5)
    restored = PolygonIndex.from_arrays(built.to_arrays())
    assert set(vars(restored)) == set(vars(built))
    for name, value in vars(built).items():
        other = getattr(restored, name)
        assert np.array_equal(value, other) and np.asarray(value).dtype == np.asarray(other).dtype, name
    points = np.random.default_rng(0).uniform(-1, 5, (200, 2))
    assert [a.tolist() for a in built.contains(points)] == [a.tolist() for a in restored.contains(points)]
