"""NAVSIM / OpenScene source: NAVSIM log pickles + nuPlan map GeoPackages -> :class:`Scene`, and back.

Reading (data-formats.md sections 1 and 4):

* :class:`NuPlanMapReader` loads one nuPlan vector map (``<root>/nuplan-maps-v1.0.json`` -> version ->
  ``<root>/<map>/<version>/map.gpkg``) with sqlite3 + shapely, in UTM metres, with the devkit's graph semantics
  (section 1.6), proximal square queries on STRtrees (1.7) and PDMDrivableMap's drivable-area rule.
* :func:`iter_scenes` windows each ``<log>.pkl`` (a list of 2 Hz frame dicts) like NAVSIM's SceneFilter and turns every
  window into a Scene in the ego frame at t0 (the last history frame). Bad scenes become
  :class:`~irlvla_gym.scenes.sources.SkippedItem` naming the file, frame and field; iteration continues.

Writing: :func:`export_navsim` writes scenes in exactly that layout (a maps root with the json + GeoPackages, and a
logs folder of pickles holding every frame key of section 4), so the reader can be tested by round trips without the
real (licensed, very large) NAVSIM files, and the official NAVSIM v2 code (numpy 1.x, nuPlan devkit) loads it as is.

Conventions of the export (documented choices, see :func:`export_navsim`): all scenes of a city share one map; each
is placed at its own UTM offset on a grid (``spacing`` metres apart) with its own heading, so their maps never
overlap within the reader's crop radius. Each scene becomes a block of ``4 + num_future_frames`` consecutive frames
of its log (default 14 = NAVSIM's non-overlapping ``frame_interval``).

Map tables of the export: lanes -> lanes_polygons (+ baseline_paths, boundaries; right boundaries stored reversed),
connectors -> lane_connectors (+ gen_lane_connectors_scaled_width_polygons); lane groups -> lane_groups_polygons /
lane_group_connectors (polygon = union of their lanes), one roadblock per scene lane group even when it holds a lane
and its successor (NAVSIM's on-route lanes are the lanes of the route roadblocks, the scorer's those of the route's
lane groups), ungrouped lanes get a roadblock each; ``lane_index`` numbers the side-by-side lanes of each level of a
roadblock (unique in the roadblock), the exact neighbours go to ``irlvla_left`` / ``irlvla_right``; intersections,
crosswalks, TRAFFIC_LIGHT stop_polygons for lit connectors; drivable area -> road_segments. What NAVSIM sees matches
the scene as the scorer reads it: drivable = roadblocks + intersections + car parks, so the scene's drivable
polygons and connector polygons outside lanes and intersections -> carpark_areas; NAVSIM's intersection test uses
the intersections layer only, so the parts of lanes flagged ``lane_is_intersection`` outside the intersection
polygons -> extra intersections. nuPlan joins lanes only through connectors, so the export inserts (rows marked
``irlvla_inserted = 1``; NAVSIM uses them like any other, our reader folds them back into the original edges and
drops them):

* a short lane connector (its own roadblock connector per pair of roadblocks) for each direct lane -> lane link,
  from the end of one centreline to the start of the next (at least 0.05 m long), as wide as the narrower end;
* a 0.05 m bridge lane (own roadblock) for each connector -> connector link;
* a 0.05 m stub lane (own roadblock) before / after a connector whose upstream / downstream lane was cropped
  away, so no exit_lane_fid / entry_lane_fid / from_lane_group_fid / to_lane_group_fid is ever NULL (a NULL makes
  the devkit read the whole column as float);
* the intersection parts above.

The route's roadblock ids include the inserted link blocks (also those inside one roadblock), so NAVSIM's route
and centreline run through them; each id once, the list ending with the last lane group the route reaches.
Lossy: a connector's second upstream / downstream element (see ExportResult), lights on non-connector lanes,
yellow (-> green), ``lane_is_intersection`` of lanes outside intersection polygons.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from irlvla_gym.scenes.geometry import poses_to_local, to_global, to_local
from irlvla_gym.scenes.gpkg import (
    MAP_UTM_EPSG, Feature, GeoPackage, GeoPackageError, Layer, project_geometries, utm_zone_from_epsg,
    write_geopackage,
)
from irlvla_gym.scenes.safe_pickle import NAVSIM_ALLOWLIST, UnsafePickleError, load_pickle
from irlvla_gym.scenes.scene import (
    BARRIER, BICYCLE, CAMERA_CHANNELS, COMMAND_UNKNOWN, DT, GENERIC_OBJECT, LIGHT_GREEN,
    LIGHT_NONE, LIGHT_RED, MAX_COORD, NUM_FUTURE, NUM_HISTORY, NUM_TIMES, PACIFICA, PEDESTRIAN, TRAFFIC_CONE, VEHICLE,
    Agents, EgoState, EgoVehicle, MapData, PolygonSet, Scene, SceneMetadata, SceneValidationError, wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

MAPS_VERSION = "nuplan-maps-v1.0"
"""Name of the maps-root json (``<root>/nuplan-maps-v1.0.json``) and of the devkit's map version."""

MAP_VERSIONS = {
    "sg-one-north": "9.17.1964",
    "us-ma-boston": "9.12.1817",
    "us-nv-las-vegas-strip": "9.15.1915",
    "us-pa-pittsburgh-hazelwood": "9.17.1937",
}
"""Map versions listed in the devkit docs; the reader always resolves them through the json."""

NAVSIM_LICENCE = "CC BY-NC-SA 4.0 (nuPlan / OpenScene data)"

NAME_TO_CATEGORY = {
    "vehicle": VEHICLE, "pedestrian": PEDESTRIAN, "bicycle": BICYCLE, "traffic_cone": TRAFFIC_CONE,
    "barrier": BARRIER, "czone_sign": GENERIC_OBJECT, "generic_object": GENERIC_OBJECT,
}
"""OpenScene ``gt_names`` -> :data:`AGENT_CATEGORIES` index (unknown names -> generic_object)."""

CATEGORY_TO_NAME = ("vehicle", "pedestrian", "bicycle", "traffic_cone", "barrier", "generic_object")

REQUIRED_FRAME_KEYS = ("token", "timestamp", "log_name", "map_location", "roadblock_ids", "ego2global_translation",
                       "ego2global_rotation", "ego_dynamic_state", "traffic_lights", "driving_command")
"""Frame keys the reader needs (``anns`` is optional: absent in the test split; ``cams`` optional)."""

DEFAULT_MAP_NAME = "us-nv-las-vegas-strip"
"""Map the exporter uses for scenes whose metadata names no nuPlan location."""

EGO_VEHICLE_KEY = "irlvla_ego_vehicle"
"""Extra frame key (NAVSIM ignores it) holding the ego's [width, front_length, rear_length, wheelbase, height] (m);
NAVSIM itself always scores with the Pacifica's parameters."""

_MIN_ABSOLUTE_US = 10 ** 12
"""Timestamps below this (about 11.6 days after the epoch, in µs) are taken as relative to the source's start."""
_EXPORT_BASE_US = 1_600_000_000_000_000
"""Exported scene k with a relative timestamp starts at this + 1e7 k µs (see :func:`export_navsim`)."""

DEFAULT_UTM_ORIGINS = {
    "us-nv-las-vegas-strip": (664753.7, 3999465.6),
    "us-ma-boston": (330000.0, 4690000.0),
    "us-pa-pittsburgh-hazelwood": (587000.0, 4473000.0),
    "sg-one-north": (366000.0, 143000.0),
}


class NavsimFormatError(ValueError):
    """A NAVSIM log or nuPlan map does not have the expected layout; the message names the file and the field."""


class NuPlanMapError(GeoPackageError):
    """The nuPlan maps root, its json or the map GeoPackage is missing or malformed (file and item named)."""


# =====================================================================================================================
# nuPlan map
# =====================================================================================================================

LANE, LANE_CONNECTOR, ROADBLOCK, ROADBLOCK_CONNECTOR = "lane", "lane_connector", "roadblock", "roadblock_connector"
STOP_LINE, CROSSWALK, INTERSECTION, WALKWAYS, CARPARK_AREA = "stop_line", "crosswalk", "intersection", "walkways", \
    "carpark_area"
MAP_LAYERS = (LANE, LANE_CONNECTOR, ROADBLOCK, ROADBLOCK_CONNECTOR, STOP_LINE, CROSSWALK, INTERSECTION, WALKWAYS,
              CARPARK_AREA)
"""Layers :meth:`NuPlanMapReader.proximal` answers (the devkit's get_proximal_map_objects layers)."""

_REQUIRED_TABLES: dict[str, tuple[str, ...]] = {
    "lanes_polygons": ("lane_group_fid",),
    "lane_connectors": ("exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid"),
    "baseline_paths": (),
    "lane_groups_polygons": (),
    "lane_group_connectors": ("from_lane_group_fid", "to_lane_group_fid"),
}
_OPTIONAL_TABLES = ("boundaries", "gen_lane_connectors_scaled_width_polygons", "stop_polygons", "intersections",
                    "crosswalks", "carpark_areas", "road_segments", "generic_drivable_areas", "walkways")


def _int_or_none(v: Any) -> int | None:
    """An integer attribute that may be NULL / NaN / a numeric string."""
    if v is None:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) else int(v)
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
        try:
            return int(float(v))
        except ValueError:
            return None
    return int(v)


