"""The canonical :class:`Scene`: one driving situation at time t0, in numpy arrays.

Every data source (procedural generator, NAVSIM/OpenScene logs, Argoverse 2, ScenarioNet) is an adapter into this
type; nothing downstream knows where a scene came from.

Conventions (``../shared/docs/design.md``):

* Frame: the ego frame at t0. Origin at the rear axle, x forward, y left, yaw counter-clockwise, angles wrapped to
  [-pi, pi]. Units: m, s, rad, m/s, m/s^2.
* Time: 0.5 s steps. Ego history is 4 poses at t = -1.5, -1.0, -0.5, 0 s; the expert future is 8 poses at
  t = 0.5 .. 4.0 s; agents and traffic lights are given at the 9 times t = 0, 0.5, .., 4.0 s.
* Variable-length geometry (polylines, polygons) is stored packed: one ``(P, 2)`` point array plus offsets
  (:class:`Ragged`), so a scene flattens to a dict of plain arrays (:meth:`Scene.to_arrays`) that a cache can store
  column-wise without pickle.

Scenes validate on construction: shapes, dtypes (cast), finite values and sane units. A failure raises
:class:`SceneValidationError` naming the scene token and the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

from irlvla_gym.geometry import wrap_angle  # noqa: F401  (re-exported: angles (rad) -> [-pi, pi))


# --------------------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------------------

DT = 0.5
"""Seconds between two scene time steps (plans, logs, agents, lights)."""
NUM_HISTORY = 4
"""Ego history poses at t = -1.5, -1.0, -0.5, 0 s (the last one is the origin)."""
NUM_FUTURE = 8
"""Expert future poses at t = 0.5 .. 4.0 s."""
NUM_TIMES = NUM_FUTURE + 1
"""Agent and traffic-light time steps t = 0, 0.5, .., 4.0 s."""
HISTORY_TIMES = np.arange(-(NUM_HISTORY - 1), 1) * DT
FUTURE_TIMES = np.arange(1, NUM_FUTURE + 1) * DT
AGENT_TIMES = np.arange(NUM_TIMES) * DT

AGENT_CATEGORIES = ("vehicle", "pedestrian", "bicycle", "traffic_cone", "barrier", "generic_object")
"""Agent category names; ``Agents.category`` holds indices into this tuple."""
VEHICLE, PEDESTRIAN, BICYCLE, TRAFFIC_CONE, BARRIER, GENERIC_OBJECT = range(len(AGENT_CATEGORIES))
STATIC_CATEGORIES = (TRAFFIC_CONE, BARRIER, GENERIC_OBJECT)
"""Categories NAVSIM treats as static objects (an at-fault collision with them scores NC = 0.5)."""

AGENT_BOX_FIELDS = ("x", "y", "yaw", "length", "width", "height", "vx", "vy")
"""Columns of ``Agents.boxes``: centre (m), yaw (rad), size (m), velocity in the ego frame at t0 (m/s)."""

COMMANDS = ("left", "straight", "right", "unknown")
"""Driving commands in NAVSIM's one-hot order (left, forward, right, unknown)."""
COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT, COMMAND_UNKNOWN = range(4)

LIGHT_STATES = ("none", "green", "yellow", "red")
"""Traffic-light states; ``MapData.lane_light_state`` holds indices. 'none' = no light or unknown."""
LIGHT_NONE, LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED = range(4)

CAMERA_CHANNELS = ("CAM_F0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2", "CAM_B0")

# Sanity bounds ("sane units"): anything outside is almost surely degrees instead of radians, cm instead of m, or a
# frame error. They are generous on purpose: they catch unit bugs, not unusual driving.
MAX_SPEED = 70.0  # m/s (252 km/h)
MAX_ACCEL = 30.0  # m/s^2
MAX_COORD = 10_000.0  # m from the ego; the ego frame keeps coordinates small
MAX_BOX_SIZE = 40.0  # m (articulated bus ~ 25 m)

FLOAT = np.float64  # poses and boxes
MAP_FLOAT = np.float32  # map geometry (large; sub-millimetre precision is plenty within 10 km)


class SceneValidationError(ValueError):
    """A scene field failed validation. The message names the scene (token) and the field."""

    def __init__(self, token: str, field_name: str, problem: str):
        self.token = token
        self.field = field_name
        self.problem = problem
        super().__init__(f"scene {token!r}: field {field_name!r}: {problem}")


