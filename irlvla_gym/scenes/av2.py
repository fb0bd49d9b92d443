"""Argoverse 2 sensor logs -> canonical :class:`~irlvla_gym.scenes.scene.Scene` windows at 2 Hz.

Layout of one log directory (``../shared/docs/data-formats.md``, section 3)::

    <log_id>/annotations.feather            (or annotations_with_ego.feather: EGO_VEHICLE rows are dropped)
    <log_id>/city_SE3_egovehicle.feather    ego pose, ~170-200 Hz, p_city = R(q) p_ego + t
    <log_id>/map/log_map_archive_<log_id>____<CITY>_city_<n>.json

Use::

    for item in iter_scenes("../shared/data/av2_sensor_logs", stride=1):
        if isinstance(item, SkippedItem): print(item)        # a bad log or window, the rest continues
        else: scene = item

    log = load_log(log_dir)                 # parse once (raises FileNotFoundError / ValueError naming file + field)
    scenes = list(scenes_from_log(log))     # every window of that log

The map, crop, route and command steps are public (:func:`load_map_file`, :func:`map_window`,
:func:`route_candidates`, :func:`route_lanes`, :func:`route_and_command`, :func:`ego_kinematics`) because the
motion-forecasting adapter (:mod:`irlvla_gym.scenes.av2_forecasting`) reads the same map format and applies the
same rules. A folder holding no sensor log yields one :class:`SkippedItem` saying so (pointing at
``--source av2-forecasting`` when it holds forecasting scenarios).

Windows. A scene's t0 is an annotation sweep (so t0 boxes and the t0 ego pose are exact samples). Windows are
spaced ``stride * 0.5 s`` apart (snapped to the nearest sweep) and need 1.5 s of ego history and 4 s of ego future
and annotations. A 15 s log gives about 21 windows at stride 1. The token is ``f"{log_id}-{sweep_index:03d}"``.

Resampling to the scene's exact 0.5 s times:

* ego poses: linear interpolation of position and (unwrapped) yaw; yaw = heading of R(q)'s first column;
* ego velocity / acceleration: a Savitzky-Golay filter (window 0.5 s / 1.0 s, order 2 / 3) on the pose resampled to
  20 Hz, then rotated into the body frame at each time;
* agents: the nearest annotation sweep (sweeps are ~100 ms apart; 5 sweeps ~ 0.501 s, so the offset stays < 50 ms);
  velocity by a centred finite difference over +-2 sweeps of the same track (0.4 s baseline, one-sided at the
  track's ends; capped at MAX_SPEED), in the city frame, then rotated into the t0 ego frame. The valid mask says
  whether the track has a box at that sweep.

Category table (:data:`AV2_CATEGORY_TO_SCENE`): the 30 AV2 classes onto the 6 scene categories. Riders and
two-wheelers (BICYCLE, BICYCLIST, MOTORCYCLE, MOTORCYCLIST, WHEELED_DEVICE, WHEELED_RIDER) -> bicycle;
STROLLER/WHEELCHAIR/OFFICIAL_SIGNALER -> pedestrian; ANIMAL and DOG -> pedestrian (they move and are vulnerable;
NAVSIM would treat a static-object hit as a half penalty, which is wrong for a dog); CONSTRUCTION_CONE, BOLLARD ->
traffic_cone; CONSTRUCTION_BARREL -> barrier; signs and sign/light/message trailers -> generic_object; all cars,
trucks, buses, trailers and trains -> vehicle. Unknown names fall back to generic_object.

Map (city frame, parsed once, cropped per window to objects intersecting the axis-aligned ``map_radius`` square
around the ego, as nuPlan's proximal query does):

* lanes: VEHICLE and BUS lane segments. BIKE lanes are dropped (the scene's lane graph is for motor traffic; edges
  and neighbour links to bike lanes disappear with them). Centreline = av2-api's rule (both boundaries resampled to
  N equal-arc-length points and averaged), with N = max(10, one point per 5 m) so long lanes keep their shape.
  Polygon = left boundary + reversed right boundary. ``is_intersection`` sets both ``lane_is_intersection`` and
  ``lane_is_connector`` (AV2 intersection segments play nuPlan's connector role). Speed limits are NaN (AV2 has
  none). No traffic lights: ``lane_light_state`` is all LIGHT_NONE.
* successor edges whose target is not in the file (or is a bike lane, or is cropped away) are dropped.
* neighbours: AV2's ``left/right_neighbor_id`` also link opposite-direction lanes; only same-direction neighbours
  (centreline headings within 90 degrees) are kept. ``lane_group`` = connected components of the same-direction
  neighbour links (a roadblock approximation), numbered per scene.
* drivable_areas -> ``drivable_area`` (ring closed); pedestrian_crossings -> ``crosswalks`` (e1[0], e1[1], e2[1],
  e2[0]); ``intersections`` = union of the intersection lanes' polygons (AV2 stores no intersection polygons).

Route: the lanes the logged ego drives through from t0 to the end of the log (the logged future and beyond), then
extended along the straightest successor up to ~``map_radius`` metres. The ego pose is sampled at 10 Hz; at each
sample the candidate lanes are those whose polygon contains it and whose heading is within 90 degrees of the ego's.
The current route lane is kept while it contains the ego; otherwise the next lane is a successor (preferred; also
two steps ahead, inserting the skipped lane), then a neighbour (lane change), then any candidate, preferring the
candidate the ego stays in longest. When the ego is in no lane at t0, the route starts at the nearest lane within
5 m. Command = :func:`route_command` on the route centreline with look-ahead = the expert's 4 s path length (the
route's lateral offset where the expert gets to); with no route, the expert's own lateral offset at 4 s. A 10 m
floor on the look-ahead was tried and dropped: an ego braking before a turn it does not yet take then reads
'left'/'right' while the expert goes straight (agreement with the expert's lateral rule: 92% with the floor, 96%
without, on the 4 sample logs).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from irlvla_gym.scenes.geometry import centerline_from_boundaries, polyline_length, to_local
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, AGENT_TIMES, FUTURE_TIMES, HISTORY_TIMES, LIGHT_NONE, MAP_FLOAT, MAX_SPEED, NUM_TIMES, Agents,
    EgoState, EgoVehicle, MapData, PolygonSet, Ragged, Scene, SceneMetadata, SceneValidationError, command_from_lateral,
    concat_polylines, route_command, wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

__all__ = [
    "AV2_CATEGORY_TO_SCENE", "AV2_EGO_VEHICLE", "AV2_LICENCE", "AV2Log", "AV2Map", "iter_scenes", "load_log",
    "scenes_from_log", "load_map_file", "map_window", "route_candidates", "route_lanes", "route_and_command",
    "ego_kinematics",
]

AV2_LICENCE = "CC BY-NC-SA 4.0 (Argoverse 2)"

AV2_EGO_VEHICLE = EgoVehicle(width=2.0, front_length=3.847, rear_length=1.03, wheelbase=2.85, height=1.473)
"""Argo's Ford Fusion Hybrid, approximately: length 4.877 m, width 2.0 m and height 1.473 m from the EGO_VEHICLE box
of ``annotations_with_ego.feather``; wheelbase 2.85 m and rear overhang 1.03 m from the car's specifications."""

