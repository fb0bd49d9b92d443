"""Small planar geometry shared by every layer (numpy only; the lowest floor of the house).

Conventions: metres and radians, angles counter-clockwise from +x, wrapped to [-pi, pi). Functions broadcast over
leading axes unless their docstring says otherwise.
"""

from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi

# Corner order of :func:`box_corners`: front-left, rear-left, rear-right, front-right (counter-clockwise).
_LONGITUDINAL_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
_LATERAL_SIGN = np.array([1.0, 1.0, -1.0, -1.0])
# ... and with ``clockwise=True``: front-left, front-right, rear-right, rear-left.
_CW_LONGITUDINAL_SIGN = _LONGITUDINAL_SIGN[[0, 3, 2, 1]]
_CW_LATERAL_SIGN = _LATERAL_SIGN[[0, 3, 2, 1]]


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles (rad) wrapped to [-pi, pi); same shape as the input."""
    return (np.asarray(angle) + np.pi) % TWO_PI - np.pi


def oriented_box_corners(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, front: np.ndarray, rear: np.ndarray,
                         half_width: np.ndarray, *, clockwise: bool = False) -> np.ndarray:
    """Corners (..., 4, 2) (m) of boxes whose reference point (x, y) lies ``front`` m behind the front face and
    ``rear`` m ahead of the rear face, heading ``yaw`` (rad); all inputs broadcast to the batch shape (...).

    Order: front-left, rear-left, rear-right, front-right (counter-clockwise), or with ``clockwise=True``
    front-left, front-right, rear-right, rear-left.
    """
    x, y, yaw, front, rear, half_width = (np.asarray(v, dtype=np.float64)[..., None]
                                          for v in (x, y, yaw, front, rear, half_width))
    lon_sign, lat_sign = (_CW_LONGITUDINAL_SIGN, _CW_LATERAL_SIGN) if clockwise else (_LONGITUDINAL_SIGN, _LATERAL_SIGN)
    lon = np.where(lon_sign > 0, front, -rear)  # (..., 4)
    lat = lat_sign * half_width
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([x + c * lon - s * lat, y + s * lon + c * lat], axis=-1)


def box_corners(boxes: np.ndarray, *, clockwise: bool = False) -> np.ndarray:
    """Corners (..., 4, 2) (m) of centre-based boxes (..., >=5) [x, y, yaw, length, width, ...] (m, rad), in the order
    of :func:`oriented_box_corners`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    half_length = 0.5 * boxes[..., 3]
    return oriented_box_corners(boxes[..., 0], boxes[..., 1], boxes[..., 2], half_length, half_length,
                                0.5 * boxes[..., 4], clockwise=clockwise)


def segment_lengths(line: np.ndarray) -> np.ndarray:
    """(n - 1,) lengths (m) of the segments of a (n, >=2) polyline (only x, y are used)."""
    line = np.asarray(line, dtype=np.float64)
    return np.linalg.norm(np.diff(line[:, :2], axis=0), axis=1)


def polyline_length(line: np.ndarray) -> float:
    """Length (m) of a (n, >=2) polyline; 0 for fewer than two points."""
    return float(segment_lengths(line).sum()) if len(line) > 1 else 0.0


def arc_length(line: np.ndarray) -> np.ndarray:
    """(n,) cumulative distance (m) along a (n, >=2) polyline, starting at 0."""
    return np.concatenate([[0.0], np.cumsum(segment_lengths(line))]) if len(line) else np.zeros(0)


def short_axis_min(x: np.ndarray, axis: int) -> np.ndarray:
    """``x.min(axis)`` for a short axis (a box's 4 corners, 4 projections) as element-wise minima of its slices,
    in the reduction's order: the same values ~5x faster (numpy reduces a short strided axis in a slow inner loop,
    ~10 ms a step of the scorer). ``x``: at least 2 entries along ``axis``."""
    return _short_axis_reduce(np.minimum, x, axis)


def short_axis_max(x: np.ndarray, axis: int) -> np.ndarray:
    """``x.max(axis)``, as :func:`short_axis_min`."""
    return _short_axis_reduce(np.maximum, x, axis)


def _short_axis_reduce(ufunc: np.ufunc, x: np.ndarray, axis: int) -> np.ndarray:
    slices = np.moveaxis(np.asarray(x), axis, 0)
    out = ufunc(slices[0], slices[1])
    for s in slices[2:]:
        ufunc(out, s, out=out)
    return out
