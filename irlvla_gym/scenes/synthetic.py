"""Procedural NAVSIM-v2-shaped driving scenes: the embedded default data source (no download).

A scene is made in four steps, all drawn from one ``numpy.random.Generator`` seeded by the scene seed, so the same
seed always gives identical arrays:

1. **Layout** (world frame): a lane graph built from reference lines (straight roads, arcs, quintic-Bezier
   connectors) - straight multi-lane roads, curves, route-required lane changes (optionally with a blocked lane),
   on-ramp merges, and 4-way / T intersections with traffic lights (lane connectors, intersection polygons,
   crosswalks). Drivable area = union of the road surfaces (lanes + shoulders) and intersection squares.
2. **Population**: background vehicles (cars, trucks, bicycles) on the lanes with IDM-consistent gaps, each with a
   random successor chain as its path; parked cars on shoulders; cones / barriers closing a lane; pedestrians on
   crosswalks and sidewalks.
3. **Simulation** at 0.1 s from t = -(warm-up + 1.5) s to t = 4 s: every vehicle, the ego included, follows its path
   with the IDM (min gap 1 m, headway 1.5 s, accel 1.0, decel 2.0 m/s^2, desired speed = lane speed limit capped by
   curvature), vectorised over vehicles. Leaders are vehicles whose lane lies on the follower's path (merging lanes
   are aligned at the merge point, a zipper rule), static objects on the path, pedestrians about to cross the path
   and red / unstoppable-yellow stop lines. Intersections use split phasing (through+right and protected left per
   axis) so no two green movements cross. The ego is the rule-based expert: same IDM plus a jerk limit and comfort
   clipping, a smooth quintic lane change where its route switches lane.
4. **Export**: everything transformed to the ego frame at t0 (rear axle), agents and lights sampled at 0.5 s, the
   expert's 4 history and 8 future poses taken from its simulated run, the command from the route.

After the simulation any agent whose box touches the ego's box at some 0.1 s step is removed and the scene is
simulated again (at most twice), so the expert is collision-free by construction.

Public API: :func:`generate_scene`, :data:`SPLITS`, :func:`iter_scenes`, :func:`split_size`,
:class:`SyntheticConfig`, :class:`SplitSpec`, :data:`LAYOUTS`, :func:`scene_layout`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from irlvla_gym.geometry import arc_length, polyline_length
from irlvla_gym.scenes.geometry import to_local
from irlvla_gym.scenes.scene import (
    BARRIER, BICYCLE, DT, LIGHT_GREEN, LIGHT_NONE, LIGHT_RED, LIGHT_YELLOW, MAP_FLOAT, NUM_FUTURE, NUM_HISTORY,
    NUM_TIMES, PACIFICA, PEDESTRIAN, TRAFFIC_CONE, VEHICLE, Agents, EgoState, MapData, PolygonSet, Ragged, Scene,
    SceneMetadata, concat_polylines, route_command, wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

__all__ = [
    "LAYOUTS", "SPLITS", "SplitSpec", "SyntheticConfig", "generate_scene", "iter_scenes", "scene_layout",
    "split_scene", "split_size", "DEFAULT_CONFIG", "HARD_CONFIG",
]

LAYOUTS = ("straight", "curve", "lane_change", "merge", "intersection4", "intersection_t")
"""Layout types; a scene's layout is recorded in ``metadata.log_name`` (see :func:`scene_layout`)."""

LICENCE = "CC0 (procedurally generated)"

# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the procedural generator. Ranges are (low, high) drawn uniformly per scene.

    Attributes:
        layout_weights: relative frequency of each layout in :data:`LAYOUTS` order.
        lane_width_range: lane width (m).
        speed_limits: lane speed limits to choose from on open roads (m/s; 30, 40, 50, 60 km/h).
        intersection_speed_limits: speed limits near intersections (m/s).
        max_lanes: most same-direction lanes on an open road.
        oncoming_probability: an open road also has opposite-direction lanes.
        density_range: background vehicles per 100 m of lane.
        truck_probability: a background vehicle is a truck/bus (8-12 m long).
        bicycle_probability: a scene has a cyclist in the rightmost lane.
        parked_probability: an open road has a parking shoulder with parked cars.
        crosswalk_pedestrian_probability: pedestrians cross on a crosswalk near the ego.
        sidewalk_pedestrian_probability: pedestrians walk along the sidewalk.
        blocked_lane_probability: a lane-change scene closes the ego's current lane ahead (cones, barrier, a
            stopped vehicle).
        ego_red_probability: in intersection scenes, the ego's movement has a red light at t0.
        two_lane_intersection_probability: intersection roads have 2 lanes per direction (else 1).
        curve_radius_range: road reference-line radius of curve layouts (m).
        curve_angle_range_deg: heading change of curve layouts (deg).
        expert_lateral_accel: the expert's (and traffic's) curve speed limit sqrt(a / curvature) (m/s^2).
        warmup_s: simulated seconds before the ego history starts, so traffic has settled (s).
        map_range: agents farther than this from the ego at t0 (box, m) are marked invalid.
    """

    layout_weights: tuple[float, ...] = (0.2, 0.15, 0.15, 0.1, 0.25, 0.15)
    lane_width_range: tuple[float, float] = (3.3, 3.8)
    speed_limits: tuple[float, ...] = (8.33, 11.11, 13.89, 16.67)
    intersection_speed_limits: tuple[float, ...] = (8.33, 11.11, 13.89)
    max_lanes: int = 3
    oncoming_probability: float = 0.7
    density_range: tuple[float, float] = (0.4, 2.5)
    truck_probability: float = 0.08
    bicycle_probability: float = 0.1
    parked_probability: float = 0.35
    crosswalk_pedestrian_probability: float = 0.35
    sidewalk_pedestrian_probability: float = 0.3
    blocked_lane_probability: float = 0.3
    ego_red_probability: float = 0.3
    two_lane_intersection_probability: float = 0.5
    curve_radius_range: tuple[float, float] = (45.0, 250.0)
    curve_angle_range_deg: tuple[float, float] = (25.0, 100.0)
    expert_lateral_accel: float = 2.0
    warmup_s: float = 2.0
    map_range: float = 100.0

    def __post_init__(self) -> None:
        if len(self.layout_weights) != len(LAYOUTS) or min(self.layout_weights) < 0 or sum(self.layout_weights) <= 0:
            raise ValueError(f"layout_weights needs {len(LAYOUTS)} non-negative weights for {LAYOUTS}")


DEFAULT_CONFIG = SyntheticConfig()
"""Everyday driving: the train/val/test splits."""

HARD_CONFIG = SyntheticConfig(
    layout_weights=(0.05, 0.2, 0.2, 0.1, 0.3, 0.15),
    density_range=(2.0, 4.0),
    truck_probability=0.15,
    bicycle_probability=0.2,
    parked_probability=0.5,
    crosswalk_pedestrian_probability=0.6,
    sidewalk_pedestrian_probability=0.4,
    blocked_lane_probability=0.85,
    ego_red_probability=0.6,
    two_lane_intersection_probability=0.7,
    curve_radius_range=(25.0, 60.0),
    curve_angle_range_deg=(60.0, 120.0),
)
"""Dense traffic, tight turns, red lights, blocked lanes: the synthetic-hard split."""


@dataclass(frozen=True)
class SplitSpec:
    """A named split: scenes ``first_seed .. first_seed + size - 1`` generated with ``config``."""

    name: str
    first_seed: int
    size: int
    config: SyntheticConfig
    description: str = ""


SPLITS: dict[str, SplitSpec] = {
    s.name: s for s in (
        SplitSpec("synthetic-train", 0, 5_000, DEFAULT_CONFIG, "training scenes, everyday mix of layouts"),
        SplitSpec("synthetic-val", 1_000_000, 500, DEFAULT_CONFIG, "validation scenes, same distribution"),
        SplitSpec("synthetic-test", 2_000_000, 500, DEFAULT_CONFIG, "test scenes, same distribution"),
        SplitSpec("synthetic-hard", 3_000_000, 500, HARD_CONFIG,
                  "dense traffic, tight turns, red lights, blocked lanes"),
        SplitSpec("synthetic-train-hard", 4_000_000, 5_000, HARD_CONFIG,
                  "training scenes of the hard distribution (seeds disjoint from synthetic-hard)"),
    )
}
"""Named splits with fixed, non-overlapping seed ranges."""


def _split_spec(split: str) -> SplitSpec:
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown synthetic split {split!r}; valid names: {', '.join(SPLITS)}") from None


def split_size(split: str) -> int:
    """Number of scenes in a named split (ValueError for an unknown name)."""
    return _split_spec(split).size


def scene_layout(scene: Scene) -> str:
    """The layout name (one of :data:`LAYOUTS`) a synthetic scene was generated with ('' for other sources)."""
    parts = scene.metadata.log_name.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "synthetic" else ""


# --------------------------------------------------------------------------------------------------------------------
# Constants of the simulation
# --------------------------------------------------------------------------------------------------------------------

SIM_DT = 0.1  # s, simulation step
_STEPS_PER_SAMPLE = int(round(DT / SIM_DT))
_PATH_DS = 1.0  # m, resampling step of vehicle paths
_PATH_EXTENSION = 150.0  # m of straight virtual road after a path's last lane (vehicles drive off the map)
# IDM parameters (epdms.md, reactive agents).
IDM_MIN_GAP = 1.0
IDM_HEADWAY = 1.5
IDM_ACCEL = 1.0
IDM_DECEL = 2.0
_BG_MIN_ACCEL = -6.0  # background vehicles may brake hard
_EGO_MIN_ACCEL = -3.8  # the expert stays inside NAVSIM's comfort bound (-4.05)
_EGO_MAX_JERK = 4.0  # m/s^3, expert jerk limit (HC bound 4.13 longitudinal)
_YELLOW_STOP_DECEL = 2.0  # stop at yellow if the kinematic deceleration needed is below this (IDM brakes harder)
_PROFILE_DECEL = 1.2  # m/s^2, anticipatory deceleration of the desired-speed profile before curves
_MERGE_WINDOW = 500.0  # m before a merge where vehicles of the merging lanes see each other (the whole ramp: a
# window edge would make a vehicle alongside appear as a leader at zero gap)
_MAP_CROP_FACTOR = 1.2  # map geometry is kept within map_range * this of the ego (m)
_PED_ANTICIPATION = 4.0  # s, vehicles yield to pedestrians who will be on their path within this time
_CROSSWALK_HALF = 2.5  # m, half depth of the zone a vehicle keeps clear in front of a crossing pedestrian
_YAW_RATE_LIMIT = 0.5  # rad/s, curve speed also capped by yaw rate v * curvature

# Light programme: split phasing. Phase 0 = E-W through + right, 1 = E-W protected left, 2 = N-S through + right,
# 3 = N-S left.
_YELLOW_S = 4.0
_ALL_RED_S = 2.0


# --------------------------------------------------------------------------------------------------------------------
# Geometry helpers (world frame)
# --------------------------------------------------------------------------------------------------------------------


def _left_normals(line: np.ndarray) -> np.ndarray:
    """(n, 2) unit left normals at the vertices of a (n, 2) polyline (averaged tangents at inner vertices)."""
    d = np.diff(line, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    t = np.empty_like(line)
    t[0], t[-1] = d[0], d[-1]
    if len(line) > 2:
        m = d[:-1] + d[1:]
        t[1:-1] = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _line(p0, heading: float, length: float) -> np.ndarray:
    """(2, 2) straight segment from p0 along heading (rad)."""
    p0 = np.asarray(p0, float)
    return np.stack([p0, p0 + length * np.array([np.cos(heading), np.sin(heading)])])


def _arc(p0, heading: float, radius: float, angle: float, spacing: float = 1.5) -> np.ndarray:
    """(n, 2) circular arc from p0 with initial heading; angle > 0 turns left (rad)."""
    n = max(3, int(np.ceil(abs(angle) * radius / spacing)) + 1)
    phi = np.linspace(0.0, angle, n)
    sgn = np.sign(angle)
    centre = np.asarray(p0, float) + sgn * radius * np.array([-np.sin(heading), np.cos(heading)])
    a = heading - sgn * np.pi / 2 + phi
    return centre + radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _bezier5(p0, h0: float, p1, h1: float, spacing: float = 1.5) -> np.ndarray:
    """(n, 2) quintic Bezier from pose (p0, h0) to (p1, h1) with zero curvature at both ends.

    Three control points on each end tangent make the first and second derivatives parallel to the tangent at the
    ends, so the curve joins straight lanes without a curvature jump (smooth steering for the expert).
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    chord = float(np.linalg.norm(p1 - p0))
    u0, u1 = np.array([np.cos(h0), np.sin(h0)]), np.array([np.cos(h1), np.sin(h1)])
    k = 0.22 * chord
    ctrl = np.stack([p0, p0 + k * u0, p0 + 2 * k * u0, p1 - 2 * k * u1, p1 - k * u1, p1])
    n = max(4, int(np.ceil(1.3 * chord / spacing)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    binom = np.array([1, 5, 10, 10, 5, 1], float)
    powers = np.arange(6)
    basis = binom * t ** powers * (1 - t) ** (5 - powers)
    return basis @ ctrl


def _quintic(u: np.ndarray) -> np.ndarray:
    """Smooth step 0 -> 1 on u in [0, 1] with zero 1st and 2nd derivatives at both ends."""
    u = np.clip(u, 0.0, 1.0)
    return u ** 3 * (10 - 15 * u + 6 * u * u)


def _boxes_overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Separating-axis test for oriented boxes (..., 5) [cx, cy, yaw, length, width], broadcast. True = overlap.

    ``margin`` (m) inflates the test: boxes closer than ``margin`` count as overlapping.
    """
    d = b[..., :2] - a[..., :2]
    sep = np.zeros(np.broadcast(a[..., 0], b[..., 0]).shape, bool)
    ua = np.stack([np.cos(a[..., 2]), np.sin(a[..., 2])], -1)
    va = np.stack([-ua[..., 1], ua[..., 0]], -1)
    ub = np.stack([np.cos(b[..., 2]), np.sin(b[..., 2])], -1)
    vb = np.stack([-ub[..., 1], ub[..., 0]], -1)
    for n in (ua, va, ub, vb):
        ra = np.abs(a[..., 3] / 2 * (ua * n).sum(-1)) + np.abs(a[..., 4] / 2 * (va * n).sum(-1))
        rb = np.abs(b[..., 3] / 2 * (ub * n).sum(-1)) + np.abs(b[..., 4] / 2 * (vb * n).sum(-1))
        sep |= np.abs((d * n).sum(-1)) > ra + rb + margin
    return ~sep


# --------------------------------------------------------------------------------------------------------------------
# World (lane graph in a world frame) and layouts
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Static:
    """A static object: box (x, y, yaw, length, width, height) in the world frame and its category."""

    box: tuple[float, float, float, float, float, float]
    category: int


@dataclass
class _Crosswalk:
    """Crosswalk rectangle; pedestrians walk along ``p0 -> p1`` (the curb-to-curb centre line, m)."""

    polygon: np.ndarray
    p0: np.ndarray
    p1: np.ndarray


class _World:
    """Lane graph under construction, world frame. Lanes are appended with :meth:`lane`."""

    def __init__(self) -> None:
        self.centre: list[np.ndarray] = []
        self.left: list[np.ndarray] = []
        self.right: list[np.ndarray] = []
        self.speed: list[float] = []
        self.connector: list[bool] = []
        self.intersection: list[bool] = []
        self.group: list[int] = []
        self.phase: list[int] = []  # light phase controlling the lane (connectors), -1 = none
        self.successors: list[tuple[int, int]] = []
        self.left_nb: list[int] = []
        self.right_nb: list[int] = []
        self.surfaces: list[np.ndarray] = []  # drivable polygons (exterior rings)
        self.intersections: list[np.ndarray] = []
        self.crosswalks: list[_Crosswalk] = []
        self.sidewalks: list[np.ndarray] = []  # (2, 2) segments pedestrians may walk along
        self.statics: list[_Static] = []
        self.parking_edges: list[tuple[np.ndarray, float]] = []  # (centre line of a parking shoulder, width)
        self._groups = 0

    def new_group(self) -> int:
        self._groups += 1
        return self._groups - 1

    def lane(self, centre: np.ndarray, width: float, speed: float, group: int, *, connector: bool = False,
             intersection: bool = False, phase: int = -1) -> int:
        centre = np.asarray(centre, float)
        n = _left_normals(centre)
        self.centre.append(centre)
        self.left.append(centre + n * (width / 2))
        self.right.append(centre - n * (width / 2))
        self.speed.append(float(speed))
        self.connector.append(connector)
        self.intersection.append(intersection)
        self.group.append(group)
        self.phase.append(phase)
        self.left_nb.append(-1)
        self.right_nb.append(-1)
        return len(self.centre) - 1

    def link(self, a: int, b: int) -> None:
        self.successors.append((a, b))

    @property
    def num_lanes(self) -> int:
        return len(self.centre)

    def lane_length(self, lane: int) -> float:
        return polyline_length(self.centre[lane])

    def successors_of(self, lane: int) -> list[int]:
        return [b for a, b in self.successors if a == lane]

    def road(self, ref: np.ndarray, n_fwd: int, n_bwd: int, width: float, speed: float, *,
             shoulder_right: float = 0.0, shoulder_left: float = 0.0) -> tuple[list[int], list[int]]:
        """Add a roadblock pair along reference line ``ref`` (the centre divider).

        Forward lanes drive along ``ref`` on its right side, backward lanes against it on its left (right-hand
        traffic). Both lists go from the lane next to the divider outwards (index 0 = leftmost in driving
        direction). ``shoulder_right`` / ``shoulder_left`` add drivable shoulders outside the forward / backward
        lanes (m); a shoulder wider than 2 m is a parking shoulder.
        """
        ref = np.asarray(ref, float)
        nrm = _left_normals(ref)
        gf = self.new_group()
        fwd = [self.lane(ref - nrm * ((k + 0.5) * width), width, speed, gf) for k in range(n_fwd)]
        bwd = []
        if n_bwd:
            gb = self.new_group()
            bwd = [self.lane((ref + nrm * ((k + 0.5) * width))[::-1], width, speed, gb) for k in range(n_bwd)]
        for lanes in (fwd, bwd):
            for a, b in zip(lanes[:-1], lanes[1:]):
                self.right_nb[a], self.left_nb[b] = b, a
        left_edge = ref + nrm * (n_bwd * width + shoulder_left)
        right_edge = ref - nrm * (n_fwd * width + shoulder_right)
        self.surfaces.append(np.concatenate([left_edge, right_edge[::-1]]))
        if shoulder_right > 2.0:
            self.parking_edges.append((ref - nrm * (n_fwd * width + shoulder_right / 2), shoulder_right))
        if shoulder_left > 2.0 and n_bwd:
            self.parking_edges.append(((ref + nrm * (n_bwd * width + shoulder_left / 2))[::-1], shoulder_left))
        edge = n_fwd * width + shoulder_right + 2.0
        self.sidewalks.append(np.stack([ref[0] - nrm[0] * edge, ref[-1] - nrm[-1] * edge]))
        return fwd, bwd


@dataclass
class _Layout:
    """A built world plus what the ego does in it.

    Attributes:
        name: layout name.
        world: the lane graph.
        ego_lanes: the ego's lane chain (its route), world lane indices.
        ego_station: target station of the ego's rear axle on that chain at t0 (m).
        ego_speed: target ego speed around t0 (m/s).
        lane_change: (start station, length, lateral shift (m, +left), lanes beside the chain before the change,
            lanes of the original lane after the change) or None.
        no_spawn: (lane, s_from, s_to) intervals kept free of background vehicles at spawn.
        phase_times: (4, 3) [green, yellow, all-red] durations of the light phases, or None.
        light_offset: time in the light cycle at t0 (s).
    """

    name: str
    world: _World
    ego_lanes: list[int]
    ego_station: float
    ego_speed: float
    lane_change: tuple | None = None
    no_spawn: list[tuple[int, float, float]] = field(default_factory=list)
    phase_times: np.ndarray | None = None
    light_offset: float = 0.0


def _parked_cars(rng: np.random.Generator, world: _World, x_range: tuple[float, float]) -> None:
    """Park cars along the world's parking shoulders (only where the shoulder's x lies in x_range, m)."""
    for line, width in world.parking_edges:
        length = polyline_length(line)
        cum = arc_length(line)
        s = rng.uniform(0, 8)
        while s < length - 5:
            car_len = rng.uniform(4.3, 5.1)
            s += car_len / 2
            if rng.random() < 0.65:
                x, y = np.interp(s, cum, line[:, 0]), np.interp(s, cum, line[:, 1])
                k = min(int(np.searchsorted(cum, s)), len(line) - 1)
                d = line[k] - line[max(k - 1, 0)] if k > 0 else line[1] - line[0]
                yaw = float(np.arctan2(d[1], d[0])) + rng.normal(0, 0.02)
                if x_range[0] < x < x_range[1]:
                    car_w = min(rng.uniform(1.8, 2.0), width - 0.4)
                    world.statics.append(_Static((x, y, yaw, car_len, car_w, rng.uniform(1.4, 1.9)), VEHICLE))
            s += car_len / 2 + rng.uniform(0.8, 12.0)


def _choose_lanes(rng: np.random.Generator, cfg: SyntheticConfig, minimum: int = 1) -> tuple[int, int, float]:
    n_fwd = int(rng.integers(minimum, cfg.max_lanes + 1))
    n_bwd = int(rng.integers(1, n_fwd + 1)) if rng.random() < cfg.oncoming_probability else 0
    width = float(rng.uniform(*cfg.lane_width_range))
    return n_fwd, n_bwd, width


def _open_road_extras(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[float, float]:
    """Shoulder widths (right, left): parking shoulders with some probability, else a narrow hard shoulder."""
    right = float(rng.uniform(2.4, 2.8)) if rng.random() < cfg.parked_probability else 0.5
    left = float(rng.uniform(2.4, 2.8)) if rng.random() < 0.5 * cfg.parked_probability else 0.5
    return right, left


def _layout_straight(rng: np.random.Generator, cfg: SyntheticConfig) -> _Layout:
    w = _World()
    n_fwd, n_bwd, width = _choose_lanes(rng, cfg)
    speed = float(rng.choice(cfg.speed_limits))
    ego_k = int(rng.integers(n_fwd))
    sh_r, sh_l = _open_road_extras(rng, cfg)
    ref_y = (ego_k + 0.5) * width
    fwd, _ = w.road(_line((-130.0, ref_y), 0.0, 260.0), n_fwd, n_bwd, width, speed, shoulder_right=sh_r,
                    shoulder_left=sh_l)
    _parked_cars(rng, w, (-110, 120))
    if rng.random() < cfg.crosswalk_pedestrian_probability:
        _add_crosswalk(w, x=float(rng.uniform(20, 60)), y_top=ref_y + n_bwd * width + sh_l,
                       y_bottom=ref_y - n_fwd * width - sh_r)
    return _Layout("straight", w, [fwd[ego_k]], 130.0, speed * rng.uniform(0.6, 1.0))


def _add_crosswalk(w: _World, x: float, y_top: float, y_bottom: float, depth: float = 4.0) -> None:
    """A crosswalk across a road along x (its lanes cover y_bottom..y_top)."""
    poly = np.array([[x - depth / 2, y_bottom], [x + depth / 2, y_bottom], [x + depth / 2, y_top],
                     [x - depth / 2, y_top]])
    w.crosswalks.append(_Crosswalk(poly, np.array([x, y_bottom - 1.5]), np.array([x, y_top + 1.5])))


def _layout_curve(rng: np.random.Generator, cfg: SyntheticConfig) -> _Layout:
    w = _World()
    n_fwd, n_bwd, width = _choose_lanes(rng, cfg)
    speed = float(rng.choice(cfg.speed_limits))
    ego_k = int(rng.integers(n_fwd))
    sh_r, sh_l = _open_road_extras(rng, cfg)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    # The inner edge must keep a positive radius.
    inner = (n_bwd * width + sh_l) if sign > 0 else (n_fwd * width + sh_r)
    radius = max(float(rng.uniform(*cfg.curve_radius_range)), inner + 12.0)
    angle = sign * np.deg2rad(rng.uniform(*cfg.curve_angle_range_deg))
    ref_y = (ego_k + 0.5) * width
    pre = 130.0 + float(rng.uniform(-40, 40))  # the curve starts this far along the reference line
    a = _line((-130.0, ref_y), 0.0, pre)
    b = _arc(a[-1], 0.0, radius, angle)
    c = _line(b[-1], angle, 110.0)
    ref = concat_polylines([a, b, c])
    fwd, _ = w.road(ref, n_fwd, n_bwd, width, speed, shoulder_right=sh_r, shoulder_left=sh_l)
    _parked_cars(rng, w, (-110, 200))
    return _Layout("curve", w, [fwd[ego_k]], 130.0, speed * rng.uniform(0.6, 1.0))


def _layout_lane_change(rng: np.random.Generator, cfg: SyntheticConfig) -> _Layout:
    w = _World()
    n_fwd, n_bwd, width = _choose_lanes(rng, cfg, minimum=2)
    speed = float(rng.choice(cfg.speed_limits))
    ego_k = int(rng.integers(n_fwd))
    target = ego_k + (1 if ego_k == 0 else -1 if ego_k == n_fwd - 1 else int(rng.choice([-1, 1])))
    sh_r, sh_l = _open_road_extras(rng, cfg)
    ref_y = (ego_k + 0.5) * width
    v0 = speed * float(rng.uniform(0.7, 1.0))
    length = max(3.2 * v0, 20.0)  # ~3 s manoeuvre: peak lateral accel ~2.2 m/s^2
    start = 130.0 + v0 * float(rng.uniform(-0.6, 0.6))  # station of the manoeuvre start (ego at 130 at t0)
    split_x = -130.0 + start + length / 2  # roadblock boundary: the route switches lane here
    ref1 = _line((-130.0, ref_y), 0.0, split_x + 130.0)
    ref2 = _line((split_x, ref_y), 0.0, 130.0 - split_x + 20)
    f1, b1 = w.road(ref1, n_fwd, n_bwd, width, speed, shoulder_right=sh_r, shoulder_left=sh_l)
    f2, b2 = w.road(ref2, n_fwd, n_bwd, width, speed, shoulder_right=sh_r, shoulder_left=sh_l)
    for a, b in zip(f1, f2):
        w.link(a, b)
    for a, b in zip(b2, b1):
        w.link(a, b)
    _parked_cars(rng, w, (-110, 150))
    shift = width * (ego_k - target)  # + = left (target has a smaller index = further left)
    lay = _Layout("lane_change", w, [f1[ego_k], f2[target]], 130.0, v0,
                  lane_change=(start, length, shift, [f1[target]], [f2[ego_k]]))
    # Keep a gap in the target lane around the manoeuvre (the expert waits for no one).
    lay.no_spawn.append((f1[target], start - 30 - 2 * v0, 1e9))
    lay.no_spawn.append((f2[target], 0.0, 25.0))
    if rng.random() < cfg.blocked_lane_probability:
        # Close the original lane after the manoeuvre: a cone taper then a barrier or a broken-down vehicle.
        x0 = split_x + length / 2 + float(rng.uniform(8, 25))
        y0 = 0.0  # the ego lane centre line is y = 0
        side = np.sign(shift)  # the lane opens toward the target side
        for i in range(4):
            w.statics.append(_Static((x0 + 3.0 * i, y0 + side * (1.2 - 0.8 * i), 0.0, 0.4, 0.4, 0.7), TRAFFIC_CONE))
        if rng.random() < 0.5:
            w.statics.append(_Static((x0 + 14.0, y0, np.pi / 2, 0.5, 2.6, 1.0), BARRIER))
        else:
            w.statics.append(_Static((x0 + 17.0, y0, 0.0, 4.7, 1.9, 1.6), VEHICLE))
        # no background vehicle may be spawned on top of the closure
        lay.no_spawn.append((f2[ego_k], x0 - split_x - 10, x0 - split_x + 25))
    return lay


def _layout_merge(rng: np.random.Generator, cfg: SyntheticConfig) -> _Layout:
    w = _World()
    n_fwd, n_bwd, width = _choose_lanes(rng, cfg)
    speed = float(rng.choice(cfg.speed_limits))
    ego_on_ramp = rng.random() < 0.5
    ego_k = n_fwd - 1 if (ego_on_ramp or rng.random() < 0.7) else int(rng.integers(n_fwd))
    sh_l = 0.5
    v0 = speed * float(rng.uniform(0.6, 0.95))
    to_merge = float(rng.uniform(10, 70))  # ego's distance to the merge point at t0
    # Ego lane centre y = 0 on the main road (or the ramp's end joins the rightmost lane at y = 0).
    ref_y = (ego_k + 0.5) * width
    x_merge = to_merge
    y_right = ref_y - (n_fwd - 0.5) * width  # rightmost main lane centre
    f1, b1 = w.road(_line((-150.0, ref_y), 0.0, x_merge + 150.0), n_fwd, n_bwd, width, speed, shoulder_left=sh_l,
                    shoulder_right=0.3)
    f2, b2 = w.road(_line((x_merge, ref_y), 0.0, 130.0), n_fwd, n_bwd, width, speed, shoulder_left=sh_l,
                    shoulder_right=0.5)
    for a, b in zip(f1, f2):
        w.link(a, b)
    for a, b in zip(b2, b1):
        w.link(a, b)
    # On-ramp: a straight approach 9-12 m to the right, then an S-curve joining the rightmost lane tangentially.
    offset = float(rng.uniform(9.0, 12.0))
    s_len = float(rng.uniform(70, 100))
    approach = _line((-150.0, y_right - offset), 0.0, x_merge - s_len + 150.0)
    s_curve = _bezier5(approach[-1], 0.0, (x_merge, y_right), 0.0)
    ramp_line = concat_polylines([approach, s_curve])
    ramp = w.lane(ramp_line, width, speed, w.new_group())
    w.link(ramp, f2[-1])
    nrm = _left_normals(ramp_line)
    w.surfaces.append(np.concatenate([ramp_line + nrm * (width / 2), (ramp_line - nrm * (width / 2 + 0.3))[::-1]]))
    if ego_on_ramp:
        lanes = [ramp, f2[-1]]
        station = polyline_length(ramp_line) - to_merge
        # Ego lane centre is not y = 0 here; the export uses the ego's actual pose, so nothing depends on it.
    else:
        lanes = [f1[ego_k], f2[ego_k]]
        station = x_merge + 150.0 - to_merge
    return _Layout("merge", w, lanes, station, v0)


def _layout_intersection(rng: np.random.Generator, cfg: SyntheticConfig, t_junction: bool) -> _Layout:
    """4-way or T intersection centred at the origin; the ego approaches from the west heading +x."""
    w = _World()
    n = 2 if rng.random() < cfg.two_lane_intersection_probability else 1
    width = float(rng.uniform(*cfg.lane_width_range))
    speed = float(rng.choice(cfg.intersection_speed_limits))
    half = n * width  # road half width
    box = half + 1.0  # central conflict box half size
    r0 = box + 5.0  # stop lines: the crosswalk zone lies between the box and the stop line
    angles = [np.pi, 0.0, np.pi / 2, -np.pi / 2]  # outward directions: west (ego), east, north, south
    missing = None
    if t_junction:
        missing = int(rng.integers(1, 4))
    d_stop = float(rng.uniform(-8.0, 60.0))  # ego rear axle to its stop line at t0 (m; negative: past it)
    roads: dict[int, tuple[list[int], list[int]]] = {}
    for k, ang in enumerate(angles):
        if k == missing:
            continue
        length = 90.0 + max(d_stop, 0.0) if k == 0 else 90.0
        u = np.array([np.cos(ang), np.sin(ang)])
        ref = np.stack([u * r0, u * (r0 + length)])
        # forward = outgoing (driving away from the centre), backward = incoming
        roads[k] = w.road(ref, n, n, width, speed, shoulder_right=0.5, shoulder_left=0.5)
        # crosswalk across this road just inside the stop line
        nrm = np.array([-u[1], u[0]])
        c = u * (r0 - 2.5)
        ext = half + 0.5
        poly = np.stack([c - 2 * u - ext * nrm, c + 2 * u - ext * nrm, c + 2 * u + ext * nrm, c - 2 * u + ext * nrm])
        w.crosswalks.append(_Crosswalk(poly, c - (half + 1.5) * nrm, c + (half + 1.5) * nrm))
    sq = np.array([[-r0, -r0], [r0, -r0], [r0, r0], [-r0, r0]])
    w.intersections.append(sq)
    w.surfaces.append(sq)
    # Connectors. Right of outward angle a is road (a + pi/2)'s ... computed from headings directly.
    right_of = {0: 3, 3: 1, 1: 2, 2: 0}  # approaching from west (0) and turning right leads south (3), ...
    left_of = {0: 2, 2: 1, 1: 3, 3: 0}
    opposite = {0: 1, 1: 0, 2: 3, 3: 2}
    axis_phase = {0: 0, 1: 0, 2: 2, 3: 2}  # E-W roads use phases 0/1, N-S roads 2/3
    movements: dict[tuple[int, str], list[int]] = {}
    for k, (out_k, in_k) in roads.items():
        for move, dest in (("straight", opposite[k]), ("left", left_of[k]), ("right", right_of[k])):
            if dest not in roads:
                continue
            out_lanes = roads[dest][0]
            if move == "straight":
                pairs = list(zip(in_k, out_lanes))
            elif move == "left":
                pairs = [(in_k[0], out_lanes[0])]
            else:
                pairs = [(in_k[-1], out_lanes[-1])]
            phase = axis_phase[k] + (1 if move == "left" else 0)
            for a, b in pairs:
                pa, pb = w.centre[a][-1], w.centre[b][0]
                da, db = w.centre[a][-1] - w.centre[a][-2], w.centre[b][1] - w.centre[b][0]
                ha, hb = np.arctan2(da[1], da[0]), np.arctan2(db[1], db[0])
                geom = np.stack([pa, pb]) if move == "straight" else _bezier5(pa, ha, pb, hb)
                c = w.lane(geom, width, speed, w.new_group(), connector=True, intersection=True, phase=phase)
                w.link(a, c)
                w.link(c, b)
                movements.setdefault((k, move), []).append(c)
    # Ego: from the west, a movement that exists, starting in a lane that allows it.
    options = [m for m in ("straight", "left", "right") if (0, m) in movements]
    move = str(rng.choice(options))
    conns = movements[(0, move)]
    conn = conns[int(rng.integers(len(conns)))]
    lane_in = [a for a, b in w.successors if b == conn][0]
    lane_out = w.successors_of(conn)[0]
    station = w.lane_length(lane_in) - d_stop
    # Light programme: green / yellow / all-red per phase; through phases longer than protected lefts.
    times = np.zeros((4, 3))
    times[:, 0] = [rng.uniform(10, 20), rng.uniform(5, 9), rng.uniform(10, 20), rng.uniform(5, 9)]
    times[:, 1] = _YELLOW_S
    times[:, 2] = _ALL_RED_S
    ego_phase = w.phase[conn]
    starts = np.r_[0.0, np.cumsum(times.sum(1))[:-1]]
    cycle = float(times.sum())
    v0 = speed * float(rng.uniform(0.5, 1.0))
    if rng.random() < cfg.ego_red_probability:
        # t0 inside the ego phase's red (after its yellow+all-red, before its next green)
        red_start = starts[ego_phase] + times[ego_phase, 0] + times[ego_phase, 1]
        offset = red_start + rng.uniform(0, cycle - times[ego_phase, 0] - times[ego_phase, 1])
        # the ego is still before its stop line (one already past it would be inside a red connector)
        line = w.lane_length(lane_in) - PACIFICA.front_length  # rear-axle station with the bumper at the line
        station = min(station, line - float(rng.uniform(2.0, 10.0)) - v0 * 1.0)
        if rng.random() < 0.5:
            # waiting at (or rolling up to) the stop line
            station = line - float(rng.uniform(1.5, 15.0))
            v0 = float(rng.uniform(0.0, 3.0))
    else:
        offset = starts[ego_phase] + rng.uniform(0, times[ego_phase, 0])
    lay = _Layout("intersection_t" if t_junction else "intersection4", w, [lane_in, conn, lane_out], station, v0,
                  phase_times=times, light_offset=float(offset % cycle))
    return lay


_LAYOUT_BUILDERS = {
    "straight": _layout_straight,
    "curve": _layout_curve,
    "lane_change": _layout_lane_change,
    "merge": _layout_merge,
    "intersection4": lambda rng, cfg: _layout_intersection(rng, cfg, False),
    "intersection_t": lambda rng, cfg: _layout_intersection(rng, cfg, True),
}


@dataclass
class _Lights:
    """Light states over the simulation steps: state (T, L) int8 and time_to_red (T, L) (s; inf if not within
    the simulated window)."""

    state: np.ndarray
    time_to_red: np.ndarray

    @classmethod
    def make(cls, state: np.ndarray) -> "_Lights":
        T = len(state)
        idx = np.where(state == LIGHT_RED, np.arange(T)[:, None], T * 10)
        next_red = np.minimum.accumulate(idx[::-1], axis=0)[::-1]
        return cls(state, np.where(next_red >= T, np.inf, (next_red - np.arange(T)[:, None]) * SIM_DT))


def _light_states(lay: _Layout, times: np.ndarray) -> np.ndarray:
    """(T, L) int8 light state of every lane at the given times (s, relative to t0)."""
    w = lay.world
    phase = np.asarray(w.phase)
    out = np.full((len(times), w.num_lanes), LIGHT_NONE, np.int8)
    if lay.phase_times is None or not np.any(phase >= 0):
        return out
    pt = lay.phase_times
    starts = np.r_[0.0, np.cumsum(pt.sum(1))[:-1]]
    cycle = pt.sum()
    tau = (np.asarray(times)[:, None] + lay.light_offset - starts[None, :]) % cycle  # (T, 4) time since phase start
    state = np.where(tau < pt[:, 0], LIGHT_GREEN, np.where(tau < pt[:, 0] + pt[:, 1], LIGHT_YELLOW, LIGHT_RED))
    lit = phase >= 0
    out[:, lit] = state[:, phase[lit]]
    return out


# --------------------------------------------------------------------------------------------------------------------
# Population
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Vehicles:
    """Vehicles to simulate (index 0 = ego). Lists of equal length N.

    ``lanes``: each vehicle's lane chain; ``station``: initial station on it (m, rear axle for the ego, box centre
    otherwise); ``front``/``rear``: extent of the box ahead of / behind the station point (m).
    """

    lanes: list[list[int]] = field(default_factory=list)
    station: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    desire: list[float] = field(default_factory=list)  # desired speed factor on the speed profile
    front: list[float] = field(default_factory=list)
    rear: list[float] = field(default_factory=list)
    width: list[float] = field(default_factory=list)
    height: list[float] = field(default_factory=list)
    category: list[int] = field(default_factory=list)

    def add(self, lanes, station, speed, desire, length, width, height, category, front=None) -> None:
        self.lanes.append(list(lanes))
        self.station.append(float(station))
        self.speed.append(float(speed))
        self.desire.append(float(desire))
        self.front.append(length / 2 if front is None else front)
        self.rear.append(length / 2 if front is None else length - front)
        self.width.append(float(width))
        self.height.append(float(height))
        self.category.append(int(category))

    def __len__(self) -> int:
        return len(self.lanes)

    def subset(self, keep: np.ndarray) -> "_Vehicles":
        out = _Vehicles()
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            setattr(out, f.name, [values[i] for i in np.flatnonzero(keep)])
        return out


def _random_chain(rng: np.random.Generator, world: _World, lane: int, max_lanes: int = 6) -> list[int]:
    chain = [lane]
    while len(chain) < max_lanes:
        nxt = world.successors_of(chain[-1])
        if not nxt:
            break
        chain.append(int(nxt[int(rng.integers(len(nxt)))]))
    return chain


def _populate(rng: np.random.Generator, cfg: SyntheticConfig, lay: _Layout) -> _Vehicles:
    """Ego plus background vehicles (IDM-spaced per lane) and the cyclist, before the warm-up simulation."""
    w = lay.world
    veh = _Vehicles()
    ego = PACIFICA
    warm = cfg.warmup_s + (NUM_HISTORY - 1) * DT
    ego_start = lay.ego_station - lay.ego_speed * warm
    # The expert cruises at its target speed (desired speed = that fraction of the speed limit), so it reaches its
    # planned t0 station (and a planned lane-change start) on time unless traffic slows it.
    desire = float(np.clip(lay.ego_speed / w.speed[lay.ego_lanes[0]], 0.6, 1.0))
    veh.add(lay.ego_lanes, ego_start, lay.ego_speed, desire, ego.length, ego.width, ego.height, VEHICLE,
            front=ego.front_length)
    density = float(rng.uniform(*cfg.density_range)) / 100.0  # vehicles per m of lane
    ego_lane0 = lay.ego_lanes[0]
    blocked = {lane: [] for lane in range(w.num_lanes)}
    for lane, a, b in lay.no_spawn:
        blocked[lane].append((a, b))
    # ego start region of its first lane is kept clear (the ego is spawned there)
    blocked[ego_lane0].append((ego_start - 12.0, ego_start + 12.0 + 1.5 * lay.ego_speed))
    for lane in range(w.num_lanes):
        if w.connector[lane]:
            continue  # no spawns inside intersections: vehicles from different phases would conflict
        length = w.lane_length(lane)
        s = float(rng.exponential(1.0 / density))
        while s < length - 3.0:
            truck = rng.random() < cfg.truck_probability
            car_len = float(rng.uniform(8.0, 12.0) if truck else rng.uniform(4.2, 5.2))
            car_w = float(rng.uniform(2.4, 2.6) if truck else rng.uniform(1.75, 2.05))
            if not any(a - car_len < s < b + car_len for a, b in blocked[lane]):
                v = w.speed[lane] * float(rng.uniform(0.6, 1.0))
                veh.add(_random_chain(rng, w, lane), s, v, float(rng.uniform(0.85, 1.1)), car_len, car_w,
                        float(rng.uniform(3.0, 3.8) if truck else rng.uniform(1.45, 1.9)), VEHICLE)
            s += car_len + IDM_MIN_GAP + 2.0 + float(rng.exponential(1.0 / density))
    if rng.random() < cfg.bicycle_probability:
        # a cyclist in a random non-connector lane (cyclists keep right; in our lanes they ride the lane centre)
        lanes = [i for i in range(w.num_lanes) if not w.connector[i] and w.right_nb[i] < 0]
        lane = lanes[int(rng.integers(len(lanes)))]
        veh.add(_random_chain(rng, w, lane), float(rng.uniform(5, w.lane_length(lane) - 5)), 4.5,
                float(rng.uniform(0.4, 0.6)), 1.8, 0.7, 1.7, BICYCLE)
    return veh


@dataclass
class _Pedestrians:
    """Non-reactive pedestrians: positions (T, M, 2) over the simulation steps, heading (T, M), speed (T, M)."""

    xy: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    crosswalk: np.ndarray  # (M,) crosswalk index or -1 (sidewalk)
    u: np.ndarray  # (T, M) position along the crosswalk line from its centre (m)


def _pedestrians(rng: np.random.Generator, cfg: SyntheticConfig, lay: _Layout, sim_t: np.ndarray,
                 ego_xy: np.ndarray) -> _Pedestrians:
    """Pedestrians walking across crosswalks (curb to curb, then waiting) and along sidewalks."""
    w = lay.world
    xy, heading, speed, cw_idx, us = [], [], [], [], []
    T = len(sim_t)
    if w.crosswalks and rng.random() < cfg.crosswalk_pedestrian_probability:
        # crosswalks near the ego first: those are the ones that matter
        dist = [np.linalg.norm(c.polygon.mean(0) - ego_xy) for c in w.crosswalks]
        order = np.argsort(dist)
        for ci in order[: int(rng.integers(1, 3))]:
            cw = w.crosswalks[int(ci)]
            span = float(np.linalg.norm(cw.p1 - cw.p0))
            direction = (cw.p1 - cw.p0) / span
            for _ in range(int(rng.integers(1, 4))):
                forward = rng.random() < 0.5
                v = float(rng.uniform(1.0, 1.6))
                t_start = float(rng.uniform(sim_t[0], 4.0))
                walked = np.clip((sim_t - t_start) * v, 0.0, span)
                along = walked if forward else span - walked
                jitter = rng.uniform(-1.2, 1.2)  # position across the crosswalk depth
                side = np.array([direction[1], -direction[0]])
                pos = cw.p0[None] + along[:, None] * direction[None] + jitter * side
                moving = (walked > 0) & (walked < span)
                xy.append(pos)
                heading.append(np.full(T, np.arctan2(*(direction if forward else -direction)[::-1])))
                speed.append(np.where(moving, v, 0.0))
                cw_idx.append(int(ci))
                us.append(along - span / 2)
    if w.sidewalks and rng.random() < cfg.sidewalk_pedestrian_probability:
        for _ in range(int(rng.integers(1, 4))):
            sw = w.sidewalks[int(rng.integers(len(w.sidewalks)))]
            length = float(np.linalg.norm(sw[1] - sw[0]))
            direction = (sw[1] - sw[0]) / max(length, 1e-6)
            if rng.random() < 0.5:
                direction = -direction
                sw = sw[::-1]
            v = float(rng.uniform(0.9, 1.6))
            s0 = float(rng.uniform(0, length))
            along = np.clip(s0 + v * (sim_t - sim_t[0]), 0, length)
            xy.append(sw[0][None] + along[:, None] * direction[None])
            heading.append(np.full(T, np.arctan2(direction[1], direction[0])))
            speed.append(np.where(along < length, v, 0.0))
            cw_idx.append(-1)
            us.append(np.zeros(T))
    if not xy:
        z = np.zeros((T, 0))
        return _Pedestrians(np.zeros((T, 0, 2)), z, z, np.zeros(0, int), z)
    return _Pedestrians(np.stack(xy, 1), np.stack(heading, 1), np.stack(speed, 1), np.asarray(cw_idx),
                        np.stack(us, 1))


# --------------------------------------------------------------------------------------------------------------------
# Paths and the IDM simulation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Paths:
    """Resampled per-vehicle paths, padded to K points (1 m apart).

    Attributes:
        xy: (N, K, 2) path points; heading: (N, K) unwrapped tangent heading; vmax: (N, K) speed profile (m/s).
        ds: (N,) actual point spacing (m). count: (N,) valid points.
        entry_lane / entry_start: (N, E) lane lookup: from station entry_start[i, e] on, vehicle i is in lane
            entry_lane[i, e] (-1 = virtual extension); padded with +inf starts.
        entry_s0: (N, E) lane-local station at the entry start.
        offset: (N, L + 1) station on path i of the start of lane l (NaN if not on it; column L = "no lane").
        min_s: (N, L + 1) a vehicle on lane l is seen by i only if its lane station exceeds this (merge window).
        lo, hi: (N, L + 1) ... and only while i's own station lies in [lo, hi] (lane-change windows).
        stop_s / stop_lane / stop_len: (N, M) stations of signalised stop lines, their connector and its length
            (inf / 0 / 0 padding).
    """

    xy: np.ndarray
    heading: np.ndarray
    vmax: np.ndarray
    ds: np.ndarray
    count: np.ndarray
    entry_lane: np.ndarray
    entry_start: np.ndarray
    entry_s0: np.ndarray
    offset: np.ndarray
    min_s: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    stop_s: np.ndarray
    stop_lane: np.ndarray
    stop_len: np.ndarray

    def sample(self, idx: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (..., 2) and headings (...) of vehicles ``idx`` at stations ``s`` (broadcast, m)."""
        f = np.clip(s / self.ds[idx], 0.0, self.count[idx] - 1.001)
        k = f.astype(np.int64)
        r = f - k
        p = self.xy[idx, k] * (1 - r)[..., None] + self.xy[idx, k + 1] * r[..., None]
        h = self.heading[idx, k] * (1 - r) + self.heading[idx, k + 1] * r
        return p, h