# --------------------------------------------------------------------------------------------------------------------
# Packed variable-length geometry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ragged:
    """A list of M variable-length point sequences packed into one array.

    Attributes:
        points: (P, 2) float32, all sequences concatenated (m, ego frame).
        offsets: (M + 1,) int64, sequence i is ``points[offsets[i]:offsets[i + 1]]``; ``offsets[0] == 0``.
    """

    points: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, items: Sequence[np.ndarray]) -> "Ragged":
        """Pack a list of (n_i, 2+) arrays (extra columns such as z are dropped)."""
        arrays = [np.asarray(a, dtype=MAP_FLOAT).reshape(-1, np.shape(a)[-1] if np.ndim(a) == 2 else 2)[:, :2]
                  for a in items]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        points = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 2), MAP_FLOAT)
        return cls(points=points.astype(MAP_FLOAT, copy=False), offsets=offsets)

    @classmethod
    def empty(cls) -> "Ragged":
        return cls(points=np.zeros((0, 2), MAP_FLOAT), offsets=np.zeros(1, np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"Ragged index {i} out of range for {len(self)} sequences")
        return self.points[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        """(M,) number of points of each sequence."""
        return np.diff(self.offsets)

    @property
    def owner(self) -> np.ndarray:
        """(P,) index of the sequence each point belongs to."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def select(self, indices: np.ndarray) -> "Ragged":
        """A new Ragged holding only the given sequences, in the given order."""
        return Ragged.from_list([self[int(i)] for i in indices])

    def _check(self, token: str, name: str, min_points: int = 1) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 2:
            raise SceneValidationError(token, f"{name}.points", f"expected shape (P, 2), got {self.points.shape}")
        o = self.offsets
        if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != len(self.points) or np.any(np.diff(o) < 0):
            raise SceneValidationError(token, f"{name}.offsets",
                                       f"offsets must start at 0, be non-decreasing and end at {len(self.points)}")
        if len(self) and self.lengths.min() < min_points:
            bad = int(np.argmin(self.lengths))
            raise SceneValidationError(token, name, f"element {bad} has {self.lengths[bad]} points, "
                                                    f"needs at least {min_points}")
        _check_finite(token, f"{name}.points", self.points, MAX_COORD)


@dataclass(frozen=True)
class PolygonSet:
    """A list of polygons (possibly with holes) packed into arrays.

    Attributes:
        rings: ring outlines (open: the first point is not repeated), each >= 3 points.
        ring_polygon: (R,) int64, index of the polygon each ring belongs to (non-decreasing).
        ring_is_hole: (R,) bool, False for the exterior ring (exactly one per polygon, listed first).
        count: number of polygons.
    """

    rings: Ragged
    ring_polygon: np.ndarray
    ring_is_hole: np.ndarray

    @classmethod
    def from_rings(cls, polygons: Sequence[Sequence[np.ndarray]]) -> "PolygonSet":
        """Build from ``[[exterior, hole, hole, ...], ...]`` point arrays; closing duplicates are removed."""
        rings, owner, hole = [], [], []
        for p, poly in enumerate(polygons):
            for r, ring in enumerate(poly):
                ring = np.asarray(ring, dtype=np.float64)[:, :2]
                if len(ring) > 1 and abs(ring[0, 0] - ring[-1, 0]) + abs(ring[0, 1] - ring[-1, 1]) < 1e-9:
                    ring = ring[:-1]
                rings.append(ring)
                owner.append(p)
                hole.append(r > 0)
        return cls(Ragged.from_list(rings), np.asarray(owner, np.int64), np.asarray(hole, bool))

    @classmethod
    def from_exteriors(cls, exteriors: Sequence[np.ndarray]) -> "PolygonSet":
        """Build from one exterior ring per polygon (no holes)."""
        return cls.from_rings([[e] for e in exteriors])

    @classmethod
    def from_shapely(cls, geoms: Sequence) -> "PolygonSet":
        """Build from shapely Polygons (MultiPolygons are split into their parts)."""
        polys = []
        for g in geoms:
            parts = list(g.geoms) if hasattr(g, "geoms") else [g]
            for part in parts:
                if part.is_empty:
                    continue
                polys.append([np.asarray(part.exterior.coords)] + [np.asarray(h.coords) for h in part.interiors])
        return cls.from_rings(polys)

    @classmethod
    def empty(cls) -> "PolygonSet":
        return cls(Ragged.empty(), np.zeros(0, np.int64), np.zeros(0, bool))

    @property
    def count(self) -> int:
        return int(np.count_nonzero(~self.ring_is_hole))

    def __len__(self) -> int:
        return self.count

    def exterior(self, i: int) -> np.ndarray:
        """(n, 2) exterior ring of polygon i."""
        ext = np.flatnonzero(~self.ring_is_hole)
        return self.rings[int(ext[i])]

    def to_shapely(self) -> list:
        """One shapely Polygon per polygon (shapely imported lazily)."""
        from shapely.geometry import Polygon

        out, exterior, holes = [], None, []
        for ring, is_hole in zip(self.rings, self.ring_is_hole):
            if not is_hole:
                if exterior is not None:
                    out.append(Polygon(exterior, holes))
                exterior, holes = ring, []
            else:
                holes.append(ring)
        if exterior is not None:
            out.append(Polygon(exterior, holes))
        return out

    def _check(self, token: str, name: str) -> None:
        self.rings._check(token, f"{name}.rings", min_points=3)
        R = len(self.rings)
        if self.ring_polygon.shape != (R,) or self.ring_is_hole.shape != (R,):
            raise SceneValidationError(token, name, f"ring_polygon/ring_is_hole must have shape ({R},)")
        if R:
            if self.ring_is_hole[0] or np.any(np.diff(self.ring_polygon) < 0):
                raise SceneValidationError(token, name, "rings must be grouped by polygon, exterior first")
            starts = np.r_[True, np.diff(self.ring_polygon) > 0]
            if not np.array_equal(starts, ~self.ring_is_hole):
                raise SceneValidationError(token, name, "each polygon needs exactly one exterior ring, listed first")


# --------------------------------------------------------------------------------------------------------------------
# Scene parts
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EgoVehicle:
    """Ego vehicle dimensions (m). Defaults: the nuPlan Chrysler Pacifica used by NAVSIM."""

    width: float = 2.297
    front_length: float = 4.049  # rear axle to front bumper
    rear_length: float = 1.127  # rear axle to rear bumper
    wheelbase: float = 3.089
    height: float = 1.777

    @property
    def length(self) -> float:
        return self.front_length + self.rear_length

    @property
    def rear_axle_to_center(self) -> float:
        """Distance (m) from the rear axle forward to the box centre."""
        return 0.5 * (self.front_length - self.rear_length)

    def as_array(self) -> np.ndarray:
        return np.array([self.width, self.front_length, self.rear_length, self.wheelbase, self.height], FLOAT)

    @classmethod
    def from_array(cls, a: np.ndarray) -> "EgoVehicle":
        return cls(*map(float, np.asarray(a).reshape(5)))


PACIFICA = EgoVehicle()


@dataclass(frozen=True)
class EgoState:
    """The ego's past, present and logged (expert) future.

    Attributes:
        history: (4, 3) poses [x, y, yaw] at t = -1.5, -1.0, -0.5, 0 s; the last row is (0, 0, 0).
        history_velocity: (4, 2) [vx, vy] (m/s) at those times, each in the ego's own body frame at that time.
        history_acceleration: (4, 2) [ax, ay] (m/s^2), same convention.
        future: (8, 3) expert poses [x, y, yaw] at t = 0.5 .. 4.0 s: what the logged human (or rule driver) did.
        vehicle: dimensions.
    """

    history: np.ndarray
    history_velocity: np.ndarray
    history_acceleration: np.ndarray
    future: np.ndarray
    vehicle: EgoVehicle = PACIFICA

    @property
    def velocity(self) -> np.ndarray:
        """(2,) [vx, vy] at t0, ego frame (m/s)."""
        return self.history_velocity[-1]

    @property
    def acceleration(self) -> np.ndarray:
        """(2,) [ax, ay] at t0, ego frame (m/s^2)."""
        return self.history_acceleration[-1]

    @property
    def speed(self) -> float:
        return float(np.hypot(*self.history_velocity[-1]))


@dataclass(frozen=True)
class Agents:
    """Other road users and objects, as oriented boxes over the 9 times t = 0, 0.5, .., 4.0 s.

    Attributes:
        boxes: (9, N, 8) float64, columns :data:`AGENT_BOX_FIELDS` (x, y, yaw, length, width, height, vx, vy) in the
            ego frame at t0. Rows where ``valid`` is False are zero-filled and carry no meaning.
        valid: (9, N) bool, whether agent n is observed at time step t.
        category: (N,) int8, index into :data:`AGENT_CATEGORIES`.
        track_id: (N,) str, identity of the track across time (source-specific token).
    """

    boxes: np.ndarray
    valid: np.ndarray
    category: np.ndarray
    track_id: np.ndarray

    @classmethod
    def empty(cls) -> "Agents":
        return cls(np.zeros((NUM_TIMES, 0, 8)), np.zeros((NUM_TIMES, 0), bool), np.zeros(0, np.int8),
                   np.zeros(0, "<U1"))

    def __len__(self) -> int:
        return self.boxes.shape[1]

    @property
    def is_static(self) -> np.ndarray:
        """(N,) bool: category is a static object (cone, barrier, generic object)."""
        return np.isin(self.category, STATIC_CATEGORIES)


@dataclass(frozen=True)
class MapData:
    """The map around the ego, cropped to the scene's range, in the ego frame at t0.

    Lanes and lane connectors share one table of L entries (``lane_is_connector`` tells them apart), so graph edges,
    the route and traffic lights all index the same rows.

    Attributes:
        lane_ids: (L,) str, source ids (nuPlan fid, AV2 lane id, ...).
        lane_centerlines: L polylines (>= 2 points each), in driving direction.
        lane_left_boundaries / lane_right_boundaries: L polylines, in driving direction.
        lane_polygons: L polygons (one per lane, same order).
        lane_speed_limits: (L,) float32 m/s, NaN where unknown.
        lane_is_connector: (L,) bool, True for lane connectors (nuPlan) / connecting segments.
        lane_is_intersection: (L,) bool, lane lies inside an intersection.
        lane_group: (L,) int64, roadblock (lane group) index; lanes of one roadblock share it, -1 if unknown.
        lane_successors: (E, 2) int64 edges [from_lane, to_lane]; predecessors are the reversed edges.
        lane_left_neighbor / lane_right_neighbor: (L,) int64, index of the adjacent same-direction lane or -1.
        lane_light_state: (9, L) int8, traffic-light state (:data:`LIGHT_STATES`) of each lane/connector at
            t = 0, 0.5, .., 4.0 s; LIGHT_NONE where there is no light.
        drivable_area: drivable polygons (roadblocks, intersections, car parks, ...).
        intersections: intersection polygons.
        crosswalks: crosswalk polygons.
    """

    lane_ids: np.ndarray
    lane_centerlines: Ragged
    lane_left_boundaries: Ragged
    lane_right_boundaries: Ragged
    lane_polygons: PolygonSet
    lane_speed_limits: np.ndarray
    lane_is_connector: np.ndarray
    lane_is_intersection: np.ndarray
    lane_group: np.ndarray
    lane_successors: np.ndarray
    lane_left_neighbor: np.ndarray
    lane_right_neighbor: np.ndarray
    lane_light_state: np.ndarray
    drivable_area: PolygonSet
    intersections: PolygonSet
    crosswalks: PolygonSet

    @property
    def num_lanes(self) -> int:
        return len(self.lane_ids)

    @classmethod
    def from_lists(
        cls,
        *,
        lane_ids: Sequence[str],
        centerlines: Sequence[np.ndarray],
        left_boundaries: Sequence[np.ndarray],
        right_boundaries: Sequence[np.ndarray],
        drivable_area: PolygonSet,
        lane_polygons: Sequence[np.ndarray] | PolygonSet | None = None,
        speed_limits: Sequence[float] | None = None,
        is_connector: Sequence[bool] | None = None,
        is_intersection: Sequence[bool] | None = None,
        lane_group: Sequence[int] | None = None,
        successors: Sequence[tuple[int, int]] = (),
        left_neighbor: Sequence[int] | None = None,
        right_neighbor: Sequence[int] | None = None,
        light_state: np.ndarray | None = None,
        intersections: PolygonSet | None = None,
        crosswalks: PolygonSet | None = None,
    ) -> "MapData":
        """Build from per-lane Python lists; omitted fields get neutral defaults.

        ``lane_polygons`` defaults to left boundary + reversed right boundary. ``light_state`` is (9, L) or None.
        """
        L = len(lane_ids)
        if lane_polygons is None:
            lane_polygons = PolygonSet.from_exteriors(
                [np.concatenate([np.asarray(lb)[:, :2], np.asarray(rb)[::-1, :2]])
                 for lb, rb in zip(left_boundaries, right_boundaries)])
        elif not isinstance(lane_polygons, PolygonSet):
            lane_polygons = PolygonSet.from_exteriors(lane_polygons)
        nan = np.full(L, np.nan)
        return cls(
            lane_ids=np.asarray(list(lane_ids), dtype=str) if L else np.zeros(0, "<U1"),
            lane_centerlines=Ragged.from_list(centerlines),
            lane_left_boundaries=Ragged.from_list(left_boundaries),
            lane_right_boundaries=Ragged.from_list(right_boundaries),
            lane_polygons=lane_polygons,
            lane_speed_limits=np.asarray(speed_limits if speed_limits is not None else nan, MAP_FLOAT),
            lane_is_connector=np.asarray(is_connector if is_connector is not None else np.zeros(L), bool),
            lane_is_intersection=np.asarray(is_intersection if is_intersection is not None else np.zeros(L), bool),
            lane_group=np.asarray(lane_group if lane_group is not None else -np.ones(L), np.int64),
            lane_successors=np.asarray(list(successors), np.int64).reshape(-1, 2),
            lane_left_neighbor=np.asarray(left_neighbor if left_neighbor is not None else -np.ones(L), np.int64),
            lane_right_neighbor=np.asarray(right_neighbor if right_neighbor is not None else -np.ones(L), np.int64),
            lane_light_state=(np.zeros((NUM_TIMES, L), np.int8) if light_state is None
                              else np.asarray(light_state, np.int8)),
            drivable_area=drivable_area,
            intersections=intersections if intersections is not None else PolygonSet.empty(),
            crosswalks=crosswalks if crosswalks is not None else PolygonSet.empty(),
        )

    def successors(self, lane: int) -> np.ndarray:
        return self.lane_successors[self.lane_successors[:, 0] == lane, 1]

    def predecessors(self, lane: int) -> np.ndarray:
        return self.lane_successors[self.lane_successors[:, 1] == lane, 0]


@dataclass(frozen=True)
class SceneMetadata:
    """Where a scene came from.

    Attributes:
        token: unique scene id (NAVSIM frame token or an adapter-made one).
        source: 'synthetic', 'navsim', 'av2', 'scenarionet', ...
        log_name: source log / file name.
        map_name: map location ('us-nv-las-vegas-strip', 'PIT', 'synthetic', ...).
        timestamp_us: t0 timestamp in microseconds (source clock).
        licence: licence of the underlying data.
        split: split name if the scene belongs to one ('' otherwise).
    """

    token: str
    source: str
    log_name: str = ""
    map_name: str = ""
    timestamp_us: int = 0
    licence: str = ""
    split: str = ""


@dataclass(frozen=True)
class Scene:
    """One driving situation at t0: ego, agents, map, route, command, cameras and metadata (see module docs).

    Attributes:
        metadata: :class:`SceneMetadata`.
        ego: :class:`EgoState`.
        agents: :class:`Agents`.
        map: :class:`MapData`.
        route_lanes: (R,) int64 ordered indices into the lane table: the lanes (and connectors) the route follows
            from the ego's current lane onwards.
        command: int, driving command index into :data:`COMMANDS`.
        cameras: channel name -> image file path (NAVSIM ``CAM_F0`` etc.); empty when the source has none.
    """

    metadata: SceneMetadata
    ego: EgoState
    agents: Agents
    map: MapData
    route_lanes: np.ndarray
    command: int
    cameras: Mapping[str, str] = field(default_factory=dict)
    validate: dataclasses.InitVar[bool] = True

    def __post_init__(self, validate: bool) -> None:
        if validate:
            _validate_scene(self)

    @property
    def token(self) -> str:
        return self.metadata.token

    @property
    def command_name(self) -> str:
        return COMMANDS[self.command]

    def route_centerline(self) -> np.ndarray:
        """(n, 2) concatenated centreline of the route lanes (consecutive duplicate points removed)."""
        return concat_polylines([self.map.lane_centerlines[int(i)] for i in self.route_lanes])

    def replace(self, **changes) -> "Scene":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---- flat array form, for caches -------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flatten to ``{name: ndarray}`` with no object arrays (safe for npz / columnar stores)."""
        out: dict[str, np.ndarray] = {}
        m = self.metadata
        out["meta.strings"] = np.array([m.token, m.source, m.log_name, m.map_name, m.licence, m.split])
        out["meta.timestamp_us"] = np.array([m.timestamp_us], np.int64)
        e = self.ego
        out["ego.history"] = e.history
        out["ego.history_velocity"] = e.history_velocity
        out["ego.history_acceleration"] = e.history_acceleration
        out["ego.future"] = e.future
        out["ego.vehicle"] = e.vehicle.as_array()
        a = self.agents
        out["agents.boxes"] = a.boxes
        out["agents.valid"] = a.valid
        out["agents.category"] = a.category
        out["agents.track_id"] = a.track_id
        for f in dataclasses.fields(MapData):
            value = getattr(self.map, f.name)
            if isinstance(value, Ragged):
                out[f"map.{f.name}.points"], out[f"map.{f.name}.offsets"] = value.points, value.offsets
            elif isinstance(value, PolygonSet):
                out[f"map.{f.name}.points"] = value.rings.points
                out[f"map.{f.name}.offsets"] = value.rings.offsets
                out[f"map.{f.name}.ring_polygon"] = value.ring_polygon
                out[f"map.{f.name}.ring_is_hole"] = value.ring_is_hole
            else:
                out[f"map.{f.name}"] = value
        out["route_lanes"] = self.route_lanes
        out["command"] = np.array([self.command], np.int64)
        cams = sorted(self.cameras.items())
        out["cameras"] = np.array([f"{k}={v}" for k, v in cams]) if cams else np.zeros(0, "<U1")
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], validate: bool = True) -> "Scene":
        """Inverse of :meth:`to_arrays`."""
        try:
            s = [str(x) for x in arrays["meta.strings"]]
            meta = SceneMetadata(token=s[0], source=s[1], log_name=s[2], map_name=s[3], licence=s[4], split=s[5],
                                 timestamp_us=int(arrays["meta.timestamp_us"][0]))
            ego = EgoState(arrays["ego.history"], arrays["ego.history_velocity"], arrays["ego.history_acceleration"],
                           arrays["ego.future"], EgoVehicle.from_array(arrays["ego.vehicle"]))
            agents = Agents(arrays["agents.boxes"], arrays["agents.valid"], arrays["agents.category"],
                            arrays["agents.track_id"])
            kw = {}
            for f in dataclasses.fields(MapData):
                k = f"map.{f.name}"
                if f"{k}.ring_polygon" in arrays:
                    kw[f.name] = PolygonSet(Ragged(arrays[f"{k}.points"], arrays[f"{k}.offsets"]),
                                            arrays[f"{k}.ring_polygon"], arrays[f"{k}.ring_is_hole"])
                elif f"{k}.points" in arrays:
                    kw[f.name] = Ragged(arrays[f"{k}.points"], arrays[f"{k}.offsets"])
                else:
                    kw[f.name] = arrays[k]
            cams = dict(str(c).split("=", 1) for c in arrays["cameras"])
            return cls(meta, ego, agents, MapData(**kw), arrays["route_lanes"], int(arrays["command"][0]), cams,
                       validate=validate)
        except KeyError as exc:
            raise SceneValidationError(str(arrays.get("meta.strings", ["?"])[0]), str(exc.args[0]),
                                       "missing from the scene arrays") from None