def _float_or_nan(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f if math.isfinite(f) and f > 0 else float("nan")


def _fid_list(v: Any) -> tuple[int, ...]:
    """'12,15' / '' / None / 12 -> (12, 15) / () / () / (12,)."""
    if v is None:
        return ()
    if isinstance(v, (int, np.integer)):
        return (int(v),)
    out = []
    for part in str(v).replace(";", ",").split(","):
        i = _int_or_none(part)
        if i is not None:
            out.append(i)
    return tuple(out)


def _line_coords(geom: BaseGeometry | None) -> np.ndarray | None:
    """(n, 2) vertices of a LineString (the longest part of a MultiLineString); None if empty/degenerate."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type == "MultiLineString":
        geom = max(geom.geoms, key=lambda g: g.length)
    if geom.geom_type != "LineString":
        return None
    xy = np.asarray(geom.coords, dtype=np.float64)[:, :2]
    return xy if len(xy) >= 2 else None


def _largest_polygon(geom: BaseGeometry | None) -> Polygon | None:
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type == "Polygon":
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon" and not g.is_empty]
    return max(polys, key=lambda g: g.area) if polys else None


def _orient_along(line: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return ``line`` or its reverse, whichever runs in the direction of ``reference`` (both (n, 2))."""
    same = np.linalg.norm(line[0] - reference[0]) + np.linalg.norm(line[-1] - reference[-1])
    rev = np.linalg.norm(line[-1] - reference[0]) + np.linalg.norm(line[0] - reference[-1])
    return line[::-1].copy() if rev < same else line


def _heading_at(line: np.ndarray, point: np.ndarray) -> float:
    """Heading (rad) of the polyline segment nearest to ``point``."""
    a, d = line[:-1], np.diff(line, axis=0)
    L2 = np.maximum(np.einsum("ij,ij->i", d, d), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", point - a, d) / L2, 0.0, 1.0)
    k = int(np.argmin(np.linalg.norm(a + t[:, None] * d - point, axis=1)))
    return float(np.arctan2(d[k, 1], d[k, 0]))


def _end_heading(line: np.ndarray, start: bool) -> float:
    d = line[1] - line[0] if start else line[-1] - line[-2]
    return float(np.arctan2(d[1], d[0]))


@dataclass
class MapLane:
    """A lane or lane connector of a nuPlan map, in UTM metres.

    Attributes:
        fid: feature id (lanes_polygons / lane_connectors).
        is_connector: True for a lane connector.
        baseline: (n, 2) centreline vertices in driving direction (baseline_paths, not resampled).
        polygon: lane polygon (lanes_polygons / gen_lane_connectors_scaled_width_polygons).
        left_boundary / right_boundary: (n, 2) boundaries oriented along the baseline.
        group: lane_group_fid (lane) or lane_group_connector_fid (connector); None if NULL.
        lane_index: lanes only, numbered left -> right (smaller = further left).
        speed_limit: m/s, NaN unknown.
        exit_lane / entry_lane: connectors only: upstream / downstream lane fid.
        stop_line_fids: connectors only: traffic_light_stop_line_fids (non-empty = has a traffic light).
        scene_group: the exported scene's own lane group (column ``irlvla_group`` of our export; None elsewhere):
            becomes ``MapData.lane_group`` instead of the roadblock when present.
        scene_neighbors: lanes only, the exported scene's (left, right) neighbour fids (columns ``irlvla_left`` /
            ``irlvla_right`` of our export, -1 = none; None elsewhere): used instead of ``lane_index`` when present.
    """

    fid: int
    is_connector: bool
    baseline: np.ndarray
    polygon: Polygon
    left_boundary: np.ndarray
    right_boundary: np.ndarray
    group: int | None
    lane_index: int | None = None
    speed_limit: float = float("nan")
    exit_lane: int | None = None
    entry_lane: int | None = None
    stop_line_fids: tuple[int, ...] = ()
    scene_group: int | None = None
    scene_neighbors: tuple[int | None, int | None] = (None, None)

    @property
    def key(self) -> tuple[bool, int]:
        return (self.is_connector, self.fid)


@dataclass
class RoadblockConnector:
    """A lane_group_connectors row: polygon (UTM m) and the roadblocks it joins."""

    fid: int
    polygon: BaseGeometry
    from_roadblock: int | None
    to_roadblock: int | None
    intersection: int | None


class NuPlanMapReader:
    """One nuPlan vector map (GeoPackage) in memory, in UTM metres, with devkit-like queries.

    Args:
        maps_root: folder holding ``nuplan-maps-v1.0.json`` (default: the ``NUPLAN_MAPS_ROOT`` environment variable).
        map_name: map location, e.g. ``us-nv-las-vegas-strip`` (NAVSIM ``frame["map_location"]``); a trailing
            ``.gpkg`` is stripped like the devkit does.

    Raises:
        NuPlanMapError: missing root / json / map entry / version / gpkg, a missing required table or column, or a map
            without lanes. The message names the file and the item.

    Layers loaded (data-formats.md 1.5): lanes_polygons, lane_connectors (+ gen_lane_connectors_scaled_width_polygons),
    baseline_paths, boundaries, lane_groups_polygons, lane_group_connectors, stop_polygons, intersections,
    crosswalks, carpark_areas, road_segments, generic_drivable_areas, walkways. Only the first five are required.
    """

    def __init__(self, maps_root: str | os.PathLike | None = None, map_name: str = "us-nv-las-vegas-strip"):
        if maps_root is None:
            maps_root = os.environ.get("NUPLAN_MAPS_ROOT")
            if not maps_root:
                raise NuPlanMapError("no maps root given and the NUPLAN_MAPS_ROOT environment variable is not set")
        self.maps_root = Path(maps_root)
        self.map_name = map_name[:-5] if map_name.endswith(".gpkg") else map_name
        json_path = self.maps_root / f"{MAPS_VERSION}.json"
        if not json_path.is_file():
            raise NuPlanMapError(f"{json_path}: maps json not found (maps root {self.maps_root})")
        try:
            index = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise NuPlanMapError(f"{json_path}: not valid json ({exc})") from None
        entry = index.get(self.map_name) if isinstance(index, dict) else None
        if not isinstance(entry, dict):
            raise NuPlanMapError(f"{json_path}: no entry for map {self.map_name!r} (has {sorted(index)[:8]})"
                                 if isinstance(index, dict) else f"{json_path}: top level must be an object")
        version = entry.get("version")
        if not isinstance(version, str) or not version:
            raise NuPlanMapError(f"{json_path}: field [{self.map_name!r}]['version'] is missing or not a string")
        self.version = version
        self.gpkg_path = self.maps_root / self.map_name / version / "map.gpkg"
        if not self.gpkg_path.is_file():
            raise NuPlanMapError(f"{self.gpkg_path}: map GeoPackage not found (from {json_path}, version {version})")
        try:
            gp = GeoPackage(self.gpkg_path)
        except GeoPackageError as exc:
            raise NuPlanMapError(str(exc)) from None
        with gp:
            if gp.projected_epsg is None:
                gp.projected_epsg = MAP_UTM_EPSG.get(self.map_name)
            self._load(gp)

    # ---- loading --------------------------------------------------------------------------------------------------

    def _table(self, gp: GeoPackage, table: str, required: bool) -> list[Feature]:
        if not gp.has_table(table):
            if required:
                raise NuPlanMapError(f"{self.gpkg_path}: required table {table!r} is missing")
            return []
        cols = gp.columns(table)
        for c in _REQUIRED_TABLES.get(table, ()):
            if c not in cols:
                raise NuPlanMapError(f"{self.gpkg_path}: table {table!r}: required column {c!r} is missing")
        try:
            return gp.read_features(table)
        except GeoPackageError as exc:
            raise NuPlanMapError(str(exc)) from None

    def _load(self, gp: GeoPackage) -> None:
        """Read every layer (UTM m) into the reader's dicts (fid -> object), the lane graph and the spatial
        indexes."""
        t = {name: self._table(gp, name, True) for name in _REQUIRED_TABLES}
        t.update({name: self._table(gp, name, False) for name in _OPTIONAL_TABLES})
        self.missing_tables = tuple(name for name in _OPTIONAL_TABLES if not gp.has_table(name))
        if self.missing_tables:  # loaded as empty layers: say so once per map (no crosswalks = no crosswalk checks)
            warnings.warn(f"{self.gpkg_path}: optional table(s) {list(self.missing_tables)} missing; loaded as empty "
                          "layers (scenes built from this map have none of these features)", stacklevel=2)
        baselines = self._load_lines(t)
        inserted_lanes = self._load_lanes(t, baselines)
        self._load_connectors(t, baselines)
        if not self.lanes and not self.connectors:
            raise NuPlanMapError(f"{self.gpkg_path}: the map has no usable lanes or lane connectors (empty map?)")
        self._build_lane_graph(inserted_lanes)
        self._load_roadblocks(t)
        self._load_areas(t)
        self._build_trees()

    def _load_lines(self, t: Mapping[str, list[Feature]]) -> dict[tuple[bool, int], np.ndarray]:
        """Fill ``self.boundaries`` (boundary fid -> (n, 2) polyline); return the baseline paths keyed by
        (is_connector, lane or connector fid)."""
        baselines: dict[tuple[bool, int], np.ndarray] = {}
        bcols = t["baseline_paths"][0].attributes if t["baseline_paths"] else {}
        if t["baseline_paths"] and "lane_fid" not in bcols and "lane_connector_fid" not in bcols:
            raise NuPlanMapError(f"{self.gpkg_path}: table 'baseline_paths' needs a 'lane_fid' or "
                                 "'lane_connector_fid' column")
        for f in t["baseline_paths"]:
            xy = _line_coords(f.geometry)
            if xy is None:
                continue
            lf, cf = _int_or_none(f.attributes.get("lane_fid")), _int_or_none(f.attributes.get("lane_connector_fid"))
            if lf is not None:
                baselines[(False, lf)] = xy
            elif cf is not None:
                baselines[(True, cf)] = xy
        self.boundaries: dict[int, np.ndarray] = {}
        for f in t["boundaries"]:
            xy = _line_coords(f.geometry)
            if xy is not None:
                self.boundaries[f.fid] = xy
        return baselines

    def _load_lanes(self, t: Mapping[str, list[Feature]], baselines: Mapping[tuple[bool, int], np.ndarray]
                    ) -> set[int]:
        """Fill ``self.lanes`` (fid -> :class:`MapLane`) from lanes_polygons (``self.dropped_lanes`` names the
        unusable ones); return the fids of the lanes our export inserted (bridges and stubs, not real lanes)."""
        self.lanes: dict[int, MapLane] = {}
        self.connectors: dict[int, MapLane] = {}
        self.dropped_lanes: list[str] = []
        inserted_lanes: set[int] = set()
        for f in t["lanes_polygons"]:
            a = f.attributes
            if _int_or_none(a.get("irlvla_inserted")):
                inserted_lanes.add(f.fid)
                continue
            lane = self._make_lane(f.fid, False, baselines.get((False, f.fid)), _largest_polygon(f.geometry),
                                   a.get("left_boundary_fid"), a.get("right_boundary_fid"))
            if lane is None:
                continue
            lane.group = _int_or_none(a.get("lane_group_fid"))
            lane.lane_index = _int_or_none(a.get("lane_index"))
            lane.speed_limit = _float_or_nan(a.get("speed_limit_mps"))
            lane.scene_group = _int_or_none(a.get("irlvla_group"))
            lane.scene_neighbors = (_int_or_none(a.get("irlvla_left")), _int_or_none(a.get("irlvla_right")))
            self.lanes[f.fid] = lane
        return inserted_lanes

    def _load_connectors(self, t: Mapping[str, list[Feature]],
                         baselines: Mapping[tuple[bool, int], np.ndarray]) -> None:
        """Fill ``self.connectors`` (fid -> :class:`MapLane`) from lane_connectors and their scaled-width polygons;
        link connectors our export inserted become direct lane -> lane edges in ``self.extra_successors``."""
        conn_poly: dict[int, Feature] = {}
        for f in t["gen_lane_connectors_scaled_width_polygons"]:
            cf = _int_or_none(f.attributes.get("lane_connector_fid"))
            if cf is not None:
                conn_poly[cf] = f
        self.extra_successors: dict[tuple[bool, int], list[tuple[bool, int]]] = {}
        for f in t["lane_connectors"]:
            a = f.attributes
            if _int_or_none(a.get("irlvla_inserted")):
                # An inserted link connector of our export: folded back into the direct lane -> lane edge.
                ex, en = _int_or_none(a.get("exit_lane_fid")), _int_or_none(a.get("entry_lane_fid"))
                if ex is not None and en is not None:
                    self.extra_successors.setdefault((False, ex), []).append((False, en))
                continue
            pf = conn_poly.get(f.fid)
            pa = pf.attributes if pf is not None else {}
            baseline = baselines.get((True, f.fid))
            if baseline is None:
                baseline = _line_coords(f.geometry)  # the connector's own LineString
            lane = self._make_lane(f.fid, True, baseline, _largest_polygon(pf.geometry) if pf is not None else None,
                                   pa.get("left_boundary_fid"), pa.get("right_boundary_fid"))
            if lane is None:
                continue
            lane.group = _int_or_none(a.get("lane_group_connector_fid"))
            lane.speed_limit = _float_or_nan(a.get("speed_limit_mps"))
            lane.exit_lane = _int_or_none(a.get("exit_lane_fid"))
            lane.entry_lane = _int_or_none(a.get("entry_lane_fid"))
            lane.stop_line_fids = _fid_list(a.get("traffic_light_stop_line_fids"))
            lane.scene_group = _int_or_none(a.get("irlvla_group"))
            self.connectors[f.fid] = lane

    def _build_lane_graph(self, inserted_lanes: set[int]) -> None:
        """The lane graph (1.6): lane -> connectors whose exit / entry lane it is (``lane_out`` / ``lane_in``), edges
        through our inserted bridge lanes, and the lanes / connectors of each lane group (roadblock)."""
        self.lane_out: dict[int, list[int]] = {}
        self.lane_in: dict[int, list[int]] = {}
        for c in self.connectors.values():
            if c.exit_lane is not None:
                self.lane_out.setdefault(c.exit_lane, []).append(c.fid)
            if c.entry_lane is not None:
                self.lane_in.setdefault(c.entry_lane, []).append(c.fid)
        # Inserted bridge lanes of our export (connector -> bridge -> connector) fold back into connector edges;
        # inserted stub lanes (a cropped neighbour) simply vanish.
        for x in inserted_lanes:
            for ci in self.lane_in.get(x, ()):
                for co in self.lane_out.get(x, ()):
                    self.extra_successors.setdefault((True, ci), []).append((True, co))
        self.group_lanes: dict[int, list[int]] = {}
        for ln in self.lanes.values():
            if ln.group is not None:
                self.group_lanes.setdefault(ln.group, []).append(ln.fid)
        self.group_connectors: dict[int, list[int]] = {}
        for c in self.connectors.values():
            if c.group is not None:
                self.group_connectors.setdefault(c.group, []).append(c.fid)
        self._by_index = {(ln.group, ln.lane_index): ln.fid for ln in self.lanes.values()
                          if ln.group is not None and ln.lane_index is not None}

    def _load_roadblocks(self, t: Mapping[str, list[Feature]]) -> None:
        """``self.roadblocks`` (lane group fid -> polygon) and ``self.roadblock_connectors``, without the ones our
        export inserted."""
        self.roadblocks: dict[int, BaseGeometry] = {f.fid: f.geometry for f in t["lane_groups_polygons"]
                                                    if f.geometry is not None and not f.geometry.is_empty
                                                    and not _int_or_none(f.attributes.get("irlvla_inserted"))}
        self.roadblock_connectors: dict[int, RoadblockConnector] = {}
        for f in t["lane_group_connectors"]:
            if f.geometry is None or f.geometry.is_empty or _int_or_none(f.attributes.get("irlvla_inserted")):
                continue
            a = f.attributes
            self.roadblock_connectors[f.fid] = RoadblockConnector(
                f.fid, f.geometry, _int_or_none(a.get("from_lane_group_fid")), _int_or_none(a.get("to_lane_group_fid")),
                _int_or_none(a.get("intersection_fid")))

    def _load_areas(self, t: Mapping[str, list[Feature]]) -> None:
        """Polygon layers (fid -> geometry): stop lines (and their types), intersections (without inserted ones),
        crosswalks, carparks, walkways, road segments, generic drivable areas."""
        inserted_of = {name: {f.fid: f.attributes.get("irlvla_inserted") for f in t[name]}
                       for name in ("intersections",)}

        def polys(name: str) -> dict[int, BaseGeometry]:
            return {f.fid: f.geometry for f in t[name] if f.geometry is not None and not f.geometry.is_empty}

        self.stop_lines = polys("stop_polygons")
        self.stop_line_types = {f.fid: _int_or_none(f.attributes.get("stop_polygon_type_fid"))
                                for f in t["stop_polygons"]}
        self.intersections = {k: v for k, v in polys("intersections").items()
                              if not _int_or_none(inserted_of["intersections"].get(k))}
        self.crosswalks = polys("crosswalks")
        self.carparks = polys("carpark_areas")
        self.walkways = polys("walkways")
        self.road_segments = polys("road_segments")
        self.generic_drivable_areas = polys("generic_drivable_areas")

    def _build_trees(self) -> None:
        """One STRtree per queryable layer, with the (n,) int64 fids of its geometries."""
        self._trees: dict[str, tuple[STRtree, np.ndarray]] = {}
        for layer, objs in ((LANE, {k: v.polygon for k, v in self.lanes.items()}),
                            (LANE_CONNECTOR, {k: v.polygon for k, v in self.connectors.items()}),
                            (ROADBLOCK, self.roadblocks),
                            (ROADBLOCK_CONNECTOR, {k: v.polygon for k, v in self.roadblock_connectors.items()}),
                            (STOP_LINE, self.stop_lines), (CROSSWALK, self.crosswalks),
                            (INTERSECTION, self.intersections), (WALKWAYS, self.walkways),
                            (CARPARK_AREA, self.carparks)):
            fids = np.fromiter(objs.keys(), dtype=np.int64, count=len(objs))
            self._trees[layer] = (STRtree(list(objs.values())), fids)

    def _make_lane(self, fid: int, is_connector: bool, baseline: np.ndarray | None, polygon: Polygon | None,
                   left_fid: Any, right_fid: Any) -> MapLane | None:
        kind = "lane connector" if is_connector else "lane"
        if baseline is None:
            self.dropped_lanes.append(f"{kind} {fid}: no baseline path")
            return None
        left = self.boundaries.get(_int_or_none(left_fid))
        right = self.boundaries.get(_int_or_none(right_fid))
        if left is None or right is None:
            # Fallback: offset the baseline by half the lane width (polygon area / length, else 3.5 m).
            line = LineString(baseline)
            width = 3.5
            if polygon is not None and line.length > 1e-3:
                width = float(np.clip(polygon.area / line.length, 1.0, 8.0))
            if left is None:
                left = _line_coords(line.offset_curve(width / 2.0))
            if right is None:
                right = _line_coords(line.offset_curve(-width / 2.0))
            if left is None or right is None:
                self.dropped_lanes.append(f"{kind} {fid}: no boundaries and the baseline cannot be offset")
                return None
        left, right = _orient_along(left, baseline), _orient_along(right, baseline)
        if polygon is None:
            polygon = Polygon(np.concatenate([left, right[::-1]]))
            if not polygon.is_valid:
                polygon = shapely.make_valid(polygon)
                polygon = _largest_polygon(polygon) or LineString(baseline).buffer(1.75, cap_style="flat")
        return MapLane(fid, is_connector, baseline, polygon, left, right, None)

    # ---- queries --------------------------------------------------------------------------------------------------

    def proximal(self, layer: str, x: float, y: float, radius: float) -> list[int]:
        """Fids (sorted) of ``layer`` objects whose geometry intersects the square [x +- r] x [y +- r] (UTM m).

        ``layer`` is one of :data:`MAP_LAYERS` (the devkit's get_proximal_map_objects, section 1.7).
        """
        if layer not in self._trees:
            raise ValueError(f"unknown map layer {layer!r}; expected one of {MAP_LAYERS}")
        tree, fids = self._trees[layer]
        if not len(fids):
            return []
        idx = tree.query(box(x - radius, y - radius, x + radius, y + radius), predicate="intersects")
        return sorted(int(f) for f in fids[idx])

    def containing(self, layer: str, x: float, y: float) -> list[int]:
        """Fids of ``layer`` polygons that contain the point (the devkit's get_all_map_objects)."""
        tree, fids = self._trees[layer]
        if not len(fids):
            return []
        return sorted(int(f) for f in fids[tree.query(Point(x, y), predicate="within")])

    def lane(self, key: tuple[bool, int]) -> MapLane:
        return (self.connectors if key[0] else self.lanes)[key[1]]

    def successors(self, key: tuple[bool, int]) -> list[tuple[bool, int]]:
        """Outgoing edges (1.6): a lane's connectors (exit_lane_fid = lane); a connector's entry lane; plus the edges
        our export stored as inserted link connectors / bridge lanes (:attr:`extra_successors`)."""
        is_conn, fid = key
        extra = self.extra_successors.get(key, [])
        if is_conn:
            entry = self.connectors[fid].entry_lane
            return ([(False, entry)] if entry in self.lanes else []) + [s for s in extra if s[1] in self.connectors]
        return [(True, c) for c in self.lane_out.get(fid, ()) if c in self.connectors] + \
            [s for s in extra if s[1] in self.lanes]

    def drivable_polygons(self, x: float, y: float, radius: float) -> list[BaseGeometry]:
        """PDMDrivableMap's polygons around (x, y): roadblocks, the lanes inside them, the lane connectors inside the
        roadblock connectors, intersections and car parks (roadblock-connector polygons themselves, road_segments and
        generic_drivable_areas are left out, as PDM does)."""
        out: list[BaseGeometry] = []
        for rb in self.proximal(ROADBLOCK, x, y, radius):
            out.append(self.roadblocks[rb])
            out.extend(self.lanes[f].polygon for f in self.group_lanes.get(rb, ()))
        for rbc in self.proximal(ROADBLOCK_CONNECTOR, x, y, radius):
            out.extend(self.connectors[f].polygon for f in self.group_connectors.get(rbc, ()))
        out.extend(self.intersections[f] for f in self.proximal(INTERSECTION, x, y, radius))
        out.extend(self.carparks[f] for f in self.proximal(CARPARK_AREA, x, y, radius))
        return out

    # ---- route ----------------------------------------------------------------------------------------------------

    def route_blocks(self, roadblock_ids: Sequence[Any]) -> list[tuple[bool, int]]:
        """Resolve route ids (str fids) like NAVSIM: ROADBLOCK first, then ROADBLOCK_CONNECTOR; unknown ids dropped.

        Returns (is_roadblock_connector, fid) pairs in route order, each once (NAVSIM's ``dict.fromkeys``)."""
        out = []
        for rid in roadblock_ids:
            fid = _int_or_none(rid)
            if fid is None:
                continue
            if fid in self.roadblocks:
                out.append((False, fid))
            elif fid in self.roadblock_connectors:
                out.append((True, fid))
        return list(dict.fromkeys(out))

    def _block_members(self, block: tuple[bool, int]) -> list[tuple[bool, int]]:
        is_rbc, fid = block
        if is_rbc:
            return [(True, c) for c in self.group_connectors.get(fid, ())]
        return [(False, ln) for ln in self.group_lanes.get(fid, ())]

    def _block_geometry(self, block: tuple[bool, int]) -> BaseGeometry:
        return self.roadblock_connectors[block[1]].polygon if block[0] else self.roadblocks[block[1]]

    def route_lane_keys(self, roadblock_ids: Sequence[Any], x: float, y: float, yaw: float,
                        max_blocks: int = 64) -> list[tuple[bool, int]]:
        """Lanes and connectors the route follows from the ego's lane onwards, in driving order.

        1. The route blocks are ``roadblock_ids`` resolved as NAVSIM does. The start block is the first one whose
           polygon contains the ego (rear axle, UTM m); failing that, the nearest.
        2. The start lane is the start block's lane/connector nearest the ego, heading errors counting 2 m per rad.
        3. From there, depth-first along the lane graph, within the current route block (a roadblock may hold a lane
           and its successor) or into the next one (successors into the next block tried first, straightest first;
           where the graph has no edge into it, a lane of the next block starting within 1 m of the current lane's
           end), keeping the path that reaches the furthest route block (PDM's route-centreline search).
        """
        blocks = self.route_blocks(roadblock_ids)
        if not blocks:
            return []
        p = Point(x, y)
        start = next((i for i, b in enumerate(blocks) if self._block_geometry(b).covers(p)), None)
        if start is None:
            start = int(np.argmin([self._block_geometry(b).distance(p) for b in blocks]))
        blocks = blocks[start:start + max_blocks]
        members = self._block_members(blocks[0])
        if not members:
            return []
        xy = np.array([x, y])

        def cost(key: tuple[bool, int]) -> float:
            ln = self.lane(key)
            d = LineString(ln.baseline).distance(p)
            dh = abs(float(wrap_angle(_heading_at(ln.baseline, xy) - yaw)))
            inside = 0.0 if ln.polygon.covers(p) else 5.0
            return d + 2.0 * dh + inside

        first = min(members, key=cost)
        block_of = {}
        for i, b in enumerate(blocks):
            for m in self._block_members(b):
                block_of.setdefault(m, i)

        memo: dict[tuple[tuple[bool, int], int], tuple[int, list]] = {}
        active: set[tuple[tuple[bool, int], int]] = set()

        def nexts(key: tuple[bool, int], depth: int) -> list[tuple[tuple[bool, int], int]]:
            h = _end_heading(self.lane(key).baseline, start=False)

            def straight(s: tuple[bool, int]) -> float:
                return abs(float(wrap_angle(_end_heading(self.lane(s).baseline, True) - h)))

            succ = self.successors(key)
            cand: list[tuple[bool, int]] = []
            if depth + 1 < len(blocks):
                cand = [s for s in succ if block_of.get(s) == depth + 1]
                if not cand:  # geometric continuation where the graph has no edge
                    end = self.lane(key).baseline[-1]
                    cand = [m for m in self._block_members(blocks[depth + 1])
                            if np.linalg.norm(self.lane(m).baseline[0] - end) < 1.0]
            same = [s for s in succ if block_of.get(s) == depth]
            return [(s, depth + 1) for s in sorted(cand, key=straight)] + \
                [(s, depth) for s in sorted(same, key=straight)]

        def best(key: tuple[bool, int], depth: int) -> tuple[int, list]:
            if (key, depth) in memo:
                return memo[(key, depth)]
            active.add((key, depth))
            result = (depth, [key])
            for s, d_s in nexts(key, depth):
                if (s, d_s) in active:  # a cycle inside one roadblock
                    continue
                d, path = best(s, d_s)
                if d > result[0]:
                    result = (d, [key] + path)
            active.discard((key, depth))
            memo[(key, depth)] = result
            return result

        return best(first, 0)[1]

    # ---- local map ------------------------------------------------------------------------------------------------

    def local_map(self, x: float, y: float, yaw: float, radius: float,
                  light_states: Mapping[int, np.ndarray] | None = None) -> tuple[MapData, list[tuple[bool, int]]]:
        """The map around the ego (UTM (x, y), heading ``yaw``) in the ego frame, as :class:`MapData`.

        Args:
            x, y, yaw: ego rear axle (UTM m) and heading (rad).
            radius: half side (m) of the query square: every lane, connector, intersection and crosswalk whose
                geometry intersects it is included whole (not clipped); the drivable area follows PDMDrivableMap.
            light_states: lane connector fid -> (9,) int8 light states (:data:`LIGHT_STATES`) at t = 0 .. 4 s.

        Returns:
            (map data, lane keys): keys[i] = (is_connector, fid) of lane row i.

        Raises:
            NavsimFormatError: no lane or no drivable area near the ego (empty map around it).
        """
        keys = [(False, f) for f in self.proximal(LANE, x, y, radius)] + \
               [(True, f) for f in self.proximal(LANE_CONNECTOR, x, y, radius)]
        if not keys:
            raise NavsimFormatError(f"{self.gpkg_path}: no lane or lane connector within {radius:g} m of the ego at "
                                    f"UTM ({x:.1f}, {y:.1f}) (empty map around it, or wrong map/CRS?)")
        row = {k: i for i, k in enumerate(keys)}
        lanes = [self.lane(k) for k in keys]
        origin = np.array([x, y])

        def loc(a: np.ndarray) -> np.ndarray:
            return to_local(a, origin, yaw)

        def loc_geoms(geoms: Sequence[BaseGeometry]) -> list[BaseGeometry]:
            if not len(geoms):
                return []
            return list(shapely.transform(np.asarray(geoms, dtype=object), lambda a: loc(a)))

        centers = [loc(ln.baseline) for ln in lanes]
        lefts = [loc(ln.left_boundary) for ln in lanes]
        rights = [loc(ln.right_boundary) for ln in lanes]
        polys = loc_geoms([ln.polygon for ln in lanes])
        lane_polys = PolygonSet.from_rings([[np.asarray(p.exterior.coords)] + [np.asarray(h.coords)
                                                                                for h in p.interiors] for p in polys])
        groups: dict[tuple[bool, int], int] = {}
        lane_group = []
        for ln in lanes:
            if ln.scene_group is not None:
                lane_group.append(groups.setdefault(("scene", ln.scene_group), len(groups)))
            elif ln.group is None:
                lane_group.append(-1)
            else:
                lane_group.append(groups.setdefault((ln.is_connector, ln.group), len(groups)))
        edges = [(i, row[s]) for i, k in enumerate(keys) for s in self.successors(k) if s in row]
        left_nb, right_nb = [], []
        for ln in lanes:
            li = lr = -1
            if not ln.is_connector and None not in ln.scene_neighbors:
                li, lr = (row.get((False, f), -1) for f in ln.scene_neighbors)
            elif not ln.is_connector and ln.group is not None and ln.lane_index is not None:
                li = row.get((False, self._by_index.get((ln.group, ln.lane_index - 1), -1)), -1)
                lr = row.get((False, self._by_index.get((ln.group, ln.lane_index + 1), -1)), -1)
            left_nb.append(li)
            right_nb.append(lr)
        inter_fids = self.proximal(INTERSECTION, x, y, radius)
        inter_geoms = [self.intersections[f] for f in inter_fids]
        inter_tree = STRtree(inter_geoms) if inter_geoms else None
        is_inter = []
        for ln in lanes:
            flag = False
            if ln.is_connector and ln.group in self.roadblock_connectors:
                flag = self.roadblock_connectors[ln.group].intersection is not None
            if not flag and inter_tree is not None:
                mid = LineString(ln.baseline).interpolate(0.5, normalized=True)
                flag = len(inter_tree.query(mid, predicate="within")) > 0
            is_inter.append(flag)
        light = np.zeros((NUM_TIMES, len(keys)), np.int8)
        for fid, states in (light_states or {}).items():
            i = row.get((True, int(fid)))
            if i is not None:
                light[:, i] = states
        drivable = loc_geoms(self.drivable_polygons(x, y, radius))
        if not drivable:
            raise NavsimFormatError(f"{self.gpkg_path}: no drivable area (roadblocks, roadblock connectors, "
                                    f"intersections, car parks) within {radius:g} m of UTM ({x:.1f}, {y:.1f})")
        crosswalks = loc_geoms([self.crosswalks[f] for f in self.proximal(CROSSWALK, x, y, radius)])
        mp = MapData.from_lists(
            lane_ids=[str(k[1]) for k in keys], centerlines=centers, left_boundaries=lefts, right_boundaries=rights,
            drivable_area=PolygonSet.from_shapely(drivable), lane_polygons=lane_polys,
            speed_limits=[ln.speed_limit for ln in lanes], is_connector=[ln.is_connector for ln in lanes],
            is_intersection=is_inter, lane_group=lane_group, successors=edges, left_neighbor=left_nb,
            right_neighbor=right_nb, light_state=light, intersections=PolygonSet.from_shapely(loc_geoms(inter_geoms)),
            crosswalks=PolygonSet.from_shapely(crosswalks))
        return mp, keys


# =====================================================================================================================
# Scene filter and reader
# =====================================================================================================================


@dataclass
class SceneFilter:
    """Which scenes to cut from the logs, with NAVSIM's SceneFilter semantics.

    Attributes:
        num_history_frames: frames up to and including t0 (NAVSIM default 4; the Scene keeps the last 4, so >= 4).
        num_future_frames: frames after t0 a window must have (NAVSIM default 10; the Scene uses the first 8, so
            >= 8).
        frame_interval: step (frames) between window starts; None -> ``num_frames`` (non-overlapping, NAVSIM).
        has_route: keep only windows whose t0 frame has a non-empty ``roadblock_ids``.
        max_scenes: stop after this many scenes (None = all).
        log_names: only these logs (file stems); None = all.
        tokens: only windows whose t0 frame token is listed; None = all.
    """

    num_history_frames: int = 4
    num_future_frames: int = 10
    frame_interval: int | None = None
    has_route: bool = True
    max_scenes: int | None = None
    log_names: Sequence[str] | None = None
    tokens: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.num_history_frames < NUM_HISTORY:
            raise ValueError(f"SceneFilter.num_history_frames must be >= {NUM_HISTORY}, got {self.num_history_frames}")
        if self.num_future_frames < NUM_FUTURE:
            raise ValueError(f"SceneFilter.num_future_frames must be >= {NUM_FUTURE}, got {self.num_future_frames}")
        if self.frame_interval is None:
            self.frame_interval = self.num_frames
        if self.frame_interval < 1:
            raise ValueError(f"SceneFilter.frame_interval must be >= 1, got {self.frame_interval}")
        if self.max_scenes is not None and self.max_scenes < 0:
            raise ValueError("SceneFilter.max_scenes must be >= 0 or None")

    @property
    def num_frames(self) -> int:
        return self.num_history_frames + self.num_future_frames


def _log_paths(logs: str | os.PathLike, log_names: Sequence[str] | None) -> list[Path]:
    p = Path(logs)
    if p.is_dir():
        paths = sorted(p.glob("*.pkl"))
    elif p.is_file():
        paths = [p]
    else:
        raise FileNotFoundError(f"{p}: NAVSIM logs path not found (expected a folder of <log>.pkl or one .pkl)")
    if log_names is not None:
        wanted = set(log_names)
        paths = [q for q in paths if q.stem in wanted]
    return paths


def _field(frame: Mapping, key: str, where: str) -> Any:
    if key not in frame:
        raise NavsimFormatError(f"{where}: missing key {key!r}")
    return frame[key]


def _float_array(frame: Mapping, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    v = _field(frame, key, where)
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NavsimFormatError(f"{where}: field {key!r} is not numeric ({exc})") from None
    if a.shape != shape:
        raise NavsimFormatError(f"{where}: field {key!r} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise NavsimFormatError(f"{where}: field {key!r} has non-finite values {a.tolist()}")
    return a


def quaternion_yaw(q: np.ndarray) -> float:
    """Yaw (rad) of a [w, x, y, z] quaternion (rotation about z of the x axis)."""
    w, x, y, z = (float(v) for v in q)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _ego_pose(frame: Mapping, where: str) -> np.ndarray:
    t = _float_array(frame, "ego2global_translation", (3,), where)
    q = _float_array(frame, "ego2global_rotation", (4,), where)
    if np.linalg.norm(q) < 1e-6:
        raise NavsimFormatError(f"{where}: field 'ego2global_rotation' is a zero quaternion")
    return np.array([t[0], t[1], quaternion_yaw(q / np.linalg.norm(q))])


def _light_list(frame: Mapping, where: str) -> list[tuple[int, bool]]:
    v = _field(frame, "traffic_lights", where)
    out = []
    try:
        for entry in v:
            out.append((int(entry[0]), bool(entry[1])))
    except (TypeError, ValueError, IndexError) as exc:
        raise NavsimFormatError(f"{where}: field 'traffic_lights' must be a list of (lane_connector_fid, is_red), "
                                f"({exc})") from None
    return out


def _agents(frames: Sequence[Mapping], poses: np.ndarray, origin: np.ndarray, where: Sequence[str]) -> Agents:
    """Agents over the 9 frames t0 .. t0 + 4 s, in the t0 ego frame.

    ``poses``: (9, 3) world ego poses of those frames; ``origin``: t0 pose. Boxes are [x, y, z, l, w, h, yaw] in each
    frame's ego frame (yaw relative to the ego heading); velocities are in the lidar frame (rotated to ego by
    ``lidar2ego_rotation``'s yaw, identity if absent) and end up in the t0 ego frame.
    """
    rows_t, rows_box, rows_tok, rows_name = [], [], [], []
    for k, (fr, pose) in enumerate(zip(frames, poses)):
        anns = fr.get("anns")
        if anns is None:
            continue
        w = where[k]
        try:
            boxes = np.asarray(anns["gt_boxes"], dtype=np.float64).reshape(-1, 7)
            n = len(boxes)
            if n == 0:
                continue
            names = [str(s) for s in np.asarray(anns.get("gt_names", ["generic_object"] * n)).reshape(-1)]
            vel = np.asarray(anns.get("gt_velocity_3d", np.zeros((n, 3))), dtype=np.float64).reshape(n, -1)
            toks = anns.get("track_tokens")
            if toks is None:
                toks = anns.get("instance_tokens")
            toks = [str(s) for s in (toks if toks is not None else [f"{w}:{i}" for i in range(n)])]
        except (KeyError, TypeError, ValueError) as exc:
            raise NavsimFormatError(f"{w}: field 'anns' is malformed ({type(exc).__name__}: {exc})") from None
        if len(names) != n or len(toks) != n or len(vel) != n or vel.shape[1] < 2:
            raise NavsimFormatError(f"{w}: field 'anns': gt_boxes ({n}), gt_names ({len(names)}), "
                                    f"gt_velocity_3d ({len(vel)}) and track_tokens ({len(toks)}) disagree")
        q = fr.get("lidar2ego_rotation")
        lidar_yaw = quaternion_yaw(np.asarray(q, dtype=np.float64)) if q is not None and len(q) == 4 else 0.0
        xy_w = to_global(boxes[:, :2], pose[:2], pose[2])
        out = np.zeros((n, 8))
        out[:, :2] = to_local(xy_w, origin[:2], origin[2])
        out[:, 2] = wrap_angle(boxes[:, 6] + pose[2] - origin[2])
        out[:, 3:6] = boxes[:, 3:6]
        v = np.nan_to_num(vel[:, :2])
        c, s = math.cos(lidar_yaw + pose[2] - origin[2]), math.sin(lidar_yaw + pose[2] - origin[2])
        out[:, 6] = c * v[:, 0] - s * v[:, 1]
        out[:, 7] = s * v[:, 0] + c * v[:, 1]
        rows_t.append(np.full(n, k))
        rows_box.append(out)
        rows_tok.extend(toks)
        rows_name.extend(names)
    if not rows_box:
        return Agents.empty()
    t = np.concatenate(rows_t)
    b = np.concatenate(rows_box)
    ok = np.all(np.isfinite(b[:, :6]), axis=1) & (b[:, 3] > 0) & (b[:, 4] > 0) & np.all(np.abs(b[:, :2]) < MAX_COORD,
                                                                                        axis=1)
    b[~ok] = 0.0
    uniq, first, inv = np.unique(np.asarray(rows_tok), return_index=True, return_inverse=True)
    order = np.argsort(first)  # agents in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    col = rank[inv]
    N = len(uniq)
    boxes = np.zeros((NUM_TIMES, N, 8))
    valid = np.zeros((NUM_TIMES, N), bool)
    boxes[t[ok], col[ok]] = b[ok]
    valid[t[ok], col[ok]] = True
    cats = np.array([NAME_TO_CATEGORY.get(rows_name[i].lower(), GENERIC_OBJECT) for i in first[order]], np.int8)
    return Agents(boxes, valid, cats, uniq[order].astype(str))


def frames_to_scene(frames: Sequence[Mapping], map_reader: NuPlanMapReader, *, num_history_frames: int = 4,
                    map_radius: float = 100.0, sensor_blobs_root: str | os.PathLike | None = None,
                    where: str = "<frames>", first_index: int = 0, max_step_error_s: float = 0.1) -> Scene:
    """Build one Scene from a window of NAVSIM frame dicts (2 Hz); t0 is ``frames[num_history_frames - 1]``.

    Uses the 4 frames up to t0 (history) and the 8 after it (future); agents and traffic lights at the 9 frames t0 ..
    t0 + 4 s. ``where`` / ``first_index`` only label error messages ("<file>: frame <i>: ..."). Consecutive frame
    timestamps must be 0.5 s apart within ``max_step_error_s`` (a gap or a 10 Hz log is refused, not misread).

    Raises:
        NavsimFormatError: a missing key, a wrongly shaped or non-finite field (naming file, frame and field), or an
            empty map around the ego.
        SceneValidationError: the assembled scene fails validation.
    """
    h = num_history_frames
    if len(frames) < h + NUM_FUTURE:
        raise NavsimFormatError(f"{where}: window of {len(frames)} frames, need {h + NUM_FUTURE}")
    sel = list(range(h - NUM_HISTORY, h + NUM_FUTURE))
    labels = {i: f"{where}: frame {first_index + i}" for i in sel}
    for i in sel:
        fr = frames[i]
        if not isinstance(fr, Mapping):
            raise NavsimFormatError(f"{labels[i]}: expected a dict, got {type(fr).__name__}")
        for key in REQUIRED_FRAME_KEYS:
            if key not in fr:
                raise NavsimFormatError(f"{labels[i]}: missing key {key!r}")
    t0 = frames[h - 1]
    w0 = labels[h - 1]
    try:
        stamps = np.array([int(frames[i]["timestamp"]) for i in sel], dtype=np.int64)
    except (TypeError, ValueError):
        raise NavsimFormatError(f"{where}: field 'timestamp' must be an integer (µs) in every frame") from None
    steps = np.diff(stamps) * 1e-6
    if np.any(np.abs(steps - DT) > max_step_error_s):
        k = int(np.argmax(np.abs(steps - DT)))
        raise NavsimFormatError(f"{labels[sel[k + 1]]}: field 'timestamp': {steps[k]:.3f} s after the previous frame; "
                                f"NAVSIM frames are {DT} s apart (2 Hz), tolerance {max_step_error_s} s")
    poses = np.stack([_ego_pose(frames[i], labels[i]) for i in sel])  # (12, 3) world
    origin = poses[NUM_HISTORY - 1]
    local = poses_to_local(poses, origin[:2], origin[2])
    local[NUM_HISTORY - 1] = 0.0
    dyn = np.stack([_float_array(frames[i], "ego_dynamic_state", (4,), labels[i]) for i in sel[:NUM_HISTORY]])
    vehicle = PACIFICA
    if t0.get(EGO_VEHICLE_KEY) is not None:
        try:
            vehicle = EgoVehicle.from_array(np.asarray(t0[EGO_VEHICLE_KEY], dtype=np.float64))
        except (TypeError, ValueError):
            raise NavsimFormatError(f"{w0}: field {EGO_VEHICLE_KEY!r} must be 5 numbers (m)") from None
    ego = EgoState(local[:NUM_HISTORY], dyn[:, :2], dyn[:, 2:4], local[NUM_HISTORY:], vehicle)

    times = list(range(h - 1, h + NUM_FUTURE))  # t0 .. t0 + 4 s
    agents = _agents([frames[i] for i in times], poses[NUM_HISTORY - 1:], origin, [labels[i] for i in times])

    lights: dict[int, np.ndarray] = {}
    for k, i in enumerate(times):
        for fid, red in _light_list(frames[i], labels[i]):
            lights.setdefault(fid, np.zeros(NUM_TIMES, np.int8))[k] = LIGHT_RED if red else LIGHT_GREEN
    mp, keys = map_reader.local_map(origin[0], origin[1], origin[2], map_radius, lights)

    route_ids = _field(t0, "roadblock_ids", w0)
    if isinstance(route_ids, str):
        route_ids = route_ids.split()
    try:
        route_ids = [str(r) for r in route_ids]
    except TypeError:
        raise NavsimFormatError(f"{w0}: field 'roadblock_ids' must be a list of str") from None
    row = {k: i for i, k in enumerate(keys)}
    route: list[int] = []
    for k in map_reader.route_lane_keys(route_ids, origin[0], origin[1], origin[2]):
        if k not in row:
            break  # the route leaves the cropped map
        route.append(row[k])

    cmd = np.asarray(_field(t0, "driving_command", w0), dtype=np.float64).reshape(-1)
    if cmd.shape != (4,) or not np.all(np.isfinite(cmd)):
        raise NavsimFormatError(f"{w0}: field 'driving_command' must be a (4,) one-hot, got {cmd.tolist()}")
    command = int(np.argmax(cmd)) if cmd.max() > 0 else COMMAND_UNKNOWN

    cameras: dict[str, str] = {}
    cams = t0.get("cams") or {}
    if isinstance(cams, Mapping):
        for ch, cam in cams.items():
            path = cam.get("data_path") if isinstance(cam, Mapping) else None
            if path:
                cameras[str(ch)] = os.path.join(str(sensor_blobs_root), str(path)) if sensor_blobs_root else str(path)

    try:
        ts = int(t0["timestamp"])
    except (TypeError, ValueError):
        raise NavsimFormatError(f"{w0}: field 'timestamp' is not an integer (µs)") from None
    meta = SceneMetadata(token=str(t0["token"]), source="navsim", log_name=str(t0["log_name"]),
                         map_name=str(t0["map_location"]), timestamp_us=ts, licence=NAVSIM_LICENCE)
    return Scene(meta, ego, agents, mp, np.asarray(route, np.int64), command, cameras)


class _MapCache:
    def __init__(self, maps_root: str | os.PathLike | None):
        self.root = maps_root
        self.maps: dict[str, NuPlanMapReader] = {}

    def get(self, name: str) -> NuPlanMapReader:
        if name not in self.maps:
            self.maps[name] = NuPlanMapReader(self.root, name)
        return self.maps[name]


def iter_scenes(logs: str | os.PathLike, maps_root: str | os.PathLike | None = None, *,
                scene_filter: SceneFilter | None = None, map_radius: float = 100.0,
                sensor_blobs_root: str | os.PathLike | None = None,
                strict: bool = False) -> Iterator[Scene | SkippedItem]:
    """Yield Scenes cut from NAVSIM log pickles (``logs``: a folder of ``<log_name>.pkl`` or one ``.pkl``).

    Args:
        logs: folder or file; pickles are read with the restricted unpickler (NAVSIM allow-list).
        maps_root: nuPlan maps root (default ``NUPLAN_MAPS_ROOT``); each frame's ``map_location`` picks the map.
        scene_filter: windowing / selection (:class:`SceneFilter`, NAVSIM semantics); default ``SceneFilter()``.
        map_radius: half side (m) of the square map crop around the ego (and of the PDM drivable-area query).
        sensor_blobs_root: prefix for camera ``data_path``s (relative paths are kept when None).
        strict: raise the first per-log/per-scene error instead of yielding a :class:`SkippedItem`.

    Yields:
        :class:`Scene` per kept window, or :class:`SkippedItem` (item = ``<file>#<frame>`` or the file) whose error
        names the file, frame and field.

    Raises:
        FileNotFoundError: ``logs`` does not exist.
        NuPlanMapError: the maps root / json / GeoPackage / a required table is missing or malformed (affects every
            scene, so it is raised, not skipped).
        UnsafePickleError: a log pickle asks for a non-allow-listed global (never silently skipped).
    """
    sf = scene_filter if scene_filter is not None else SceneFilter()
    paths = _log_paths(logs, sf.log_names)
    tokens = set(sf.tokens) if sf.tokens is not None else None
    maps = _MapCache(maps_root)
    h, nf, step = sf.num_history_frames, sf.num_frames, int(sf.frame_interval)
    count = 0
    if sf.max_scenes == 0:
        return
    for path in paths:
        try:
            frames = load_pickle(path, NAVSIM_ALLOWLIST)
            if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
                raise NavsimFormatError(f"{path}: expected a list of frame dicts, got "
                                        f"{type(frames).__name__}" + (" with non-dict items"
                                                                      if isinstance(frames, list) else ""))
        except UnsafePickleError as exc:  # refused before anything ran: skip and name it like any bad file
            if strict:
                raise
            yield SkippedItem(str(path), f"unsafe pickle refused: {exc}")
            continue
        except (ValueError, OSError) as exc:
            if strict:
                raise
            yield SkippedItem(str(path), str(exc))
            continue
        for start in range(0, len(frames), step):
            window = frames[start:start + nf]
            if len(window) < nf:
                break
            t0 = window[h - 1]
            item = f"{path}#{start + h - 1}"
            where0 = f"{path}: frame {start + h - 1}"
            try:
                token = str(_field(t0, "token", where0))
                if tokens is not None and token not in tokens:
                    continue
                if sf.has_route and len(_field(t0, "roadblock_ids", where0)) == 0:
                    continue
                reader = maps.get(str(_field(t0, "map_location", where0)))
                scene = frames_to_scene(window, reader, num_history_frames=h, map_radius=map_radius,
                                        sensor_blobs_root=sensor_blobs_root, where=str(path), first_index=start)
            except NuPlanMapError:
                raise
            except (NavsimFormatError, SceneValidationError, TypeError, ValueError) as exc:
                if strict:
                    raise
                msg = str(exc) if isinstance(exc, (NavsimFormatError, SceneValidationError)) else \
                    f"{where0}: {type(exc).__name__}: {exc}"
                yield SkippedItem(item, msg)
                continue
            yield scene
            count += 1
            if sf.max_scenes is not None and count >= sf.max_scenes:
                return


# =====================================================================================================================
# Exporter
# =====================================================================================================================


@dataclass
class ExportResult:
    """What :func:`export_navsim` wrote.

    Attributes:
        maps_root: folder with ``nuplan-maps-v1.0.json`` (pass as ``maps_root`` / ``NUPLAN_MAPS_ROOT``).
        logs_dir: folder of ``<log_name>.pkl`` files.
        gpkg_path: the map GeoPackage of the first scene's location (``map_name``).
        map_name / map_version / epsg: map location, version string and projected CRS.
        tokens: t0 frame token of each exported scene (= the scene token), in input order.
        lane_fids: scene token -> {scene lane id: GeoPackage fid (lanes_polygons / lane_connectors)}.
        placements: scene token -> (easting, northing, heading): where the scene's ego frame sits in UTM.
        log_of: scene token -> log name.
        map_of: scene token -> the nuPlan location (map) it was written to.
        gpkg_paths: location -> its map GeoPackage (all four nuPlan locations; those without scenes are empty).
        dropped_edges: successor edges nuPlan cannot represent even with the inserted connectors / bridge lanes (a
            connector's second predecessor / successor), summed over scenes.
        dropped_lights: (time, lane) light states lost: lights on non-connector lanes, and yellow (exported as not
            red, i.e. green).
    """

    maps_root: Path
    logs_dir: Path
    gpkg_path: Path
    map_name: str
    map_version: str
    epsg: int
    tokens: list[str] = field(default_factory=list)
    lane_fids: dict[str, dict[str, int]] = field(default_factory=dict)
    placements: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    log_of: dict[str, str] = field(default_factory=dict)
    map_of: dict[str, str] = field(default_factory=dict)
    gpkg_paths: dict[str, Path] = field(default_factory=dict)
    dropped_edges: int = 0
    dropped_lights: int = 0


def _quat_yaw(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])


def _polygon_from_rings(rings: Sequence[np.ndarray]) -> Polygon:
    return Polygon(rings[0], rings[1:])


_OVERLAY_GRID = 1e-4
"""[m] precision grid of the last-resort retry of set operations GEOS cannot node at full precision."""


def _overlay(fn, *args):
    """``fn(*args)`` (a shapely set operation on geometries / lists of geometries), robust to GEOS failures
    ("non-noded intersection", "ring edge missing"; frequent at UTM magnitudes of ~1e6 m): on failure the inputs are
    made valid and moved next to the origin (where doubles have 1e6 times finer spacing), the operation repeated (then
    on a 0.1 mm grid) and the result moved back."""
    try:
        return fn(*args)
    except shapely.errors.GEOSException:
        pass
    flat = [g for a in args for g in (a if isinstance(a, (list, tuple)) else [a])]
    lo = np.asarray(shapely.total_bounds(flat)[:2], np.float64)
    lo = np.where(np.isfinite(lo), np.floor(lo), 0.0)

    def local(g):
        return shapely.make_valid(shapely.transform(g, lambda xy: xy - lo))

    moved = [[local(g) for g in a] if isinstance(a, (list, tuple)) else local(a) for a in args]
    try:
        out = fn(*moved)
    except shapely.errors.GEOSException:
        out = fn(*moved, grid_size=_OVERLAY_GRID)
    return shapely.transform(out, lambda xy: xy + lo)


def _valid_parts(geom: BaseGeometry) -> list[Polygon]:
    """The polygonal parts of a geometry, repaired with make_valid if it is invalid (self-intersections etc.)."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = getattr(geom, "geoms", [geom])
    out = []
    for g in parts:
        if g.geom_type == "Polygon" and not g.is_empty:
            out.append(g)
        elif g.geom_type == "MultiPolygon":
            out.extend(q for q in g.geoms if not q.is_empty)
    return out


def _polygonset_polygons(ps: PolygonSet) -> list[list[np.ndarray]]:
    """[[exterior, hole, ...], ...] of a PolygonSet (float64)."""
    out: list[list[np.ndarray]] = []
    for ring, hole in zip(ps.rings, ps.ring_is_hole):
        r = np.asarray(ring, dtype=np.float64)
        if hole:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _body_velocities(poses: np.ndarray, dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    """Finite-difference (n, 2) velocity and acceleration in each pose's body frame from (n, 3) poses at dt."""
    v_w = np.gradient(poses[:, :2], dt, axis=0)
    a_w = np.gradient(v_w, dt, axis=0)
    c, s = np.cos(poses[:, 2]), np.sin(poses[:, 2])

    def body(v: np.ndarray) -> np.ndarray:
        return np.stack([c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1]], axis=1)

    return body(v_w), body(a_w)


_STUB = 0.05
"""Length (m) of the inserted stub / bridge lanes and the minimum length of inserted link connectors."""


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return np.asarray(v, np.float64) / n if n > 1e-9 else np.array([1.0, 0.0])


def _link_line(p0: np.ndarray, p1: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """2-point centre line of an inserted element from ``p0`` (end of the upstream line ``before``) to ``p1`` (start
    of the downstream line ``after``); when they (nearly) coincide, a :data:`_STUB` m segment from ``p0`` along the
    mean of the two lines' directions there."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    if np.linalg.norm(p1 - p0) >= _STUB:
        return np.stack([p0, p1])
    d = _unit(_unit(before[-1] - before[-2]) + _unit(after[1] - after[0]))
    return np.stack([p0, p0 + _STUB * d])


def _strip(line: np.ndarray, width: float) -> tuple[Polygon, np.ndarray, np.ndarray]:
    """(rectangle polygon, left boundary, right boundary) of a 2-point centre line and a width (clipped to 1..8 m)."""
    half = 0.5 * float(np.clip(width if math.isfinite(width) else 3.5, 1.0, 8.0))
    d = _unit(line[-1] - line[0])
    nrm = np.array([-d[1], d[0]])
    left, right = line + half * nrm, line - half * nrm
    return Polygon([left[0], left[1], right[1], right[0]]), left, right


def _split_sequential_groups(keys: Sequence[Any], edges: Sequence[tuple[int, int]]) -> list[Any]:
    """Lane group keys with every group that holds a successor edge between two of its members split into levels
    (longest upstream chain inside the group; key ``(group key, level)``): the side-by-side lanes that
    ``lane_index`` numbers."""
    members: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    inner: dict[Any, list[tuple[int, int]]] = {}
    for a, b in edges:
        if a != b and keys[a] == keys[b]:
            inner.setdefault(keys[a], []).append((a, b))
    out = list(keys)
    for k, es in inner.items():
        n = len(members[k])
        level = {i: 0 for i in members[k]}
        for _ in range(n):
            changed = False
            for a, b in es:
                if level[b] < level[a] + 1 < n:
                    level[b] = level[a] + 1
                    changed = True
            if not changed:
                break
        for i in members[k]:
            out[i] = (k, level[i])
    return out


class _SceneLanes:
    """Working state of :meth:`_MapWriter.add_scene` for one scene: its lanes in UTM coordinates, their fids, the
    roadblock (lane group) keys, the successor edges sorted by kind, and the inserted elements that join them.

    Fids come from the writer's counter in a fixed order (lanes, scene groups, roadblocks, then the inserted
    elements as they are added), so an export is reproducible.

    Attributes (L lanes; lane i has fid ``fids[i]``):
        centers / lefts / rights: L (n, 2) float64 polylines (UTM m); polys: L shapely lane polygons.
        edges: successor edges (a, b), a != b; ll_edges: those between two non-connector lanes.
        lane_preds / lane_succs / conn_preds / conn_succs: lane -> its non-connector / connector predecessors and
            successors (edges touching a connector only).
        orig_key / orig_fid: scene lane-group key per lane and its fid (the irlvla_group column).
        group_key / block_fid / members: roadblock key per lane, its fid and its lanes (inserted blocks have none).
        level_key: ``group_key`` with groups holding inner successor edges split into levels (lane_index).
        extra_lanes: inserted lanes (fid, centre line, width, block key); extra_conns: inserted link connectors
            (fid, centre line, width, exit lane fid, entry lane fid, block key, speed limit).
        link_of: (a, b) lane -> lane edge -> block key of its link connector.
        exit_fid / entry_fid / exit_block / entry_block: connector -> its exit / entry lane fid and block key.
        bridge: (c0, c1) connector -> connector edge -> bridge lane fid; bridge_block: bridge fid -> block key.
    """

    def __init__(self, scene: Scene, origin: np.ndarray, heading: float, fid: Callable[[], int]):
        mp = scene.map
        self.scene, self.map, self.L = scene, mp, mp.num_lanes
        self.origin, self.heading, self.fid = origin, heading, fid
        self.is_conn = np.asarray(mp.lane_is_connector, bool)
        self.fids = [fid() for _ in range(self.L)]
        self.centers = [self.w(c) for c in mp.lane_centerlines]
        self.lefts = [self.w(b) for b in mp.lane_left_boundaries]
        self.rights = [self.w(b) for b in mp.lane_right_boundaries]
        self.polys = []
        for rings in _polygonset_polygons(mp.lane_polygons):
            p = _polygon_from_rings([self.w(r) for r in rings])
            self.polys.append(p if p.is_valid else max(_valid_parts(p) or [p.buffer(0)], key=lambda g: g.area))
        self.edges = [(int(a), int(b)) for a, b in np.asarray(mp.lane_successors).reshape(-1, 2) if a != b]
        self._roadblocks()
        self._sort_edges()
        self.extra_lanes: list[tuple[int, np.ndarray, float, Any]] = []
        self.extra_conns: list[tuple[int, np.ndarray, float, int, int, Any, float]] = []
        self.link_of: dict[tuple[int, int], Any] = {}
        self.exit_fid: dict[int, int] = {}
        self.entry_fid: dict[int, int] = {}
        self.exit_block: dict[int, Any] = {}
        self.entry_block: dict[int, Any] = {}
        self.bridge: dict[tuple[int, int], int] = {}
        self.bridge_block: dict[int, Any] = {}

    def w(self, a: np.ndarray) -> np.ndarray:
        """(..., 2) scene-frame points -> UTM (float64)."""
        return to_global(np.asarray(a, dtype=np.float64), self.origin, self.heading)

    def _roadblocks(self) -> None:
        """Roadblocks / roadblock connectors: one per (lane_group, kind); ungrouped lanes get their own."""
        # A scene group is written whole even when it holds a lane and its successor (Waymo groups are neighbour
        # components): NAVSIM's on-route lanes are the lanes of the route roadblocks, and the scorer's are those of
        # the route's lane groups (irlvla_gym.scenes.routing.on_route_lane_mask), so a roadblock must be exactly a
        # scene group. Such groups are only split into successive levels for lane_index (see _lane_indices).
        mp = self.map
        self.orig_key = [(int(g), bool(c)) if g >= 0 else ("solo", i)
                         for i, (g, c) in enumerate(zip(mp.lane_group, self.is_conn))]
        self.orig_fid: dict[Any, int] = {}
        for k in self.orig_key:
            if k not in self.orig_fid:
                self.orig_fid[k] = self.fid()
        self.group_key = list(self.orig_key)
        self.level_key = _split_sequential_groups(self.orig_key, self.edges)
        self.block_fid: dict[Any, int] = {}
        self.members: dict[Any, list[int]] = {}
        for i, k in enumerate(self.group_key):
            if k not in self.block_fid:
                self.block_fid[k] = self.fid()
            self.members.setdefault(k, []).append(i)

    def _sort_edges(self) -> None:
        """Sort the successor edges: lane -> lane (``ll_edges``) or touching a connector (preds / succs lists)."""
        L, is_conn = self.L, self.is_conn
        self.lane_preds: dict[int, list[int]] = {i: [] for i in range(L)}
        self.lane_succs: dict[int, list[int]] = {i: [] for i in range(L)}
        self.conn_preds: dict[int, list[int]] = {i: [] for i in range(L)}
        self.conn_succs: dict[int, list[int]] = {i: [] for i in range(L)}
        self.ll_edges: list[tuple[int, int]] = []
        for a, b in self.edges:
            if not is_conn[a] and not is_conn[b]:
                self.ll_edges.append((a, b))
                continue
            (self.conn_succs if is_conn[b] else self.lane_succs)[a].append(b)
            (self.conn_preds if is_conn[a] else self.lane_preds)[b].append(a)

    def width_at(self, i: int, end: bool) -> float:
        """Width (m) of lane i at its start or end (distance between its boundaries)."""
        k = -1 if end else 0
        return float(np.linalg.norm(self.lefts[i][k] - self.rights[i][k]))

    # Inserted elements (marked irlvla_inserted = 1; NAVSIM sees them, our reader folds them back into edges).
    # Direct lane -> lane links get a short lane connector (nuPlan joins lanes only through connectors); a
    # connector -> connector link gets a short bridge lane; a connector whose upstream / downstream lane was
    # cropped away gets a stub lane, so no connector id is ever NULL.

    def add_extra_lane(self, line: np.ndarray, width: float) -> int:
        """Insert a lane (centre ``line`` (2, 2) UTM m, ``width`` m) in a roadblock of its own; returns its fid."""
        f = self.fid()
        key = ("inserted", f)
        self.block_fid[key] = self.fid()
        self.members[key] = []
        self.extra_lanes.append((f, line, width, key))
        return f

    def link_lanes(self) -> None:
        """A link connector for every lane -> lane edge, in a roadblock connector per (from group, to group)."""
        mp, centers = self.map, self.centers
        for a, b in self.ll_edges:
            key = ("link", self.group_key[a], self.group_key[b])
            if key not in self.block_fid:
                self.block_fid[key] = self.fid()
                self.members[key] = []
            speed = float(mp.lane_speed_limits[a])
            self.extra_conns.append((self.fid(), _link_line(centers[a][-1], centers[b][0], centers[a], centers[b]),
                                     min(self.width_at(a, True), self.width_at(b, False)), self.fids[a],
                                     self.fids[b], key, speed))
            self.link_of[(a, b)] = key

    def bridge_lane(self, c0: int, c1: int) -> int:
        """Fid of the bridge lane of the connector -> connector edge (c0, c1) (inserted on first use)."""
        if (c0, c1) not in self.bridge:
            centers = self.centers
            f = self.add_extra_lane(_link_line(centers[c0][-1], centers[c1][0], centers[c0], centers[c1]),
                                    min(self.width_at(c0, True), self.width_at(c1, False)))
            self.bridge[(c0, c1)] = f
            self.bridge_block[f] = self.extra_lanes[-1][3]
        return self.bridge[(c0, c1)]

    def connect_connectors(self) -> None:
        """Exit and entry lane (fid and roadblock key) of every connector: its first upstream / downstream lane,
        else a bridge lane to its first upstream / downstream connector, else a stub lane."""
        fids, group_key = self.fids, self.group_key
        for i in np.flatnonzero(self.is_conn):
            i = int(i)
            if self.lane_preds[i]:
                self.exit_fid[i], self.exit_block[i] = fids[self.lane_preds[i][0]], group_key[self.lane_preds[i][0]]
            elif self.conn_preds[i]:
                f = self.bridge_lane(self.conn_preds[i][0], i)
                self.exit_fid[i], self.exit_block[i] = f, self.bridge_block[f]
            else:
                c = self.centers[i]
                f = self.add_extra_lane(_link_line(c[0] - _STUB * _unit(c[1] - c[0]), c[0], c, c),
                                        self.width_at(i, False))
                self.exit_fid[i], self.exit_block[i] = f, self.extra_lanes[-1][3]
            if self.lane_succs[i]:
                self.entry_fid[i], self.entry_block[i] = fids[self.lane_succs[i][0]], group_key[self.lane_succs[i][0]]
            elif self.conn_succs[i]:
                f = self.bridge_lane(i, self.conn_succs[i][0])
                self.entry_fid[i], self.entry_block[i] = f, self.bridge_block[f]
            else:
                c = self.centers[i]
                f = self.add_extra_lane(_link_line(c[-1], c[-1] + _STUB * _unit(c[-1] - c[-2]), c, c),
                                        self.width_at(i, True))
                self.entry_fid[i], self.entry_block[i] = f, self.extra_lanes[-1][3]

    def dropped_edges(self) -> int:
        """Edges nuPlan still cannot hold: a connector's second upstream / downstream element, and connector ->
        connector links whose bridge could not be both the first one's entry and the second one's exit."""
        dropped = 0
        is_conn, fids = self.is_conn, self.fids
        for a, b in self.edges:
            if is_conn[a] and is_conn[b]:
                f = self.bridge.get((a, b))
                ok = f is not None and self.entry_fid.get(a) == f and self.exit_fid.get(b) == f
            elif is_conn[b]:
                ok = self.exit_fid[b] == fids[a]
            elif is_conn[a]:
                ok = self.entry_fid[a] == fids[b]
            else:
                ok = True
            dropped += not ok
        return dropped

    def lane_indices(self) -> dict[int, int]:
        """lane_index of every non-connector lane: left -> right within each level of a roadblock (side-by-side
        lanes) by lateral offset of the centreline midpoints; level m of a roadblock of n lanes is numbered from
        m * (n + 1), so indices are unique in the roadblock and never adjacent across levels. Our reader takes the
        neighbours from the irlvla_left / irlvla_right columns (exact), the devkit from lane_index."""
        lane_index = {}
        level_members: dict[Any, list[int]] = {}
        for i, k in enumerate(self.level_key):
            if not self.is_conn[i]:
                level_members.setdefault(k, []).append(i)
        for k, idx in level_members.items():
            n = len(self.members[self.group_key[idx[0]]])
            base = k[1] * (n + 1) if k != self.group_key[idx[0]] else 0
            ref = self.centers[idx[0]]
            mid_ref = LineString(ref).interpolate(0.5, normalized=True)
            d = np.diff(ref, axis=0).sum(axis=0)
            d = d / max(np.linalg.norm(d), 1e-9)
            lat = []
            for i in idx:
                m = LineString(self.centers[i]).interpolate(0.5, normalized=True)
                lat.append(d[0] * (m.y - mid_ref.y) - d[1] * (m.x - mid_ref.x))
            for rank, j in enumerate(np.argsort(-np.asarray(lat), kind="stable")):
                lane_index[idx[j]] = base + rank
        return lane_index

    def route_blocks(self) -> list[int]:
        """Route roadblock fids in driving order, with the inserted link / bridge blocks between their two ends
        (also within one roadblock: NAVSIM's route search only walks lanes of route roadblocks). Each block is
        listed once (NAVSIM keeps the first occurrence), and the list ends with the last scene group reached first,
        as the scorer's route search (irlvla_gym.scenes.routing: its target is the last lane group of the route)."""
        route_blocks: list[int] = []
        real_blocks: set[int] = set()

        def push(bf: int, real: bool) -> None:
            if bf not in route_blocks:
                route_blocks.append(bf)
            if real:
                real_blocks.add(bf)

        block_fid = self.block_fid
        route = [int(i) for i in np.asarray(self.scene.route_lanes, np.int64)]
        for n, j in enumerate(route):
            if n:
                i = route[n - 1]
                if (i, j) in self.link_of:
                    push(block_fid[self.link_of[(i, j)]], False)
                elif (i, j) in self.bridge:
                    push(block_fid[self.bridge_block[self.bridge[(i, j)]]], False)
            push(block_fid[self.group_key[j]], True)
        while route_blocks and route_blocks[-1] not in real_blocks:
            route_blocks.pop()
        return route_blocks


class _MapWriter:
    """Accumulates the nuPlan GeoPackage rows of all exported scenes (UTM coordinates)."""

    TABLES = ("lanes_polygons", "lane_connectors", "gen_lane_connectors_scaled_width_polygons", "baseline_paths",
              "boundaries", "lane_groups_polygons", "lane_group_connectors", "stop_polygons", "intersections",
              "crosswalks", "carpark_areas", "road_segments", "generic_drivable_areas", "walkways")
    COLUMNS: dict[str, dict[str, str]] = {
        "lanes_polygons": {"lane_fid": "INTEGER", "lane_group_fid": "INTEGER", "lane_index": "INTEGER",
                           "left_boundary_fid": "INTEGER", "right_boundary_fid": "INTEGER",
                           "speed_limit_mps": "REAL", "irlvla_inserted": "INTEGER", "irlvla_group": "INTEGER",
                           "irlvla_left": "INTEGER", "irlvla_right": "INTEGER"},
        "lane_connectors": {"exit_lane_fid": "INTEGER", "entry_lane_fid": "INTEGER",
                            "lane_group_connector_fid": "INTEGER", "speed_limit_mps": "REAL",
                            "traffic_light_stop_line_fids": "TEXT", "irlvla_inserted": "INTEGER",
                            "irlvla_group": "INTEGER"},
        "gen_lane_connectors_scaled_width_polygons": {"lane_connector_fid": "INTEGER", "left_boundary_fid": "INTEGER",
                                                      "right_boundary_fid": "INTEGER"},
        "baseline_paths": {"lane_fid": "INTEGER", "lane_connector_fid": "INTEGER"},
        "boundaries": {"boundary_type_fid": "INTEGER"},
        "lane_groups_polygons": {"irlvla_inserted": "INTEGER"},
        "lane_group_connectors": {"from_lane_group_fid": "INTEGER", "to_lane_group_fid": "INTEGER",
                                  "intersection_fid": "INTEGER", "irlvla_inserted": "INTEGER"},
        "stop_polygons": {"stop_polygon_type_fid": "INTEGER"},
        "intersections": {"intersection_type_fid": "INTEGER", "irlvla_inserted": "INTEGER"},
        "crosswalks": {}, "carpark_areas": {}, "road_segments": {}, "generic_drivable_areas": {}, "walkways": {},
    }

    def __init__(self) -> None:
        self.rows: dict[str, list[Feature]] = {t: [] for t in self.TABLES}
        self._next = 1000

    def fid(self) -> int:
        self._next += 1
        return self._next

    def add(self, table: str, fid: int, geom: BaseGeometry, **attrs: Any) -> int:
        self.rows[table].append(Feature(fid, geom, attrs))
        return fid

    def add_scene(self, scene: Scene, origin: np.ndarray, heading: float) -> tuple[dict[str, int], list[int], int, int]:
        """Write one scene's map at UTM ``origin`` / ``heading``.

        Returns (lane id -> fid, route roadblock fids, dropped edges, dropped lights)."""
        st = _SceneLanes(scene, origin, heading, self.fid)
        st.link_lanes()
        st.connect_connectors()
        dropped = st.dropped_edges()
        lane_index = st.lane_indices()
        inter_fids, inter_polys, inter_polys_all = self._add_intersections_and_crosswalks(st)
        dropped_lights = self._add_lanes(st, lane_index)
        self._add_inserted(st)
        self._add_roadblocks(st, inter_fids, inter_polys_all)
        self._add_drivable_area(st, inter_polys)
        mp = scene.map
        return {str(mp.lane_ids[i]): st.fids[i] for i in range(st.L)}, st.route_blocks(), dropped, dropped_lights

    def _add_intersections_and_crosswalks(self, st: _SceneLanes) -> tuple[list[int], list[Polygon], list[Polygon]]:
        """Write the scene's intersections (plus inserted ones, see below) and crosswalks. Returns the fids of all
        written intersections, the scene's intersection polygons and all written intersection polygons."""
        mp, w, L = st.map, st.w, st.L
        inter_polys = [q for rings in _polygonset_polygons(mp.intersections)
                       for q in _valid_parts(_polygon_from_rings([w(r) for r in rings]))]
        inter_fids = [self.add("intersections", self.fid(), p, intersection_type_fid=0, irlvla_inserted=0)
                      for p in inter_polys]
        # The scorer counts a lane flagged lane_is_intersection as intersection area (DDC, TTC), NAVSIM only the
        # intersections layer: the flagged lanes' parts outside the intersection polygons (e.g. connectors crossing
        # the crop edge of a clipped intersection) become extra intersections (irlvla_inserted = 1; our reader drops
        # them, the flag itself travels in lane_group_connectors.intersection_fid / the midpoint test).
        inter_polys_all = list(inter_polys)
        flagged = [st.polys[i] for i in range(L) if bool(mp.lane_is_intersection[i])]
        if flagged:
            extra = _overlay(shapely.union_all, flagged)
            if inter_polys:
                extra = _overlay(shapely.difference, extra, _overlay(shapely.union_all, inter_polys))
            for part in _valid_parts(extra):
                if part.area > 0.01:
                    inter_fids.append(self.add("intersections", self.fid(), part, intersection_type_fid=0,
                                               irlvla_inserted=1))
                    inter_polys_all.append(part)
        for rings in _polygonset_polygons(mp.crosswalks):
            for q in _valid_parts(_polygon_from_rings([w(r) for r in rings])):
                self.add("crosswalks", self.fid(), q)
        return inter_fids, inter_polys, inter_polys_all

    def _add_lanes(self, st: _SceneLanes, lane_index: dict[int, int]) -> int:
        """Write the scene's lanes and connectors (boundaries, polygons, baselines; connectors with any light get a
        TRAFFIC_LIGHT stop polygon at their start). Returns the (time, lane) light states lost: lights on
        non-connector lanes, and yellow (exported as not red)."""
        mp, L, is_conn, fids = st.map, st.L, st.is_conn, st.fids
        light = np.asarray(mp.lane_light_state)
        has_light = np.any(light != LIGHT_NONE, axis=0) if L else np.zeros(0, bool)
        dropped_lights = int(np.count_nonzero(light[:, ~is_conn] != LIGHT_NONE)) if L else 0
        dropped_lights += int(np.count_nonzero(light[:, is_conn] == 2))  # yellow -> not red
        left_nb = np.asarray(mp.lane_left_neighbor, np.int64)
        right_nb = np.asarray(mp.lane_right_neighbor, np.int64)
        for i in range(L):
            c = st.centers[i]
            left_fid = self.add("boundaries", self.fid(), LineString(st.lefts[i]), boundary_type_fid=2)
            # Right boundaries are stored reversed on purpose: nuPlan boundaries may run against the baseline.
            right_fid = self.add("boundaries", self.fid(), LineString(st.rights[i][::-1]), boundary_type_fid=2)
            speed = float(mp.lane_speed_limits[i])
            speed_v = speed if math.isfinite(speed) else None
            bf = st.block_fid[st.group_key[i]]
            group = st.orig_fid[st.orig_key[i]]
            if is_conn[i]:
                stop = ""
                if has_light[i]:
                    p0, h0 = c[0], math.atan2(*(c[1] - c[0])[::-1])
                    half = 0.5 * max(float(np.linalg.norm(st.lefts[i][0] - st.rights[i][0])), 2.0)
                    rect = Polygon(to_global(np.array([[0.0, -half], [1.0, -half], [1.0, half], [0.0, half]]),
                                             p0, h0))
                    stop = str(self.add("stop_polygons", self.fid(), rect, stop_polygon_type_fid=2))
                self.add("lane_connectors", fids[i], LineString(c), exit_lane_fid=st.exit_fid[i],
                         entry_lane_fid=st.entry_fid[i], lane_group_connector_fid=bf, speed_limit_mps=speed_v,
                         traffic_light_stop_line_fids=stop, irlvla_inserted=0, irlvla_group=group)
                self.add("gen_lane_connectors_scaled_width_polygons", self.fid(), st.polys[i],
                         lane_connector_fid=fids[i], left_boundary_fid=left_fid, right_boundary_fid=right_fid)
                self.add("baseline_paths", self.fid(), LineString(c), lane_fid=None, lane_connector_fid=fids[i])
            else:
                self.add("lanes_polygons", fids[i], st.polys[i], lane_fid=fids[i], lane_group_fid=bf,
                         lane_index=lane_index.get(i, 0), left_boundary_fid=left_fid, right_boundary_fid=right_fid,
                         speed_limit_mps=speed_v, irlvla_inserted=0, irlvla_group=group,
                         irlvla_left=fids[left_nb[i]] if left_nb[i] >= 0 else -1,
                         irlvla_right=fids[right_nb[i]] if right_nb[i] >= 0 else -1)
                self.add("baseline_paths", self.fid(), LineString(c), lane_fid=fids[i], lane_connector_fid=None)
        return dropped_lights

    def _add_inserted(self, st: _SceneLanes) -> None:
        """Write the inserted lanes (each in its own roadblock) and link connectors (one roadblock connector per
        (from group, to group))."""
        block_fid = st.block_fid
        extra_polys: dict[Any, list[Polygon]] = {}
        for f, line, width, key in st.extra_lanes:
            poly, left, right = _strip(line, width)
            lf = self.add("boundaries", self.fid(), LineString(left), boundary_type_fid=3)
            rf = self.add("boundaries", self.fid(), LineString(right[::-1]), boundary_type_fid=3)
            self.add("lanes_polygons", f, poly, lane_fid=f, lane_group_fid=block_fid[key], lane_index=0,
                     left_boundary_fid=lf, right_boundary_fid=rf, speed_limit_mps=None, irlvla_inserted=1,
                     irlvla_group=block_fid[key])
            self.add("baseline_paths", self.fid(), LineString(line), lane_fid=f, lane_connector_fid=None)
            self.add("lane_groups_polygons", block_fid[key], poly, irlvla_inserted=1)
        for f, line, width, ex, en, key, speed in st.extra_conns:
            poly, left, right = _strip(line, width)
            lf = self.add("boundaries", self.fid(), LineString(left), boundary_type_fid=3)
            rf = self.add("boundaries", self.fid(), LineString(right[::-1]), boundary_type_fid=3)
            self.add("lane_connectors", f, LineString(line), exit_lane_fid=ex, entry_lane_fid=en,
                     lane_group_connector_fid=block_fid[key], speed_limit_mps=speed if math.isfinite(speed) else None,
                     traffic_light_stop_line_fids="", irlvla_inserted=1, irlvla_group=block_fid[key])
            self.add("gen_lane_connectors_scaled_width_polygons", self.fid(), poly, lane_connector_fid=f,
                     left_boundary_fid=lf, right_boundary_fid=rf)
            self.add("baseline_paths", self.fid(), LineString(line), lane_fid=None, lane_connector_fid=f)
            extra_polys.setdefault(key, []).append(poly)
        for key, ps in extra_polys.items():
            self.add("lane_group_connectors", block_fid[key], _overlay(shapely.union_all, ps),
                     from_lane_group_fid=block_fid[key[1]], to_lane_group_fid=block_fid[key[2]],
                     intersection_fid=None, irlvla_inserted=1)

    def _add_roadblocks(self, st: _SceneLanes, inter_fids: list[int], inter_polys_all: list[Polygon]) -> None:
        """Write the scene's roadblocks (union of their lanes) and roadblock connectors (union of their connectors,
        from / to the blocks of the first connector's exit / entry lane, and the first written intersection they
        touch when any of them is flagged as an intersection lane)."""
        mp, polys, block_fid = st.map, st.polys, st.block_fid
        for k, idx in st.members.items():
            if not idx:
                continue
            union = _overlay(shapely.union_all, [polys[i] for i in idx])
            if not st.is_conn[idx[0]]:
                self.add("lane_groups_polygons", block_fid[k], union, irlvla_inserted=0)
                continue
            frm = block_fid[st.exit_block[idx[0]]]
            to = block_fid[st.entry_block[idx[0]]]
            inter = None
            if any(bool(mp.lane_is_intersection[i]) for i in idx):
                inter = next((f for f, p in zip(inter_fids, inter_polys_all) if p.intersects(union)), None)
            self.add("lane_group_connectors", block_fid[k], union, from_lane_group_fid=frm, to_lane_group_fid=to,
                     intersection_fid=inter, irlvla_inserted=0)

    def _add_drivable_area(self, st: _SceneLanes, inter_polys: list[Polygon]) -> None:
        """Drivable area: road_segments hold the scene's drivable polygons (nuPlan's DRIVABLE_AREA).

        NAVSIM's scorer counts as drivable only roadblocks (= the union of their lanes), intersections and car parks
        (DRIVABLE_AREA is never loaded, and lane-connector polygons are lanes, not drivable area), while the scene's
        drivable area is its drivable polygons + every lane and connector polygon + intersections. So everything of
        that not covered by (non-connector) lanes or intersections -- the scene's extra drivable polygons and
        connector polygons outside intersections -- goes to carpark_areas, which PDMDrivableMap (and so the reader)
        counts."""
        mp, w, L, polys, is_conn = st.map, st.w, st.L, st.polys, st.is_conn
        drivable = [q for rings in _polygonset_polygons(mp.drivable_area)
                    for q in _valid_parts(_polygon_from_rings([w(r) for r in rings]))]
        for p in drivable:
            self.add("road_segments", self.fid(), p)
        conn_polys = [polys[i] for i in range(L) if is_conn[i]]
        if drivable or conn_polys:
            lane_polys = [polys[i] for i in range(L) if not is_conn[i]]
            covered = (_overlay(shapely.union_all, lane_polys + inter_polys) if (lane_polys or inter_polys)
                       else Polygon())
            rest = _overlay(shapely.difference, _overlay(shapely.union_all, drivable + conn_polys), covered)
            for part in getattr(rest, "geoms", [rest]):
                if part.geom_type == "Polygon" and part.area > 0.05:
                    self.add("carpark_areas", self.fid(), part)


    def write(self, path: Path, epsg: int, version: str, lonlat: bool) -> None:
        srs = epsg
        rows = self.rows
        if lonlat:
            zone, south = utm_zone_from_epsg(epsg)
            rows = {}
            for t, feats in self.rows.items():
                geoms = project_geometries([f.geometry for f in feats], zone, south, inverse=True) if feats else []
                rows[t] = [Feature(f.fid, g, f.attributes) for f, g in zip(feats, geoms)]
            srs = 4326
        layers = {t: Layer(rows[t], self.COLUMNS[t]) for t in self.TABLES}
        write_geopackage(path, layers, srs_id=srs,
                         meta={"projectedCoordSystem": f"epsg:{epsg}", "geographicCoordSystem": "epsg:4326",
                               "version": version})


class _Numpy1Pickler(pickle._Pickler):
    """Pickler that names numpy 2's ``numpy._core.*`` globals by their numpy 1.x spelling ``numpy.core.*``.

    numpy >= 2 still resolves ``numpy.core.*`` (a compatibility alias), numpy 1.x (NAVSIM pins it) has no
    ``numpy._core``, so pickles written this way load under both. Pure-Python pickler: ``save_global`` is overridable.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if module == "numpy._core" or module.startswith("numpy._core."):
            qual = name or getattr(obj, "__qualname__", None) or obj.__name__
            self.save("numpy.core" + module[len("numpy._core"):])
            self.save(qual)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _safe_log_name(name: str) -> str:
    """A log name usable as a file stem (NAVSIM: ``<log_name>.pkl``): characters outside [A-Za-z0-9._-] -> '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return safe or "navsim_export"


def _frame_token(token: str, j: int) -> str:
    return token if j == 0 else hashlib.sha1(f"{token}/{j}".encode()).hexdigest()[:16]


def export_navsim(scenes: Iterable[Scene], out_dir: str | os.PathLike, *, map_name: str | None = None,
                  map_version: str | None = None, epsg: int | None = None,
                  utm_origin: tuple[float, float] | None = None, spacing: float = 3000.0, grid_columns: int = 20,
                  headings: Sequence[float] | None = None, num_future_frames: int = 10, log_name: str | None = None,
                  lonlat: bool = False) -> ExportResult:
    """Write scenes as NAVSIM log pickles + nuPlan map GeoPackages (the layout :func:`iter_scenes` reads, and the one
    the official NAVSIM v2 SceneLoader + nuPlan map API load as is, with ``NUPLAN_MAPS_ROOT=<out_dir>/maps``).

    Layout::

        <out_dir>/maps/nuplan-maps-v1.0.json            {city: {"version": version, "layers": {}}} for all four
                                                        nuPlan locations (+ map_name if it is none of them)
        <out_dir>/maps/<city>/<version>/map.gpkg        the scenes' map; cities without scenes get an empty map
                                                        (every table, no rows): nuPlan's GPKGMapsDB opens all four
                                                        at start-up. Plain files (no symlinks): the folder copies.
        <out_dir>/logs/<log_name>.pkl                   list of frame dicts (every key of data-formats.md 4)

    City: ``map_name`` for every scene when given; else (default) the scene's ``metadata.map_name`` when it is a
    nuPlan location, otherwise :data:`DEFAULT_MAP_NAME`. ``map_version`` / ``epsg`` / ``utm_origin`` override the
    per-city defaults (:data:`MAP_VERSIONS`, the city's UTM zone, :data:`DEFAULT_UTM_ORIGINS`) for every city.

    Placement: the k-th scene of a city has its ego frame at t0 at UTM ``utm_origin + spacing * (k % grid_columns,
    k // grid_columns)`` with heading ``headings[k]`` (default ``0.3 + 0.7 k`` rad, wrapped, so the rotation is
    exercised); scene maps are written whole, so keep ``spacing`` above twice (map extent + reader radius).

    Frames: each scene is a block of ``4 + num_future_frames`` consecutive 2 Hz frames of its log (the log is
    ``log_name`` or the scene's ``metadata.log_name`` or ``navsim_export``): 4 history frames (ego poses, velocity and
    acceleration from the scene; characters outside [A-Za-z0-9._-] in the log name become '_', since it is also the
    file stem), 8 future frames and, beyond them, ego poses extrapolated at constant velocity and
    yaw rate (NAVSIM windows carry 10 future frames). ``anns`` hold the scene agents at t0 .. t0 + 4 s and are empty
    elsewhere; ``traffic_lights`` hold (connector fid, is_red) at t0 .. t0 + 4 s (t0's for the history frames, the
    last one's beyond). The t0 frame's token is the scene token. Timestamps are absolute µs: a scene
    ``timestamp_us`` below 10^12 (unset, or relative to the source's start as in Waymo) is moved to
    ``1.6e15 + 1e7 k + timestamp_us`` (nuPlan refuses time points <= 0). The extra key :data:`EGO_VEHICLE_KEY` holds
    the scene's ego dimensions (NAVSIM ignores it and always scores with the Pacifica; :func:`iter_scenes` reads it
    back, so a read-back scene scores like the original).

    Map: the scene map's tables, the elements the export inserts (rows marked ``irlvla_inserted = 1``) and what is
    lost are described in the module docs ("Map tables of the export"); see also :class:`ExportResult`.

    Args:
        lonlat: store the GeoPackage in EPSG:4326 lon/lat (the reader projects it back), to test that path.

    Pickles use protocol 4, hold only builtins and numpy arrays / float64 scalars (so the restricted unpickler reads
    them), and name numpy's globals ``numpy.core.*`` (numpy 1.x spelling, which numpy 2 also resolves) even when
    written under numpy 2, so NAVSIM's numpy 1.x loads them.
    """
    if num_future_frames < NUM_FUTURE:
        raise ValueError(f"num_future_frames must be >= {NUM_FUTURE}")
    out = Path(out_dir)
    maps_root, logs_dir = out / "maps", out / "logs"
    scenes = list(scenes)
    places = _ExportPlaces(scenes, map_name, map_version, epsg, utm_origin, spacing, grid_columns, headings)
    main = places.cities[0]
    result = ExportResult(maps_root, logs_dir, maps_root / main / places.version(main) / "map.gpkg", main,
                          places.version(main), places.epsg(main))
    writers: dict[str, _MapWriter] = {c: _MapWriter() for c in places.cities}
    logs: dict[str, list[dict]] = {}
    for k, scene in enumerate(scenes):
        token = scene.token
        if token in result.lane_fids:
            raise ValueError(f"export_navsim: duplicate scene token {token!r}")
        city, origin, heading = places.place(k)
        lane_fids, route_blocks, dropped, dropped_lights = writers[city].add_scene(scene, origin, heading)
        result.tokens.append(token)
        result.lane_fids[token] = lane_fids
        result.placements[token] = (float(origin[0]), float(origin[1]), heading)
        result.map_of[token] = city
        result.dropped_edges += dropped
        result.dropped_lights += dropped_lights
        name = _safe_log_name(log_name or scene.metadata.log_name or "navsim_export")
        result.log_of[token] = name
        _append_scene_frames(logs.setdefault(name, []), scene, k, name=name, city=city, origin=origin,
                             heading=heading, lane_fids=lane_fids, route_blocks=route_blocks,
                             num_future_frames=num_future_frames)
    _write_maps(maps_root, writers, places, result, lonlat)
    _write_logs(logs_dir, logs)
    return result


class _ExportPlaces:
    """Where :func:`export_navsim` puts each scene: its city (map), the city's map version, EPSG code and UTM grid
    origin (m), and the scene's grid slot and heading (rad)."""

    def __init__(self, scenes: list[Scene], map_name: str | None, map_version: str | None, epsg: int | None,
                 utm_origin: tuple[float, float] | None, spacing: float, grid_columns: int,
                 headings: Sequence[float] | None):
        self.map_version, self.epsg_code, self.utm_origin = map_version, epsg, utm_origin
        self.spacing, self.grid_columns, self.headings = spacing, grid_columns, headings
        self.city_of = [map_name if map_name is not None else
                        (s.metadata.map_name if s.metadata.map_name in MAP_VERSIONS else DEFAULT_MAP_NAME)
                        for s in scenes]
        self.cities = list(dict.fromkeys(self.city_of)) or [map_name or DEFAULT_MAP_NAME]
        self.slot = {c: 0 for c in self.cities}  # scenes placed so far per city

    def version(self, city: str) -> str:
        return self.map_version or MAP_VERSIONS.get(city, "1.0.0")

    def epsg(self, city: str) -> int:
        return int(self.epsg_code or MAP_UTM_EPSG.get(city, 32611))

    def origin(self, city: str) -> tuple[float, float]:
        """UTM (easting, northing) (m) of the city's placement grid."""
        if self.utm_origin is not None:
            return self.utm_origin
        return DEFAULT_UTM_ORIGINS.get(city, DEFAULT_UTM_ORIGINS["us-nv-las-vegas-strip"]) \
            if city in DEFAULT_UTM_ORIGINS or self.epsg(city) == 32611 else (500000.0, 4000000.0)

    def place(self, k: int) -> tuple[str, np.ndarray, float]:
        """City, UTM origin (2,) (m) and heading (rad, wrapped) of scene k's ego frame at t0 (takes the next slot of
        its city's grid)."""
        city = self.city_of[k]
        m = self.slot[city]
        self.slot[city] += 1
        col, row_ = m % self.grid_columns, m // self.grid_columns
        u0 = self.origin(city)
        origin = np.array([u0[0] + self.spacing * col, u0[1] + self.spacing * row_])
        heading = float(wrap_angle(self.headings[k] if self.headings is not None else 0.3 + 0.7 * k))
        return city, origin, heading


def _export_ego_track(scene: Scene, origin: np.ndarray, heading: float, num_future_frames: int):
    """Ego poses of frames j = -3 .. num_future_frames (F = 4 + num_future_frames), extrapolated beyond 4 s at
    constant speed and yaw rate. Returns local poses (F, 3) (t0 frame, m / rad), world xy (F, 2) and yaw (F,) (UTM),
    and body-frame velocity and acceleration (F, 2) (m/s, m/s^2; the scene's own for the history frames)."""
    e = scene.ego
    local = np.concatenate([e.history, e.future])
    extra = num_future_frames - NUM_FUTURE
    if extra:
        d = local[-1] - local[-2]
        speed = math.hypot(d[0], d[1])
        dyaw = float(wrap_angle(d[2]))
        ext = []
        p = local[-1].copy()
        for _ in range(extra):
            p = p.copy()
            p[2] = float(wrap_angle(p[2] + dyaw))
            p[0] += speed * math.cos(p[2])
            p[1] += speed * math.sin(p[2])
            ext.append(p)
        local = np.concatenate([local, np.asarray(ext)])
    world_xy = to_global(local[:, :2], origin, heading)
    world_yaw = wrap_angle(local[:, 2] + heading)
    vel_b, acc_b = _body_velocities(np.column_stack([world_xy, world_yaw]))
    vel_b[:NUM_HISTORY] = e.history_velocity
    acc_b[:NUM_HISTORY] = e.history_acceleration
    return local, world_xy, world_yaw, vel_b, acc_b


def _frame_anns(agents: Agents, j: int, pose: np.ndarray) -> dict[str, Any]:
    """OpenScene ``anns`` of frame j (0 <= j < 9) seen from the ego ``pose`` (3,) (t0 frame): boxes (n, 7) [x, y, z,
    length, width, height, yaw] and velocities (n, 3) in the ego frame of that frame, names and track tokens."""
    valid = np.asarray(agents.valid[j], bool)
    b = np.asarray(agents.boxes[j])[valid]
    gb = np.zeros((len(b), 7))
    gb[:, :2] = to_local(b[:, :2], pose[:2], pose[2])
    gb[:, 2] = b[:, 5] / 2.0
    gb[:, 3:6] = b[:, 3:6]
    gb[:, 6] = wrap_angle(b[:, 2] - pose[2])
    c, s = math.cos(pose[2]), math.sin(pose[2])
    v = np.zeros((len(b), 3))
    v[:, 0] = c * b[:, 6] + s * b[:, 7]
    v[:, 1] = -s * b[:, 6] + c * b[:, 7]
    ids = [str(t) for t in np.asarray(agents.track_id)[valid]]
    names = [CATEGORY_TO_NAME[int(ci)] for ci in np.asarray(agents.category)[valid]]
    return {"gt_boxes": gb, "gt_names": np.array(names, dtype="<U14").reshape(-1),
            "gt_velocity_3d": v, "instance_tokens": [f"inst-{t}" for t in ids], "track_tokens": ids}


def _ego_frame_poses(x: float, y: float, yaw: float, vel: np.ndarray, acc: np.ndarray):
    """Quaternion (4,), ego2global and lidar2ego (4, 4) and can_bus (18,) of an ego at UTM (x, y) (m), heading
    ``yaw`` (rad), with body-frame velocity / acceleration (2,)."""
    q = _quat_yaw(yaw)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0],
                    [0.0, 0.0, 1.0]])
    ego2global = np.eye(4)
    ego2global[:3, :3] = rot
    ego2global[:3, 3] = [x, y, 0.0]
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = [0.0, 0.0, 1.8]
    can_bus = np.zeros(18)
    can_bus[0:3] = [x, y, 0.0]
    can_bus[3:7] = q
    can_bus[7:9] = acc
    can_bus[10:12] = vel
    return q, ego2global, lidar2ego, can_bus


