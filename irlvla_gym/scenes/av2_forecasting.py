"""Argoverse 2 motion-forecasting scenarios -> canonical :class:`~irlvla_gym.scenes.scene.Scene` windows at 2 Hz.

Layout of one scenario folder (what the AV2 motion-forecasting download holds, one folder per scenario)::

    <scenario_id>/scenario_<scenario_id>.parquet        tracks, one row per (track, timestep)
    <scenario_id>/log_map_archive_<scenario_id>.json    local vector map (same format as the sensor logs' map)

Use::

    for item in iter_scenes("../shared/data/av2_forecasting"):   # a scenario folder, a .parquet or a root of them
        if isinstance(item, SkippedItem): print(item)             # a bad scenario or window, the rest continues
        else: scene = item

    scenario = load_scenario(folder)            # parse once (FileNotFoundError / ValueError naming file + field)
    scenes = list(scenes_from_scenario(scenario))

Parquet columns read (:data:`SCENARIO_COLUMNS`, av2-api ``scenario_serialization``): ``track_id`` (str; the
recording vehicle is ``"AV"``), ``object_type`` (vehicle, pedestrian, motorcyclist, cyclist, bus, static,
background, construction, riderless_bicycle, unknown), ``timestep`` (int, 0 .. num_timestamps - 1, 10 Hz),
``position_x/y`` (m, city frame), ``heading`` (rad), ``velocity_x/y`` (m/s, city frame), ``start_timestamp`` /
``end_timestamp`` (ns), ``num_timestamps`` (110: 5 s observed + 6 s future), ``focal_track_id``, ``city``,
``scenario_id``. Test-split files hold only the 5 observed seconds: no window fits, the scenario is reported skipped.

Conversion rules:

* **Ego.** The AV track (``ego="av"``, default): its positions are the ego-vehicle poses, whose origin is the rear
  axle as in the sensor logs, so no shift; the vehicle is :data:`~irlvla_gym.scenes.av2.AV2_EGO_VEHICLE`. With
  ``ego="focal"`` the focal track is the ego: its positions are box centres, moved back by ``rear_axle_to_center``
  along its heading; the AV then is an ordinary agent. Velocity and acceleration (body frame, on a 20 Hz grid,
  sampled at the history times -1.5 .. 0 s as NAVSIM's logged ego states): the sensor-log adapter's Savitzky-Golay
  smoothing of the 10 Hz poses (:func:`~irlvla_gym.scenes.av2.ego_kinematics`) from :data:`EDGE_S` inside the
  track on; within :data:`EDGE_S` of either end of the ego track (or of a gap in it) the file's ``velocity_x/y``
  column, smoothed, and its derivative, blended into the pose estimate between :data:`EDGE_BLEND_S` and
  :data:`EDGE_S` (:func:`edge_corrected_kinematics`). The files' positions are smoothed with an end effect: over
  about the first and last second of every track their finite differences ramp from about half the logged speed
  (the sample's AV at t = 0: 3.4 m/s from the positions, 5.9 m/s logged, 7.4 m/s^2 implied by the positions vs
  0.8 m/s^2 by the velocity column; every track of the sample that starts or ends in it shows the same ramp), and a
  cubic fitted to them there (the smoothing's edge mode) extrapolates that ramp to 10 m/s^2, which failed HC in the
  first two windows whatever the plan.
* **Windows.** t0 on the 10 Hz timesteps 15, 20, ... (every ``stride * 5``), needing the ego at the 4 history
  times t0 - 1.5 .. t0 and the 8 future times t0 + 0.5 .. t0 + 4 s: an 11 s scenario gives 11 windows
  (t0 = 1.5 .. 6.5 s). A grid point where the ego track has a gap is reported as a :class:`SkippedItem`.
* **Agents.** Every other track at the 9 times t0 .. t0 + 4 s in the t0 ego frame, kept if valid and inside the
  ``map_radius`` square at one of them; a track is valid at a timestep iff it has a row there. The files carry no
  box sizes: category defaults (:data:`DEFAULT_BOX_SIZE`). Velocity from the file, rotated into the t0 ego frame;
  steps faster than ``MAX_SPEED`` are marked invalid.
* **Map, route, command.** The sensor-log adapter's map parsing, crop, route search and command rule (module docs
  of :mod:`irlvla_gym.scenes.av2`), applied to the scenario's map file and the ego's 11 s path. No traffic lights,
  no speed limits (AV2 has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from irlvla_gym.scenes.av2 import (
    AV2_EGO_VEHICLE, AV2Map, ego_kinematics, load_map_file, map_window, route_and_command, route_candidates,
    route_lanes,
)
from irlvla_gym.scenes.geometry import to_local
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, AGENT_TIMES, DT, FUTURE_TIMES, HISTORY_TIMES, MAX_SPEED, NUM_TIMES, Agents, EgoState, Scene,
    SceneMetadata, SceneValidationError, wrap_angle,
)
from irlvla_gym.scenes.sources import SkippedItem

__all__ = [
    "AV2_FORECASTING_LICENCE", "AV_TRACK_ID", "DEFAULT_BOX_SIZE", "OBJECT_TYPE_TO_SCENE", "SCENARIO_COLUMNS",
    "EDGE_BLEND_S", "EDGE_S", "ForecastingScenario", "edge_corrected_kinematics", "iter_scenes", "load_scenario",
    "scenes_from_scenario", "scenario_files",
]

AV2_FORECASTING_LICENCE = "CC BY-NC-SA 4.0 (Argoverse 2 motion forecasting)"
AV_TRACK_ID = "AV"
"""``track_id`` of the recording vehicle in every AV2 motion-forecasting scenario."""
SCENARIO_COLUMNS = ("track_id", "object_type", "timestep", "position_x", "position_y", "heading", "velocity_x",
                    "velocity_y", "scenario_id", "start_timestamp", "end_timestamp", "num_timestamps",
                    "focal_track_id", "city")
SCENARIO_GLOB = "scenario_*.parquet"
MAP_GLOB = "log_map_archive_*.json"
STEPS_PER_SCENE_DT = 5
"""10 Hz timesteps per 0.5 s scene step."""
EDGE_S = 1.0
"""s: from this far inside the ego track on, velocity and acceleration are the pose smoothing's alone (module
docs); nearer a track end the logged velocity column takes over."""
EDGE_BLEND_S = 0.5
"""s: up to this far inside the ego track, velocity and acceleration are the velocity column's alone; linear blend
between this and :data:`EDGE_S`."""
_VEL_WINDOW, _ACC_WINDOW = 11, 21  # 0.5 s and 1.0 s Savitzky-Golay windows on the 20 Hz grid, as ego_kinematics

_CAT = {name: i for i, name in enumerate(AGENT_CATEGORIES)}
OBJECT_TYPE_TO_SCENE: dict[str, str] = {
    "vehicle": "vehicle", "bus": "vehicle", "pedestrian": "pedestrian", "cyclist": "bicycle",
    "motorcyclist": "bicycle", "riderless_bicycle": "bicycle", "construction": "traffic_cone",
    "static": "generic_object", "background": "generic_object", "unknown": "generic_object",
}
"""AV2 forecasting ``object_type`` -> scene category name (anything else -> generic_object)."""
DEFAULT_BOX_SIZE: dict[str, tuple[float, float, float]] = {
    "vehicle": (4.5, 2.0, 1.6), "bus": (12.0, 2.6, 3.2), "pedestrian": (0.6, 0.6, 1.7), "cyclist": (1.8, 0.7, 1.7),
    "motorcyclist": (2.1, 0.8, 1.5), "riderless_bicycle": (1.8, 0.6, 1.1), "construction": (0.4, 0.4, 0.8),
    "static": (1.0, 1.0, 1.0), "background": (1.0, 1.0, 1.0), "unknown": (1.0, 1.0, 1.0),
}
"""[length, width, height] (m) per ``object_type``: the files carry no box sizes."""


@dataclass(frozen=True)
class ForecastingScenario:
    """One AV2 motion-forecasting scenario, parsed once and reused for every window.

    Attributes:
        scenario_id / city: from the parquet ('austin', 'miami', ...).
        path: the parquet file.
        timestamps_ns: (T,) int64 ns of the T (110) timesteps.
        ego_track: the track used as ego ('AV' or the focal track id).
        ego_xy: (T, 2) m rear axle, city frame; ego_yaw: (T,) rad unwrapped; ego_valid: (T,) bool.
        kin_ts / kin_vel_body / kin_acc_body: 20 Hz smoothed ego kinematics (ns, m/s, m/s^2, body frame), from the
            poses inside the track and the velocity column near its ends (:func:`edge_corrected_kinematics`).
        track_ids: (N,) str of the other tracks; object_type: (N,) str; category: (N,) int8 scene category.
        size: (N, 3) [length, width, height] m.
        xy: (N, T, 2) m; heading: (N, T) rad; velocity: (N, T, 2) m/s (city frame); valid: (N, T) bool.
        map: the scenario's :class:`~irlvla_gym.scenes.av2.AV2Map`.
        route_ts / route_candidates / route_persistence: the ego path's route-search table
            (:func:`~irlvla_gym.scenes.av2.route_candidates`).
    """

    scenario_id: str
    city: str
    path: Path
    timestamps_ns: np.ndarray
    ego_track: str
    ego_xy: np.ndarray
    ego_yaw: np.ndarray
    ego_valid: np.ndarray
    kin_ts: np.ndarray
    kin_vel_body: np.ndarray
    kin_acc_body: np.ndarray
    track_ids: np.ndarray
    object_type: np.ndarray
    category: np.ndarray
    size: np.ndarray
    xy: np.ndarray
    heading: np.ndarray
    velocity: np.ndarray
    valid: np.ndarray
    map: AV2Map
    route_ts: np.ndarray
    route_candidates: list
    route_persistence: np.ndarray

    def window_starts(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(usable, dropped): timesteps usable as t0 (ego valid at all 12 window times) and grid timesteps whose
        window fits in the scenario but the ego track has a gap; the grid is 15, 20, ... every ``stride * 5``."""
        if int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        first = int(round(-HISTORY_TIMES[0] / DT)) * STEPS_PER_SCENE_DT
        last = len(self.timestamps_ns) - 1 - int(round(FUTURE_TIMES[-1] / DT)) * STEPS_PER_SCENE_DT
        grid = np.arange(first, last + 1, int(stride) * STEPS_PER_SCENE_DT)
        ok = np.array([self.ego_valid[_window_steps(int(k))].all() for k in grid], bool)
        return grid[ok], grid[~ok]