# --------------------------------------------------------------------------------------------------------------------
# Helpers shared by adapters
# --------------------------------------------------------------------------------------------------------------------


def concat_polylines(lines: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate polylines, dropping a point that repeats the previous one (within 1 cm)."""
    pts = [np.asarray(l, dtype=np.float64)[:, :2] for l in lines if len(l)]
    if not pts:
        return np.zeros((0, 2))
    cat = np.concatenate(pts, axis=0)
    keep = np.r_[True, np.linalg.norm(np.diff(cat, axis=0), axis=1) > 1e-2]
    return cat[keep]


def command_from_lateral(lateral_m: float, threshold_m: float = 2.0) -> int:
    """Command from the lateral offset (m, +left) of the point the route/plan reaches: > 2 m left, < -2 m right."""
    if not np.isfinite(lateral_m):
        return COMMAND_UNKNOWN
    if lateral_m > threshold_m:
        return COMMAND_LEFT
    if lateral_m < -threshold_m:
        return COMMAND_RIGHT
    return COMMAND_STRAIGHT


def route_command(route_centerline: np.ndarray, lookahead_m: float, threshold_m: float = 2.0) -> int:
    """Driving command from the route alone, as NAVSIM's is (no obstacles, no lights considered).

    Projects the ego (origin) onto the route centreline, walks ``lookahead_m`` metres along it and classifies the
    lateral offset of that point (ego frame, +left) with :func:`command_from_lateral`. An empty or too short route
    gives 'unknown'. ``lookahead_m`` is typically the distance the expert covers in 4 s (at least 10 m), so the
    command agrees with the expert's lateral displacement on the route.
    """
    line = np.asarray(route_centerline, dtype=np.float64)
    if len(line) < 2:
        return COMMAND_UNKNOWN
    seg = np.diff(line, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.r_[0.0, np.cumsum(seg_len)]
    # Projection of the origin onto each segment.
    t = np.clip(np.einsum("ij,ij->i", -line[:-1], seg) / np.maximum(seg_len**2, 1e-12), 0.0, 1.0)
    proj = line[:-1] + t[:, None] * seg
    k = int(np.argmin(np.linalg.norm(proj, axis=1)))
    s_target = cum[k] + t[k] * seg_len[k] + lookahead_m
    if s_target > cum[-1] + 1e-6:
        s_target = cum[-1]  # route shorter than the look-ahead: use its end
    y = np.interp(s_target, cum, line[:, 1])
    return command_from_lateral(float(y), threshold_m)


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


def _check_finite(token: str, name: str, arr: np.ndarray, bound: float | None = None, where=None) -> None:
    """Raise if ``arr`` (restricted to the broadcastable boolean mask ``where``) is non-finite or exceeds ``bound``."""
    mask = np.ones(arr.shape, bool) if where is None else np.broadcast_to(where, arr.shape)
    bad = mask & ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise SceneValidationError(token, name, f"non-finite value at index {tuple(int(i) for i in idx)}")
    if bound is not None and mask.any():
        worst = float(np.max(np.abs(arr[mask])))
        if worst > bound:
            raise SceneValidationError(token, name, f"|value| {worst:.4g} exceeds {bound:g}")


def _as(scene: Scene, obj, name: str, dtype, shape: tuple) -> np.ndarray:
    """Cast ``obj.name`` to dtype in place (frozen dataclass) and check its shape (-1 = any)."""
    token = scene.metadata.token
    value = getattr(obj, name)
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise SceneValidationError(token, name, f"cannot convert to {np.dtype(dtype)}: {exc}") from None
    if arr.ndim != len(shape) or any(s != -1 and s != a for s, a in zip(shape, arr.shape)):
        raise SceneValidationError(token, name, f"expected shape {shape} (-1 = any), got {arr.shape}")
    object.__setattr__(obj, name, arr)
    return arr


def _validate_scene(scene: Scene) -> None:
    """Check every field of ``scene`` (types, dtypes, shapes, finiteness, sane units, index ranges) in a fixed order
    and cast arrays to their canonical dtypes in place; raise :class:`SceneValidationError` on the first problem."""
    m = scene.metadata
    token = m.token if isinstance(m, SceneMetadata) else "?"
    if not isinstance(m, SceneMetadata) or not m.token:
        raise SceneValidationError(token, "metadata.token", "a non-empty token is required")
    for name, typ in (("ego", EgoState), ("agents", Agents), ("map", MapData)):
        if not isinstance(getattr(scene, name), typ):
            raise SceneValidationError(token, name, f"expected {typ.__name__}, got {type(getattr(scene, name))}")
    _validate_ego(scene, token)
    _validate_agents(scene, token)
    num_lanes = _validate_map_geometry(scene, token)
    _validate_map_lane_attributes(scene, token, num_lanes)
    _validate_route_command_cameras(scene, token, num_lanes)


def _validate_ego(scene: Scene, token: str) -> None:
    """Ego history (4, 3) / velocities / accelerations (4, 2) and future (8, 3) (m, m/s, m/s^2, rad; float64):
    finite, within the sanity bounds, t0 pose at the origin, yaw wrapped, no implied speed above MAX_SPEED; vehicle
    dimensions in (0.2, MAX_BOX_SIZE) m."""
    e = scene.ego
    hist = _as(scene, e, "history", FLOAT, (NUM_HISTORY, 3))
    vel = _as(scene, e, "history_velocity", FLOAT, (NUM_HISTORY, 2))
    acc = _as(scene, e, "history_acceleration", FLOAT, (NUM_HISTORY, 2))
    fut = _as(scene, e, "future", FLOAT, (NUM_FUTURE, 3))
    for name, arr, bound in (("ego.history", hist, MAX_COORD), ("ego.history_velocity", vel, MAX_SPEED),
                             ("ego.history_acceleration", acc, MAX_ACCEL), ("ego.future", fut, MAX_COORD)):
        _check_finite(token, name, arr, bound)
    if np.any(np.abs(hist[-1]) > 1e-3):
        raise SceneValidationError(token, "ego.history", f"the t0 pose must be the origin (0, 0, 0), got {hist[-1]}")
    for name, arr in (("ego.history", hist), ("ego.future", fut)):
        if np.any(np.abs(arr[:, 2]) > np.pi + 1e-6):
            raise SceneValidationError(token, f"{name}[:, 2]", "yaw must be wrapped to [-pi, pi] radians")
    poses = np.concatenate([hist[:, :2], fut[:, :2]])
    step_speed = np.linalg.norm(np.diff(poses, axis=0), axis=1) / DT
    if step_speed.max() > MAX_SPEED:
        k = int(np.argmax(step_speed))
        raise SceneValidationError(token, "ego.future" if k >= NUM_HISTORY - 1 else "ego.history",
                                   f"implied speed {step_speed[k]:.1f} m/s between poses exceeds {MAX_SPEED} m/s "
                                   "(wrong units or frame?)")
    v = e.vehicle
    if not isinstance(v, EgoVehicle) or not all(0.2 < x < MAX_BOX_SIZE for x in dataclasses.astuple(v)):
        raise SceneValidationError(token, "ego.vehicle", f"dimensions must lie in (0.2, {MAX_BOX_SIZE}) m, got {v}")


def _validate_agents(scene: Scene, token: str) -> None:
    """Agent boxes (9, N, 8) float64, valid (9, N) bool, category (N,) int8, track ids (N,) str: categories in
    range; where valid, positions / yaw / sizes / velocities finite and within the sanity bounds and sizes > 0;
    invalid rows zero-filled (finite)."""
    a = scene.agents
    boxes = _as(scene, a, "boxes", FLOAT, (NUM_TIMES, -1, 8))
    n = boxes.shape[1]
    valid = _as(scene, a, "valid", bool, (NUM_TIMES, n))
    cat = _as(scene, a, "category", np.int8, (n,))
    tid = np.asarray(a.track_id)
    if tid.shape != (n,) or (n and tid.dtype.kind != "U"):
        raise SceneValidationError(token, "agents.track_id", f"expected ({n},) str array, got {tid.shape} {tid.dtype}")
    object.__setattr__(a, "track_id", tid.astype(str) if n else np.zeros(0, "<U1"))
    if not n:
        return
    if cat.min() < 0 or cat.max() >= len(AGENT_CATEGORIES):
        raise SceneValidationError(token, "agents.category", f"must index {AGENT_CATEGORIES}")
    _check_finite(token, "agents.boxes[..., 0:2] (x, y)", boxes[..., :2], MAX_COORD, where=valid[..., None])
    _check_finite(token, "agents.boxes[..., 2] (yaw)", boxes[..., 2], np.pi + 1e-6, where=valid)
    _check_finite(token, "agents.boxes[..., 3:6] (size)", boxes[..., 3:6], MAX_BOX_SIZE, where=valid[..., None])
    _check_finite(token, "agents.boxes[..., 6:8] (velocity)", boxes[..., 6:8], MAX_SPEED, where=valid[..., None])
    if np.any(boxes[..., 3:5][valid] <= 0):
        raise SceneValidationError(token, "agents.boxes[..., 3:5] (length, width)", "must be > 0 where valid")
    if not np.all(np.isfinite(boxes)):
        raise SceneValidationError(token, "agents.boxes", "invalid rows must be zero-filled, not NaN")


def _validate_map_geometry(scene: Scene, token: str) -> int:
    """Map lane ids (L,) str, lane polylines (Ragged, L entries of >= 2 points) and polygon sets (float32 points,
    int64 offsets; L lane polygons, a non-empty drivable area). Returns the number of lanes L."""
    mp = scene.map
    lane_ids = np.asarray(mp.lane_ids)
    L = len(lane_ids)
    if lane_ids.ndim != 1 or (L and lane_ids.dtype.kind != "U"):
        raise SceneValidationError(token, "map.lane_ids", "expected a 1-D str array")
    object.__setattr__(mp, "lane_ids", lane_ids.astype(str) if L else np.zeros(0, "<U1"))
    for name in ("lane_centerlines", "lane_left_boundaries", "lane_right_boundaries"):
        r = getattr(mp, name)
        if not isinstance(r, Ragged):
            raise SceneValidationError(token, f"map.{name}", "expected a Ragged")
        object.__setattr__(r, "points", np.asarray(r.points, MAP_FLOAT))
        object.__setattr__(r, "offsets", np.asarray(r.offsets, np.int64))
        r._check(token, f"map.{name}", min_points=2)
        if len(r) != L:
            raise SceneValidationError(token, f"map.{name}", f"has {len(r)} entries, lane_ids has {L}")
    for name in ("lane_polygons", "drivable_area", "intersections", "crosswalks"):
        p = getattr(mp, name)
        if not isinstance(p, PolygonSet):
            raise SceneValidationError(token, f"map.{name}", "expected a PolygonSet")
        object.__setattr__(p.rings, "points", np.asarray(p.rings.points, MAP_FLOAT))
        object.__setattr__(p.rings, "offsets", np.asarray(p.rings.offsets, np.int64))
        object.__setattr__(p, "ring_polygon", np.asarray(p.ring_polygon, np.int64))
        object.__setattr__(p, "ring_is_hole", np.asarray(p.ring_is_hole, bool))
        p._check(token, f"map.{name}")
    if mp.lane_polygons.count != L:
        raise SceneValidationError(token, "map.lane_polygons", f"has {mp.lane_polygons.count} polygons, expected {L}")
    if mp.drivable_area.count == 0:
        raise SceneValidationError(token, "map.drivable_area", "the map has no drivable area (empty map?)")
    return L


def _validate_map_lane_attributes(scene: Scene, token: str, L: int) -> None:
    """Per-lane attributes of the L lanes: speed limits (L,) float32 in (0, MAX_SPEED] m/s or NaN, connector /
    intersection flags (L,) bool, groups (L,) int64 >= -1, successor edges (E, 2) and neighbours (L,) int64 indexing
    the lanes (-1 = none), light states (9, L) int8 indexing LIGHT_STATES."""
    mp = scene.map
    speed = _as(scene, mp, "lane_speed_limits", MAP_FLOAT, (L,))
    if np.any(speed[np.isfinite(speed)] <= 0) or np.any(speed[np.isfinite(speed)] > MAX_SPEED):
        raise SceneValidationError(token, "map.lane_speed_limits", f"must lie in (0, {MAX_SPEED}] m/s or be NaN")
    if np.any(np.isinf(speed)):
        raise SceneValidationError(token, "map.lane_speed_limits", "infinite value (use NaN for unknown)")
    _as(scene, mp, "lane_is_connector", bool, (L,))
    _as(scene, mp, "lane_is_intersection", bool, (L,))
    group = _as(scene, mp, "lane_group", np.int64, (L,))
    if L and group.min() < -1:
        raise SceneValidationError(token, "map.lane_group", "must be >= -1")
    edges = _as(scene, mp, "lane_successors", np.int64, (-1, 2))
    if edges.size and (edges.min() < 0 or edges.max() >= L):
        raise SceneValidationError(token, "map.lane_successors", f"edge indices must lie in [0, {L})")
    for name in ("lane_left_neighbor", "lane_right_neighbor"):
        nb = _as(scene, mp, name, np.int64, (L,))
        if nb.size and (nb.min() < -1 or nb.max() >= L):
            raise SceneValidationError(token, f"map.{name}", f"must be -1 or lie in [0, {L})")
    light = _as(scene, mp, "lane_light_state", np.int8, (NUM_TIMES, L))
    if light.size and (light.min() < 0 or light.max() >= len(LIGHT_STATES)):
        raise SceneValidationError(token, "map.lane_light_state", f"must index {LIGHT_STATES}")


def _validate_route_command_cameras(scene: Scene, token: str, L: int) -> None:
    """Route lanes (R,) int64 indexing the L lanes, the command an int index into COMMANDS, cameras a dict of channel
    name -> path strings."""
    route = _as(scene, scene, "route_lanes", np.int64, (-1,))
    if route.size and (route.min() < 0 or route.max() >= L):
        raise SceneValidationError(token, "route_lanes", f"indices must lie in [0, {L})")
    if not isinstance(scene.command, (int, np.integer)) or not 0 <= int(scene.command) < len(COMMANDS):
        raise SceneValidationError(token, "command", f"must be an int index into {COMMANDS}, got {scene.command!r}")
    object.__setattr__(scene, "command", int(scene.command))
    if not isinstance(scene.cameras, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in scene.cameras.items()):
        raise SceneValidationError(token, "cameras", "must map channel names to path strings")
    object.__setattr__(scene, "cameras", dict(scene.cameras))