def _path_geometry(world: _World, lay: _Layout, cfg: SyntheticConfig, lane_len: np.ndarray, chain: tuple[int, ...],
                   is_ego: bool) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Resampled path of a lane chain (+ virtual extension): points (K, 2), spacing (m), unwrapped heading (K,)
    and desired-speed profile (K,) (lane speed limit capped by curvature, with anticipatory braking)."""
    geometry = list(chain)
    if is_ego and lay.lane_change is not None:
        # The ego's route switches lane at the roadblock boundary; its geometry follows the original lane and is
        # shifted laterally below (parallel lanes have equal lengths, so stations agree).
        geometry = [chain[0]] + list(lay.lane_change[4])
    line = concat_polylines([world.centre[l] for l in geometry])
    d = line[-1] - line[-2]
    line = np.concatenate([line, line[-1:] + _PATH_EXTENSION * d / np.linalg.norm(d)])
    cum = arc_length(line)
    num = int(np.ceil(cum[-1] / _PATH_DS)) + 1
    st = np.linspace(0.0, cum[-1], num)
    ds = cum[-1] / (num - 1)
    pts = np.stack([np.interp(st, cum, line[:, 0]), np.interp(st, cum, line[:, 1])], 1)
    if is_ego and lay.lane_change is not None:
        # quintic lateral shift (peak lateral accel ~ 5.8 * shift / duration^2)
        start, length, shift = lay.lane_change[:3]
        pts = pts + _left_normals(pts) * (shift * _quintic((st - start) / length))[:, None]
    dp = np.diff(pts, axis=0)
    h = np.unwrap(np.arctan2(dp[:, 1], dp[:, 0]))
    h = np.r_[h, h[-1]]
    kappa = np.abs(np.gradient(h, ds))
    # worst curvature within +-3 m: polyline vertices and Bezier peaks must not be averaged away
    kappa = np.lib.stride_tricks.sliding_window_view(np.pad(kappa, 3, mode="edge"), 7).max(axis=1)
    starts = np.r_[0.0, np.cumsum(lane_len[list(chain)])]
    k_idx = np.clip(np.searchsorted(starts, st, side="right") - 1, 0, len(chain) - 1)
    lim = np.asarray(world.speed)[np.asarray(chain)[k_idx]]
    v = np.minimum(lim, np.minimum(np.sqrt(cfg.expert_lateral_accel / np.maximum(kappa, 1e-6)),
                                   _YAW_RATE_LIMIT / np.maximum(kappa, 1e-6)))
    # anticipatory braking: v(s)^2 <= min_{s' >= s} v(s')^2 + 2 b (s' - s)
    q = np.minimum.accumulate((v * v + 2 * _PROFILE_DECEL * st)[::-1])[::-1]
    vmax = np.sqrt(np.maximum(q - 2 * _PROFILE_DECEL * st, 0.0))
    return pts, ds, h, vmax


def _build_paths(world: _World, veh: _Vehicles, lay: _Layout, cfg: SyntheticConfig, lane_len: np.ndarray,
                 cache: dict | None = None) -> _Paths:
    """Per-vehicle path tables. ``cache`` maps (chain, is_ego) to :func:`_path_geometry` results across calls."""
    N, L = len(veh), world.num_lanes
    cache = {} if cache is None else cache
    siblings: dict[int, list[int]] = {}
    preds: dict[int, list[int]] = {}
    for a, b in world.successors:
        preds.setdefault(b, []).append(a)
    for b, ps in preds.items():
        if len(ps) > 1:
            for a in ps:
                siblings.setdefault(a, []).extend(x for x in ps if x != a)
    geoms, entries = [], []
    for i in range(N):
        key = (tuple(veh.lanes[i]), i == 0)
        if key not in cache:
            cache[key] = _path_geometry(world, lay, cfg, lane_len, *key)
        geoms.append(cache[key])
        entries.append((list(veh.lanes[i]) + [-1], np.r_[0.0, np.cumsum(lane_len[veh.lanes[i]])]))
    K = max(len(g[0]) for g in geoms)
    xy = np.zeros((N, K, 2))
    heading = np.zeros((N, K))
    vmax = np.zeros((N, K))
    ds = np.array([g[1] for g in geoms])
    count = np.array([len(g[0]) for g in geoms])
    for i, (p, _, h, vm) in enumerate(geoms):
        n = len(p)
        xy[i, :n], xy[i, n:] = p, p[-1]
        heading[i, :n], heading[i, n:] = h, h[-1]
        vmax[i, :n], vmax[i, n:] = vm, vm[-1]
    E = max(len(e[0]) for e in entries)
    entry_lane = np.full((N, E), -1, np.int64)
    entry_start = np.full((N, E), np.inf)
    entry_s0 = np.zeros((N, E))
    offset = np.full((N, L + 1), np.nan)
    min_s = np.full((N, L + 1), -np.inf)
    lo = np.full((N, L + 1), -np.inf)
    hi = np.full((N, L + 1), np.inf)
    for i, (lanes, starts) in enumerate(entries):
        entry_lane[i, :len(lanes)] = lanes
        entry_start[i, :len(lanes)] = starts[:len(lanes)]
        for l, s0 in zip(lanes[:-1], starts):
            offset[i, l] = s0
        for l, s0 in zip(lanes[:-1], starts):
            for sib in siblings.get(l, []):
                if np.isnan(offset[i, sib]):
                    # a merging lane is aligned at the merge point (end of both lanes)
                    offset[i, sib] = s0 + lane_len[l] - lane_len[sib]
                    min_s[i, sib] = lane_len[sib] - _MERGE_WINDOW
    if lay.lane_change is not None:
        start, length, _, beside_before, orig_after = lay.lane_change
        chain = veh.lanes[0]
        for l in beside_before:  # target-lane vehicles beside the first lane matter once the manoeuvre begins
            offset[0, l] = 0.0
            lo[0, l] = start - 5.0
        s_after = lane_len[chain[0]]
        for l in orig_after:  # original-lane vehicles after the boundary matter until the ego has left the lane
            offset[0, l] = s_after
            hi[0, l] = start + 0.7 * length
    # signalised stop lines
    stops = [[(s0, l) for l, s0 in zip(lanes[:-1], starts) if world.phase[l] >= 0] for lanes, starts in entries]
    M = max(1, max(len(s) for s in stops))
    stop_s = np.full((N, M), np.inf)
    stop_lane = np.zeros((N, M), np.int64)
    for i, st in enumerate(stops):
        for m, (s0, l) in enumerate(st):
            stop_s[i, m], stop_lane[i, m] = s0, l
    return _Paths(xy, heading, vmax, ds, count, entry_lane, entry_start, entry_s0, offset, min_s, lo, hi, stop_s,
                  stop_lane, np.where(np.isfinite(stop_s), lane_len[stop_lane], 0.0))


@dataclass
class _Obstacles:
    """Per-vehicle obstacles on the path: static stations (N, Q) (inf padded) and pedestrian crossing zones."""

    static_s: np.ndarray  # (N, Q) station of the obstacle's near edge
    cross_s: np.ndarray  # (N, C) station of the crosswalk crossing (inf if none)
    blocked: np.ndarray  # (N, C, T) a pedestrian is (about to be) on the path at that crossing


def _obstacles(paths: _Paths, veh: _Vehicles, world: _World, peds: _Pedestrians, sim_t: np.ndarray) -> _Obstacles:
    N = len(veh)
    half_w = np.asarray(veh.width) / 2
    # static objects: nearest path point, lateral clearance
    if world.statics:
        boxes = np.array([s.box for s in world.statics])
        d = np.linalg.norm(paths.xy[:, None, :, :] - boxes[None, :, None, :2], axis=-1)  # (N, Q, K)
        k = np.argmin(d, axis=2)
        dist = np.take_along_axis(d, k[..., None], 2)[..., 0]
        # lateral half extent of each object across the path, and its half length along it
        rel = boxes[None, :, 2] - np.take_along_axis(paths.heading, k, 1)
        across = np.abs(boxes[None, :, 3] / 2 * np.sin(rel)) + np.abs(boxes[None, :, 4] / 2 * np.cos(rel))
        reach = np.abs(boxes[None, :, 3] / 2 * np.cos(rel)) + np.abs(boxes[None, :, 4] / 2 * np.sin(rel))
        on_path = (dist < half_w[:, None] + across + 0.3) & (k < paths.count[:, None] - 1)
        static_s = np.where(on_path, k * paths.ds[:, None] - reach, np.inf)
    else:
        static_s = np.full((N, 1), np.inf)
    T = len(sim_t)
    C = max(1, len(world.crosswalks))
    cross_s = np.full((N, C), np.inf)
    blocked = np.zeros((N, C, T), bool)
    if world.crosswalks and peds.crosswalk.size and np.any(peds.crosswalk >= 0):
        p0 = np.array([c.p0 for c in world.crosswalks])
        p1 = np.array([c.p1 for c in world.crosswalks])
        a = paths.xy[:, None, :-1]  # (N, 1, K-1, 2)
        b = paths.xy[:, None, 1:]
        r = b - a
        q = (p1 - p0)[None, :, None]  # (1, C, 1, 2)
        denom = r[..., 0] * q[..., 1] - r[..., 1] * q[..., 0]
        diff = p0[None, :, None] - a
        t = (diff[..., 0] * q[..., 1] - diff[..., 1] * q[..., 0]) / np.where(np.abs(denom) < 1e-9, np.nan, denom)
        u = (diff[..., 0] * r[..., 1] - diff[..., 1] * r[..., 0]) / np.where(np.abs(denom) < 1e-9, np.nan, denom)
        hit = (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
        hit &= np.arange(a.shape[2])[None, None, :] < (paths.count - 1)[:, None, None]
        first = np.argmax(hit, axis=2)  # (N, C)
        any_hit = hit.any(axis=2)
        span = np.linalg.norm(p1 - p0, axis=1)
        u_hit = np.take_along_axis(np.nan_to_num(u), first[..., None], 2)[..., 0] * span[None] - span[None] / 2
        t_hit = np.take_along_axis(np.nan_to_num(t), first[..., None], 2)[..., 0]
        cross_s = np.where(any_hit, (first + t_hit) * paths.ds[:, None], np.inf)
        # pedestrian occupancy along each crosswalk (T, C, M)
        win = int(round(_PED_ANTICIPATION / SIM_DT))
        for c in range(len(world.crosswalks)):
            m = np.flatnonzero(peds.crosswalk == c)
            if not m.size:
                continue
            near = np.abs(peds.u[:, m][None] - u_hit[:, c][:, None, None]) < half_w[:, None, None] + 1.3
            occ = near.any(axis=2)  # (N, T)
            # anticipate: blocked at t if occupied at any time in [t, t + win]
            padded = np.concatenate([occ, np.zeros((N, win), bool)], axis=1)
            cs = np.concatenate([np.zeros((N, 1), int), np.cumsum(padded, axis=1)], axis=1)
            blocked[:, c] = (cs[:, win + 1: win + 1 + T] - cs[:, :T]) > 0
        blocked &= any_hit[..., None]
    return _Obstacles(static_s, cross_s, blocked)


@dataclass
class _SimResult:
    s: np.ndarray  # (T, N) station
    v: np.ndarray  # (T, N) speed
    a: np.ndarray  # (T, N) acceleration


def _lanes_of(paths: _Paths, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Current lane (N,) (L for 'no lane') and lane-local station (N,) of every vehicle at stations s (N,)."""
    k = np.sum(s[:, None] >= paths.entry_start, axis=1) - 1
    k = np.maximum(k, 0)
    rows = np.arange(len(s))
    lane = paths.entry_lane[rows, k]
    s_lane = s - paths.entry_start[rows, k] + paths.entry_s0[rows, k]
    L = paths.offset.shape[1] - 1
    return np.where(lane < 0, L, lane), s_lane