def _window_steps(t0: int) -> np.ndarray:
    """(12,) timesteps of the 4 history and 8 future ego poses of the window at timestep ``t0``."""
    times = np.r_[HISTORY_TIMES, FUTURE_TIMES]
    return t0 + np.round(times / DT).astype(np.int64) * STEPS_PER_SCENE_DT


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------


def scenario_files(path: str | Path) -> list[Path]:
    """The ``scenario_*.parquet`` files of a scenario folder, a root of scenario folders (searched recursively), or
    ``path`` itself if it is a file."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(path.rglob(SCENARIO_GLOB)) if path.is_dir() else []


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    """The :data:`SCENARIO_COLUMNS` of a scenario parquet as numpy arrays (strings as str arrays)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise ValueError(f"{path}: cannot read as parquet: {exc}") from None
    missing = [c for c in SCENARIO_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (has {table.column_names})")
    if table.num_rows == 0:
        raise ValueError(f"{path}: column 'track_id' has no rows")
    out = {}
    for c in SCENARIO_COLUMNS:
        col = table.column(c)
        if str(col.type) in ("string", "large_string"):
            out[c] = np.asarray(col.to_pylist(), dtype=str)
        else:
            out[c] = col.to_numpy()
        bad = ~np.isfinite(out[c]) if out[c].dtype.kind == "f" else np.zeros(0, bool)
        if bad.any():
            raise ValueError(f"{path}: column {c!r} has a non-finite value (NaN / inf) at row {int(np.argmax(bad))}")
    return out


def _dense_tracks(path: Path, d: dict[str, np.ndarray], T: int) -> dict[str, np.ndarray]:
    """Per-track (N, T) arrays from the long table: ids, object_type, xy, heading, velocity, valid."""
    step = np.asarray(d["timestep"], np.int64)
    if step.min() < 0 or step.max() >= T:
        bad = int(np.argmax((step < 0) | (step >= T)))
        raise ValueError(f"{path}: column 'timestep' value {int(step[bad])} at row {bad} is outside 0 .. {T - 1} "
                         "(num_timestamps)")
    ids, track_of_row = np.unique(d["track_id"], return_inverse=True)
    N = len(ids)
    if len(np.unique(track_of_row * T + step)) != len(step):
        raise ValueError(f"{path}: columns 'track_id', 'timestep': a track has two rows at one timestep")
    xy = np.zeros((N, T, 2))
    heading = np.zeros((N, T))
    vel = np.zeros((N, T, 2))
    valid = np.zeros((N, T), bool)
    xy[track_of_row, step] = np.stack([d["position_x"], d["position_y"]], -1)
    heading[track_of_row, step] = d["heading"]
    vel[track_of_row, step] = np.stack([d["velocity_x"], d["velocity_y"]], -1)
    valid[track_of_row, step] = True
    first_row = np.full(N, -1)
    first_row[track_of_row[::-1]] = np.arange(len(step))[::-1]
    object_type = np.char.lower(d["object_type"][first_row].astype(str))
    return dict(ids=ids.astype(str), object_type=object_type, xy=xy, heading=heading, velocity=vel, valid=valid)


def _map_file(path: Path, scenario_id: str) -> Path:
    """The scenario's map JSON next to its parquet (``log_map_archive_<id>.json`` preferred)."""
    exact = path.parent / f"log_map_archive_{scenario_id}.json"
    if exact.is_file():
        return exact
    found = sorted(path.parent.glob(MAP_GLOB))
    if not found:
        raise FileNotFoundError(f"{path.parent / MAP_GLOB}: file not found (the map of {path.name})")
    return found[0]


def load_scenario(path: str | Path, *, ego: Literal["av", "focal"] = "av") -> ForecastingScenario:
    """Parse one scenario (its folder or its ``scenario_*.parquet``) and its map into a :class:`ForecastingScenario`.

    Raises:
        FileNotFoundError: no parquet or no map file (the message names the path).
        ValueError: unreadable file, or a column / field missing, non-finite or inconsistent (names file + field).
    """
    if ego not in ("av", "focal"):
        raise ValueError(f"ego must be 'av' or 'focal', got {ego!r}")
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(SCENARIO_GLOB))
        if not files:
            raise FileNotFoundError(f"{path / SCENARIO_GLOB}: file not found")
        path = files[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    d = _read_columns(path)
    T = int(d["num_timestamps"][0])
    if T < 2:
        raise ValueError(f"{path}: column 'num_timestamps' is {T}, need >= 2")
    start, end = float(d["start_timestamp"][0]), float(d["end_timestamp"][0])
    if not end > start:
        raise ValueError(f"{path}: columns 'start_timestamp' / 'end_timestamp' do not increase ({start}, {end})")
    timestamps = np.round(np.linspace(start, end, T)).astype(np.int64)
    tracks = _dense_tracks(path, d, T)
    scenario_id = str(d["scenario_id"][0])
    ego_id = AV_TRACK_ID if ego == "av" else str(d["focal_track_id"][0])
    hit = np.flatnonzero(tracks["ids"] == ego_id)
    if not len(hit):
        raise ValueError(f"{path}: column 'track_id' has no {'AV' if ego == 'av' else 'focal'} track {ego_id!r}")
    e = int(hit[0])
    ego_valid = tracks["valid"][e]
    ego_yaw = _unwrap_valid(tracks["heading"][e], ego_valid)
    ego_xy = tracks["xy"][e].copy()
    if ego == "focal":  # box centre -> rear axle; the AV's poses already are rear-axle poses
        ego_xy -= AV2_EGO_VEHICLE.rear_axle_to_center * np.stack([np.cos(ego_yaw), np.sin(ego_yaw)], -1)
    ego_xy, ego_yaw = _fill_gaps(ego_xy, ego_yaw, ego_valid)
    av2_map = load_map_file(_map_file(path, scenario_id))
    kin_ts, kin_vel, kin_acc = edge_corrected_kinematics(timestamps, ego_xy, ego_yaw, tracks["velocity"][e], ego_valid)
    route_ts, candidates, persistence = route_candidates(av2_map, timestamps, ego_xy, ego_yaw)
    others = np.arange(len(tracks["ids"])) != e
    object_type = tracks["object_type"][others]
    category = np.array([_CAT[OBJECT_TYPE_TO_SCENE.get(t, "generic_object")] for t in object_type], np.int8)
    size = np.array([DEFAULT_BOX_SIZE.get(t, DEFAULT_BOX_SIZE["unknown"]) for t in object_type],
                    np.float64).reshape(-1, 3)
    return ForecastingScenario(
        scenario_id=scenario_id, city=str(d["city"][0]), path=path, timestamps_ns=timestamps, ego_track=ego_id,
        ego_xy=ego_xy, ego_yaw=ego_yaw, ego_valid=ego_valid, kin_ts=kin_ts, kin_vel_body=kin_vel,
        kin_acc_body=kin_acc, track_ids=tracks["ids"][others], object_type=object_type, category=category, size=size,
        xy=tracks["xy"][others], heading=tracks["heading"][others], velocity=tracks["velocity"][others],
        valid=tracks["valid"][others], map=av2_map, route_ts=route_ts, route_candidates=candidates,
        route_persistence=persistence)


def _unwrap_valid(heading: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) heading unwrapped over the valid steps (invalid steps keep their raw value; they are never used)."""
    out = heading.astype(np.float64).copy()
    if valid.any():
        out[valid] = np.unwrap(out[valid])
    return out


def _fill_gaps(xy: np.ndarray, yaw: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of the ego pose over invalid steps (only the smoothing and the route search see them;
    windows touching a gap are dropped)."""
    if valid.all() or not valid.any():
        return xy, yaw
    t = np.arange(len(valid))
    xy = np.stack([np.interp(t, t[valid], xy[valid, i]) for i in range(2)], -1)
    return xy, np.interp(t, t[valid], yaw[valid])


def _edge_distance(valid: np.ndarray) -> np.ndarray:
    """(T,) timesteps from each step to the nearer end of the valid stretch holding it: 0 at the first and last valid
    step of the track and next to a gap, -1 at an invalid step."""
    k = np.arange(len(valid))
    bad = np.r_[-1, np.flatnonzero(~valid), len(valid)]
    j = np.searchsorted(bad, k)  # bad[j - 1] < k <= bad[j]
    return np.minimum(k - bad[j - 1], bad[j] - k) - 1


def edge_corrected_kinematics(timestamps: np.ndarray, xy: np.ndarray, yaw: np.ndarray, velocity: np.ndarray,
                              valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ego body-frame velocity and acceleration on the 20 Hz grid of :func:`~irlvla_gym.scenes.av2.ego_kinematics`.

    From :data:`EDGE_S` inside the ego track on: exactly that function's smoothing of the poses. Up to
    :data:`EDGE_BLEND_S` from an end of the track or of a gap: the logged ``velocity`` column (Savitzky-Golay, 0.5 s
    order 2) and its derivative (1.0 s, order 1: the least-squares slope, which stays bounded at an end where a cubic
    on the positions does not); linear blend in between. Only samples inside the scenario enter either filter (mode
    "interp": polynomial fits to the first / last window, no padding); gaps are bridged linearly first.

    Args:
        timestamps: (T,) int64 ns; xy: (T, 2) m rear axle, city frame, gaps filled; yaw: (T,) rad unwrapped, gaps
            filled; velocity: (T, 2) m/s city frame, the track's column (any value at invalid steps); valid: (T,).

    Returns:
        (ts (Nk,) int64 ns, vel (Nk, 2) m/s, acc (Nk, 2) m/s^2), body frame.
    """
    from scipy.signal import savgol_filter

    ts, vel_pose, acc_pose = ego_kinematics(timestamps, xy, yaw)
    n = len(ts)
    if n < _ACC_WINDOW or not valid.any():
        return ts, vel_pose, acc_pose
    dt = float(ts[1] - ts[0]) / 1e9
    step = (timestamps - timestamps[0]).astype(np.float64)
    grid = (ts - timestamps[0]).astype(np.float64)
    good = np.flatnonzero(valid)
    v = np.stack([np.interp(grid, step[good], velocity[good, i]) for i in range(2)], axis=-1)
    v = savgol_filter(v, _VEL_WINDOW, 2, axis=0, mode="interp")
    a = savgol_filter(v, _ACC_WINDOW, 1, deriv=1, delta=dt, axis=0, mode="interp")
    g_yaw = np.interp(grid, step, yaw)
    c, s = np.cos(g_yaw), np.sin(g_yaw)
    vel_log = np.stack([c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1]], axis=-1)
    acc_log = np.stack([c * a[:, 0] + s * a[:, 1], -s * a[:, 0] + c * a[:, 1]], axis=-1)
    step_s = float(np.median(np.diff(timestamps))) / 1e9
    edge_s = np.round(np.interp(grid, step, _edge_distance(valid) * step_s), 6)
    w = np.clip((edge_s - EDGE_BLEND_S) / (EDGE_S - EDGE_BLEND_S), 0.0, 1.0)[:, None]
    inside = w >= 1.0  # bit-for-bit the pose smoothing there
    vel = np.where(inside, vel_pose, w * vel_pose + (1.0 - w) * vel_log)
    acc = np.where(inside, acc_pose, w * acc_pose + (1.0 - w) * acc_log)
    return ts, vel, acc


# --------------------------------------------------------------------------------------------------------------------
# Windows -> scenes
# --------------------------------------------------------------------------------------------------------------------


def _window_agents(scn: ForecastingScenario, t0: int, origin_xy: np.ndarray, origin_yaw: float,
                   map_radius: float) -> Agents:
    """The other tracks at the 9 agent times of the window at timestep ``t0``, in its ego frame."""
    steps = t0 + np.round(AGENT_TIMES / DT).astype(np.int64) * STEPS_PER_SCENE_DT  # (9,)
    valid = scn.valid[:, steps].T  # (9, N)
    speed = np.hypot(scn.velocity[:, steps, 0], scn.velocity[:, steps, 1]).T
    valid &= speed < MAX_SPEED  # a finite-difference spike or an id swap must not fail the window's validation
    xy = to_local(scn.xy[:, steps].transpose(1, 0, 2), origin_xy, origin_yaw)  # (9, N, 2)
    keep = np.flatnonzero((valid & (np.abs(xy) <= map_radius).all(-1)).any(axis=0))
    valid = valid[:, keep]
    boxes = np.zeros((NUM_TIMES, len(keep), 8))
    boxes[..., 0:2] = xy[:, keep]
    boxes[..., 2] = wrap_angle(scn.heading[keep][:, steps].T - origin_yaw)
    boxes[..., 3:6] = scn.size[keep][None]
    v = scn.velocity[keep][:, steps].transpose(1, 0, 2)
    c, s = np.cos(origin_yaw), np.sin(origin_yaw)
    boxes[..., 6] = c * v[..., 0] + s * v[..., 1]
    boxes[..., 7] = -s * v[..., 0] + c * v[..., 1]
    boxes[~valid] = 0.0
    return Agents(boxes, valid, scn.category[keep].copy(), scn.track_ids[keep].copy())


def _window_scene(scn: ForecastingScenario, t0: int, map_radius: float) -> Scene:
    """The scene of the window whose t0 is timestep ``t0``."""
    steps = _window_steps(t0)  # (12,) 4 history, 8 future
    n_hist = len(HISTORY_TIMES)
    origin_xy, origin_yaw = scn.ego_xy[t0].copy(), float(scn.ego_yaw[t0])
    local = np.empty((len(steps), 3))
    local[:, :2] = to_local(scn.ego_xy[steps], origin_xy, origin_yaw)
    local[:, 2] = wrap_angle(scn.ego_yaw[steps] - origin_yaw)
    local[n_hist - 1] = 0.0
    kt = (scn.kin_ts - scn.kin_ts[0]).astype(np.float64)
    ht = (scn.timestamps_ns[steps[:n_hist]] - scn.kin_ts[0]).astype(np.float64)
    vel = np.stack([np.interp(ht, kt, scn.kin_vel_body[:, i]) for i in range(2)], axis=-1)
    acc = np.stack([np.interp(ht, kt, scn.kin_acc_body[:, i]) for i in range(2)], axis=-1)
    ego = EgoState(local[:n_hist], vel, acc, local[n_hist:], AV2_EGO_VEHICLE)
    agents = _window_agents(scn, t0, origin_xy, origin_yaw, map_radius)
    map_data, to_scene = map_window(scn.map, origin_xy, origin_yaw, map_radius)
    route = route_lanes(scn.map, scn.route_ts, scn.route_candidates, scn.route_persistence,
                        int(scn.timestamps_ns[t0]), origin_xy, origin_yaw, map_radius)
    route_scene, command = route_and_command(route, to_scene, map_data, ego.future)
    token = f"av2f-{scn.scenario_id}-{t0:03d}" + ("" if scn.ego_track == AV_TRACK_ID else f"-{scn.ego_track}")
    meta = SceneMetadata(token=token, source="av2-forecasting", log_name=scn.scenario_id, map_name=scn.city,
                         timestamp_us=int(scn.timestamps_ns[t0]) // 1000, licence=AV2_FORECASTING_LICENCE)
    return Scene(meta, ego, agents, map_data, route_scene, command)


def scenes_from_scenario(scn: ForecastingScenario, stride: int = 1, *, map_radius: float = 100.0
                         ) -> Iterator[Scene | SkippedItem]:
    """One scene per 2 Hz window of ``scn`` (module docs); a :class:`SkippedItem` for a window the ego track does
    not cover, one that fails validation, or (once) a scenario too short for any window."""
    usable, dropped = scn.window_starts(stride)
    where = f"{scn.path}"
    if not len(usable) and not len(dropped):
        span = (scn.timestamps_ns[-1] - scn.timestamps_ns[0]) / 1e9
        yield SkippedItem(where, f"scenario spans {span:.1f} s; a window needs 5.5 s (1.5 s history + 4 s future; "
                                 "test-split files hold only the 5 s observed)", reason="scenario too short")
        return
    for t0 in sorted(np.r_[usable, dropped].astype(int).tolist()):
        item = f"{where}@t={t0 / 10:.1f}s"
        if t0 in dropped:
            yield SkippedItem(item, f"ego track {scn.ego_track!r} has no row at some window timestep",
                              reason="ego not valid through the window")
            continue
        try:
            yield _window_scene(scn, t0, float(map_radius))
        except (SceneValidationError, ValueError) as exc:
            yield SkippedItem(item, f"{type(exc).__name__}: {exc}", reason=f"window failed {type(exc).__name__}")


def iter_scenes(path: str | Path, *, stride: int = 1, map_radius: float = 100.0,
                ego: Literal["av", "focal"] = "av") -> Iterator[Scene | SkippedItem]:
    """Scenes from one scenario (folder or parquet) or every ``scenario_*.parquet`` under ``path``.

    A scenario that cannot be parsed yields one :class:`SkippedItem` (naming file and field) and iteration goes on;
    a path holding no scenario yields one :class:`SkippedItem` saying so.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: AV2 motion-forecasting scenario folder or root not found")
    files = scenario_files(path)
    if not files:
        yield SkippedItem(str(path), f"no {SCENARIO_GLOB} here or in its subfolders (an AV2 sensor log? use "
                                     "--source av2)", reason="no scenario found")
    for f in files:
        try:
            scn = load_scenario(f, ego=ego)
        except (FileNotFoundError, ValueError) as exc:
            yield SkippedItem(str(f), str(exc), reason="scenario unreadable")
            continue
        yield from scenes_from_scenario(scn, stride, map_radius=map_radius)

