"""Per-scene map precompute shared by both scorer implementations (:func:`prepare_scene`).

What NAVSIM computes once per scene in its metric cache (navsim/planning/metric_caching/metric_cache_processor.py,
pdm_planner/utils/pdm_geometry_utils / get_drivable_area_map) is computed here once per :class:`Scene`:

* on-route lanes: the route lanes plus every lane of the same lane group (roadblock). NAVSIM's ``route_lane_ids``
  are the interior lanes of all route roadblocks (PDMClosedPlanner._route_lane_dict), so a lane change into a
  sibling lane is still "on route".
* drivable polygons: lane/connector polygons, the scene's drivable-area polygons and intersection polygons
  (epdms.md: "roadblocks, their lanes/connectors, intersections, car parks").
* intersection polygons: the intersection polygons plus lanes flagged ``lane_is_intersection``.
* red on-route connectors per 0.1 s step: connectors on the route whose light is red; the 2 Hz light state is held
  until the next sample (step i uses sample i // 5).
* the route centreline (for progress and lane keeping), NAVSIM's: :func:`irlvla_gym.scenes.routing.navsim_route_lanes`.
* the ego's logged history resampled to 0.1 s (for history comfort).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.config import DEFAULT_CONFIG, ScorerConfig
from irlvla_gym.scenes.routing import navsim_route_blocks, navsim_route_lanes, on_route_lane_mask
from irlvla_gym.scenes.scene import LIGHT_RED, EgoVehicle, PolygonSet, Scene, concat_polylines


def _rings_of(polygons: PolygonSet) -> list[list[np.ndarray]]:
    """``[[exterior, hole, ...], ...]`` float64 rings of a PolygonSet."""
    out: list[list[np.ndarray]] = []
    for ring, is_hole in zip(polygons.rings, polygons.ring_is_hole):
        ring64 = np.asarray(ring, np.float64)
        if not is_hole:
            out.append([ring64])
        else:
            out[-1].append(ring64)
    return out


@dataclass
class ScoringContext:
    """Everything about one scene the scorer needs, precomputed. Build with :func:`prepare_scene`.

    Polygons are kept as packed rings (``[[exterior, holes...], ...]``, float64, m, ego frame at t0) so that both
    the shapely reference and the vectorised scorer read the same coordinates.

    Attributes:
        token: scene token.
        vehicle: ego dimensions.
        config: thresholds.
        polygons: all map polygons used in point queries, lanes first: indices [0, L) are the lane table,
            then the drivable-area polygons, then the intersection polygons.
        num_lanes: L.
        polygon_is_lane / polygon_is_on_route / polygon_is_intersection: (P,) bool attributes of ``polygons``
            (every polygon counts as drivable).
        lane_is_connector: (L,) bool.
        red_connectors: (41, L) bool, on-route connector whose light is red at that 0.1 s step.
        route_centerline: (n, 2) float64 route centreline (m), n >= 2 unless the route is empty.
        history_states: (H, 11) ego states at t = -1.5 .. -0.1 s (0.1 s), columns as the simulator's.
        expert_poses: (8, 3) logged future poses (for the human filter).
        cache: free slot for implementation-specific precompute (the vectorised scorer's polygon index and map
            pack, the reference's shapely trees).
    """

    token: str
    vehicle: EgoVehicle
    config: ScorerConfig
    polygons: list[list[np.ndarray]]
    num_lanes: int
    polygon_is_lane: np.ndarray
    polygon_is_on_route: np.ndarray
    polygon_is_intersection: np.ndarray
    lane_is_connector: np.ndarray
    red_connectors: np.ndarray
    route_centerline: np.ndarray
    history_states: np.ndarray
    expert_poses: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def route_cumulative_length(self) -> np.ndarray:
        """(n,) arc length (m) of each route-centreline vertex."""
        seg = np.linalg.norm(np.diff(self.route_centerline, axis=0), axis=1)
        return np.r_[0.0, np.cumsum(seg)]


def history_states(scene: Scene, config: ScorerConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Ego states at t = -1.5 .. -0.1 s every 0.1 s, from the 2 Hz logged history (linear interpolation).

    As NAVSIM's past trajectory (metric cache ``past_human_trajectory``: logged ``EgoState`` objects built with
    ``tire_steering_angle=0`` and the default ``angular_vel = angular_accel = 0``, interpolated linearly), the
    steering, yaw-rate and yaw-acceleration columns are zero. HC uses the first
    :attr:`ScorerConfig.hc_history_steps` rows.

    Returns:
        (H, 11) with [x, y, yaw, vx, vy, ax, ay] filled (body-frame velocity and acceleration, as logged), the other
        columns zero.
    """
    e = scene.ego
    t_log = np.arange(-(len(e.history) - 1), 1) * 0.5
    t = -config.history_s + np.arange(config.history_steps) * config.dt
    yaw_log = np.unwrap(e.history[:, 2])
    out = np.zeros((len(t), B.NUM_STATE_COLUMNS))
    out[:, B.X] = np.interp(t, t_log, e.history[:, 0])
    out[:, B.Y] = np.interp(t, t_log, e.history[:, 1])
    out[:, B.YAW] = B.wrap(np.interp(t, t_log, yaw_log))
    for col, src in ((B.VX, e.history_velocity[:, 0]), (B.VY, e.history_velocity[:, 1]),
                     (B.AX, e.history_acceleration[:, 0]), (B.AY, e.history_acceleration[:, 1])):
        out[:, col] = np.interp(t, t_log, src)
    return out


def prepare_scene(scene: Scene, config: ScorerConfig = DEFAULT_CONFIG) -> ScoringContext:
    """Precompute the map queries of one scene (see module docs). Cheap next to scoring 256 plans."""
    mp = scene.map
    L = mp.num_lanes
    lanes = _rings_of(mp.lane_polygons)
    drivable = _rings_of(mp.drivable_area)
    inters = _rings_of(mp.intersections)
    polygons = lanes + drivable + inters
    P = len(polygons)
    is_lane = np.zeros(P, bool)
    is_lane[:L] = True
    on_route = np.zeros(P, bool)
    blocks = navsim_route_blocks(scene)  # once: the on-route mask and the route search both use them
    route_mask = on_route_lane_mask(scene, blocks)
    on_route[:L] = route_mask
    is_inter = np.zeros(P, bool)
    is_inter[:L] = mp.lane_is_intersection
    is_inter[L + len(drivable):] = True

    # Light state held between 2 Hz samples: 0.1 s step i uses sample i // 5.
    sample = np.minimum(np.arange(config.num_states) * config.dt / 0.5 + 1e-9, mp.lane_light_state.shape[0] - 1)
    light = mp.lane_light_state[sample.astype(np.int64)]  # (41, L)
    red = (light == LIGHT_RED) & (route_mask & mp.lane_is_connector)[None, :]

    # NAVSIM's centreline: from the starting lane along the lane graph (irlvla_gym.scenes.routing), not the logged
    # route_lanes (which may jump into a sibling lane where the driver changed lanes).
    route = navsim_route_lanes(scene, blocks)
    route_line = (concat_polylines([mp.lane_centerlines[int(i)] for i in route]).astype(np.float64) if len(route)
                  else np.zeros((0, 2)))
    return ScoringContext(
        token=scene.token, vehicle=scene.ego.vehicle, config=config, polygons=polygons, num_lanes=L,
        polygon_is_lane=is_lane, polygon_is_on_route=on_route, polygon_is_intersection=is_inter,
        lane_is_connector=mp.lane_is_connector.copy(), red_connectors=red, route_centerline=route_line,
        history_states=history_states(scene, config), expert_poses=np.asarray(scene.ego.future, np.float64),
    )


@dataclass
class AgentTracks:
    """Other agents over the 41 simulation steps (0.1 s), as the simulator's log replay / IDM gives them.

    Attributes:
        boxes: (41, N, 8) [x, y, yaw, length, width, height, vx, vy] (m, rad, m/s), ego frame at t0; or
            (K, 41, N, 8) when the agents react to each plan (IDM traffic).
        valid: (41, N) or (K, 41, N) bool, agent present at that step.
        category: (N,) int, index into :data:`irlvla_gym.scenes.scene.AGENT_CATEGORIES`.
        cache: free slot for derived per-agent arrays (the vectorised scorer keeps its per-track arrays here, so a
            scene's replayed agents are prepared once however often they are scored). Treat boxes / valid as
            read-only once scored.
    """

    boxes: np.ndarray
    valid: np.ndarray
    category: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_agents(self) -> int:
        return self.boxes.shape[-2]

    @property
    def is_static(self) -> np.ndarray:
        """(N,) bool: static object category (NC score 0.5 when hit at fault, always 'stopped')."""
        out = self.cache.get("is_static")
        if out is None:  # np.isin costs ~0.1 ms, and the scorer asks for it on every call
            from irlvla_gym.scenes.scene import STATIC_CATEGORIES

            out = self.cache["is_static"] = np.isin(self.category, STATIC_CATEGORIES)
        return out