def _leader_gaps(paths: _Paths, obs: _Obstacles, veh_front: np.ndarray, veh_rear: np.ndarray, s: np.ndarray,
                 v: np.ndarray, active: np.ndarray, lights: "_Lights",
                 step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaps (m, bumper to obstacle) of each vehicle (N,): to the nearest vehicle ahead, that vehicle's speed (m/s),
    and the gap to the nearest standing obstacle (static object, pedestrian zone, red / stoppable-yellow line)."""
    N = len(s)
    lane, s_lane = _lanes_of(paths, s)
    S = paths.offset[:, lane] + s_lane[None, :]  # (N, N) station of j on i's path
    ok = np.isfinite(S) & (S > s[:, None]) & active[None, :]
    ok &= s_lane[None, :] >= paths.min_s[:, lane]
    ok &= (s[:, None] >= paths.lo[:, lane]) & (s[:, None] <= paths.hi[:, lane])
    np.fill_diagonal(ok, False)
    gap = np.where(ok, S - veh_rear[None, :] - s[:, None] - veh_front[:, None], np.inf)
    j = np.argmin(gap, axis=1)
    rows = np.arange(N)
    best = gap[rows, j]
    lead_v = v[j]
    # static objects ahead of the vehicle's reference point
    st = np.where(obs.static_s > s[:, None] - veh_rear[:, None], obs.static_s - s[:, None] - veh_front[:, None],
                  np.inf).min(axis=1)
    # pedestrians: keep clear of the crosswalk zone unless already in it
    cz = obs.cross_s - _CROSSWALK_HALF - s[:, None] - veh_front[:, None]
    ped = np.where(obs.blocked[:, :, step] & (cz > -1.0), cz, np.inf).min(axis=1)
    # stop lines
    sg = paths.stop_s - s[:, None] - veh_front[:, None] - 0.5
    state = lights.state[step][paths.stop_lane]
    need = v[:, None] ** 2 / (2 * np.maximum(sg, 0.01))  # deceleration that stops at the line (m/s^2)
    # Do not enter a connector that cannot be cleared before it turns red (at the current speed, or 3 m/s when
    # slower), if stopping is still possible: the ego must never be inside a red connector.
    clear_time = (sg + paths.stop_len + (veh_front + veh_rear)[:, None]) / np.maximum(v[:, None], 3.0)
    blocked_box = (clear_time > lights.time_to_red[step][paths.stop_lane]) & (need < -_EGO_MIN_ACCEL)
    must = (state == LIGHT_RED) | ((state == LIGHT_YELLOW) & (need < _YELLOW_STOP_DECEL)) | blocked_box
    light = np.where(must & (sg > -1.5), sg, np.inf).min(axis=1)
    static_gap = np.minimum(np.minimum(st, ped), light)
    return best, lead_v, static_gap


def _idm(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, lead_v: np.ndarray) -> np.ndarray:
    """IDM acceleration (m/s^2) for speeds v, desired speeds v0, gaps (m) and leader speeds."""
    s_star = IDM_MIN_GAP + np.maximum(0.0, v * IDM_HEADWAY + v * (v - lead_v) / (2 * np.sqrt(IDM_ACCEL * IDM_DECEL)))
    free = 1.0 - (v / np.maximum(v0, 0.1)) ** 4
    interaction = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.05)) ** 2, 0.0)
    return IDM_ACCEL * (free - interaction)


def _simulate(paths: _Paths, obs: _Obstacles, veh: _Vehicles, lights: "_Lights", steps: int) -> _SimResult:
    """Run all vehicles (index 0 = expert ego) for ``steps`` steps of SIM_DT; returns states at steps+1 times."""
    N = len(veh)
    s = np.asarray(veh.station, float).copy()
    v = np.asarray(veh.speed, float).copy()
    a = np.zeros(N)
    front, rear = np.asarray(veh.front), np.asarray(veh.rear)
    desire = np.asarray(veh.desire)
    active = np.ones(N, bool)
    rows = np.arange(N)
    S, V, A = np.zeros((steps + 1, N)), np.zeros((steps + 1, N)), np.zeros((steps + 1, N))
    for t in range(steps + 1):
        gap, lead_v, stop_gap = _leader_gaps(paths, obs, front, rear, s, v, active, lights, t)
        # desired speed read 0.5 s ahead, so the IDM has started braking when the vehicle reaches a curve
        k = np.clip(((s + 0.5 * v) / paths.ds).astype(np.int64), 0, paths.vmax.shape[1] - 1)
        v0 = paths.vmax[rows, k] * desire
        # Standing obstacles that appear suddenly (a light turning yellow, a pedestrian stepping out) make the IDM
        # brake much harder than needed; never brake harder than the constant deceleration that stops in the gap.
        stop_kin = -v * v / (2 * np.maximum(stop_gap - 0.3, 0.05))
        acc = np.minimum(_idm(v, v0, gap, lead_v), np.maximum(_idm(v, v0, stop_gap, 0.0), stop_kin))
        acc = np.clip(acc, _BG_MIN_ACCEL, IDM_ACCEL)
        # the expert: comfort bounds and a jerk limit
        acc[0] = np.clip(acc[0], max(_EGO_MIN_ACCEL, a[0] - _EGO_MAX_JERK * SIM_DT), a[0] + _EGO_MAX_JERK * SIM_DT)
        S[t], V[t] = s, v
        v_new = np.maximum(v + acc * SIM_DT, 0.0)
        acc = (v_new - v) / SIM_DT  # effective acceleration (stops at zero speed)
        A[t] = acc
        s = s + 0.5 * (v + v_new) * SIM_DT
        v, a = v_new, acc
    return _SimResult(S, V, A)


# --------------------------------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------------------------------


def _crop_lanes(centre: list[np.ndarray], left: list[np.ndarray], right: list[np.ndarray],
                radius: float) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Cut lanes to the part of their centre line inside a disc of ``radius`` (m) around the origin.

    Boundaries share the centre line's vertex parameterisation (they are its normal offsets), so all three lines
    are cut at the same fractional vertex index. Lanes with less than 1 m inside are dropped.

    Returns:
        keep: (L,) bool, lanes that stay; and the cut centre / left / right lines of the kept lanes.
    """
    keep = np.zeros(len(centre), bool)
    out_c, out_l, out_r = [], [], []
    for i, c in enumerate(centre):
        a, d = c[:-1], np.diff(c, axis=0)
        qa = np.maximum((d * d).sum(1), 1e-12)
        qb = 2 * (a * d).sum(1)
        qc = (a * a).sum(1) - radius * radius
        disc = qb * qb - 4 * qa * qc
        root = np.sqrt(np.maximum(disc, 0.0))
        t_in, t_out = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
        hit = (disc > 0) & (t_in <= 1) & (t_out >= 0)
        if not hit.any():
            continue
        k = np.flatnonzero(hit)
        f0, f1 = k[0] + max(t_in[k[0]], 0.0), k[-1] + min(t_out[k[-1]], 1.0)
        if f0 <= 0 and f1 >= len(c) - 1:
            keep[i] = True
            out_c.append(c), out_l.append(left[i]), out_r.append(right[i])
            continue
        inner = np.arange(int(np.floor(f0)) + 1, int(np.ceil(f1)))
        params = np.r_[f0, inner, f1]
        lines = []
        for line in (c, left[i], right[i]):
            j = np.minimum(params.astype(np.int64), len(line) - 2)
            r = (params - j)[:, None]
            lines.append(line[j] * (1 - r) + line[j + 1] * r)
        if polyline_length(lines[0]) < 1.0:
            continue
        keep[i] = True
        out_c.append(lines[0]), out_l.append(lines[1]), out_r.append(lines[2])
    return keep, out_c, out_l, out_r


def _vehicle_boxes(paths: _Paths, veh: _Vehicles, sim: _SimResult) -> np.ndarray:
    """(T, N, 5) boxes [cx, cy, yaw, length, width] of simulated vehicles in the world frame."""
    N = len(veh)
    front, rear = np.asarray(veh.front), np.asarray(veh.rear)
    centre_s = sim.s + 0.5 * (front - rear)[None]
    xy, h = paths.sample(np.arange(N)[None, :], centre_s)
    T = sim.s.shape[0]
    out = np.empty((T, N, 5))
    out[..., :2] = xy
    out[..., 2] = h
    out[..., 3] = front + rear
    out[..., 4] = np.asarray(veh.width)
    return out


def _ego_collisions(ego_boxes: np.ndarray, other: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(M,) bool: agent m overlaps the ego at some step. ego_boxes (T, 5), other (T, M, 5), valid (T, M)."""
    hit = _boxes_overlap(ego_boxes[:, None, :], other, margin=0.15) & valid
    return hit.any(axis=0)


def generate_scene(seed: int, config: SyntheticConfig | None = None, split: str = "") -> Scene:
    """Generate one scene, deterministically from ``seed``.

    Args:
        seed: non-negative integer seed; the same seed (and config) always gives identical arrays.
        config: generator settings; default: the split's config if ``split`` is given, else :data:`DEFAULT_CONFIG`.
        split: name of the split the scene belongs to ('' for none); sets ``metadata.split`` and the token
            ``f"{split}-{index:05d}"`` with ``index = seed - first_seed`` of the split.

    Returns:
        A validated :class:`Scene` in the ego frame at t0.
    """
    spec = _split_spec(split) if split else None
    cfg = config if config is not None else (spec.config if spec else DEFAULT_CONFIG)
    if spec is not None and spec.first_seed <= seed < spec.first_seed + spec.size:
        token = f"{split}-{seed - spec.first_seed:05d}"
    else:
        token = f"{split or 'synthetic'}-seed{seed}"
    rng = np.random.default_rng(int(seed))
    weights = np.asarray(cfg.layout_weights, float)
    layout = LAYOUTS[int(rng.choice(len(LAYOUTS), p=weights / weights.sum()))]
    lay = _LAYOUT_BUILDERS[layout](rng, cfg)
    return _finish(rng, cfg, lay, token, split, seed)


def _finish(rng: np.random.Generator, cfg: SyntheticConfig, lay: _Layout, token: str, split: str,
            seed: int) -> Scene:
    w = lay.world
    lane_len = np.array([w.lane_length(l) for l in range(w.num_lanes)])
    path_cache: dict = {}
    veh = _populate(rng, cfg, lay)
    warm_steps = int(round((cfg.warmup_s + (NUM_HISTORY - 1) * DT) / SIM_DT))
    steps = warm_steps + int(round(NUM_FUTURE * DT / SIM_DT))
    sim_t = (np.arange(steps + 1) - warm_steps) * SIM_DT  # t0 = 0 at index warm_steps
    lights = _Lights.make(_light_states(lay, sim_t))
    paths = _build_paths(w, veh, lay, cfg, lane_len, path_cache)
    ego_xy0, _ = paths.sample(np.array([0]), np.array([lay.ego_station]))
    peds = _pedestrians(rng, cfg, lay, sim_t, ego_xy0[0])
    statics = w.statics
    # Initial spacing: drop vehicles too close to a leader, slow the rest to what their gap allows.
    obs = _obstacles(paths, veh, w, peds, sim_t)
    s0 = np.asarray(veh.station)
    v0 = np.asarray(veh.speed)
    front, rear = np.asarray(veh.front), np.asarray(veh.rear)
    gap, _, stop_gap = _leader_gaps(paths, obs, front, rear, s0, v0, np.ones(len(veh), bool), lights, 0)
    keep = (gap > IDM_MIN_GAP + 1.0) & (stop_gap > 0.5)  # no spawns on top of each other or of obstacles
    keep[0] = True
    if not keep.all():
        veh = veh.subset(keep)
        paths = _build_paths(w, veh, lay, cfg, lane_len, path_cache)
        obs = _obstacles(paths, veh, w, peds, sim_t)
        s0, front, rear = np.asarray(veh.station), np.asarray(veh.front), np.asarray(veh.rear)
        gap, _, stop_gap = _leader_gaps(paths, obs, front, rear, s0, np.asarray(veh.speed),
                                        np.ones(len(veh), bool), lights, 0)
    room = np.minimum(gap, stop_gap) - IDM_MIN_GAP
    veh.speed = list(np.minimum(veh.speed, np.sqrt(2 * 1.5 * np.maximum(room, 0.0))))
    static_boxes = np.array([[*s.box[:2], s.box[2], s.box[3], s.box[4]] for s in statics]).reshape(-1, 5)
    ped_boxes = np.concatenate([peds.xy, peds.heading[..., None], np.full(peds.heading.shape + (2,), 0.6)], -1)
    keep_ped = np.ones(peds.xy.shape[1], bool)
    keep_static = np.ones(len(statics), bool)
    for _ in range(3):
        sim = _simulate(paths, obs, veh, lights, steps)
        boxes = _vehicle_boxes(paths, veh, sim)
        hist0 = warm_steps - (NUM_HISTORY - 1) * _STEPS_PER_SAMPLE
        ego_b = boxes[hist0:, 0]
        T = len(ego_b)
        hit_v = _ego_collisions(ego_b, boxes[hist0:, 1:], np.ones((T, len(veh) - 1), bool))
        hit_p = _ego_collisions(ego_b, ped_boxes[hist0:], np.ones((T, ped_boxes.shape[1]), bool)) & keep_ped
        hit_s = _ego_collisions(ego_b, np.broadcast_to(static_boxes, (T,) + static_boxes.shape),
                                np.ones((T, len(statics)), bool)) & keep_static
        if not (hit_v.any() or hit_p.any() or hit_s.any()):
            break
        keep_ped &= ~hit_p
        keep_static &= ~hit_s
        if hit_v.any():
            veh = veh.subset(np.r_[True, ~hit_v])
        paths = _build_paths(w, veh, lay, cfg, lane_len, path_cache)
        peds_kept = _Pedestrians(peds.xy[:, keep_ped], peds.heading[:, keep_ped], peds.speed[:, keep_ped],
                                 peds.crosswalk[keep_ped], peds.u[:, keep_ped])
        w_statics, w.statics = w.statics, [s for s, k in zip(statics, keep_static) if k]
        obs = _obstacles(paths, veh, w, peds_kept, sim_t)
        w.statics = w_statics
    else:
        # still colliding after the re-simulations: drop the remaining offenders (rare)
        sim = _simulate(paths, obs, veh, lights, steps)
        boxes = _vehicle_boxes(paths, veh, sim)
        ego_b = boxes[hist0:, 0]
        hit_v = _ego_collisions(ego_b, boxes[hist0:, 1:], np.ones((len(ego_b), len(veh) - 1), bool))
        keep_ped &= ~_ego_collisions(ego_b, ped_boxes[hist0:], np.ones((len(ego_b), ped_boxes.shape[1]), bool))
        keep_static &= ~_ego_collisions(ego_b, np.broadcast_to(static_boxes, (len(ego_b),) + static_boxes.shape),
                                        np.ones((len(ego_b), len(statics)), bool))
        keep_v = np.r_[True, ~hit_v]
        veh, boxes, sim = veh.subset(keep_v), boxes[:, keep_v], _SimResult(sim.s[:, keep_v], sim.v[:, keep_v],
                                                                            sim.a[:, keep_v])
        paths = _build_paths(w, veh, lay, cfg, lane_len, path_cache)
    return _export(lay, cfg, veh, paths, sim, boxes, peds, keep_ped, statics, keep_static, lights, sim_t,
                   warm_steps, token, split, seed)


def _export(lay: _Layout, cfg: SyntheticConfig, veh: _Vehicles, paths: _Paths, sim: _SimResult, boxes: np.ndarray,
            peds: _Pedestrians, keep_ped: np.ndarray, statics: list[_Static], keep_static: np.ndarray,
            lights: "_Lights", sim_t: np.ndarray, i0: int, token: str, split: str, seed: int) -> Scene:
    """The scene seen from the ego (path 0) at simulation step ``i0``: world frame -> ego t0 frame, samples every
    0.5 s, map cropped to a disc around the ego."""
    ego, origin, yaw0 = _export_ego(paths, sim, i0)
    out_idx = i0 + _STEPS_PER_SAMPLE * np.arange(NUM_TIMES)  # simulation steps of the 9 scene times
    agents = _export_agents(cfg, veh, sim, boxes, peds, keep_ped, statics, keep_static, out_idx, origin, yaw0)
    mp, remap = _export_map(lay.world, cfg, lights, out_idx, origin, yaw0)
    route, command = _export_route(paths, sim, veh, i0, remap, mp.lane_centerlines, ego.future)
    meta = SceneMetadata(token=token, source="synthetic", log_name=f"synthetic/{lay.name}/{seed}",
                         map_name="synthetic", timestamp_us=int(seed) * 1_000_000, licence=LICENCE, split=split)
    return Scene(meta, ego, agents, mp, route, command)


def _export_ego(paths: _Paths, sim: _SimResult, i0: int) -> tuple[EgoState, np.ndarray, float]:
    """The ego state at simulation step ``i0`` in its own frame, and that frame: origin (2,) (world, m) and yaw0
    (rad)."""
    ego_s = sim.s[:, 0]
    ego_xy, ego_h = paths.sample(np.zeros(len(ego_s), np.int64), ego_s)
    origin, yaw0 = ego_xy[i0], float(ego_h[i0])
    hist_idx = i0 + _STEPS_PER_SAMPLE * np.arange(-(NUM_HISTORY - 1), 1)
    fut_idx = i0 + _STEPS_PER_SAMPLE * np.arange(1, NUM_FUTURE + 1)
    poses = np.concatenate([to_local(ego_xy, origin, yaw0), wrap_angle(ego_h - yaw0)[:, None]], axis=1)
    history = poses[hist_idx].copy()
    history[-1] = 0.0
    future = poses[fut_idx]
    yaw_rate = np.gradient(ego_h, SIM_DT)
    v = sim.v[:, 0]
    hist_vel = np.stack([v[hist_idx], np.zeros(NUM_HISTORY)], axis=1)
    hist_acc = np.stack([sim.a[hist_idx, 0], v[hist_idx] * yaw_rate[hist_idx]], axis=1)
    return EgoState(history, hist_vel, hist_acc, future, PACIFICA), origin, yaw0


def _export_agents(cfg: SyntheticConfig, veh: _Vehicles, sim: _SimResult, boxes: np.ndarray, peds: _Pedestrians,
                   keep_ped: np.ndarray, statics: list[_Static], keep_static: np.ndarray, out_idx: np.ndarray,
                   origin: np.ndarray, yaw0: float) -> Agents:
    """Simulated vehicles (``boxes`` (steps, 1 + Nv, 5), index 0 the ego), kept pedestrians and static objects at the
    (9,) simulation steps ``out_idx``, in the ego frame at (``origin``, ``yaw0``); valid inside the map range, agents
    never seen dropped, and the later of two agents overlapping at t0 dropped."""
    T = NUM_TIMES
    veh_b = boxes[out_idx, 1:]  # (T, Nv, 5)
    veh_v = sim.v[out_idx, 1:]
    nv = veh_b.shape[1]
    pb = np.concatenate([peds.xy, peds.heading[..., None]], -1)[out_idx][:, keep_ped]
    pv = peds.speed[out_idx][:, keep_ped]
    npd = pb.shape[1]
    st = [s for s, k in zip(statics, keep_static) if k]
    ns = len(st)
    n = nv + npd + ns
    xyh = np.zeros((T, n, 3))
    size = np.zeros((n, 3))
    speed = np.zeros((T, n))
    xyh[:, :nv] = veh_b[..., :3]
    size[:nv, 0] = veh_b[0, :, 3]
    size[:nv, 1] = veh_b[0, :, 4]
    size[:nv, 2] = np.asarray(veh.height[1:])
    speed[:, :nv] = veh_v
    xyh[:, nv:nv + npd] = pb
    size[nv:nv + npd] = (0.65, 0.65, 1.75)
    speed[:, nv:nv + npd] = pv
    if ns:
        sb = np.array([s.box for s in st])
        xyh[:, nv + npd:] = sb[None, :, :3]
        size[nv + npd:] = sb[:, 3:6]
    local_xy = to_local(xyh[..., :2], origin, yaw0)
    local_h = wrap_angle(xyh[..., 2] - yaw0)
    agent_boxes = np.zeros((T, n, 8))
    agent_boxes[..., :2] = local_xy
    agent_boxes[..., 2] = local_h
    agent_boxes[..., 3:6] = size[None]
    agent_boxes[..., 6] = speed * np.cos(local_h)
    agent_boxes[..., 7] = speed * np.sin(local_h)
    valid = np.all(np.abs(local_xy) < cfg.map_range, axis=-1)
    agent_boxes[~valid] = 0.0
    seen = valid.any(axis=0)
    agent_boxes, valid = agent_boxes[:, seen], valid[:, seen]
    category = np.r_[np.asarray(veh.category[1:], np.int8), np.full(npd, PEDESTRIAN, np.int8),
                     np.asarray([s.category for s in st], np.int8)][seen]
    kinds = np.r_[np.repeat("veh", nv), np.repeat("ped", npd), np.repeat("obj", ns)]
    track_id = np.array([f"{k}{i:03d}" for i, k in enumerate(kinds)])[seen] if n else np.zeros(0, "<U1")
    # no two agents overlap at t0: drop the later of each overlapping pair (rare: crowds on crosswalks)
    if len(category) > 1:
        b0 = agent_boxes[0][:, [0, 1, 2, 3, 4]]
        ov = _boxes_overlap(b0[:, None], b0[None, :]) & valid[0][:, None] & valid[0][None, :]
        ov = np.triu(ov, 1)
        drop = ov.any(axis=0)
        if drop.any():
            keep = ~drop
            agent_boxes, valid, category, track_id = agent_boxes[:, keep], valid[:, keep], category[keep], \
                track_id[keep]
    return Agents(agent_boxes, valid, category, track_id.astype(str) if len(track_id) else np.zeros(0, "<U1"))


def _lane_remapper(keep: np.ndarray):
    """For a (L,) mask of kept lanes: a function mapping old lane indices (any shape, -1 = none) to indices into the
    kept lanes (-1 where dropped or none)."""
    new_index = np.cumsum(keep) - 1  # old lane index -> new (valid where keep)

    def remap(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        ok = idx >= 0
        out = np.full(idx.shape, -1, np.int64)
        out[ok] = np.where(keep[idx[ok]], new_index[idx[ok]], -1)
        return out

    return remap


def _export_map(w: _World, cfg: SyntheticConfig, lights: "_Lights", out_idx: np.ndarray, origin: np.ndarray,
                yaw0: float):
    """The world's map in the ego frame at (``origin``, ``yaw0``), cropped to a disc around the ego, with the light
    states at the (9,) simulation steps ``out_idx``. Returns the :class:`MapData` and the world lane index -> map lane
    index function (:func:`_lane_remapper`)."""
    radius = cfg.map_range * _MAP_CROP_FACTOR

    def to_ego(lines: list[np.ndarray]) -> list[np.ndarray]:
        r = Ragged.from_list(lines)
        pts = to_local(r.points.astype(float), origin, yaw0)
        return np.split(pts, r.offsets[1:-1])

    keep, centre_l, left_l, right_l = _crop_lanes(to_ego(w.centre), to_ego(w.left), to_ego(w.right), radius)
    remap = _lane_remapper(keep)
    edges = remap(np.asarray(w.successors, np.int64).reshape(-1, 2))
    edges = edges[(edges >= 0).all(axis=1)]
    lane_polys = PolygonSet.from_exteriors([np.concatenate([lb, rb[::-1]]) for lb, rb in zip(left_l, right_l)])
    drivable, inters, walks = _export_areas(w, origin, yaw0, radius)
    mp = MapData(
        lane_ids=np.array([f"lane{i:03d}" for i in np.flatnonzero(keep)]),
        lane_centerlines=Ragged.from_list(centre_l),
        lane_left_boundaries=Ragged.from_list(left_l),
        lane_right_boundaries=Ragged.from_list(right_l),
        lane_polygons=lane_polys,
        lane_speed_limits=np.asarray(w.speed, MAP_FLOAT)[keep],
        lane_is_connector=np.asarray(w.connector, bool)[keep],
        lane_is_intersection=np.asarray(w.intersection, bool)[keep],
        lane_group=np.asarray(w.group, np.int64)[keep],
        lane_successors=edges,
        lane_left_neighbor=remap(np.asarray(w.left_nb))[keep],
        lane_right_neighbor=remap(np.asarray(w.right_nb))[keep],
        lane_light_state=lights.state[out_idx][:, keep],
        drivable_area=PolygonSet.from_shapely([drivable]),
        intersections=PolygonSet.from_exteriors(inters),
        crosswalks=PolygonSet.from_exteriors(walks),
    )
    return mp, remap


def _export_areas(w: _World, origin: np.ndarray, yaw0: float, radius: float):
    """Drivable area (a shapely geometry: the union of the road surfaces within ``radius`` m of the ego), and the
    intersection and crosswalk exteriors ((n, 2) arrays) with a vertex within ``radius``, all in the ego frame."""
    from shapely import unary_union
    from shapely.geometry import Point, Polygon

    surfaces = [Polygon(to_local(p, origin, yaw0)) for p in w.surfaces]
    drivable = unary_union([p if p.is_valid else p.buffer(0) for p in surfaces])
    drivable = drivable.intersection(Point(0.0, 0.0).buffer(radius, quad_segs=16))
    near = lambda poly: bool(np.min(np.linalg.norm(poly, axis=1)) < radius)  # noqa: E731
    inters = [q for q in (to_local(p, origin, yaw0) for p in w.intersections) if near(q)]
    walks = [q for q in (to_local(c.polygon, origin, yaw0) for c in w.crosswalks) if near(q)]
    return drivable, inters, walks


def _export_route(paths: _Paths, sim: _SimResult, veh: _Vehicles, i0: int, remap, centre: Ragged,
                  future: np.ndarray) -> tuple[np.ndarray, int]:
    """Route lanes (map indices (R,), from the ego's lane at step ``i0`` along its lane chain until the map ends) and
    the command from the route centreline over the distance of the (8, 3) expert ``future`` (at least 10 m)."""
    lane_t0, _ = _lanes_of(paths, sim.s[i0, :1])
    chain = veh.lanes[0]
    cur = int(lane_t0[0])
    start = chain.index(cur) if cur in chain else 0
    route = remap(np.asarray(chain[start:], np.int64))
    route = route[: np.argmax(route < 0)] if np.any(route < 0) else route  # the route ends where the map does
    route_line = concat_polylines([centre[int(i)] for i in route])
    travelled = polyline_length(np.r_[[[0.0, 0.0]], future[:, :2]])
    return route, route_command(route_line, max(travelled, 10.0))


def iter_scenes(split: str = "synthetic-train", num: int | None = None,
                start: int = 0, workers: int = 1) -> Iterator[Scene | SkippedItem]:
    """Yield the scenes of a named split in index order (a :class:`SkippedItem` for any scene that fails).

    Args:
        split: one of :data:`SPLITS`.
        num: how many scenes (default: to the end of the split).
        start: first scene index within the split.
        workers: processes generating scenes (each scene depends only on its seed, so the stream is the same for
            any count; the order is kept).
    """
    spec = _split_spec(split)
    stop = spec.size if num is None else min(spec.size, start + num)
    if workers > 1 and stop - start > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(functools.partial(split_scene, split), range(start, stop), chunksize=8)
        return
    for index in range(start, stop):
        yield split_scene(split, index)


def split_scene(split: str, index: int) -> Scene | SkippedItem:
    """Scene ``index`` of a named split, or a :class:`SkippedItem` saying why it failed (one bad scene must not end
    a 5,000-scene conversion)."""
    spec = _split_spec(split)
    seed = spec.first_seed + index
    try:
        return generate_scene(seed, spec.config, split)
    except Exception as exc:  # noqa: BLE001 - reported as a skipped item, see the docstring
        return SkippedItem(f"{split}-{index:05d} (seed {seed})", f"{type(exc).__name__}: {exc}")