_CAT = {name: i for i, name in enumerate(AGENT_CATEGORIES)}
AV2_CATEGORY_TO_SCENE: dict[str, str] = {
    # vehicles
    "REGULAR_VEHICLE": "vehicle", "LARGE_VEHICLE": "vehicle", "BUS": "vehicle", "ARTICULATED_BUS": "vehicle",
    "SCHOOL_BUS": "vehicle", "BOX_TRUCK": "vehicle", "TRUCK": "vehicle", "TRUCK_CAB": "vehicle",
    "VEHICULAR_TRAILER": "vehicle", "RAILED_VEHICLE": "vehicle",
    # two-wheelers and their riders
    "BICYCLE": "bicycle", "BICYCLIST": "bicycle", "MOTORCYCLE": "bicycle", "MOTORCYCLIST": "bicycle",
    "WHEELED_DEVICE": "bicycle", "WHEELED_RIDER": "bicycle",
    # people and animals (moving, vulnerable)
    "PEDESTRIAN": "pedestrian", "OFFICIAL_SIGNALER": "pedestrian", "STROLLER": "pedestrian",
    "WHEELCHAIR": "pedestrian", "ANIMAL": "pedestrian", "DOG": "pedestrian",
    # static objects
    "CONSTRUCTION_CONE": "traffic_cone", "BOLLARD": "traffic_cone",
    "CONSTRUCTION_BARREL": "barrier",
    "SIGN": "generic_object", "STOP_SIGN": "generic_object", "MOBILE_PEDESTRIAN_CROSSING_SIGN": "generic_object",
    "MESSAGE_BOARD_TRAILER": "generic_object", "TRAFFIC_LIGHT_TRAILER": "generic_object",
}
"""AV2 annotation category -> scene category name (all 30 AV2 classes; anything else -> generic_object)."""

POSE_FILE = "city_SE3_egovehicle.feather"
ANNOTATION_FILES = ("annotations.feather", "annotations_with_ego.feather")
POSE_COLUMNS = ("timestamp_ns", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")
ANNOTATION_COLUMNS = ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m",
                      "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")
KEPT_LANE_TYPES = ("VEHICLE", "BUS")

NS = 1_000_000_000
SWEEP_TOLERANCE_NS = 60_000_000
"""Largest offset (ns) between a scene time and the annotation sweep used for it."""
_KIN_HZ = 20.0  # grid for the ego's smoothed kinematics
_ROUTE_HZ = 10.0  # ego samples for the route search
_HEADING_OK = np.pi / 2  # lane candidates must point within this of the ego's heading
_ROUTE_START_MAX_DIST = 5.0  # m: nearest lane accepted as the route start when the ego is in none