def _append_scene_frames(frames: list[dict], scene: Scene, k: int, *, name: str, city: str, origin: np.ndarray,
                         heading: float, lane_fids: dict[str, int], route_blocks: list[int],
                         num_future_frames: int) -> None:
    """Append scene k's ``4 + num_future_frames`` frame dicts to its log's ``frames`` (see :func:`export_navsim`)."""
    token = scene.token
    local, world_xy, world_yaw, vel_b, acc_b = _export_ego_track(scene, origin, heading, num_future_frames)
    mp = scene.map
    conn = np.flatnonzero(np.asarray(mp.lane_is_connector, bool))
    light_lists = []
    for t in range(NUM_TIMES):
        st = np.asarray(mp.lane_light_state)[t]
        light_lists.append([(int(lane_fids[str(mp.lane_ids[i])]), bool(st[i] == LIGHT_RED)) for i in conn
                            if st[i] != LIGHT_NONE])
    cmd = np.zeros(4, np.int64)
    cmd[scene.command] = 1
    ts0 = int(scene.metadata.timestamp_us)
    if ts0 < _MIN_ABSOLUTE_US:  # unset (0) or relative to the source's start (Waymo): make it absolute
        ts0 = _EXPORT_BASE_US + 10_000_000 * k + max(ts0, 0)
    vehicle = [float(v) for v in scene.ego.vehicle.as_array()]
    a = scene.agents
    log_token = hashlib.sha1(name.encode()).hexdigest()[:16]
    for jj in range(NUM_HISTORY + num_future_frames):
        j = jj - (NUM_HISTORY - 1)  # frame offset from t0
        x, y, yaw = float(world_xy[jj, 0]), float(world_xy[jj, 1]), float(world_yaw[jj])
        q, ego2global, lidar2ego, can_bus = _ego_frame_poses(x, y, yaw, vel_b[jj], acc_b[jj])
        frame_token = _frame_token(token, j)
        t_idx = min(max(j, 0), NUM_TIMES - 1)
        anns = {"gt_boxes": np.zeros((0, 7)), "gt_names": np.zeros(0, "<U14"),
                "gt_velocity_3d": np.zeros((0, 3)), "instance_tokens": [], "track_tokens": []}
        if 0 <= j < NUM_TIMES and len(a):
            anns = _frame_anns(a, j, local[jj])
        frames.append({
            "token": frame_token,
            "frame_idx": len(frames),
            "timestamp": ts0 + 500_000 * j,
            "log_name": name,
            "log_token": log_token,
            "scene_name": f"{name}-{token}",
            "scene_token": _frame_token(token, -100),
            "map_location": city,
            "vehicle_name": "pacifica",
            "sample_prev": None,
            "sample_next": None,
            "roadblock_ids": [str(f) for f in route_blocks],
            "can_bus": can_bus,
            "ego2global_translation": np.array([x, y, 0.0]),
            "ego2global_rotation": q,
            "ego_dynamic_state": [float(vel_b[jj, 0]), float(vel_b[jj, 1]), float(acc_b[jj, 0]),
                                  float(acc_b[jj, 1])],
            "lidar_path": f"{name}/MergedPointCloud/{frame_token}.pcd",
            "lidar2ego_translation": lidar2ego[:3, 3].copy(),
            "lidar2ego_rotation": [np.float64(1.0), np.float64(0.0), np.float64(0.0), np.float64(0.0)],
            "ego2global": ego2global,
            "lidar2ego": lidar2ego,
            "lidar2global": ego2global @ lidar2ego,
            "traffic_lights": list(light_lists[t_idx]),
            "driving_command": cmd.copy(),
            "cams": {ch: {"data_path": scene.cameras.get(ch, ""), "sensor2lidar_rotation": np.eye(3),
                          "sensor2lidar_translation": np.zeros(3), "cam_intrinsic": np.eye(3),
                          "distortion": np.zeros(5)} for ch in CAMERA_CHANNELS},
            "anns": anns,
            EGO_VEHICLE_KEY: list(vehicle),
        })


