"""ScenarioNet / MetaDrive "scenario description" (SD) pickles -> canonical :class:`Scene` windows.

Works for files converted from nuScenes, Waymo (WOMD, current and old v0.3 layouts), nuPlan and Argoverse 2 by
ScenarioNet (format: ``../shared/docs/data-formats.md``, section 2). Pickles are only read through the restricted
unpickler (:func:`irlvla_gym.scenes.safe_pickle.load_pickle` with ``SCENARIONET_ALLOWLIST``).

Public API::

    iter_scenes(path, drivable_area=None, stride=1, map_radius=100.0)   # files / folders -> Scene | SkippedItem
                                            # drivable_area: GeoJSON file, or folder of <city>_drivable_area.json
    load_scenario(path) -> dict                                         # safe load + schema check
    scenes_from_scenario(scenario, drivable_area=None, ...)             # one scenario dict -> Scene | SkippedItem

Conversion rules (what the code below does, and why):

* **Windows.** The file's ``metadata.ts`` (10 Hz) is sampled at 2 Hz. A window at t0 needs the sdc valid at the 4
  history times t0 - 1.5 .. t0 and the 8 future times t0 + 0.5 .. t0 + 4.0 s. Candidate t0 lie on the grid
  ``ts[0] + k * 0.5 s`` (for nuScenes these are exactly the annotated keyframes; the 10 Hz steps between them are
  the converter's interpolation), starting at the first complete window, stepping by ``stride * 0.5`` s.
* **Ego reference point.** Scene poses are rear-axle poses. WOMD / nuPlan / AV2 sdc positions are box centres, so the
  ego is moved back by ``vehicle.rear_axle_to_center`` along its heading, consistently for history and future.
  nuScenes sdc positions are the nuScenes ``ego_pose`` translation, whose origin is already the rear-axle midpoint,
  so no shift is applied (``ego_reference="auto"``; override with ``"center"`` / ``"rear_axle"``).
* **Ego vehicle.** Length, width and height are the median of the sdc's valid sizes (the nuScenes converter swaps
  length and width of the ego: when length < width they are swapped back); overhangs and wheelbase keep the
  proportions of the default :class:`EgoVehicle` (Pacifica). nuPlan ``ego_vehicle_parameters`` are used if present.
* **Ego dynamics.** Velocity = the file's world velocity rotated into the body frame at each history time.
  Acceleration = backward difference of the world velocity over 0.5 s (forward difference at the first step of the
  file; no future information leaks into t0), rotated into the body frame and clipped to +-15 m/s^2.
* **Agents.** Every track but the sdc, at the 9 times t0 .. t0 + 4 s, in the t0 ego frame (box centres). Kept if it
  is valid and inside the ``map_radius`` square at one of those times. Missing / non-positive sizes get category
  defaults; steps with non-finite poses, speeds >= 70 m/s or sizes >= 40 m are marked invalid.
* **Errors.** A file that fails to load or the schema check -> one :class:`ScenarioNetFormatError` naming the file and
  the dotted field (``iter_scenes`` turns it into a :class:`SkippedItem` and goes on); a window that fails
  :class:`Scene` validation, or that the file spans but its sdc track does not cover -> a :class:`SkippedItem`
  ``<file>@t=<t0>s`` (with a ``reason`` the build report counts) and the next window: no window is dropped silently.
* **Not handled.** nuPlan-converted files are shifted by an unstored offset, so a GeoJSON drivable area in map
  coordinates will not line up with them; ROAD_EDGE / ROAD_LINE features are not used (no drivable-area or
  boundary-type information is derived from them); STOP_SIGN and SPEED_BUMP are ignored.
* **Map.** Lanes (``LANE_*``) keep their full centrelines (no cutting) if their polygon touches the ego-aligned square
  of half-size ``map_radius``. Boundaries: the centreline offset by per-vertex half widths, measured from the listed
  left/right boundary features (distance of each vertex to the boundary polyline), else the file's ``width`` column
  where it is > 0 (WOMD writes 0 for "unknown" at 10-42 % of vertices: never read as a width), else the file's lane
  ``polygon`` (normal rays through each vertex clipped by it), else half the spacing to a listed neighbour lane;
  gaps are interpolated along the lane, a lane recording nothing continues its predecessor's / successor's widths,
  and the rest gets the default half width 1.75 m (:func:`_lane_half_widths`). Lane polygon: the file's
  ``polygon`` when present (nuScenes lanes, nuPlan), else left boundary + reversed right boundary. Successors:
  ``exit_lanes`` plus reversed ``entry_lanes``; files without either (nuScenes) get them geometrically: end point
  of A within 0.5 m of the start of B and tangents within 60 degrees. Neighbours from ``left_neighbor`` /
  ``right_neighbor`` (the one covering most of the lane); files without any (nuScenes) get them geometrically (a
  same-direction centreline 2-5 m to the side of the lane's midpoint, not successor-linked). ``lane_group``:
  connected components of the neighbour relation (a lane without neighbours is its own group). Connectors:
  ``LANE_SURFACE_UNSTRUCTURE`` (nuPlan), and for nuScenes the lane features without a ``polygon`` (the converter
  writes nuScenes lane connectors that way, with a placeholder 100 km/h limit that is therefore dropped to NaN).
  ``lane_is_intersection``: the connectors if the file has any, else (WOMD) lanes entered from a fork (a
  predecessor with >= 2 successors) or leading into a merge (a successor with >= 2 predecessors).
  ``intersections``: union of the intersection lanes' polygons (morphological closing, 0.5 m). Crosswalks:
  CROSSWALK / CROSS_WALK polygons.
* **Drivable area.** A user GeoJSON (Polygon / MultiPolygon / Feature(Collection), same map frame) when given (the
  nuScenes files have no drivable polygons): one file, or a folder of ``<city>_drivable_area.json`` files from which
  the scenario's metadata city (``map``: 'boston-seaport', 'singapore-onenorth', ...) picks one
  (:class:`CityDrivableAreas`); a file of another city, or a folder without the scenario's city, is a
  :class:`DrivableAreaCityError` naming both (a scenario naming no city takes the single file as is). Otherwise the
  union of the lane polygons and DRIVEWAY polygons closed with a 0.5 m buffer (fills slivers between adjacent lanes
  without growing the outline). Clipped to the square.
* **Traffic lights.** ``dynamic_map_states`` (current and old v0.3 layouts, Waymo enum ints or strings, nuPlan
  TRAFFIC_LIGHT_*) -> ``lane_light_state`` at the 9 times; several lights on one lane -> the most restrictive.
* **Route.** The sdc's logged rear-axle path from t0 to the end of the file is matched to lanes: each point's
  candidate lanes are those whose polygon contains it with a heading within 60 degrees; the walk stays in the
  current lane while it can, then prefers a successor of it, then the lane the path stays in longest. The route is
  extended ahead through successors (the straightest one) up to 150 m of centreline beyond the ego. Command:
  :func:`route_command` with look-ahead max(expert 4 s path length, 10 m); if no route was found, the expert's
  lateral displacement at 4 s decides.
* **Ids.** Map and track keys are str; entry/exit/neighbour ids may be int: everything is compared through ``str``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from irlvla_gym.geometry import arc_length, polyline_length
from irlvla_gym.scenes.geometry import rotate_vectors, to_local
from irlvla_gym.scenes.safe_pickle import SCENARIONET_ALLOWLIST, UnsafePickleError, load_pickle
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, BARRIER, BICYCLE, DT, GENERIC_OBJECT, LIGHT_GREEN, LIGHT_NONE, LIGHT_RED, LIGHT_YELLOW,
    MAX_BOX_SIZE, MAX_SPEED, NUM_FUTURE, NUM_HISTORY, NUM_TIMES, PACIFICA, PEDESTRIAN, TRAFFIC_CONE, VEHICLE, Agents,
    EgoState, EgoVehicle, MapData, PolygonSet, Ragged, Scene, SceneMetadata, command_from_lateral, route_command,
    wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

__all__ = [
    "ScenarioNetFormatError", "iter_scenes", "load_scenario", "check_scenario", "scenes_from_scenario",
    "load_drivable_area", "NON_SCENARIO_FILES", "DEFAULT_HALF_WIDTH", "CityDrivableAreas", "DrivableAreaCityError",
    "scenario_city", "drivable_area_city", "city_matches", "DRIVABLE_AREA_SUFFIX", "scenario_files",
]

NON_SCENARIO_FILES = frozenset({"dataset_summary.pkl", "dataset_mapping.pkl"})
"""File names in a ScenarioNet folder that are indexes, not scenarios."""
DEFAULT_HALF_WIDTH = 1.75
"""Half lane width (m) used when neither a lane nor its predecessors / successors record a width."""
MIN_HALF_WIDTH, MAX_HALF_WIDTH = 0.5, 5.0
"""Range (m) measured half widths are clipped to (a value outside it is a converter artefact)."""
NEIGHBOUR_SPACING = (2.4, 7.0)
"""Centreline spacing (m) to a listed neighbour lane accepted as two lane half widths."""
ROUTE_AHEAD_M = 150.0
"""Route centreline length (m) kept beyond the ego's t0 position when extending through successors."""
_MAX_ACCEL = 15.0  # m/s^2, clip for finite-difference ego acceleration
_HEADING_TOL = math.radians(60.0)
_SUCC_DIST = 0.5  # m, geometric successor inference
_CLOSING = 0.5  # m, morphological closing of unions of lane polygons