# --------------------------------------------------------------------------------------------------------------------
# Packed geometry tables (city frame)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Packed:
    """M point sequences packed as (P, 2) float64 ``points`` and (M + 1,) int64 ``offsets`` (city frame, m)."""

    points: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, items: Sequence[np.ndarray]) -> "_Packed":
        lengths = np.array([len(a) for a in items], np.int64)
        offsets = np.zeros(len(items) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        pts = np.concatenate([np.asarray(a, np.float64)[:, :2] for a in items]) if items else np.zeros((0, 2))
        return cls(pts, offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.points[self.offsets[i]:self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def select(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gather sequences ``indices`` (vectorised): returns (points (P', 2), offsets (len(indices) + 1,))."""
        indices = np.asarray(indices, np.int64)
        lengths = np.diff(self.offsets)[indices]
        offsets = np.zeros(len(indices) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(self.offsets[indices] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self.points[gather], offsets


@dataclass(frozen=True)
class _PolygonTable:
    """Polygons (city frame) as packed rings, with shapely geometries for spatial queries.

    Attributes:
        rings: packed rings (open, exterior first per polygon).
        ring_polygon: (R,) int64 polygon index of each ring (non-decreasing).
        ring_is_hole: (R,) bool.
        geoms: (M,) object array of valid, prepared shapely geometries (for intersects / contains).
    """

    rings: _Packed
    ring_polygon: np.ndarray
    ring_is_hole: np.ndarray
    geoms: np.ndarray

    @classmethod
    def from_rings(cls, polygons: Sequence[Sequence[np.ndarray]]) -> "_PolygonTable":
        import shapely

        rings, owner, hole, geoms = [], [], [], []
        for p, poly in enumerate(polygons):
            for r, ring in enumerate(poly):
                ring = np.asarray(ring, np.float64)[:, :2]
                if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
                    ring = ring[:-1]
                rings.append(ring)
                owner.append(p)
                hole.append(r > 0)
            geoms.append(shapely.make_valid(shapely.Polygon(poly[0][:, :2], [h[:, :2] for h in poly[1:]])))
        geoms_arr = np.empty(len(geoms), object)
        geoms_arr[:] = geoms
        shapely.prepare(geoms_arr)
        return cls(_Packed.from_list(rings), np.asarray(owner, np.int64), np.asarray(hole, bool), geoms_arr)

    @classmethod
    def from_shapely(cls, geoms: Sequence) -> "_PolygonTable":
        polys = []
        for g in geoms:
            for part in (g.geoms if hasattr(g, "geoms") else [g]):
                if part.geom_type == "Polygon" and not part.is_empty and part.area > 1e-6:
                    polys.append([np.asarray(part.exterior.coords)] + [np.asarray(h.coords) for h in part.interiors])
        return cls.from_rings(polys)

    def __len__(self) -> int:
        return len(self.geoms)

    def intersecting(self, square) -> np.ndarray:
        """(M',) sorted indices of the polygons intersecting the shapely geometry ``square``."""
        import shapely

        return np.flatnonzero(shapely.intersects(self.geoms, square)) if len(self.geoms) else np.zeros(0, np.int64)

    def to_scene(self, indices: np.ndarray, origin_xy: np.ndarray, origin_yaw: float) -> PolygonSet:
        """The polygons ``indices`` (sorted) as a scene :class:`PolygonSet` in the local frame."""
        ring_idx = np.flatnonzero(np.isin(self.ring_polygon, indices))
        pts, offs = self.rings.select(ring_idx)
        local = to_local(pts, origin_xy, origin_yaw).astype(MAP_FLOAT)
        owner = np.searchsorted(indices, self.ring_polygon[ring_idx]).astype(np.int64)
        return PolygonSet(Ragged(local, offs), owner, self.ring_is_hole[ring_idx].copy())


# --------------------------------------------------------------------------------------------------------------------
# Parsed log
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AV2Map:
    """The log's vector map in the city frame (m), parsed once.

    Attributes:
        lane_ids: (L,) str AV2 lane segment ids (VEHICLE and BUS lanes only).
        lane_is_intersection: (L,) bool.
        centerlines / left_boundaries / right_boundaries: L packed polylines (driving direction).
        lanes: lane polygons (left + reversed right boundary).
        lane_start_heading / lane_end_heading: (L,) rad, centreline direction at its first / last segment.
        lane_length: (L,) m centreline length.
        successors: (E, 2) int64 edges [from, to] (both in the lane table).
        left_neighbor / right_neighbor: (L,) int64 same-direction neighbour index or -1.
        lane_group: (L,) int64 connected component of the same-direction neighbour links.
        drivable_areas / crosswalks / intersections: polygon tables.
        centerline_segments: (L, K, 2, 2) centreline segments padded with NaN (for heading look-ups).
    """

    lane_ids: np.ndarray
    lane_is_intersection: np.ndarray
    centerlines: _Packed
    left_boundaries: _Packed
    right_boundaries: _Packed
    lanes: _PolygonTable
    lane_start_heading: np.ndarray
    lane_end_heading: np.ndarray
    lane_length: np.ndarray
    successors: np.ndarray
    left_neighbor: np.ndarray
    right_neighbor: np.ndarray
    lane_group: np.ndarray
    drivable_areas: _PolygonTable
    crosswalks: _PolygonTable
    intersections: _PolygonTable
    centerline_segments: np.ndarray

    @property
    def num_lanes(self) -> int:
        return len(self.lane_ids)

    @cached_property
    def successor_lists(self) -> list[list[int]]:
        """Successor lane indices of each lane (L lists)."""
        out: list[list[int]] = [[] for _ in range(self.num_lanes)]
        for a, b in self.successors:
            out[int(a)].append(int(b))
        return out

    def heading_at(self, lane_index: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """(n,) heading (rad) of the centreline segment of lane ``lane_index[i]`` nearest to ``xy[i]`` (n, 2)."""
        seg = self.centerline_segments[lane_index]  # (n, K, 2, 2)
        a, d = seg[:, :, 0], seg[:, :, 1] - seg[:, :, 0]
        rel = xy[:, None, :] - a
        t = np.clip(np.einsum("nkj,nkj->nk", rel, d) / np.maximum(np.einsum("nkj,nkj->nk", d, d), 1e-12), 0, 1)
        dist = np.linalg.norm(rel - t[..., None] * d, axis=-1)
        k = np.nanargmin(np.where(np.isnan(dist), np.inf, dist), axis=1)
        dk = d[np.arange(len(k)), k]
        return np.arctan2(dk[:, 1], dk[:, 0])


@dataclass(frozen=True)
class AV2Log:
    """One AV2 sensor log, parsed once and reused for every window.

    Attributes:
        log_id: log directory name.
        city: city code from the map file name ('PIT', 'MIA', ...).
        log_dir: path of the log directory.
        pose_ts: (Np,) int64 ns, strictly increasing ego pose timestamps.
        pose_xy: (Np, 2) m, rear axle in the city frame.
        pose_yaw: (Np,) rad, unwrapped heading (of R(q)'s first column).
        kin_ts: (Nk,) int64 ns, 20 Hz grid for the smoothed kinematics.
        kin_vel_body: (Nk, 2) m/s, ego velocity in the body frame.
        kin_acc_body: (Nk, 2) m/s^2, ego acceleration in the body frame.
        sweep_ts: (S,) int64 ns annotation sweep timestamps.
        track_uuid: (T,) str.
        track_category: (T,) int8 scene category index.
        box_city: (S, T, 6) [x, y, yaw, length, width, height] in the city frame (m, rad); NaN where invalid.
        vel_city: (S, T, 2) m/s agent velocity in the city frame; 0 where invalid.
        box_valid: (S, T) bool.
        map: :class:`AV2Map`.
        route_ts: (Nr,) int64 ns, 10 Hz ego samples for the route search.
        route_candidates: Nr lists of candidate lane indices (contain the ego, heading within 90 degrees).
        route_persistence: (Nr, L) int32, how many consecutive samples from each one lane stays a candidate.
    """

    log_id: str
    city: str
    log_dir: Path
    pose_ts: np.ndarray
    pose_xy: np.ndarray
    pose_yaw: np.ndarray
    kin_ts: np.ndarray
    kin_vel_body: np.ndarray
    kin_acc_body: np.ndarray
    sweep_ts: np.ndarray
    track_uuid: np.ndarray
    track_category: np.ndarray
    box_city: np.ndarray
    vel_city: np.ndarray
    box_valid: np.ndarray
    map: AV2Map
    route_ts: np.ndarray
    route_candidates: list[list[int]]
    route_persistence: np.ndarray

    def ego_poses(self, ts: np.ndarray) -> np.ndarray:
        """(n, 3) city-frame [x, y, yaw (unwrapped)] at times ``ts`` (n,) ns, linearly interpolated."""
        t = (np.asarray(ts, np.int64) - self.pose_ts[0]).astype(np.float64)
        tp = (self.pose_ts - self.pose_ts[0]).astype(np.float64)
        return np.stack([np.interp(t, tp, self.pose_xy[:, 0]), np.interp(t, tp, self.pose_xy[:, 1]),
                         np.interp(t, tp, self.pose_yaw)], axis=-1)

    def window_t0_sweeps(self, stride: int = 1) -> np.ndarray:
        """Sweep indices usable as t0 (1.5 s of ego history, 4 s of ego future and annotations), ``stride * 0.5 s``
        apart (snapped to the nearest sweep)."""
        if int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        t = self.sweep_ts
        ok = ((t + int(HISTORY_TIMES[0] * NS) >= self.pose_ts[0]) & (t + int(FUTURE_TIMES[-1] * NS) <= self.pose_ts[-1])
              & (t + int(AGENT_TIMES[-1] * NS) <= self.sweep_ts[-1] + SWEEP_TOLERANCE_NS))
        usable = np.flatnonzero(ok)
        if not len(usable):
            return usable
        targets = t[usable[0]] + np.arange(0, t[usable[-1]] - t[usable[0]] + 1, int(stride) * NS // 2)
        nearest = usable[np.abs(t[usable][None, :] - targets[:, None]).argmin(axis=1)]
        return np.unique(nearest)

    def nearest_sweeps(self, ts: np.ndarray) -> np.ndarray:
        """(n,) index of the annotation sweep nearest to each time ``ts`` (n,) ns."""
        i = np.clip(np.searchsorted(self.sweep_ts, ts), 1, len(self.sweep_ts) - 1)
        left_closer = (ts - self.sweep_ts[i - 1]) <= (self.sweep_ts[i] - ts)
        return np.where(left_closer, i - 1, i)


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------


def _read_feather(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Read ``columns`` of a feather file as numpy arrays; raise ValueError naming the file and a missing column."""
    import pyarrow.feather as feather

    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        table = feather.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{path}: cannot read as Arrow/feather: {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (has {table.column_names})")
    out = {}
    for c in columns:
        col = table.column(c)
        out[c] = (np.asarray(col.to_pylist(), dtype=str) if str(col.type) in ("string", "large_string")
                  else col.to_numpy())
    return out


def _check_finite_columns(path: Path, data: dict[str, np.ndarray], columns: Sequence[str]) -> None:
    for c in columns:
        arr = np.asarray(data[c])
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                raise ValueError(f"{path}: column {c!r} has a non-finite value (NaN/inf) at row {int(np.argmax(bad))}")


def _quat_to_rot(qw: np.ndarray, qx: np.ndarray, qy: np.ndarray, qz: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotation matrices from scalar-first quaternions (normalised here)."""
    q = np.stack([qw, qx, qy, qz], axis=-1).astype(np.float64)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def _load_poses(log_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (timestamps ns (Np,), rotations (Np, 3, 3), translations (Np, 3), yaw unwrapped (Np,))."""
    path = log_dir / POSE_FILE
    d = _read_feather(path, POSE_COLUMNS)
    _check_finite_columns(path, d, POSE_COLUMNS[1:])
    ts = np.asarray(d["timestamp_ns"], np.int64)
    if len(ts) < 2:
        raise ValueError(f"{path}: column 'timestamp_ns' needs at least 2 rows, got {len(ts)}")
    ts, first = np.unique(ts, return_index=True)  # sorts and drops exact duplicates
    if np.any(np.linalg.norm(np.stack([d[c] for c in ("qw", "qx", "qy", "qz")], -1), axis=-1) < 1e-6):
        raise ValueError(f"{path}: columns 'qw'..'qz' hold a zero quaternion")
    rot = _quat_to_rot(d["qw"][first], d["qx"][first], d["qy"][first], d["qz"][first])
    trans = np.stack([d["tx_m"], d["ty_m"], d["tz_m"]], axis=-1)[first].astype(np.float64)
    yaw = np.unwrap(np.arctan2(rot[:, 1, 0], rot[:, 0, 0]))
    return ts, rot, trans, yaw


def ego_kinematics(pose_ts: np.ndarray, pose_xy: np.ndarray, pose_yaw: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed body-frame velocity (m/s) and acceleration (m/s^2) on a 20 Hz grid from poses at ``pose_ts`` (Np,)
    ns: ``pose_xy`` (Np, 2) m, ``pose_yaw`` (Np,) rad unwrapped. Returns (ts (Nk,) int64 ns, vel (Nk, 2),
    acc (Nk, 2))."""
    from scipy.signal import savgol_filter

    dt = 1.0 / _KIN_HZ
    span = (pose_ts[-1] - pose_ts[0]) / NS
    t = np.arange(0.0, span + 1e-9, dt)
    tp = (pose_ts - pose_ts[0]) / NS
    xy = np.stack([np.interp(t, tp, pose_xy[:, 0]), np.interp(t, tp, pose_xy[:, 1])], axis=-1)
    yaw = np.interp(t, tp, pose_yaw)
    n = len(t)
    vel = np.zeros((n, 2))
    acc = np.zeros((n, 2))
    w_vel, w_acc = 11, 21  # 0.5 s and 1.0 s windows
    if n >= 5:
        wv = min(w_vel, n - (1 - n % 2))
        vel = savgol_filter(xy, wv, min(2, wv - 1), deriv=1, delta=dt, axis=0, mode="interp")
        wa = min(w_acc, n - (1 - n % 2))
        acc = savgol_filter(xy, wa, min(3, wa - 1), deriv=2, delta=dt, axis=0, mode="interp")
    c, s = np.cos(yaw), np.sin(yaw)
    vel_body = np.stack([c * vel[:, 0] + s * vel[:, 1], -s * vel[:, 0] + c * vel[:, 1]], axis=-1)
    acc_body = np.stack([c * acc[:, 0] + s * acc[:, 1], -s * acc[:, 0] + c * acc[:, 1]], axis=-1)
    ts = pose_ts[0] + np.round(t * NS).astype(np.int64)
    return ts, vel_body, acc_body


def _load_annotations(log_dir: Path, pose_ts: np.ndarray, pose_rot: np.ndarray, pose_trans: np.ndarray) -> dict:
    """Dense per-sweep, per-track agent boxes in the city frame (see :class:`AV2Log` fields)."""
    paths = [log_dir / f for f in ANNOTATION_FILES]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{paths[0]}: file not found (nor {paths[1].name})")
    d = _read_feather(path, ANNOTATION_COLUMNS)
    _check_finite_columns(path, d, ANNOTATION_COLUMNS[3:])
    keep = d["category"] != "EGO_VEHICLE"
    d = {k: v[keep] for k, v in d.items()}
    ts = np.asarray(d["timestamp_ns"], np.int64)
    if not len(ts):
        raise ValueError(f"{path}: column 'timestamp_ns' has no (non-ego) annotation rows")
    sweep_ts, sweep_of_row = np.unique(ts, return_inverse=True)
    track_uuid, track_of_row = np.unique(d["track_uuid"], return_inverse=True)
    S, T = len(sweep_ts), len(track_uuid)

    # Ego pose at each row's sweep (data-formats.md: every sweep has an exact pose row; else use the nearest).
    j = np.clip(np.searchsorted(pose_ts, sweep_ts), 1, len(pose_ts) - 1)
    j = np.where(np.abs(sweep_ts - pose_ts[j - 1]) <= np.abs(pose_ts[j] - sweep_ts), j - 1, j)
    if np.any(np.abs(pose_ts[j] - sweep_ts) > 50_000_000):
        bad = int(np.argmax(np.abs(pose_ts[j] - sweep_ts)))
        raise ValueError(f"{path}: column 'timestamp_ns': sweep {sweep_ts[bad]} has no ego pose within 50 ms in "
                         f"{POSE_FILE}")
    rot = pose_rot[j][sweep_of_row]  # (n, 3, 3)
    trans = pose_trans[j][sweep_of_row]
    centre_ego = np.stack([d["tx_m"], d["ty_m"], d["tz_m"]], axis=-1)
    centre_city = np.einsum("nij,nj->ni", rot, centre_ego) + trans
    yaw_ego = 2.0 * np.arctan2(d["qz"], d["qw"])
    heading_city = np.einsum("nij,nj->ni", rot, np.stack([np.cos(yaw_ego), np.sin(yaw_ego), np.zeros_like(yaw_ego)],
                                                          axis=-1))
    yaw_city = np.arctan2(heading_city[:, 1], heading_city[:, 0])

    # Velocity: centred difference over +-2 sweeps of the same track (rows sorted by track, then time).
    order = np.lexsort((ts, track_of_row))
    trk, t_sorted, xy_sorted = track_of_row[order], ts[order], centre_city[order, :2]
    n = len(order)
    idx = np.arange(n)
    group_start = np.r_[0, np.flatnonzero(np.diff(trk)) + 1]
    group_len = np.diff(np.r_[group_start, n])
    start = np.repeat(group_start, group_len)
    end = start + np.repeat(group_len, group_len) - 1
    hi, lo = np.minimum(idx + 2, end), np.maximum(idx - 2, start)
    dt = (t_sorted[hi] - t_sorted[lo]) / NS
    vel_sorted = np.where(dt[:, None] > 0, (xy_sorted[hi] - xy_sorted[lo]) / np.maximum(dt, 1e-9)[:, None], 0.0)
    # A track-id swap in the labels would give an absurd speed and fail the whole window's validation: cap it.
    speed = np.linalg.norm(vel_sorted, axis=1, keepdims=True)
    vel_sorted *= np.minimum(1.0, MAX_SPEED / np.maximum(speed, 1e-9))
    vel = np.empty_like(vel_sorted)
    vel[order] = vel_sorted

    box_city = np.full((S, T, 6), np.nan)
    vel_city = np.zeros((S, T, 2))
    valid = np.zeros((S, T), bool)
    box_city[sweep_of_row, track_of_row] = np.stack(
        [centre_city[:, 0], centre_city[:, 1], yaw_city, d["length_m"], d["width_m"], d["height_m"]], axis=-1)
    vel_city[sweep_of_row, track_of_row] = vel
    valid[sweep_of_row, track_of_row] = True

    # One category per track (its first row's).
    first_row = np.full(T, -1)
    first_row[track_of_row[::-1]] = np.arange(len(ts))[::-1]
    category = np.array([_CAT[AV2_CATEGORY_TO_SCENE.get(str(c), "generic_object")] for c in d["category"][first_row]],
                        np.int8)
    return dict(sweep_ts=sweep_ts, track_uuid=track_uuid.astype(str), track_category=category, box_city=box_city,
                vel_city=vel_city, box_valid=valid)


def _points(path: Path, field: str, value) -> np.ndarray:
    """(n, 2) xy of a list of {x, y, z} dicts; ValueError naming the file and field if malformed."""
    try:
        pts = np.array([[p["x"], p["y"]] for p in value], np.float64)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: field {field}: expected a list of {{x, y, z}} points ({exc!r})") from None
    if pts.ndim != 2 or len(pts) < 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"{path}: field {field}: needs >= 2 finite points, got {len(pts)}")
    return pts


def _load_map(log_dir: Path) -> tuple[AV2Map, str]:
    """Parse ``map/log_map_archive_*.json``; returns (map, city code)."""
    candidates = sorted((log_dir / "map").glob("log_map_archive_*.json"))
    if not candidates:
        raise FileNotFoundError(f"{log_dir / 'map' / 'log_map_archive_*.json'}: file not found")
    path = candidates[0]
    match = re.search(r"____([A-Za-z]+)_city_", path.name)
    return load_map_file(path), match.group(1) if match else ""


def load_map_file(path: str | Path) -> AV2Map:
    """Parse one AV2 map JSON (``log_map_archive_*.json``: the sensor logs' ``map/`` file and the motion-forecasting
    scenarios' file have the same format, data-formats.md section 3) into an :class:`AV2Map` in the city frame.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable JSON or a missing / malformed field (the message names the file and the field).
    """
    import shapely

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse JSON: {exc}") from None
    for key in ("lane_segments", "drivable_areas", "pedestrian_crossings"):
        if not isinstance(raw.get(key), dict):
            raise ValueError(f"{path}: field {key!r} missing or not a dict")

    # Lanes.
    ids, inter, lefts, rights, succ_raw, left_raw, right_raw = [], [], [], [], [], [], []
    for key, lane in raw["lane_segments"].items():
        where = f"lane_segments[{key!r}]"
        try:
            if lane["lane_type"] not in KEPT_LANE_TYPES:
                continue
            ids.append(str(lane["id"]))
            inter.append(bool(lane["is_intersection"]))
            succ_raw.append([str(s) for s in lane["successors"]])
            left_raw.append(lane["left_neighbor_id"])
            right_raw.append(lane["right_neighbor_id"])
            lb, rb = lane["left_lane_boundary"], lane["right_lane_boundary"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: field {where}: missing or malformed {exc}") from None
        lefts.append(_points(path, f"{where}.left_lane_boundary", lb))
        rights.append(_points(path, f"{where}.right_lane_boundary", rb))
    L = len(ids)
    index = {lid: i for i, lid in enumerate(ids)}
    centerlines = []
    for lb, rb in zip(lefts, rights):
        n = max(10, int(np.ceil(max(polyline_length(lb), polyline_length(rb)) / 5.0)) + 1)
        centerlines.append(centerline_from_boundaries(lb, rb, n))
    start_heading = np.array([np.arctan2(*(c[1] - c[0])[::-1]) for c in centerlines]) if L else np.zeros(0)
    end_heading = np.array([np.arctan2(*(c[-1] - c[-2])[::-1]) for c in centerlines]) if L else np.zeros(0)
    mean_heading = np.array([np.arctan2(*(c[-1] - c[0])[::-1]) for c in centerlines]) if L else np.zeros(0)
    succ = [(i, index[s]) for i, ss in enumerate(succ_raw) for s in ss if s in index]

    def same_direction_neighbour(i: int, nb) -> int:
        j = index.get(str(nb), -1) if nb is not None else -1
        return j if j >= 0 and abs(wrap_angle(mean_heading[i] - mean_heading[j])) < np.pi / 2 else -1

    left_nb = np.array([same_direction_neighbour(i, nb) for i, nb in enumerate(left_raw)], np.int64)
    right_nb = np.array([same_direction_neighbour(i, nb) for i, nb in enumerate(right_raw)], np.int64)
    group = _connected_components(L, np.concatenate([np.stack([np.arange(L), left_nb], 1),
                                                     np.stack([np.arange(L), right_nb], 1)]))
    lanes = _PolygonTable.from_rings([[np.concatenate([lb, rb[::-1]])] for lb, rb in zip(lefts, rights)])

    k_max = max((len(c) - 1 for c in centerlines), default=1)
    segments = np.full((L, k_max, 2, 2), np.nan)
    for i, c in enumerate(centerlines):
        segments[i, :len(c) - 1, 0] = c[:-1]
        segments[i, :len(c) - 1, 1] = c[1:]

    # Areas.
    drivable = []
    for key, area in raw["drivable_areas"].items():
        where = f"drivable_areas[{key!r}].area_boundary"
        ring = _points(path, where, area.get("area_boundary") if isinstance(area, dict) else None)
        if len(ring) < 3:
            raise ValueError(f"{path}: field {where}: a ring needs >= 3 points")
        drivable.append([ring])
    crossings = []
    for key, pc in raw["pedestrian_crossings"].items():
        where = f"pedestrian_crossings[{key!r}]"
        e1 = _points(path, f"{where}.edge1", pc.get("edge1") if isinstance(pc, dict) else None)
        e2 = _points(path, f"{where}.edge2", pc.get("edge2") if isinstance(pc, dict) else None)
        crossings.append([np.array([e1[0], e1[1], e2[1], e2[0]])])
    inter_arr = np.asarray(inter, bool)
    inter_union = shapely.union_all(lanes.geoms[inter_arr]) if inter_arr.any() else None
    intersections = _PolygonTable.from_shapely([] if inter_union is None else [inter_union])

    av2_map = AV2Map(
        lane_ids=np.asarray(ids, str) if L else np.zeros(0, "<U1"), lane_is_intersection=inter_arr,
        centerlines=_Packed.from_list(centerlines), left_boundaries=_Packed.from_list(lefts),
        right_boundaries=_Packed.from_list(rights), lanes=lanes, lane_start_heading=start_heading,
        lane_end_heading=end_heading, lane_length=np.array([polyline_length(c) for c in centerlines]),
        successors=np.asarray(succ, np.int64).reshape(-1, 2), left_neighbor=left_nb, right_neighbor=right_nb,
        lane_group=group, drivable_areas=_PolygonTable.from_rings(drivable),
        crosswalks=_PolygonTable.from_rings(crossings), intersections=intersections, centerline_segments=segments)
    return av2_map


def _connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) component label of each node given undirected (E, 2) edges (entries -1 are ignored)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = edges[(edges >= 0).all(axis=1)]
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64) if n else np.zeros(0, np.int64)


def route_candidates(av2_map: AV2Map, pose_ts: np.ndarray, pose_xy: np.ndarray, pose_yaw: np.ndarray
                     ) -> tuple[np.ndarray, list, np.ndarray]:
    """Route-search table of an ego path: ego samples every 0.1 s over ``pose_ts`` (ns, (Np,)) with city-frame
    ``pose_xy`` (Np, 2) m and unwrapped ``pose_yaw`` (Np,) rad. Returns (sample times (Nr,) int64 ns, candidate
    lanes at each sample (those containing the ego with a heading within 90 degrees), persistence (Nr, L) int32:
    how many consecutive samples from each one a lane stays a candidate)."""
    import shapely

    t = np.arange(pose_ts[0], pose_ts[-1] + 1, int(NS / _ROUTE_HZ), dtype=np.int64)
    tf, tp = (t - pose_ts[0]).astype(np.float64), (pose_ts - pose_ts[0]).astype(np.float64)
    xy = np.stack([np.interp(tf, tp, pose_xy[:, 0]), np.interp(tf, tp, pose_xy[:, 1])], axis=-1)
    yaw = np.interp(tf, tp, pose_yaw)
    L = av2_map.num_lanes
    inside = (shapely.contains_xy(av2_map.lanes.geoms[None, :], xy[:, 0:1], xy[:, 1:2]) if L
              else np.zeros((len(t), 0), bool))
    k, lane = np.nonzero(inside)
    if len(k):
        lane_heading = av2_map.heading_at(lane, xy[k])
        inside[k, lane] = np.abs(wrap_angle(lane_heading - yaw[k])) < _HEADING_OK
    persistence = np.zeros(inside.shape, np.int32)
    run = np.zeros(L, np.int32)
    for i in range(len(t) - 1, -1, -1):
        run = (run + 1) * inside[i]
        persistence[i] = run
    candidates = [list(np.flatnonzero(row)) for row in inside]
    return t, candidates, persistence


def load_log(log_dir: str | Path) -> AV2Log:
    """Parse one AV2 sensor log directory (poses, annotations, map) into an :class:`AV2Log`.

    Raises:
        FileNotFoundError: a required file is missing (the message names it).
        ValueError: a file is unreadable or a column/field is missing or non-finite (the message names file + field).
    """
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"{log_dir}: log directory not found")
    pose_ts, pose_rot, pose_trans, pose_yaw = _load_poses(log_dir)
    pose_xy = pose_trans[:, :2].copy()
    agents = _load_annotations(log_dir, pose_ts, pose_rot, pose_trans)
    av2_map, city = _load_map(log_dir)
    kin_ts, vel_body, acc_body = ego_kinematics(pose_ts, pose_xy, pose_yaw)
    route_ts, candidates, persistence = route_candidates(av2_map, pose_ts, pose_xy, pose_yaw)
    return AV2Log(log_id=log_dir.name, city=city, log_dir=log_dir, pose_ts=pose_ts, pose_xy=pose_xy,
                  pose_yaw=pose_yaw, kin_ts=kin_ts, kin_vel_body=vel_body, kin_acc_body=acc_body, map=av2_map,
                  route_ts=route_ts, route_candidates=candidates, route_persistence=persistence, **agents)


# --------------------------------------------------------------------------------------------------------------------
# Windows -> scenes
# --------------------------------------------------------------------------------------------------------------------


def route_lanes(m: AV2Map, route_ts: np.ndarray, candidates: Sequence[Sequence[int]], persistence: np.ndarray,
                t0_ns: int, ego_xy: np.ndarray, ego_yaw: float, max_length: float) -> list[int]:
    """Ordered lane indices (of map ``m``) the ego drives through from ``t0_ns`` on (module docs, "Route"), extended
    along the straightest successor to ~``max_length`` m. ``route_ts`` / ``candidates`` / ``persistence``: the
    table of :func:`route_candidates`; ``ego_xy`` (2,) m and ``ego_yaw`` rad: the ego's city-frame pose at t0."""
    import shapely

    succ = m.successor_lists
    k0 = int(np.clip(np.searchsorted(route_ts, t0_ns), 0, len(route_ts) - 1))
    route: list[int] = []

    def best(options: Sequence[int], k: int) -> int:
        return max(options, key=lambda lane: persistence[k, lane])

    if not candidates[k0] and m.num_lanes:
        dist = shapely.distance(m.lanes.geoms, shapely.Point(*ego_xy))
        heading = m.heading_at(np.arange(m.num_lanes), np.tile(ego_xy, (m.num_lanes, 1)))
        dist = np.where(np.abs(wrap_angle(heading - ego_yaw)) < _HEADING_OK, dist, np.inf)
        if dist.min() <= _ROUTE_START_MAX_DIST:
            route.append(int(np.argmin(dist)))
    for k in range(k0, len(route_ts)):
        cands = candidates[k]
        if not cands or (route and route[-1] in cands):
            continue
        if not route:
            route.append(best(cands, k))
            continue
        last = route[-1]
        direct = [c for c in cands if c in succ[last]]
        if direct:
            route.append(best(direct, k))
            continue
        two_step = [(s, c) for s in succ[last] for c in cands if c in succ[s]]
        if two_step:
            s, c = max(two_step, key=lambda sc: persistence[k, sc[1]])
            route += [s, c]
            continue
        if any(c in route for c in cands):
            continue  # still in (an overlap with) an earlier route lane
        neighbours = [c for c in cands if c in (m.left_neighbor[last], m.right_neighbor[last])]
        route.append(best(neighbours or cands, k))
    # Extend along the straightest successor up to ~max_length of centreline past the first lane.
    if route:
        ahead = float(m.lane_length[route[1:]].sum())
        while ahead < max_length and len(route) < 64:
            options = [s for s in succ[route[-1]] if s not in route]
            if not options:
                break
            turn = np.abs(wrap_angle(m.lane_end_heading[options] - m.lane_end_heading[route[-1]]))
            nxt = options[int(np.argmin(turn))]
            route.append(nxt)
            ahead += float(m.lane_length[nxt])
    return route


def _window_scene(log: AV2Log, t0_sweep: int, map_radius: float) -> Scene:
    t0 = int(log.sweep_ts[t0_sweep])
    hist_ts = t0 + np.round(HISTORY_TIMES * NS).astype(np.int64)
    fut_ts = t0 + np.round(FUTURE_TIMES * NS).astype(np.int64)
    poses = log.ego_poses(np.r_[hist_ts, fut_ts])  # (12, 3) city
    origin_xy, origin_yaw = poses[len(hist_ts) - 1, :2].copy(), float(poses[len(hist_ts) - 1, 2])
    local = np.empty_like(poses)
    local[:, :2] = to_local(poses[:, :2], origin_xy, origin_yaw)
    local[:, 2] = wrap_angle(poses[:, 2] - origin_yaw)
    local[len(hist_ts) - 1] = 0.0
    kt = (log.kin_ts - log.kin_ts[0]).astype(np.float64)
    ht = (hist_ts - log.kin_ts[0]).astype(np.float64)
    vel = np.stack([np.interp(ht, kt, log.kin_vel_body[:, i]) for i in range(2)], axis=-1)
    acc = np.stack([np.interp(ht, kt, log.kin_acc_body[:, i]) for i in range(2)], axis=-1)
    ego = EgoState(local[:len(hist_ts)], vel, acc, local[len(hist_ts):], AV2_EGO_VEHICLE)

    # Agents: nearest sweep at each of the 9 times, city -> t0 ego frame, cropped to the map square.
    sweeps = log.nearest_sweeps(t0 + np.round(AGENT_TIMES * NS).astype(np.int64))
    valid = log.box_valid[sweeps] & (np.abs(log.sweep_ts[sweeps] - (t0 + np.round(AGENT_TIMES * NS)))
                                     <= SWEEP_TOLERANCE_NS)[:, None]  # (9, T)
    box = log.box_city[sweeps]  # (9, T, 6)
    xy = to_local(np.nan_to_num(box[..., :2]), origin_xy, origin_yaw)
    in_range = valid & (np.abs(xy) <= map_radius).all(axis=-1)
    keep = np.flatnonzero(in_range.any(axis=0))
    valid = valid[:, keep]
    boxes = np.zeros((NUM_TIMES, len(keep), 8))
    boxes[..., 0:2] = xy[:, keep]
    boxes[..., 2] = wrap_angle(box[:, keep, 2] - origin_yaw)
    boxes[..., 3:6] = box[:, keep, 3:6]
    v = log.vel_city[sweeps][:, keep]
    c, s = np.cos(origin_yaw), np.sin(origin_yaw)
    boxes[..., 6] = c * v[..., 0] + s * v[..., 1]
    boxes[..., 7] = -s * v[..., 0] + c * v[..., 1]
    boxes[~valid] = 0.0
    agents = Agents(boxes, valid, log.track_category[keep], log.track_uuid[keep])

    map_data, to_scene = map_window(log.map, origin_xy, origin_yaw, map_radius)
    route_log = route_lanes(log.map, log.route_ts, log.route_candidates, log.route_persistence, t0, origin_xy,
                            origin_yaw, map_radius)
    route_scene, command = route_and_command(route_log, to_scene, map_data, ego.future)
    meta = SceneMetadata(token=f"{log.log_id}-{t0_sweep:03d}", source="av2", log_name=log.log_id,
                         map_name=log.city, timestamp_us=t0 // 1000, licence=AV2_LICENCE)
    return Scene(meta, ego, agents, map_data, route_scene, command)


def map_window(m: AV2Map, origin_xy: np.ndarray, origin_yaw: float, map_radius: float
               ) -> tuple[MapData, np.ndarray]:
    """The map objects intersecting the axis-aligned square of half-size ``map_radius`` m around ``origin_xy``
    (city frame, as nuPlan's proximal query), in the ego frame at (``origin_xy``, ``origin_yaw`` rad).

    Returns:
        (map data, to_scene): to_scene (L,) int64 maps each lane of ``m`` to its scene lane index, -1 if cropped.
    """
    import shapely

    square = shapely.box(origin_xy[0] - map_radius, origin_xy[1] - map_radius,
                         origin_xy[0] + map_radius, origin_xy[1] + map_radius)
    lanes = m.lanes.intersecting(square)
    L = len(lanes)
    to_scene = np.full(m.num_lanes, -1, np.int64)
    to_scene[lanes] = np.arange(L)

    def ragged(packed: _Packed) -> Ragged:
        pts, offs = packed.select(lanes)
        return Ragged(to_local(pts, origin_xy, origin_yaw).astype(MAP_FLOAT), offs)

    edges = to_scene[m.successors] if len(m.successors) else np.zeros((0, 2), np.int64)
    edges = edges[(edges >= 0).all(axis=1)]
    left = np.where(m.left_neighbor[lanes] >= 0, to_scene[m.left_neighbor[lanes]], -1)
    right = np.where(m.right_neighbor[lanes] >= 0, to_scene[m.right_neighbor[lanes]], -1)
    group = np.unique(m.lane_group[lanes], return_inverse=True)[1].astype(np.int64).reshape(-1)
    is_inter = m.lane_is_intersection[lanes]
    map_data = MapData(
        lane_ids=m.lane_ids[lanes] if L else np.zeros(0, "<U1"), lane_centerlines=ragged(m.centerlines),
        lane_left_boundaries=ragged(m.left_boundaries), lane_right_boundaries=ragged(m.right_boundaries),
        lane_polygons=m.lanes.to_scene(lanes, origin_xy, origin_yaw),
        lane_speed_limits=np.full(L, np.nan, MAP_FLOAT), lane_is_connector=is_inter.copy(),
        lane_is_intersection=is_inter.copy(), lane_group=group, lane_successors=edges, lane_left_neighbor=left,
        lane_right_neighbor=right, lane_light_state=np.full((NUM_TIMES, L), LIGHT_NONE, np.int8),
        drivable_area=m.drivable_areas.to_scene(m.drivable_areas.intersecting(square), origin_xy, origin_yaw),
        intersections=m.intersections.to_scene(m.intersections.intersecting(square), origin_xy, origin_yaw),
        crosswalks=m.crosswalks.to_scene(m.crosswalks.intersecting(square), origin_xy, origin_yaw),
    )
    return map_data, to_scene


def route_and_command(route_map_lanes: Sequence[int], to_scene: np.ndarray, map_data: MapData,
                      future: np.ndarray) -> tuple[np.ndarray, int]:
    """The scene route (map lanes ``route_map_lanes`` as scene lane indices, truncated at the first lane outside the
    crop; ``to_scene`` from :func:`map_window`) and the command: :func:`route_command` on its centreline with
    look-ahead = the expert's 4 s path length (``future`` (8, 3) ego-frame poses), or the expert's lateral offset
    at 4 s without a route."""
    route_scene = to_scene[np.asarray(route_map_lanes, np.int64)] if len(route_map_lanes) else np.zeros(0, np.int64)
    outside = np.flatnonzero(route_scene < 0)
    route_scene = route_scene[:outside[0]] if len(outside) else route_scene
    lookahead = polyline_length(np.r_[np.zeros((1, 2)), future[:, :2]])
    route_centerline = concat_polylines([map_data.lane_centerlines[int(i)] for i in route_scene])
    command = (route_command(route_centerline, lookahead) if len(route_scene)
               else command_from_lateral(float(future[-1, 1])))
    return route_scene, command


def scenes_from_log(log: AV2Log, stride: int = 1, *, map_radius: float = 100.0) -> Iterator[Scene | SkippedItem]:
    """Yield one scene per 2 Hz window of ``log`` (see module docs), or a :class:`SkippedItem` for a window that
    fails validation; later windows continue."""
    for sweep in log.window_t0_sweeps(stride):
        try:
            yield _window_scene(log, int(sweep), float(map_radius))
        except (SceneValidationError, ValueError) as exc:
            yield SkippedItem(f"{log.log_dir} (sweep {int(sweep)})", str(exc),
                              reason=f"window failed ({type(exc).__name__})")


def _is_log_dir(path: Path) -> bool:
    return any((path / name).exists() for name in (POSE_FILE, *ANNOTATION_FILES, "map"))


def iter_scenes(path: str | Path, *, stride: int = 1, map_radius: float = 100.0) -> Iterator[Scene | SkippedItem]:
    """Scenes from one AV2 log directory, or from every log directory directly under ``path`` (sorted by name).

    A log that cannot be parsed yields one :class:`SkippedItem` (naming the file and field) and iteration goes on;
    a folder holding no log yields one :class:`SkippedItem` saying so. Raises FileNotFoundError if ``path`` does not
    exist.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: AV2 log directory or root not found")
    log_dirs = [path] if _is_log_dir(path) else sorted(p for p in path.iterdir() if p.is_dir() and _is_log_dir(p))
    if not log_dirs:  # an empty build must say why, not exit quietly
        hint = (" (it holds motion-forecasting scenarios: use --source av2-forecasting)"
                if any(path.rglob("scenario_*.parquet")) else "")
        yield SkippedItem(str(path), f"no AV2 sensor log here: no {POSE_FILE}, annotations or map/ in it or its "
                                     f"subfolders{hint}", reason="no sensor log found")
    for log_dir in log_dirs:
        try:
            log = load_log(log_dir)
        except (FileNotFoundError, ValueError) as exc:
            yield SkippedItem(str(log_dir), str(exc), reason="log unreadable")
            continue
        yield from scenes_from_log(log, stride, map_radius=map_radius)