def _write_maps(maps_root: Path, writers: dict[str, _MapWriter], places: _ExportPlaces, result: ExportResult,
                lonlat: bool) -> None:
    """Write every city's GeoPackage and the maps json (recording the paths in ``result.gpkg_paths``)."""
    maps_root.mkdir(parents=True, exist_ok=True)
    index = {}
    for city in dict.fromkeys(list(MAP_VERSIONS) + places.cities):
        # nuPlan's GPKGMapsDB opens every one of its four locations at start-up: cities without scenes get an empty
        # map (every table, no rows) so the maps root loads as is.
        index[city] = {"version": places.version(city), "layers": {}}
        path = maps_root / city / places.version(city) / "map.gpkg"
        result.gpkg_paths[city] = path
        (writers.get(city) or _MapWriter()).write(path, places.epsg(city), places.version(city), lonlat)
    (maps_root / f"{MAPS_VERSION}.json").write_text(json.dumps(index, indent=1))


def _write_logs(logs_dir: Path, logs: dict[str, list[dict]]) -> None:
    """Link each log's frames (sample_prev / sample_next) and pickle it to ``<logs_dir>/<log name>.pkl``."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    for name, frames in logs.items():
        for i, fr in enumerate(frames):
            fr["sample_prev"] = frames[i - 1]["token"] if i > 0 else None
            fr["sample_next"] = frames[i + 1]["token"] if i + 1 < len(frames) else None
        with open(logs_dir / f"{name}.pkl", "wb") as fh:
            _Numpy1Pickler(fh, protocol=4).dump(frames)