_TRACK_CATEGORY = {
    "VEHICLE": VEHICLE, "PEDESTRIAN": PEDESTRIAN, "CYCLIST": BICYCLE, "TRAFFIC_CONE": TRAFFIC_CONE,
    "TRAFFIC_BARRIER": BARRIER, "OTHER": GENERIC_OBJECT, "TRAFFIC_OBJECT": GENERIC_OBJECT,
}
_DEFAULT_SIZE = np.array([  # (6, 3) [length, width, height] per AGENT_CATEGORIES entry
    [4.5, 2.0, 1.6], [0.6, 0.6, 1.7], [1.8, 0.7, 1.5], [0.4, 0.4, 0.8], [2.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
assert len(_DEFAULT_SIZE) == len(AGENT_CATEGORIES)

_WAYMO_ENUM = ("LANE_STATE_UNKNOWN", "LANE_STATE_ARROW_STOP", "LANE_STATE_ARROW_CAUTION", "LANE_STATE_ARROW_GO",
               "LANE_STATE_STOP", "LANE_STATE_CAUTION", "LANE_STATE_GO", "LANE_STATE_FLASHING_STOP",
               "LANE_STATE_FLASHING_CAUTION")
_LIGHT_COLOUR = {
    "LANE_STATE_STOP": LIGHT_RED, "LANE_STATE_ARROW_STOP": LIGHT_RED,
    "LANE_STATE_CAUTION": LIGHT_YELLOW, "LANE_STATE_ARROW_CAUTION": LIGHT_YELLOW,
    "LANE_STATE_FLASHING_CAUTION": LIGHT_YELLOW,
    "LANE_STATE_GO": LIGHT_GREEN, "LANE_STATE_ARROW_GO": LIGHT_GREEN,
    "LANE_STATE_UNKNOWN": LIGHT_NONE, "LANE_STATE_FLASHING_STOP": LIGHT_NONE,
    "TRAFFIC_LIGHT_RED": LIGHT_RED, "TRAFFIC_LIGHT_YELLOW": LIGHT_YELLOW, "TRAFFIC_LIGHT_GREEN": LIGHT_GREEN,
    "TRAFFIC_LIGHT_UNKNOWN": LIGHT_NONE,
}

_LICENCES = {
    "nuscenes": "CC BY-NC-SA 4.0 (nuScenes via ScenarioNet)",
    "waymo": "Waymo Open Dataset License Agreement, non-commercial (WOMD via ScenarioNet)",
    "nuplan": "nuPlan dataset licence, non-commercial (nuPlan via ScenarioNet)",
    "av2": "CC BY-NC-SA 4.0 (Argoverse 2 via ScenarioNet)",
}


class ScenarioNetFormatError(ValueError):
    """A ScenarioNet file is unreadable or does not match the expected schema. Names the file and the field."""

    def __init__(self, source: str, field_name: str, problem: str):
        self.source = source
        self.field = field_name
        self.problem = problem
        super().__init__(f"{source}: field {field_name!r}: {problem}")


# ====================================================================================================================
# Loading and schema check
# ====================================================================================================================


def load_scenario(path: str | os.PathLike) -> dict:
    """Load one ScenarioNet scenario pickle safely and check its schema.

    Raises:
        ScenarioNetFormatError: not a readable pickle, refused by the restricted unpickler, or a required key is
            missing / malformed. The message names the file and the field.
    """
    path = Path(path)
    try:
        scenario = load_pickle(path, SCENARIONET_ALLOWLIST)
    except UnsafePickleError as exc:
        raise ScenarioNetFormatError(str(path), "<pickle>", f"unsafe pickle refused: {exc}") from None
    except (FileNotFoundError, ValueError) as exc:
        raise ScenarioNetFormatError(str(path), "<pickle>", str(exc).replace(f"{path}: ", "")) from None
    except Exception as exc:  # noqa: BLE001 - anything else a corrupt stream can raise (MemoryError excluded)
        raise ScenarioNetFormatError(str(path), "<pickle>", f"not a readable pickle ({type(exc).__name__}: {exc})")
    check_scenario(scenario, str(path))
    return scenario


def _require(d: Any, key: str, where: str, source: str) -> Any:
    if not isinstance(d, Mapping):
        raise ScenarioNetFormatError(source, where, f"expected a dict, got {type(d).__name__}")
    if key not in d:
        raise ScenarioNetFormatError(source, f"{where}.{key}" if where else key, "missing")
    return d[key]


def check_scenario(scenario: Any, source: str = "<scenario>") -> None:
    """Check the parts of the schema the converter relies on; raise :class:`ScenarioNetFormatError` on the first
    problem (naming ``source`` and the dotted field path)."""
    if not isinstance(scenario, Mapping):
        raise ScenarioNetFormatError(source, "<top level>", f"expected a dict, got {type(scenario).__name__}")
    meta = _require(scenario, "metadata", "", source)
    tracks = _require(scenario, "tracks", "", source)
    mf = _require(scenario, "map_features", "", source)
    if not isinstance(tracks, Mapping):
        raise ScenarioNetFormatError(source, "tracks", f"expected a dict, got {type(tracks).__name__}")
    if not isinstance(mf, Mapping):
        raise ScenarioNetFormatError(source, "map_features", f"expected a dict, got {type(mf).__name__}")
    dyn = scenario.get("dynamic_map_states", {})
    if dyn is not None and not isinstance(dyn, Mapping):
        raise ScenarioNetFormatError(source, "dynamic_map_states", f"expected a dict, got {type(dyn).__name__}")
    ts = np.asarray(_require(meta, "ts", "metadata", source))
    if ts.ndim != 1 or len(ts) < 2 or ts.dtype.kind not in "fiu" or not np.all(np.isfinite(ts)):
        raise ScenarioNetFormatError(source, "metadata.ts", f"expected a finite (T,) number array, got {ts.shape}")
    if np.any(np.diff(ts) <= 0):
        raise ScenarioNetFormatError(source, "metadata.ts", "timestamps must increase strictly")
    T = len(ts)
    sdc_id = _require(meta, "sdc_id", "metadata", source)
    coord = meta.get("coordinate", "right-handed")
    if coord not in ("right-handed", "waymo"):
        raise ScenarioNetFormatError(source, "metadata.coordinate", f"unsupported coordinate system {coord!r}")
    if str(sdc_id) not in {str(k) for k in tracks}:
        raise ScenarioNetFormatError(source, "metadata.sdc_id", f"{sdc_id!r} is not a key of 'tracks'")
    for tid, track in tracks.items():
        where = f"tracks[{tid!r}]"
        _require(track, "type", where, source)
        state = _require(track, "state", where, source)
        for key, min_cols in (("position", 2), ("heading", 1), ("valid", 1)):
            arr = np.asarray(_require(state, key, f"{where}.state", source))
            cols = arr.shape[1] if arr.ndim == 2 else 1
            ok = arr.ndim in (1, 2) and len(arr) == T and (cols >= min_cols if key == "position" else cols == 1)
            if not ok or arr.dtype.kind not in "fiub":
                raise ScenarioNetFormatError(source, f"{where}.state.{key}",
                                             f"expected a ({T}{', >=2' if key == 'position' else ''}) number array, "
                                             f"got {arr.shape} {arr.dtype}")
        if not any(k in state for k in ("length", "size")):
            raise ScenarioNetFormatError(source, f"{where}.state.length", "missing (and no 'size' column)")
    sdc = _find(tracks, sdc_id)["state"]
    valid = np.asarray(sdc["valid"]).astype(bool)
    pos = np.asarray(sdc["position"], dtype=np.float64)[:, :2]
    head = np.asarray(sdc["heading"], dtype=np.float64).reshape(T)
    bad = valid & ~(np.isfinite(pos).all(1) & np.isfinite(head))
    if bad.any():
        raise ScenarioNetFormatError(source, f"tracks[{sdc_id!r}].state.position",
                                     f"non-finite sdc pose at valid step {int(np.argmax(bad))}")
    for fid, feat in mf.items():
        ftype = _require(feat, "type", f"map_features[{fid!r}]", source)
        if str(ftype).startswith("LANE"):
            line = _require(feat, "polyline", f"map_features[{fid!r}]", source)
            arr = np.asarray(line, dtype=object if not len(line) else None)
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise ScenarioNetFormatError(source, f"map_features[{fid!r}].polyline",
                                             f"expected an (N, >=2) array, got shape {arr.shape}")


def _find(d: Mapping, key: Any) -> Any:
    if key in d:
        return d[key]
    skey = str(key)
    for k, v in d.items():
        if str(k) == skey:
            return v
    raise KeyError(key)


# ====================================================================================================================
# Tracks
# ====================================================================================================================


@dataclass
class _Tracks:
    """All tracks as dense arrays over the file's T steps (world frame).

    ids (N,) str; category (N,) int8; xy (N, T, 2) m; heading (N, T) rad (unwrapped as in the file);
    velocity (N, T, 2) m/s; size (N, T, 3) [length, width, height] m; valid (N, T) bool.
    """

    ids: np.ndarray
    category: np.ndarray
    xy: np.ndarray
    heading: np.ndarray
    velocity: np.ndarray
    size: np.ndarray
    valid: np.ndarray


def _size_columns(state: Mapping, T: int) -> np.ndarray:
    """(T, 3) [length, width, height] from length/width/height columns ((T,1) or (T,)) or a ``size`` (T,3)."""
    out = np.full((T, 3), np.nan)
    if "size" in state:
        s = np.asarray(state["size"], dtype=np.float64).reshape(T, -1)
        out[:, :min(3, s.shape[1])] = s[:, :3]
    for j, key in enumerate(("length", "width", "height")):
        if key in state:
            out[:, j] = np.asarray(state[key], dtype=np.float64).reshape(T, -1)[:, 0]
    return out


def _read_tracks(tracks: Mapping, T: int, ts: np.ndarray) -> _Tracks:
    ids = list(tracks.keys())
    N = len(ids)
    xy = np.zeros((N, T, 2))
    heading = np.zeros((N, T))
    vel = np.zeros((N, T, 2))
    size = np.zeros((N, T, 3))
    valid = np.zeros((N, T), bool)
    cat = np.zeros(N, np.int8)
    for n, tid in enumerate(ids):
        tr = tracks[tid]
        st = tr["state"]
        xy[n] = np.asarray(st["position"], dtype=np.float64)[:, :2]
        heading[n] = np.asarray(st["heading"], dtype=np.float64).reshape(T)
        valid[n] = np.asarray(st["valid"]).reshape(T).astype(bool)
        size[n] = _size_columns(st, T)
        cat[n] = _TRACK_CATEGORY.get(str(tr.get("type", "OTHER")).upper(), GENERIC_OBJECT)
        if "velocity" in st:
            vel[n] = np.asarray(st["velocity"], dtype=np.float64).reshape(T, -1)[:, :2]
        else:
            vel[n] = np.gradient(xy[n], ts, axis=0)
    valid &= np.isfinite(xy).all(-1) & np.isfinite(heading)
    # Velocity: finite differences where the file's value is unusable.
    badv = ~np.isfinite(vel).all(-1)
    if badv.any():
        fd = np.gradient(np.nan_to_num(xy), ts, axis=1)
        vel[badv] = fd[badv]
    # Sizes: category defaults where missing or non-positive.
    bads = ~(np.isfinite(size) & (size > 0))
    size = np.where(bads, _DEFAULT_SIZE[cat][:, None, :], size)
    return _Tracks(np.asarray([str(i) for i in ids]), cat, xy, heading, vel, size, valid)


# ====================================================================================================================
# Map (world frame, built once per scenario)
# ====================================================================================================================


@dataclass
class _WorldMap:
    """The scenario's map in the world frame, with the indexes needed to crop it per window."""

    lane_ids: np.ndarray  # (L,) str
    centerlines: Ragged  # L polylines, packed (float64 world coordinates)
    lefts: Ragged
    rights: Ragged
    rings: Ragged  # L lane polygon exteriors (open rings)
    polygons: np.ndarray  # (L,) shapely Polygons
    tree: Any  # STRtree over polygons
    speed: np.ndarray  # (L,) m/s, NaN unknown
    is_connector: np.ndarray  # (L,) bool
    is_intersection: np.ndarray  # (L,) bool
    group: np.ndarray  # (L,) int64 lane-group (roadblock) index from neighbour components
    successors: np.ndarray  # (E, 2) int64
    left_nb: np.ndarray  # (L,) int64
    right_nb: np.ndarray
    light: np.ndarray  # (T, L) int8
    crosswalks: list  # shapely Polygons
    drivable: Any  # shapely geometry or None
    intersections: Any  # shapely geometry or None


def _as_xy(a: Any) -> np.ndarray:
    """(n, 2) float64 from an array or a list of lists/tuples; extra columns (z, or nuScenes yaw) dropped."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        return np.zeros((0, 2))
    arr = arr[:, :2]
    return arr[np.isfinite(arr).all(1)]


def _dedup(line: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    if len(line) < 2:
        return line
    keep = np.r_[True, np.linalg.norm(np.diff(line, axis=0), axis=1) > tol]
    return line[keep]


def _normals(line: np.ndarray) -> np.ndarray:
    """(n, 2) unit left normals of a polyline (tangent by central differences)."""
    t = np.gradient(line, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _speed_limit(feat: Mapping) -> float:
    for key, scale in (("speed_limit_mps", 1.0), ("speed_limit_kmh", 1 / 3.6), ("speed_limit_mph", 0.44704)):
        v = feat.get(key)
        if v is None:
            continue
        try:
            v = float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) * scale
        except (TypeError, ValueError, IndexError):
            continue
        if np.isfinite(v) and 0 < v <= 60:
            return v
    return float("nan")


def _id_list(value: Any) -> list[str]:
    """Ids from a list of str/int, a list of neighbour dicts (feature_id) or a single value, as str."""
    if value is None:
        return []
    if isinstance(value, (str, int, np.integer)):
        return [str(value)]
    if isinstance(value, Mapping):
        value = [value]
    out = []
    for v in np.asarray(value, dtype=object).reshape(-1) if not isinstance(value, list) else value:
        if isinstance(v, Mapping):
            if "feature_id" in v:
                out.append(str(v["feature_id"]))
        elif v is not None:
            out.append(str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v))
    return out


def _widths_from_boundaries(line: np.ndarray, entries: Any, features: Mapping) -> np.ndarray:
    """(n,) per-vertex distance (m) to the boundary features listed in ``entries`` (NaN where not covered)."""
    import shapely

    out = np.full(len(line), np.nan)
    if not entries:
        return out
    if isinstance(entries, Mapping):
        entries = [entries]
    pts = shapely.points(line)
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        try:
            feat = _find(features, e.get("boundary_feature_id"))
        except KeyError:
            continue
        bl = _as_xy(feat.get("polyline", feat.get("polygon", [])))
        if len(bl) < 2:
            continue
        try:
            i0 = int(float(e.get("lane_start_index", 0)))
            i1 = int(float(e.get("lane_end_index", len(line) - 1)))
        except (TypeError, ValueError):
            i0, i1 = 0, len(line) - 1
        i0, i1 = max(0, i0), min(len(line) - 1, i1)
        if i1 < i0:
            continue
        out[i0:i1 + 1] = shapely.distance(pts[i0:i1 + 1], shapely.linestrings(bl))
    return out


def _widths_from_polygon(line: np.ndarray, poly: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n,), (n,) left/right distances (m) from each vertex to the lane polygon along the vertex normal."""
    import shapely

    n = _normals(line)
    reach = 8.0
    rays = shapely.linestrings(np.stack([line - reach * n, line + reach * n], axis=1))
    inter = shapely.intersection(rays, poly)
    coords, idx = shapely.get_coordinates(inter, return_index=True)
    left = np.full(len(line), np.nan)
    right = np.full(len(line), np.nan)
    if len(coords):
        s = np.einsum("ij,ij->i", coords - line[idx], n[idx])
        lmax = np.full(len(line), -np.inf)
        rmin = np.full(len(line), np.inf)
        np.maximum.at(lmax, idx, s)
        np.minimum.at(rmin, idx, s)
        ok = np.isfinite(lmax) & (lmax > 0.2) & (lmax < reach - 0.01)
        left[ok] = lmax[ok]
        ok = np.isfinite(rmin) & (rmin < -0.2) & (rmin > -reach + 0.01)
        right[ok] = -rmin[ok]
    return left, right


def _fill(w: np.ndarray, default: float = DEFAULT_HALF_WIDTH) -> np.ndarray:
    """Fill NaN widths by interpolation between known vertices (``default`` if none), clipped to
    [MIN_HALF_WIDTH, MAX_HALF_WIDTH] m."""
    ok = np.isfinite(w)
    if not ok.any():
        return np.full(len(w), default)
    if not ok.all():
        i = np.arange(len(w))
        w = np.interp(i, i[ok], w[ok])
    return np.clip(w, MIN_HALF_WIDTH, MAX_HALF_WIDTH)


def _widths_from_neighbours(line: np.ndarray, entries: Any, features: Mapping) -> np.ndarray:
    """(n,) half the distance (m) from each vertex to the centreline of the same-direction neighbour lanes listed in
    ``entries`` (WOMD ``left_neighbor`` / ``right_neighbor`` dicts with self_start_index / self_end_index); NaN where
    no neighbour covers the vertex or the spacing is implausible for two adjacent lanes (outside
    NEIGHBOUR_SPACING m)."""
    import shapely

    out = np.full(len(line), np.nan)
    if not entries:
        return out
    pts = shapely.points(line)
    for e in [entries] if isinstance(entries, Mapping) else entries:
        if not isinstance(e, Mapping):
            continue
        try:
            other = _as_xy(_find(features, e.get("feature_id")).get("polyline", []))
            i0 = int(float(e.get("self_start_index", 0)))
            i1 = int(float(e.get("self_end_index", len(line) - 1)))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        i0, i1 = max(0, i0), min(len(line) - 1, i1)
        if len(other) < 2 or i1 < i0:
            continue
        spacing = shapely.distance(pts[i0:i1 + 1], shapely.linestrings(other))
        lo, hi = NEIGHBOUR_SPACING
        half = np.where((spacing >= lo) & (spacing <= hi), 0.5 * spacing, np.nan)
        out[i0:i1 + 1] = np.where(np.isnan(out[i0:i1 + 1]), half, out[i0:i1 + 1])
    return out


def _width_column(f: Mapping, line: np.ndarray, source: str, fid: str) -> np.ndarray | None:
    """(n, 2) [left, right] half widths (m) from the feature's ``width`` column resized to the de-duplicated
    centreline, NaN where the file says ``<= 0`` (WOMD: no boundary covers that vertex, i.e. unknown); None if the
    feature has no such column."""
    if "width" not in f or not np.asarray(f["width"]).size:
        return None
    raw = np.asarray(f["width"], dtype=np.float64)
    n_raw = len(f["polyline"])  # one width row per stored polyline vertex
    if raw.size % max(n_raw, 1):
        raise ScenarioNetFormatError(source, f"map_features[{fid!r}].width",
                                     f"expected ({n_raw}, 2) or ({n_raw},) half widths, got shape {raw.shape}")
    w = raw.reshape(n_raw, -1)
    w = w[: len(line)] if len(w) >= len(line) else np.resize(w, (len(line), w.shape[1]))
    w = np.stack([w[:, 0], w[:, -1]], axis=1)
    return np.where(np.isfinite(w) & (w > 0), w, np.nan)


def _polygon_exterior(geom: Any) -> Any:
    """A valid single shapely Polygon from a possibly invalid / multi geometry (largest part)."""
    import shapely

    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type != "Polygon":
        parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and not g.is_empty]
        if not parts:
            return None
        geom = max(parts, key=lambda g: g.area)
    return geom if not geom.is_empty and geom.area > 1e-3 else None


def _closing(geoms: Sequence, d: float = _CLOSING) -> Any:
    """Union of polygons with a morphological closing of ``d`` m (fills slivers, keeps the outline)."""
    import shapely

    if not len(geoms):
        return None
    u = shapely.unary_union(shapely.buffer(np.asarray(geoms, dtype=object), d, join_style="mitre"))
    return shapely.buffer(u, -d, join_style="mitre")


def _light_colours(values: Any) -> np.ndarray:
    """Map a (T,) sequence of light states (str, None, or Waymo enum ints) to LIGHT_* indices."""
    arr = np.asarray(values, dtype=object).reshape(-1)
    out = np.zeros(len(arr), np.int8)
    for i, v in enumerate(arr):
        if v is None:
            continue
        if isinstance(v, (int, np.integer, float, np.floating)):
            k = int(v)
            v = _WAYMO_ENUM[k] if 0 <= k < len(_WAYMO_ENUM) else None
        out[i] = _LIGHT_COLOUR.get(str(v).upper(), LIGHT_NONE) if v is not None else LIGHT_NONE
    return out


def _build_world_map(scn: Mapping, T: int, drivable: Any, source: str) -> _WorldMap:
    """The scenario's lanes (with successors, neighbours, groups, connector / intersection flags and (T, L) light
    states), crosswalks, drivable area and intersections in the world frame. ``drivable``: a shapely geometry, or
    None to build it from the lane and driveway polygons."""
    import shapely

    dataset = str(scn["metadata"].get("dataset", "")).lower()
    features: Mapping = scn["map_features"]
    lanes = _read_lanes(features, "nuscenes" in dataset, source)
    ids, cls, polys, feats = lanes["ids"], lanes["centerlines"], lanes["polygons"], lanes["features"]
    L = len(ids)
    index = {k: i for i, k in enumerate(ids)}
    succ = _lane_successors(feats, cls, index)
    left_nb, right_nb = _file_neighbours(feats, index)
    if L and not any(("left_neighbor" in f) or ("right_neighbor" in f) for f in feats):
        left_nb, right_nb = _infer_neighbours(cls, succ)
    group = _neighbour_groups(left_nb, right_nb)
    is_conn = np.asarray(lanes["connector"], bool)
    is_inter = _intersection_lanes(is_conn, succ, L)
    light = _lane_lights(scn.get("dynamic_map_states") or {}, index, T, L)
    crosswalks, driveways = _crosswalks_and_driveways(features)
    polygons = np.asarray(polys, dtype=object)
    if drivable is None:
        drivable = _closing(list(polys) + driveways)
    inter_polys = [p for p, m in zip(polys, is_inter) if m]
    intersections = _closing(inter_polys) if inter_polys else None
    return _WorldMap(
        lane_ids=np.asarray(ids, dtype=str) if L else np.zeros(0, "<U1"), centerlines=_pack(cls),
        lefts=_pack(lanes["lefts"]), rights=_pack(lanes["rights"]), rings=_pack(lanes["rings"]), polygons=polygons,
        tree=shapely.STRtree(polygons), speed=np.asarray(lanes["speed"], np.float32), is_connector=is_conn,
        is_intersection=is_inter, group=group, successors=succ, left_nb=left_nb, right_nb=right_nb, light=light,
        crosswalks=crosswalks, drivable=drivable, intersections=intersections)


def _read_lanes(features: Mapping, is_nuscenes: bool, source: str = "<scenario>") -> dict[str, list]:
    """The usable LANE* features in file order (centreline of >= 2 distinct points and a valid polygon), as parallel
    lists: ids (str), centerlines / lefts / rights ((n, 2) float64, world m), polygons (shapely, from the file or
    the boundaries), rings ((m, 2) open exteriors), speed (m/s, NaN unknown), connector (bool), features (the raw
    feature mappings). Half widths: :func:`_lane_half_widths`."""
    from shapely.geometry import Polygon

    lane_items = [(str(k), f) for k, f in features.items() if str(f.get("type", "")).startswith("LANE")]
    any_polygon = any("polygon" in f for _, f in lane_items)
    cands: list[tuple[str, Mapping, np.ndarray, Any]] = []  # (id, feature, centreline, file polygon or None)
    for fid, f in lane_items:
        line = _dedup(_as_xy(f["polyline"]))
        if len(line) < 2:
            continue
        file_poly = None
        if "polygon" in f:
            ring = _as_xy(f["polygon"])
            if len(ring) >= 3:
                file_poly = _polygon_exterior(Polygon(ring))
        cands.append((fid, f, line, file_poly))
    widths = _lane_half_widths(cands, features, source)
    out: dict[str, list] = {k: [] for k in ("ids", "centerlines", "lefts", "rights", "rings", "polygons", "speed",
                                            "connector", "features")}
    for (fid, f, line, file_poly), (wl, wr) in zip(cands, widths):
        n = _normals(line)
        left, right = line + wl[:, None] * n, line - wr[:, None] * n
        poly = file_poly if file_poly is not None else _polygon_exterior(
            Polygon(np.concatenate([left, right[::-1]])))
        if poly is None:
            continue
        is_conn = str(f["type"]) == "LANE_SURFACE_UNSTRUCTURE" or (is_nuscenes and any_polygon and "polygon" not in f)
        sp = _speed_limit(f)
        if is_nuscenes and is_conn:
            sp = float("nan")  # the nuScenes converter writes a placeholder 100 km/h on every lane connector
        for key, value in (("ids", fid), ("centerlines", line), ("lefts", left), ("rights", right),
                           ("polygons", poly), ("rings", np.asarray(poly.exterior.coords)[:-1, :2]), ("speed", sp),
                           ("connector", is_conn), ("features", f)):
            out[key].append(value)
    return out


def _measured_half_widths(f: Mapping, fid: str, line: np.ndarray, features: Mapping, file_poly: Any,
                          source: str) -> np.ndarray:
    """(n, 2) [left, right] half widths (m) at the n vertices of ``line`` from what the lane itself records, NaN
    where nothing does. Sources, best first: the distance to the listed boundary features; the file's ``width``
    column (WOMD writes an index-matched distance there, which is off by metres where the boundary's vertex spacing
    differs, and 0 = unknown); the lane polygon; half the spacing to a listed same-direction neighbour lane.
    Finally, for a lane without a polygon, a side with no value at a vertex takes the other side's (a lane is about
    symmetric; the WOMD converter does the same)."""
    w = np.stack([_widths_from_boundaries(line, f.get("left_boundaries"), features),
                  _widths_from_boundaries(line, f.get("right_boundaries"), features)], axis=1)
    column = _width_column(f, line, source, fid)
    if column is not None:
        w = np.where(np.isnan(w), column, w)
    if file_poly is not None and np.isnan(w).any():
        w = np.where(np.isnan(w), np.stack(_widths_from_polygon(line, file_poly), axis=1), w)
    if np.isnan(w).any():
        w = np.where(np.isnan(w), np.stack([_widths_from_neighbours(line, f.get("left_neighbor"), features),
                                            _widths_from_neighbours(line, f.get("right_neighbor"), features)], 1), w)
    if file_poly is None:  # with a polygon, the polygon is the lane; a missing ray keeps being interpolated
        w = np.where(np.isnan(w), w[:, ::-1], w)
    return w


def _lane_half_widths(cands: Sequence[tuple[str, Mapping, np.ndarray, Any]], features: Mapping, source: str
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Left and right half widths ((n,), (n,) m) of each candidate lane ``(id, feature, centreline, file polygon)``.

    Widths the lane records (:func:`_measured_half_widths`) are interpolated along the lane to its unknown vertices.
    A lane that records none on a side continues its lane graph neighbours: the predecessor's end width and the
    successor's start width, interpolated along its arc length (repeated so chains of unknown lanes fill from both
    ends); what is still unknown gets :data:`DEFAULT_HALF_WIDTH`. Unknown is never read as 0: WOMD writes 0 for
    10-42 % of vertices and a 0.5 m floor there made ~1 m lane strips with holes. Lanes with a polygon (nuScenes,
    nuPlan) are not continued from: ray distances to a polygon measure its outline (flared at junctions, the
    centreline off-centre), not a lane width, and nuScenes connectors keep the default.
    """
    measured = [_measured_half_widths(f, fid, line, features, poly, source) for fid, f, line, poly in cands]
    known = [np.column_stack([_interp_nan(w[:, 0]), _interp_nan(w[:, 1])]) for w in measured]
    donor = [poly is None for _, _, _, poly in cands]
    succ = _lane_successors([c[1] for c in cands], [c[2] for c in cands], {c[0]: i for i, c in enumerate(cands)})
    preds: list[list[int]] = [[] for _ in cands]
    nexts: list[list[int]] = [[] for _ in cands]
    for a, b in succ:
        nexts[int(a)].append(int(b))
        preds[int(b)].append(int(a))
    for _ in range(3):  # a few sweeps: lanes filled in one sweep pass their widths on along chains of unknown lanes
        changed = False
        for i, (_, _, line, _) in enumerate(cands):
            for side in (0, 1):
                if np.isfinite(known[i][:, side]).any():
                    continue
                start = [known[j][-1, side] for j in preds[i] if donor[j] and np.isfinite(known[j][-1, side])]
                end = [known[j][0, side] for j in nexts[i] if donor[j] and np.isfinite(known[j][0, side])]
                if not start and not end:
                    continue
                a = float(np.mean(start)) if start else float(np.mean(end))
                b = float(np.mean(end)) if end else a
                s = arc_length(line)
                known[i][:, side] = a + (b - a) * s / max(s[-1], 1e-9)
                changed = True
        if not changed:
            break
    return [(_fill(w[:, 0]), _fill(w[:, 1])) for w in known]


def _interp_nan(w: np.ndarray) -> np.ndarray:
    """Interpolate NaN entries of ``w`` (n,) between its finite ones (held constant past the ends); all-NaN stays."""
    ok = np.isfinite(w)
    if ok.all() or not ok.any():
        return w.copy()
    i = np.arange(len(w))
    return np.interp(i, i[ok], w[ok])


def _lane_successors(feats: list, cls: list, index: Mapping[str, int]) -> np.ndarray:
    """(E, 2) int64 sorted successor edges [from, to] between lanes: from the files' exit / entry lanes when any lane
    has them, else geometric (a centreline starting within _SUCC_DIST m of another's end, heading within
    _HEADING_TOL)."""
    L = len(cls)
    has_graph = any(("exit_lanes" in f) or ("entry_lanes" in f) for f in feats)
    edges: set[tuple[int, int]] = set()
    if has_graph:
        for i, f in enumerate(feats):
            for s in _id_list(f.get("exit_lanes")):
                if s in index and index[s] != i:
                    edges.add((i, index[s]))
            for p in _id_list(f.get("entry_lanes")):
                if p in index and index[p] != i:
                    edges.add((index[p], i))
    elif L:
        from scipy.spatial import cKDTree

        starts = np.array([c[0] for c in cls])
        ends = np.array([c[-1] for c in cls])
        h_start = np.array([math.atan2(*(c[1] - c[0])[::-1]) for c in cls])
        h_end = np.array([math.atan2(*(c[-1] - c[-2])[::-1]) for c in cls])
        for a, bs in enumerate(cKDTree(starts).query_ball_point(ends, _SUCC_DIST)):
            for b in bs:
                if b != a and abs(wrap_angle(h_start[b] - h_end[a])) < _HEADING_TOL:
                    edges.add((a, b))
    return np.array(sorted(edges), np.int64).reshape(-1, 2)


def _file_neighbours(feats: list, index: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(L,) int64 left and right neighbour lanes from the files' left_neighbor / right_neighbor entries (the one
    spanning most of the lane; -1 = none)."""
    L = len(feats)
    left_nb = -np.ones(L, np.int64)
    right_nb = -np.ones(L, np.int64)
    for i, f in enumerate(feats):
        for key, arr in (("left_neighbor", left_nb), ("right_neighbor", right_nb)):
            val = f.get(key)
            if not val:
                continue
            entries = [val] if isinstance(val, Mapping) else list(val)
            best, best_len = -1, -1.0
            for e in entries:
                nid = _id_list(e)
                if not nid or nid[0] not in index or index[nid[0]] == i:
                    continue
                span = 0.0
                if isinstance(e, Mapping):
                    try:
                        span = float(e.get("self_end_index", 0)) - float(e.get("self_start_index", 0))
                    except (TypeError, ValueError):
                        span = 0.0
                if span > best_len:
                    best, best_len = index[nid[0]], span
            arr[i] = best
    return left_nb, right_nb


def _intersection_lanes(is_conn: np.ndarray, succ: np.ndarray, L: int) -> np.ndarray:
    """(L,) bool lanes inside intersections: the connectors when the file marks any (or there is no lane graph),
    else the lanes entered from a fork or leading into a merge."""
    if is_conn.any() or not len(succ):
        return is_conn.copy()
    n_succ = np.bincount(succ[:, 0], minlength=L)
    n_pred = np.bincount(succ[:, 1], minlength=L)
    is_inter = np.zeros(L, bool)
    is_inter[succ[n_succ[succ[:, 0]] >= 2, 1]] = True  # entered from a fork
    is_inter[succ[n_pred[succ[:, 1]] >= 2, 0]] = True  # leads into a merge
    return is_inter


def _lane_lights(states: Mapping, index: Mapping[str, int], T: int, L: int) -> np.ndarray:
    """(T, L) int8 light state of each lane at each of the scenario's T steps from its dynamic_map_states (the most
    restrictive one where several lights control a lane)."""
    light = np.zeros((T, L), np.int8)
    for key, tl in states.items():
        if not isinstance(tl, Mapping):
            continue
        state = tl.get("state", {})
        obj = state.get("object_state") if isinstance(state, Mapping) else None
        if obj is None:
            continue
        lane = tl.get("lane")
        if lane is None and isinstance(state, Mapping) and "lane" in state:
            lanes = np.asarray(state["lane"]).reshape(-1)
            lanes = lanes[lanes != 0] if lanes.dtype.kind in "iuf" else lanes
            if len(lanes):
                vals, counts = np.unique(lanes.astype(str) if lanes.dtype.kind != "f" else lanes.astype(np.int64),
                                         return_counts=True)
                lane = vals[np.argmax(counts)]
        lane_ids = _id_list(lane if lane is not None else key)
        cols = [index[x] for x in lane_ids if x in index]
        if not cols:
            continue
        colours = _light_colours(obj)
        if len(colours) != T:
            colours = np.resize(colours, T) if len(colours) else np.zeros(T, np.int8)
        for c in cols:
            light[:, c] = np.maximum(light[:, c], colours)
    return light


def _crosswalks_and_driveways(features: Mapping) -> tuple[list, list]:
    """Shapely polygons (world frame) of the CROSSWALK / CROSS_WALK and of the DRIVEWAY map features."""
    from shapely.geometry import Polygon

    crosswalks, driveways = [], []
    for f in features.values():
        t = str(f.get("type", ""))
        if t in ("CROSSWALK", "CROSS_WALK", "DRIVEWAY"):
            ring = _as_xy(f.get("polygon", f.get("polyline", [])))
            if len(ring) >= 3:
                p = _polygon_exterior(Polygon(ring))
                if p is not None:
                    (driveways if t == "DRIVEWAY" else crosswalks).append(p)
    return crosswalks, driveways


def _infer_neighbours(lines: list, succ: np.ndarray, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Left/right same-direction neighbours (-1 if none) for maps that do not store them (nuScenes).

    Lane j is a left (right) neighbour of lane i if j's centreline passes 2.0 .. 5.0 m to the left (right) of i's
    midpoint, within 1.5 m longitudinally, with a heading within 20 degrees, and j is neither a successor nor a
    predecessor of i; the closest such lane wins.
    """
    from scipy.spatial import cKDTree

    from irlvla_gym.scenes.geometry import resample_polyline

    L = len(lines)
    left, right = -np.ones(L, np.int64), -np.ones(L, np.int64)
    dense = [resample_polyline(c, spacing=spacing) for c in lines]
    pts = np.concatenate(dense)
    owner = np.repeat(np.arange(L), [len(d) for d in dense])
    heads = np.concatenate([np.arctan2(*np.gradient(d, axis=0).T[::-1]) for d in dense])
    mids = np.array([d[len(d) // 2] for d in dense])
    mid_h = np.array([h[len(h) // 2] for h in np.split(heads, np.cumsum([len(d) for d in dense])[:-1])])
    linked = {(int(a), int(b)) for a, b in succ} | {(int(b), int(a)) for a, b in succ}
    tree = cKDTree(pts)
    for i, cand in enumerate(tree.query_ball_point(mids, 5.2)):
        cand = np.asarray(cand, np.int64)
        cand = cand[owner[cand] != i]
        if not len(cand):
            continue
        c, s_ = math.cos(mid_h[i]), math.sin(mid_h[i])
        d = pts[cand] - mids[i]
        dx, dy = c * d[:, 0] + s_ * d[:, 1], -s_ * d[:, 0] + c * d[:, 1]
        ok = (np.abs(dx) < 1.5) & (np.abs(dy) >= 2.0) & (np.abs(dy) <= 5.0) & (
            np.abs(wrap_angle(heads[cand] - mid_h[i])) < math.radians(20))
        for side, arr in ((1.0, left), (-1.0, right)):
            m = ok & (np.sign(dy) == side)
            if m.any():
                order = np.argsort(np.abs(dy[m]))
                for j in owner[cand[m]][order]:
                    if (i, int(j)) not in linked:
                        arr[i] = int(j)
                        break
    return left, right


def _neighbour_groups(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(L,) lane-group index: connected components of the left/right neighbour relation (a lane alone is a group)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    L = len(left)
    if L == 0:
        return np.zeros(0, np.int64)
    a = np.r_[np.flatnonzero(left >= 0), np.flatnonzero(right >= 0)]
    b = np.r_[left[left >= 0], right[right >= 0]]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(L, L))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _pack(lines: list) -> Ragged:
    """Pack (n_i, 2) float64 arrays into a Ragged that keeps float64 (world coordinates need it)."""
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(x) for x in lines], out=offsets[1:])
    return Ragged(np.concatenate(lines) if lines else np.zeros((0, 2)), offsets)


def load_drivable_area(path: str | os.PathLike) -> Any:
    """Read a GeoJSON drivable area (Polygon, MultiPolygon, Feature, FeatureCollection or GeometryCollection) in
    the scenario's map frame; returns one valid shapely geometry."""
    import shapely
    from shapely.geometry import shape

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ScenarioNetFormatError(str(path), "<geojson>", f"cannot read GeoJSON: {exc}") from None

    def geoms(obj: Mapping) -> Iterable:
        t = obj.get("type")
        if t == "FeatureCollection":
            for feat in obj.get("features", []):
                yield from geoms(feat)
        elif t == "Feature":
            if obj.get("geometry"):
                yield from geoms(obj["geometry"])
        elif t == "GeometryCollection":
            for g in obj.get("geometries", []):
                yield from geoms(g)
        elif t in ("Polygon", "MultiPolygon"):
            yield shape(obj)

    parts = list(geoms(data)) if isinstance(data, Mapping) else []
    if not parts:
        raise ScenarioNetFormatError(str(path), "type", "no Polygon / MultiPolygon geometry found")
    # Parts of one MultiPolygon may overlap (the Boston file does): validate each polygon on its own, then union.
    polys = []
    for part in parts:
        for p in getattr(part, "geoms", [part]):
            v = shapely.make_valid(p)
            polys.extend(g for g in getattr(v, "geoms", [v]) if g.geom_type == "Polygon" and not g.is_empty)
    return shapely.unary_union(polys)


DRIVABLE_AREA_SUFFIX = "_drivable_area.json"
"""Per-city drivable-area files are named ``<city>_drivable_area.json`` (nuScenes: boston, holland_village,
onenorth, queenstown)."""
CITY_METADATA_KEYS = ("map", "map_version", "location", "city")
"""Scenario metadata keys naming the map / city, first non-empty wins (nuScenes 'boston-seaport', nuPlan
'us-ma-boston' / 'sg-one-north')."""


class DrivableAreaCityError(ValueError):
    """A drivable-area file of another city than the scene's, or a per-city folder without the scene's city."""


def scenario_city(scenario: Mapping) -> str | None:
    """The map / city name a scenario's metadata records (:data:`CITY_METADATA_KEYS`), or None if it records none
    (WOMD files do not)."""
    meta = scenario.get("metadata", {}) if isinstance(scenario, Mapping) else {}
    for key in CITY_METADATA_KEYS:
        value = meta.get(key) if isinstance(meta, Mapping) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def drivable_area_city(path: str | os.PathLike) -> str | None:
    """The city of a ``<city>_drivable_area.json`` file name, or None if the name does not follow that pattern."""
    name = Path(path).name
    return name[: -len(DRIVABLE_AREA_SUFFIX)] if name.endswith(DRIVABLE_AREA_SUFFIX) and name != DRIVABLE_AREA_SUFFIX \
        else None


def _letters(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def city_matches(file_city: str, scene_city: str) -> bool:
    """Whether a drivable-area file's city names the scene's map: its letters and digits occur in the map name's
    ('holland_village' in 'singapore-hollandvillage', 'onenorth' in 'sg-one-north', 'boston' in 'boston-seaport')."""
    key = _letters(file_city)
    return bool(key) and key in _letters(scene_city)


class CityDrivableAreas:
    """Chooses the drivable area of each scenario from a ``--drivable-area`` argument and loads every file once.

    The argument is a ``<city>_drivable_area.json`` folder (the scenario's city picks the file), one GeoJSON file
    (checked against the scenario's city when both are known), a shapely geometry (used as is), or None (the lanes'
    union, see the module docs). A scenario without city metadata (WOMD) gets the single file as is, or, with a
    folder, the lanes' union.
    """

    def __init__(self, spec: str | os.PathLike | Any | None):
        self.geometry = spec if spec is not None and hasattr(spec, "geom_type") else None
        self.path = None if spec is None or self.geometry is not None else Path(spec)
        self._loaded: dict[Path, Any] = {}
        if self.path is not None and not self.path.exists():
            raise FileNotFoundError(f"drivable area {self.path}: no such file or directory")
        self.files: dict[str, Path] = {}
        if self.path is not None and self.path.is_file():
            self._loaded[self.path] = load_drivable_area(self.path)  # a broken file fails once, up front
        elif self.path is not None:
            self.files = {drivable_area_city(f): f for f in sorted(self.path.glob(f"*{DRIVABLE_AREA_SUFFIX}"))
                          if drivable_area_city(f)}
            if not self.files:
                raise DrivableAreaCityError(f"drivable area folder {self.path}: no <city>{DRIVABLE_AREA_SUFFIX} file")

    def file_for(self, scene_city: str | None, source: str) -> Path | None:
        """The GeoJSON file for a scenario of map ``scene_city`` (None: no file, derive from lanes).

        Raises:
            DrivableAreaCityError: the single file's city is not ``scene_city``, or the folder has no file for it.
        """
        if self.path is None:
            return None
        if not self.files:  # a single file
            file_city = drivable_area_city(self.path)
            if scene_city and file_city and not city_matches(file_city, scene_city):
                raise DrivableAreaCityError(
                    f"{source}: the scene's city is {scene_city!r} but drivable area {self.path} is for "
                    f"{file_city!r}; pass that city's file or a folder of <city>{DRIVABLE_AREA_SUFFIX} files")
            return self.path
        if not scene_city:
            return None
        found = [f for city, f in self.files.items() if city_matches(city, scene_city)]
        if not found:
            raise DrivableAreaCityError(
                f"{source}: the scene's city is {scene_city!r} but drivable area folder {self.path} has no file for "
                f"it (cities: {', '.join(self.files)})")
        return max(found, key=lambda f: len(drivable_area_city(f) or ""))  # the most specific name

    def for_scenario(self, scenario: Mapping, source: str) -> Any:
        """The scenario's drivable area: a shapely geometry, or None to derive it from the lanes."""
        if self.geometry is not None:
            return self.geometry
        path = self.file_for(scenario_city(scenario), source)
        if path is None:
            return None
        if path not in self._loaded:
            self._loaded[path] = load_drivable_area(path)
        return self._loaded[path]


# ====================================================================================================================
# Windows
# ====================================================================================================================


_WINDOW_OFFSETS = np.arange(-(NUM_HISTORY - 1), NUM_FUTURE + 1) * DT  # (12,) -1.5 .. 4.0 s


def _time_index(ts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the file step at each target time (s), or -1 if none lies within a quarter file step."""
    dt = float(np.median(np.diff(ts)))
    j = np.clip(np.searchsorted(ts, targets), 1, len(ts) - 1)
    j = np.where(np.abs(ts[j - 1] - targets) <= np.abs(ts[j] - targets), j - 1, j)
    return np.where(np.abs(ts[j] - targets) <= 0.25 * dt, j, -1)


def _ego_vehicle(meta: Mapping, size: np.ndarray, valid: np.ndarray) -> EgoVehicle:
    """Ego dimensions: nuPlan ego_vehicle_parameters if usable, else the sdc's median size with Pacifica
    proportions (length/width swapped back when length < width)."""
    p = meta.get("ego_vehicle_parameters")
    if isinstance(p, Mapping):
        try:
            v = EgoVehicle(width=float(p["width"]), front_length=float(p["front_length"]),
                           rear_length=float(p["rear_length"]),
                           wheelbase=float(p.get("wheel_base", p.get("wheelbase"))),
                           height=float(p.get("height", PACIFICA.height)))
            if all(0.2 < x < 40 for x in (v.width, v.front_length, v.rear_length, v.wheelbase, v.height)):
                return v
        except (KeyError, TypeError, ValueError):
            pass
    s = size[valid]
    if not len(s):
        return PACIFICA
    length, width, height = np.median(s, axis=0)
    if length < width:
        length, width = width, length
    if not (1.0 < length < 30 and 0.5 < width < 5):
        return PACIFICA
    k = length / PACIFICA.length
    height = height if 0.5 < height < 6 else PACIFICA.height
    return EgoVehicle(width=float(width), front_length=PACIFICA.front_length * k, rear_length=PACIFICA.rear_length * k,
                      wheelbase=PACIFICA.wheelbase * k, height=float(height))


class _Converter:
    """Per-scenario state: dense tracks, the world map and the window grid."""

    def __init__(self, scn: Mapping, *, drivable_area: Any, stride: int, map_radius: float, source: str,
                 ego_reference: str):
        meta = scn["metadata"]
        self.source = source
        self.ts = np.asarray(meta["ts"], dtype=np.float64)
        T = len(self.ts)
        self.T = T
        self.map_radius = float(map_radius)
        self.stride = int(stride)
        self.dataset = str(meta.get("dataset", "")).lower()
        self.scenario_id = str(scn.get("id", meta.get("scenario_id", "")) or Path(source).stem)
        self.map_name = str(meta.get("map") or meta.get("map_version") or self.dataset or "unknown")
        self.licence = next((v for k, v in _LICENCES.items() if k in self.dataset),
                            "see the source dataset's licence (via ScenarioNet)")
        tracks = _read_tracks(scn["tracks"], T, self.ts)
        sdc_key = str(meta["sdc_id"])
        sdc = int(np.flatnonzero(tracks.ids == sdc_key)[0])
        self.vehicle = _ego_vehicle(meta, tracks.size[sdc], tracks.valid[sdc])
        if ego_reference == "auto":
            ego_reference = "rear_axle" if "nuscenes" in self.dataset else "center"
        shift = self.vehicle.rear_axle_to_center if ego_reference == "center" else 0.0
        h = tracks.heading[sdc]
        self.ego_xy = tracks.xy[sdc] - shift * np.stack([np.cos(h), np.sin(h)], -1)  # (T, 2) rear axle
        self.ego_heading = h
        self.ego_vel = tracks.velocity[sdc]
        self.ego_valid = tracks.valid[sdc]
        others = np.arange(len(tracks.ids)) != sdc
        self.tracks = _Tracks(*(getattr(tracks, f)[others] for f in
                                ("ids", "category", "xy", "heading", "velocity", "size", "valid")))
        self.world = _build_world_map(scn, T, drivable_area, source)

    # ---- window grid -------------------------------------------------------------------------------------------

    def window_starts(self) -> list[int]:
        """File indices of the t0 of each complete window (grid ts[0] + k * 0.5 s, first complete, then stride)."""
        return [i for i, complete in self.window_grid() if complete]

    def window_grid(self) -> list[tuple[int, bool]]:
        """(file index of t0, sdc valid at all 12 window times) for every ``stride``-th grid point ts[0] + k * 0.5 s
        whose window lies inside the file; the incomplete ones are windows the file covers but its sdc track does not
        (reported, not dropped silently)."""
        ts = self.ts
        grid = ts[0] + np.arange(0, int((ts[-1] - ts[0]) / DT + 1e-6) + 1) * DT
        idx = _time_index(ts, grid)
        cand: list[tuple[int, bool]] = []
        for g, i in zip(grid, idx):
            if i < 0:
                continue
            w = _time_index(ts, g + _WINDOW_OFFSETS)
            if np.all(w >= 0):
                cand.append((int(i), bool(self.ego_valid[w].all())))
        return cand[:: self.stride]

    # ---- one window ----------------------------------------------------------------------------------------------

    def scene(self, i0: int) -> Scene:
        ts = self.ts
        w = _time_index(ts, ts[i0] + _WINDOW_OFFSETS)  # (12,)
        hist_i, fut_i, agent_i = w[:NUM_HISTORY], w[NUM_HISTORY:], w[NUM_HISTORY - 1:]
        o_xy, o_yaw = self.ego_xy[i0], float(self.ego_heading[i0])

        # Ego.
        def poses(idx: np.ndarray) -> np.ndarray:
            out = np.empty((len(idx), 3))
            out[:, :2] = to_local(self.ego_xy[idx], o_xy, o_yaw)
            out[:, 2] = wrap_angle(self.ego_heading[idx] - o_yaw)
            return out

        history, future = poses(hist_i), poses(fut_i)
        history[-1] = 0.0
        hv = np.stack([rotate_vectors(self.ego_vel[k], self.ego_heading[k]) for k in hist_i])
        n_back = max(1, int(round(DT / float(np.median(np.diff(ts))))))
        acc = []
        for k in hist_i:
            a, b = (k - n_back, k) if k - n_back >= 0 and self.ego_valid[k - n_back] else (k, min(k + n_back,
                                                                                                   self.T - 1))
            dv = (self.ego_vel[b] - self.ego_vel[a]) / max(ts[b] - ts[a], 1e-6) if b != a else np.zeros(2)
            acc.append(rotate_vectors(dv, self.ego_heading[k]))
        ha = np.clip(np.nan_to_num(np.asarray(acc)), -_MAX_ACCEL, _MAX_ACCEL)
        ego = EgoState(history, hv, ha, future, self.vehicle)

        agents = self._agents(agent_i, o_xy, o_yaw)
        mp, lane_sel = self._map(agent_i, o_xy, o_yaw)
        route = self._route(i0, o_xy, o_yaw, mp, lane_sel)
        path = np.concatenate([np.zeros((1, 2)), future[:, :2]])
        travel = polyline_length(path)
        token = f"scenarionet-{self.dataset or 'sd'}-{self.scenario_id}-{int(round((ts[i0] - ts[0]) * 10)):04d}"
        meta = SceneMetadata(token=token, source="scenarionet", log_name=self.scenario_id, map_name=self.map_name,
                             timestamp_us=int(round(ts[i0] * 1e6)), licence=self.licence)
        scene = Scene(meta, ego, agents, mp, route, 0, validate=False)
        if len(route):
            command = route_command(scene.route_centerline(), max(travel, 10.0))
        else:
            command = command_from_lateral(float(future[-1, 1]))
        return Scene(meta, ego, agents, mp, route, command)

    def _agents(self, idx: np.ndarray, o_xy: np.ndarray, o_yaw: float) -> Agents:
        tr = self.tracks
        if not len(tr.ids):
            return Agents.empty()
        xy = to_local(tr.xy[:, idx], o_xy, o_yaw)  # (N, 9, 2)
        # Steps with absurd speed or size (finite-difference spikes, label errors) are marked invalid rather than
        # failing the whole window's validation.
        sane = (np.hypot(tr.velocity[:, idx, 0], tr.velocity[:, idx, 1]) < MAX_SPEED) & (
            tr.size[:, idx] < MAX_BOX_SIZE).all(-1)
        valid = tr.valid[:, idx] & sane
        r = self.map_radius
        inside = valid & (np.abs(xy) <= r).all(-1)
        keep = inside.any(1)
        if not keep.any():
            return Agents.empty()
        xy, valid = xy[keep], valid[keep]
        boxes = np.zeros((NUM_TIMES, int(keep.sum()), 8))
        boxes[..., 0:2] = xy.transpose(1, 0, 2)
        boxes[..., 2] = wrap_angle(tr.heading[keep][:, idx] - o_yaw).T
        boxes[..., 3:6] = tr.size[keep][:, idx].transpose(1, 0, 2)
        boxes[..., 6:8] = rotate_vectors(tr.velocity[keep][:, idx], o_yaw).transpose(1, 0, 2)
        boxes = np.where(valid.T[..., None] & np.isfinite(boxes), boxes, 0.0)
        return Agents(boxes, valid.T.copy(), tr.category[keep].copy(), tr.ids[keep].copy())

    def _map(self, idx: np.ndarray, o_xy: np.ndarray, o_yaw: float) -> tuple[MapData, np.ndarray]:
        import shapely
        from shapely.geometry import Polygon

        wm = self.world
        r = self.map_radius
        c, s = math.cos(o_yaw), math.sin(o_yaw)
        rot = np.array([[c, -s], [s, c]])
        square_local = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
        square = Polygon(square_local @ rot.T + o_xy)
        sel = np.sort(wm.tree.query(square, predicate="intersects")) if len(wm.lane_ids) else np.zeros(0, np.int64)
        remap = -np.ones(len(wm.lane_ids) + 1, np.int64)
        remap[sel] = np.arange(len(sel))

        def loc(packed: Ragged) -> Ragged:
            """Select lanes ``sel`` from a packed world-frame Ragged and move them into the ego frame at once."""
            lengths = packed.lengths[sel]
            offsets = np.zeros(len(sel) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            starts = np.repeat(packed.offsets[sel], lengths)
            gather = starts + np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
            pts = to_local(packed.points[gather], o_xy, o_yaw).astype(np.float32)
            return Ragged(pts, offsets)

        succ = wm.successors
        if len(succ):
            succ = remap[succ]
            succ = succ[(succ >= 0).all(1)]
        succ = succ.reshape(-1, 2).astype(np.int64)
        bbox = (o_xy[0] - r * math.sqrt(2), o_xy[1] - r * math.sqrt(2), o_xy[0] + r * math.sqrt(2),
                o_xy[1] + r * math.sqrt(2))

        def local_polys(geom: Any) -> PolygonSet:
            if geom is None or geom.is_empty:
                return PolygonSet.empty()
            g = shapely.clip_by_rect(geom, *bbox)
            if g.is_empty:
                return PolygonSet.empty()
            g = shapely.transform(g, lambda p: to_local(p, o_xy, o_yaw))
            g = shapely.clip_by_rect(g, -r, -r, r, r)
            parts = [p for p in getattr(g, "geoms", [g]) if p.geom_type == "Polygon" and p.area > 1e-2]
            return PolygonSet.from_shapely(parts)

        cw = [p for p in wm.crosswalks if p.intersects(square)]
        n = len(sel)
        mp = MapData(
            lane_ids=wm.lane_ids[sel], lane_centerlines=loc(wm.centerlines), lane_left_boundaries=loc(wm.lefts),
            lane_right_boundaries=loc(wm.rights),
            lane_polygons=PolygonSet(loc(wm.rings), np.arange(n, dtype=np.int64), np.zeros(n, bool)),
            lane_speed_limits=wm.speed[sel], lane_is_connector=wm.is_connector[sel],
            lane_is_intersection=wm.is_intersection[sel],
            lane_group=np.unique(wm.group[sel], return_inverse=True)[1].reshape(-1).astype(np.int64),
            lane_successors=succ,
            lane_left_neighbor=remap[wm.left_nb[sel]], lane_right_neighbor=remap[wm.right_nb[sel]],
            lane_light_state=wm.light[idx][:, sel], drivable_area=local_polys(wm.drivable),
            intersections=local_polys(wm.intersections),
            crosswalks=PolygonSet.from_exteriors([to_local(np.asarray(p.exterior.coords)[:-1], o_xy, o_yaw)
                                                  for p in cw]),
        )
        return mp, sel

    # ---- route -----------------------------------------------------------------------------------------------

    def _route(self, i0: int, o_xy: np.ndarray, o_yaw: float, mp: MapData, sel: np.ndarray) -> np.ndarray:
        """Ordered local lane indices the logged sdc path (t0 .. end of file) drives through, extended ahead."""
        import shapely

        L = len(sel)
        if L == 0:
            return np.zeros(0, np.int64)
        k = np.arange(i0, self.T)
        k = k[self.ego_valid[k]]
        xy = to_local(self.ego_xy[k], o_xy, o_yaw)
        yaw = wrap_angle(self.ego_heading[k] - o_yaw)
        # Keep points inside the crop, ~1 m apart.
        inside = (np.abs(xy) <= self.map_radius).all(1)
        cut = np.argmin(inside) if not inside.all() else len(xy)
        xy, yaw = xy[:cut], yaw[:cut]
        if not len(xy):
            return np.zeros(0, np.int64)
        step = arc_length(xy)
        take = np.r_[0, np.flatnonzero(np.diff(np.floor(step / 1.0)) > 0) + 1]
        xy, yaw = xy[take], yaw[take]
        P = len(xy)
        polys = np.asarray(self.world.polygons[sel], dtype=object)
        tree = shapely.STRtree(polys)
        # Polygons are in world frame: query with world points.
        world_pts = self.ego_xy[k][:cut][take]
        pi, li = tree.query(shapely.points(world_pts), predicate="intersects")
        M = np.zeros((P, L), bool)
        if len(pi):
            # heading check: direction of the nearest centreline segment
            ok = np.zeros(len(pi), bool)
            for j in np.unique(li):
                m = li == j
                line = mp.lane_centerlines[int(j)].astype(np.float64)
                seg = np.diff(line, axis=0)
                a = line[:-1]
                pts = xy[pi[m]]
                t = np.clip(np.einsum("mij,ij->mi", pts[:, None] - a[None], seg) /
                            np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-9), 0, 1)
                d = np.linalg.norm(pts[:, None] - (a[None] + t[..., None] * seg[None]), axis=-1)
                kk = np.argmin(d, axis=1)
                hd = np.arctan2(seg[kk, 1], seg[kk, 0])
                ok[m] = np.abs(wrap_angle(hd - yaw[pi[m]])) < _HEADING_TOL
            M[pi[ok], li[ok]] = True
        run = np.zeros((P + 1, L), np.int64)
        for p in range(P - 1, -1, -1):
            run[p] = np.where(M[p], run[p + 1] + 1, 0)
        succ = mp.lane_successors
        route: list[int] = []
        p = 0
        while p < P:
            cand = np.flatnonzero(M[p])
            if not len(cand):
                p += 1
                continue
            if route:
                nxt = set(succ[succ[:, 0] == route[-1], 1].tolist())
                pref = [c for c in cand if c in nxt]
                if pref:
                    cand = np.asarray(pref)
            best = int(cand[np.argmax(run[p, cand])])
            if best not in route:
                route.append(best)
            p += max(1, int(run[p, best]))
        # Extend ahead through successors (straightest), until ROUTE_AHEAD_M of centreline past the ego.
        if route:
            def length_ahead() -> float:
                line = np.concatenate([mp.lane_centerlines[i] for i in route]).astype(np.float64)
                segs = np.linalg.norm(np.diff(line, axis=0), axis=1)
                cum = np.r_[0.0, np.cumsum(segs)]
                return float(cum[-1] - cum[np.argmin(np.linalg.norm(line, axis=1))])

            while length_ahead() < ROUTE_AHEAD_M:
                last = route[-1]
                nxt = [int(n) for n in succ[succ[:, 0] == last, 1] if int(n) not in route]
                if not nxt:
                    break
                cl = mp.lane_centerlines[last].astype(np.float64)
                h_end = math.atan2(*(cl[-1] - cl[-2])[::-1])
                turn = []
                for n in nxt:
                    c2 = mp.lane_centerlines[n].astype(np.float64)
                    turn.append(abs(wrap_angle(math.atan2(*(c2[-1] - c2[0])[::-1]) - h_end)))
                route.append(nxt[int(np.argmin(turn))])
        return np.asarray(route, np.int64)


# ====================================================================================================================
# Public entry points
# ====================================================================================================================


def scenes_from_scenario(
    scenario: Mapping,
    *,
    drivable_area: str | os.PathLike | CityDrivableAreas | Any | None = None,
    stride: int = 1,
    map_radius: float = 100.0,
    source: str | None = None,
    ego_reference: Literal["auto", "center", "rear_axle"] = "auto",
) -> Iterator[Scene | SkippedItem]:
    """Convert one scenario dict into its 2 Hz scene windows.

    Args:
        scenario: a ScenarioNet scenario dict (e.g. from :func:`load_scenario`); checked with :func:`check_scenario`.
        drivable_area: a folder of ``<city>_drivable_area.json`` files (the scenario's metadata city picks one), one
            GeoJSON file, a shapely geometry in the map frame, or a :class:`CityDrivableAreas`; None derives it from
            the lanes.
        stride: take every ``stride``-th window (windows are 0.5 s apart).
        map_radius: half-size (m) of the ego-aligned square that crops map and agents.
        source: name used in errors and skipped items (default: the scenario id).
        ego_reference: where the file's sdc position lies on the vehicle ('auto': rear axle for nuScenes, box centre
            otherwise).

    Yields:
        One :class:`Scene` per complete window, or a :class:`SkippedItem` for a window that failed validation.

    Raises:
        ScenarioNetFormatError: the scenario fails the schema check or its map cannot be built.
        DrivableAreaCityError: the drivable-area file is for another city than the scenario's metadata names, or the
            folder has no file for it.
        FileNotFoundError: ``drivable_area`` does not exist.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if ego_reference not in ("auto", "center", "rear_axle"):
        raise ValueError(f"ego_reference must be 'auto', 'center' or 'rear_axle', got {ego_reference!r}")
    src = source or str(scenario.get("id", "<scenario>") if isinstance(scenario, Mapping) else "<scenario>")
    check_scenario(scenario, src)
    areas = drivable_area if isinstance(drivable_area, CityDrivableAreas) else CityDrivableAreas(drivable_area)
    geometry = areas.for_scenario(scenario, src)
    try:
        conv = _Converter(scenario, drivable_area=geometry, stride=stride,
                          map_radius=map_radius, source=src, ego_reference=ego_reference)
    except ScenarioNetFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed content the schema check does not cover
        raise ScenarioNetFormatError(src, "<conversion>", f"{type(exc).__name__}: {exc}") from None
    for i0, complete in conv.window_grid():
        where = f"{src}@t={conv.ts[i0]:.1f}s"
        if not complete:
            yield SkippedItem(where, f"sdc track {str(scenario['metadata']['sdc_id'])!r} is not valid at every "
                                     "window time (t0 - 1.5 s .. t0 + 4 s)", reason="ego not valid through the window")
            continue
        try:
            yield conv.scene(i0)
        except Exception as exc:  # noqa: BLE001 - one bad window must not stop a long conversion; it is reported
            yield SkippedItem(where, f"{type(exc).__name__}: {exc}", reason=f"window failed ({type(exc).__name__})")


def scenario_files(path: str | os.PathLike) -> list[Path]:
    """The scenario pickles of a ScenarioNet folder (recursively, sorted; the index files left out), or ``[path]``."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.pkl") if p.name not in NON_SCENARIO_FILES)
    return [path]


def iter_scenes(
    path: str | os.PathLike,
    *,
    drivable_area: str | os.PathLike | CityDrivableAreas | Any | None = None,
    stride: int = 1,
    map_radius: float = 100.0,
    ego_reference: Literal["auto", "center", "rear_axle"] = "auto",
) -> Iterator[Scene | SkippedItem]:
    """Scenes from one ScenarioNet ``.pkl`` or a folder of them (searched recursively; ``dataset_summary.pkl`` and
    ``dataset_mapping.pkl`` are skipped as indexes).

    A file that cannot be read or converted yields one :class:`SkippedItem` (naming the file and field) and the
    iteration continues with the next file. See :func:`scenes_from_scenario` for the arguments (a drivable-area
    folder or file is loaded once per city for all files).

    Raises:
        DrivableAreaCityError: a scenario's city does not match the drivable-area file, or the folder lacks it.
    """
    path = Path(path)
    if path.is_file() and path.name in NON_SCENARIO_FILES:
        return
    if not path.exists():
        yield SkippedItem(str(path), "no such file or directory")
        return
    areas = drivable_area if isinstance(drivable_area, CityDrivableAreas) else CityDrivableAreas(drivable_area)
    files = scenario_files(path)
    if not files:  # an empty build must say why
        yield SkippedItem(str(path), "no ScenarioNet scenario .pkl here or in its subfolders",
                          reason="no scenario found")
    for f in files:
        try:
            scenario = load_scenario(f)
        except ScenarioNetFormatError as exc:
            yield SkippedItem(str(f), str(exc), reason="file unreadable or not a scenario")
            continue
        geometry = areas.for_scenario(scenario, str(f))  # a city mismatch stops the build: it is the user's choice
        try:
            yield from scenes_from_scenario(scenario, drivable_area=geometry, stride=stride, map_radius=map_radius,
                                            source=str(f), ego_reference=ego_reference)
        except ScenarioNetFormatError as exc:
            yield SkippedItem(str(f), str(exc), reason="scenario map or schema unusable")
