"""Small vectorised geometry helpers shared by the scene adapters (frames, polylines)."""

from __future__ import annotations

import numpy as np

import dataclasses

from irlvla_gym.geometry import polyline_length  # noqa: F401  (re-exported for the adapters)
from irlvla_gym.scenes.scene import MapData, PolygonSet, Ragged, wrap_angle


def to_local(points: np.ndarray, origin_xy: np.ndarray, origin_yaw: float) -> np.ndarray:
    """Transform (..., 2) world points into the frame at ``origin_xy`` with heading ``origin_yaw`` (rad)."""
    c, s = np.cos(origin_yaw), np.sin(origin_yaw)
    d = np.asarray(points, dtype=np.float64)[..., :2] - np.asarray(origin_xy, dtype=np.float64)[:2]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def to_global(points: np.ndarray, origin_xy: np.ndarray, origin_yaw: float) -> np.ndarray:
    """Inverse of :func:`to_local`."""
    c, s = np.cos(origin_yaw), np.sin(origin_yaw)
    p = np.asarray(points, dtype=np.float64)[..., :2]
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], axis=-1) + np.asarray(
        origin_xy, dtype=np.float64)[:2]


def poses_to_local(poses: np.ndarray, origin_xy: np.ndarray, origin_yaw: float) -> np.ndarray:
    """Transform (..., 3) world poses [x, y, yaw] into the local frame; yaw wrapped to [-pi, pi)."""
    poses = np.asarray(poses, dtype=np.float64)
    out = np.empty(poses.shape[:-1] + (3,))
    out[..., :2] = to_local(poses[..., :2], origin_xy, origin_yaw)
    out[..., 2] = wrap_angle(poses[..., 2] - origin_yaw)
    return out


def rotate_vectors(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate (..., 2) vectors by -yaw (world -> local directions)."""
    c, s = np.cos(yaw), np.sin(yaw)
    v = np.asarray(vectors, dtype=np.float64)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


def resample_polyline(line: np.ndarray, num: int | None = None, spacing: float | None = None) -> np.ndarray:
    """Resample a (n, 2) polyline to ``num`` points, or to points every ``spacing`` m (both ends kept)."""
    line = np.asarray(line, dtype=np.float64)[:, :2]
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.r_[0.0, np.cumsum(seg)]
    if num is None:
        if spacing is None:
            raise ValueError("resample_polyline: give num or spacing")
        num = max(2, int(np.ceil(cum[-1] / spacing)) + 1)
    s = np.linspace(0.0, cum[-1], num)
    return np.stack([np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])], axis=-1)


def centerline_from_boundaries(left: np.ndarray, right: np.ndarray, num: int = 10) -> np.ndarray:
    """Centreline as the mean of both boundaries resampled to ``num`` equal-arc-length points (av2-api's rule)."""
    return 0.5 * (resample_polyline(left, num) + resample_polyline(right, num))


def polyline_headings(line: np.ndarray) -> np.ndarray:
    """(n,) heading of each vertex toward the next (the last repeats the previous), as nuPlan's discrete_path."""
    d = np.diff(np.asarray(line, dtype=np.float64)[:, :2], axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    return np.r_[h, h[-1:]] if len(h) else np.zeros(len(line))


def project_to_polyline(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (m, 2) points onto a (n, 2) polyline. Returns (arc length s (m,), signed lateral offset (m,), +left).

    Vectorised over points x segments.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    line = np.asarray(line, dtype=np.float64)[:, :2]
    a, seg = line[:-1], np.diff(line, axis=0)
    seg_len2 = np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-12)
    rel = pts[:, None, :] - a[None]
    t = np.clip(np.einsum("mij,ij->mi", rel, seg) / seg_len2, 0.0, 1.0)
    proj = a[None] + t[..., None] * seg[None]
    dist = np.linalg.norm(pts[:, None, :] - proj, axis=-1)
    k = np.argmin(dist, axis=1)
    rows = np.arange(len(pts))
    cum = np.r_[0.0, np.cumsum(np.sqrt(seg_len2))]
    s = cum[k] + t[rows, k] * np.sqrt(seg_len2[k])
    cross = seg[k, 0] * rel[rows, k, 1] - seg[k, 1] * rel[rows, k, 0]
    return s, np.sign(cross) * dist[rows, k]


# ---- re-anchoring a scene in another frame (closed-loop replanning, two-stage start poses) ----------------------


def transform_boxes(boxes: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Agent boxes (..., 8) [x, y, yaw, l, w, h, vx, vy] into the frame of ``pose`` (3,): centre, yaw, velocity."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., :2] = to_local(boxes[..., :2], pose[:2], float(pose[2]))
    out[..., 2] = wrap_angle(boxes[..., 2] - pose[2])
    out[..., 6:8] = rotate_vectors(boxes[..., 6:8], float(pose[2]))
    return out


def transform_ragged(r: Ragged, pose: np.ndarray) -> Ragged:
    """Packed points into the frame of ``pose`` (3,); dtype and offsets kept."""
    return Ragged(to_local(r.points, pose[:2], float(pose[2])).astype(r.points.dtype), r.offsets)


def transform_map(mp: MapData, pose: np.ndarray, lane_light_state: np.ndarray | None = None) -> MapData:
    """The map in the frame of ``pose`` (3,) (given in the map's current frame). Every polyline and polygon moves;
    graph, flags and speed limits stay. ``lane_light_state`` (9, L) replaces the light samples (e.g. shifted in time)."""
    changes: dict = {}
    for f in dataclasses.fields(MapData):
        value = getattr(mp, f.name)
        if isinstance(value, Ragged):
            changes[f.name] = transform_ragged(value, pose)
        elif isinstance(value, PolygonSet):
            changes[f.name] = PolygonSet(transform_ragged(value.rings, pose), value.ring_polygon, value.ring_is_hole)
    if lane_light_state is not None:
        changes["lane_light_state"] = lane_light_state
    return dataclasses.replace(mp, **changes)
