"""``bev`` observation: an ego-centred, ego-aligned bird's-eye-view raster, (C, H, W) uint8.

Geometry (defaults of :class:`~irlvla_gym.obs.config.ObsConfig`): 128 x 128 pixels over 64 m x 64 m (0.5 m per
pixel). The ego's rear axle sits 48 m from the top edge and 16 m from the bottom edge, centred left-right, so more is
visible ahead. Ego x (forward) points up the image, ego y (left) points to the image's left. Row ``r`` and column
``c`` cover the ego-frame point ``x = range_ahead - (r + 0.5) * m_per_row``, ``y = range_side - (c + 0.5) * m_per_col``.

Channels (:data:`BEV_CHANNELS`, values 0..255):

==  =================  ===============================================================================================
0   drivable_area      255 inside the drivable polygons (holes cut out)
1   lane_lines         lane centrelines 128, lane boundaries 255 (1 px lines)
2   route              255 inside the lane polygons of the route lanes
3   vehicles           255 inside vehicle boxes at the observed time
4   vulnerable_static  255 pedestrians and bicycles, 128 static objects (cones, barriers, generic objects)
5   agents_past        all agent boxes at ``t - bev_past_times`` (default 0.5 s and 1.0 s earlier), older = fainter:
                       255 * (1 - k / (K + 1)) for the k-th newest of K past times (170, 85 by default), the maximum
                       where boxes overlap; before t0 boxes are extrapolated back from t0 at their t0 velocity
6   traffic_lights     stop-line patches of lanes whose light is red (255) or yellow (128) at the observed time: the
                       first 4 m of a connector / intersection lane (the last 4 m of an ordinary lane), 3 m wide;
                       all lanes, not only the route (a policy must see the light of the lane it is about to enter)
7   ego                255 inside the ego's box
==  =================  ===============================================================================================

Speed: each scene's map geometry is prepared once (all vertices packed in one array with per-item bounding boxes;
a few kB) and kept in an LRU cache keyed by scene token; the three static channels rendered at a pose are kept in a
second LRU keyed by (token, pose), so the plan-once case (one pose per scene) draws only agents, lights and the ego
per frame. Agent boxes of all three agent channels are rasterised together, vectorised in numpy (pixel-centre test
on a patch around each box). A pose never seen before draws the static layers from the prepared geometry
(vectorised transform, one PIL ``ImageDraw`` call per visible polygon/polyline, items outside the view skipped by
bounding box). Cached and uncached renderers give identical frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from irlvla_gym.cache import LRU
from irlvla_gym.obs.base import RasterObservation
from irlvla_gym.obs.common import (
    agents_at_time, as_pose, as_pose_batch, as_time_batch, box_corners, light_state_at_time, polyline_piece,
    thick_polyline_ring, world_to_ego,
)
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, LIGHT_RED, LIGHT_YELLOW, STATIC_CATEGORIES, VEHICLE, EgoVehicle, PolygonSet, Scene,
)

BEV_CHANNELS = ("drivable_area", "lane_lines", "route", "vehicles", "vulnerable_static", "agents_past",
                "traffic_lights", "ego")
DRIVABLE, LANE_LINES, ROUTE, VEHICLES, VULNERABLE_STATIC, AGENTS_PAST, TRAFFIC_LIGHTS, EGO = range(len(BEV_CHANNELS))
NUM_STATIC = 3  # channels 0..2 depend on the map and the pose only
CENTRELINE_VALUE, BOUNDARY_VALUE = 128, 255
STATIC_OBJECT_VALUE = 128
YELLOW_LIGHT_VALUE = 128
LIGHT_PATCH_LENGTH, LIGHT_PATCH_WIDTH = 4.0, 3.0  # m
_SMALL_PATCH = 6  # px, half size of the patch tested for ordinary boxes (cars up to ~5.5 m at 0.5 m/px)
_NOW_VALUE = np.array([STATIC_OBJECT_VALUE if c in STATIC_CATEGORIES else 255 for c in range(len(AGENT_CATEGORIES))])


# --------------------------------------------------------------------------------------------------------------------
# Prepared (per-scene) geometry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedItems:
    """Polygons / polylines packed for fast per-frame transforms.

    Attributes:
        points: (P, 2) float64 vertices in the scene t0 frame, all items concatenated.
        offsets: (M + 1,) int64; item i is ``points[offsets[i]:offsets[i + 1]]``.
        bbox: (M, 4) float64 [xmin, ymin, xmax, ymax] per item.
        value: (M,) int64 fill value per item (e.g. 0 for polygon holes).
    """

    points: np.ndarray
    offsets: np.ndarray
    bbox: np.ndarray
    value: np.ndarray

    @classmethod
    def build(cls, items: Sequence[np.ndarray], values: Sequence[int]) -> "PackedItems":
        arrays = [np.asarray(a, np.float64).reshape(-1, 2) for a in items]
        arrays, values = [a for a in arrays if len(a)], [v for a, v in zip(arrays, values) if len(a)]
        lengths = np.array([len(a) for a in arrays], np.int64)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        points = np.concatenate(arrays) if arrays else np.zeros((0, 2))
        bbox = (np.array([np.r_[a.min(0), a.max(0)] for a in arrays]) if arrays else np.zeros((0, 4)))
        return cls(points, offsets, bbox, np.asarray(values, np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _polygon_rings(polygons: PolygonSet, value: int) -> tuple[list[np.ndarray], list[int]]:
    """Rings of a PolygonSet in draw order (each exterior then its holes) with fill values (holes 0)."""
    rings = [polygons.rings[i] for i in range(len(polygons.rings))]
    return rings, [0 if h else value for h in polygons.ring_is_hole]


@dataclass(frozen=True)
class PreparedMap:
    """The static map of one scene, ready for rasterisation at any pose (scene t0 frame)."""

    drivable: PackedItems
    lane_lines: PackedItems
    route: PackedItems
    light_patches: PackedItems  # stop-line patch per lane with a light; value = lane index

    @classmethod
    def from_scene(cls, scene: Scene) -> "PreparedMap":
        mp = scene.map
        drv_rings, drv_values = _polygon_rings(mp.drivable_area, 255)
        centre = list(mp.lane_centerlines)
        bounds = list(mp.lane_left_boundaries) + list(mp.lane_right_boundaries)
        lane_lines = PackedItems.build(centre + bounds,
                                       [CENTRELINE_VALUE] * len(centre) + [BOUNDARY_VALUE] * len(bounds))
        route = PackedItems.build([mp.lane_polygons.exterior(int(i)) for i in scene.route_lanes],
                                  [255] * len(scene.route_lanes))
        lit = np.flatnonzero(np.any((mp.lane_light_state == LIGHT_RED) | (mp.lane_light_state == LIGHT_YELLOW), axis=0))
        at_start = mp.lane_is_connector | mp.lane_is_intersection
        patches = [thick_polyline_ring(
            polyline_piece(mp.lane_centerlines[int(i)], LIGHT_PATCH_LENGTH, bool(at_start[i])),
            0.5 * LIGHT_PATCH_WIDTH) for i in lit]
        return cls(PackedItems.build(drv_rings, drv_values), lane_lines, route, PackedItems.build(patches, lit))


# --------------------------------------------------------------------------------------------------------------------
# Renderer
# --------------------------------------------------------------------------------------------------------------------


class BevRenderer:
    """Rasterises scenes into (C, H, W) uint8 BEV frames (channels :data:`BEV_CHANNELS`, geometry in module docs).

    Args:
        config: :class:`ObsConfig` (``bev_*`` fields).
        cache: keep prepared map geometry (per token) and static layers (per token and pose) in LRU caches of
            ``config.bev_cache_size`` entries. ``False`` redoes everything every frame (the uncached figure).

    Scene tokens must identify scenes: two different scenes with one token would share cached layers.
    """

    def __init__(self, config: ObsConfig | None = None, cache: bool = True):
        self.config = ObsConfig.from_dict(config)
        c = self.config
        self.height, self.width = c.bev_size
        self.m_per_row, self.m_per_col = c.bev_metres_per_pixel
        size = c.bev_cache_size if cache else 0
        self._prepared: LRU = LRU(max(4 * size, size))
        self._static: LRU = LRU(size)
        self._ego_layers: dict[tuple, np.ndarray] = {}
        # View bounding circle in the ego frame (centre x, radius) for culling.
        self._view_centre_x = 0.5 * (c.bev_range_ahead - c.bev_range_behind)
        self._view_radius = float(np.hypot(0.5 * (c.bev_range_ahead + c.bev_range_behind), c.bev_range_side)) + 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(BEV_CHANNELS), self.height, self.width)

    def clear_cache(self) -> None:
        self._prepared.clear()
        self._static.clear()

    # ---- coordinates -------------------------------------------------------------------------------------------

    def to_pixels(self, points_ego: np.ndarray) -> np.ndarray:
        """(..., 2) ego-frame points (m) -> (..., 2) PIL draw coordinates (column, row); integers are pixel centres."""
        c = self.config
        col = (c.bev_range_side - points_ego[..., 1]) / self.m_per_col - 0.5
        row = (c.bev_range_ahead - points_ego[..., 0]) / self.m_per_row - 0.5
        return np.stack([col, row], axis=-1)

    # ---- public API --------------------------------------------------------------------------------------------

    def render(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0) -> np.ndarray:
        """One (C, H, W) uint8 frame of ``scene`` seen from ``ego_pose`` (3,) (scene t0 frame) at ``time`` s."""
        pose = as_pose(ego_pose)
        frame = np.empty(self.shape, np.uint8)
        self._render_into(frame, scene, pose, float(time))
        return frame

    def render_batch(self, scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                     times: np.ndarray | float | None = None) -> np.ndarray:
        """(N, C, H, W) uint8 frames; ``ego_poses`` (N, 3) default origins, ``times`` (N,) or scalar default 0."""
        n = len(scenes)
        poses, ts = as_pose_batch(ego_poses, n), as_time_batch(times, n)
        out = np.empty((n,) + self.shape, np.uint8)
        for i in range(n):
            self._render_into(out[i], scenes[i], poses[i], float(ts[i]))
        return out

    # ---- internals ---------------------------------------------------------------------------------------------

    def _render_into(self, frame: np.ndarray, scene: Scene, pose: np.ndarray, time: float) -> None:
        token = scene.metadata.token
        prepared = self._prepared.get(token, lambda: PreparedMap.from_scene(scene))
        static = self._static.get((token, pose.tobytes()), lambda: self._draw_static(prepared, pose))
        frame[:NUM_STATIC] = static
        self._draw_agents(frame, scene, pose, time)
        frame[TRAFFIC_LIGHTS] = self._draw_lights(prepared, scene, pose, time)
        frame[EGO] = self._ego_layer(scene.ego.vehicle)

    def _visible(self, items: PackedItems, pose: np.ndarray) -> np.ndarray:
        """Indices of items whose bounding box meets the view's bounding circle."""
        if len(items) == 0:
            return np.zeros(0, np.int64)
        cx = pose[0] + np.cos(pose[2]) * self._view_centre_x
        cy = pose[1] + np.sin(pose[2]) * self._view_centre_x
        dx = np.maximum(np.maximum(items.bbox[:, 0] - cx, cx - items.bbox[:, 2]), 0.0)
        dy = np.maximum(np.maximum(items.bbox[:, 1] - cy, cy - items.bbox[:, 3]), 0.0)
        return np.flatnonzero(dx * dx + dy * dy <= self._view_radius ** 2)

    def _draw_items(self, image: Image.Image, items: PackedItems, pose: np.ndarray, as_lines: bool,
                    selection: np.ndarray | None = None) -> None:
        idx = self._visible(items, pose) if selection is None else selection
        if not len(idx):
            return
        draw = ImageDraw.Draw(image)
        starts, ends = items.offsets[idx], items.offsets[idx + 1]
        if len(idx) == len(items):
            pixels = self.to_pixels(world_to_ego(items.points, pose))
            local_starts, local_ends = starts, ends
        else:  # transform only the selected items' vertices
            take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            pixels = self.to_pixels(world_to_ego(items.points[take], pose))
            local_ends = np.cumsum(ends - starts)
            local_starts = local_ends - (ends - starts)
        flat = pixels.ravel().tolist()
        values = items.value[idx].tolist()
        for s, e, v in zip(local_starts.tolist(), local_ends.tolist(), values):
            xy = flat[2 * s:2 * e]
            if as_lines:
                draw.line(xy, fill=v, width=1)
            elif e - s >= 3:
                draw.polygon(xy, fill=v)

    def _draw_static(self, prepared: PreparedMap, pose: np.ndarray) -> np.ndarray:
        layers = np.empty((NUM_STATIC, self.height, self.width), np.uint8)
        for channel, items, as_lines in ((DRIVABLE, prepared.drivable, False), (LANE_LINES, prepared.lane_lines, True),
                                         (ROUTE, prepared.route, False)):
            image = Image.new("L", (self.width, self.height), 0)
            self._draw_items(image, items, pose, as_lines)
            layers[channel] = np.asarray(image)
        return layers

    def _draw_agents(self, frame: np.ndarray, scene: Scene, pose: np.ndarray, time: float) -> None:
        """Channels VEHICLES, VULNERABLE_STATIC and AGENTS_PAST, rasterised together by :meth:`rasterise_boxes`."""
        boxes_list, channel_list, value_list = [], [], []
        n = len(scene.agents)
        if n:
            category = scene.agents.category
            is_vehicle = category == VEHICLE
            now_channel = np.where(is_vehicle, VEHICLES, VULNERABLE_STATIC)
            now_value = _NOW_VALUE[category]
            boxes, valid = agents_at_time(scene, time)
            boxes_list.append(boxes[valid])
            channel_list.append(now_channel[valid])
            value_list.append(now_value[valid])
            past_times = sorted(self.config.bev_past_times)
            for k, dt in enumerate(past_times):  # k = 0 is the newest
                boxes, valid = agents_at_time(scene, time - dt)
                boxes_list.append(boxes[valid])
                channel_list.append(np.full(int(valid.sum()), AGENTS_PAST))
                value_list.append(np.full(int(valid.sum()), int(round(255 * (1.0 - (k + 1) / (len(past_times) + 1))))))
        layers = np.zeros((3, self.height, self.width), np.uint8)  # VEHICLES, VULNERABLE_STATIC, AGENTS_PAST
        if boxes_list:
            boxes = np.concatenate(boxes_list)
            if len(boxes):
                local = np.empty((len(boxes), 5))
                local[:, :2] = world_to_ego(boxes[:, :2], pose)
                local[:, 2] = boxes[:, 2] - pose[2]
                local[:, 3:5] = boxes[:, 3:5]
                self.rasterise_boxes(layers, local, np.concatenate(channel_list) - VEHICLES,
                                     np.concatenate(value_list))
        frame[VEHICLES:AGENTS_PAST + 1] = layers

    def rasterise_boxes(self, layers: np.ndarray, boxes_ego: np.ndarray, channels: np.ndarray,
                        values: np.ndarray) -> None:
        """Fill oriented boxes into ``layers`` (C, H, W) uint8 in place, keeping the maximum value per pixel.

        A pixel is inside a box when its centre is; each box also marks the pixel holding its centre, so small
        objects (pedestrians, cones) never vanish between pixel centres. Vectorised over boxes: each box tests a
        rectangular patch of pixels around its centre: one fixed small patch for ordinary boxes, one patch as large
        as the largest remaining box's axis-aligned extent for the others.

        Args:
            layers: (C, H, W) uint8 output.
            boxes_ego: (K, 5) [x, y, yaw, length, width] in the ego frame (m, rad).
            channels: (K,) int channel index into ``layers``. values: (K,) int 0..255.
        """
        c = self.config
        h, w = self.height, self.width
        centre_col = (c.bev_range_side - boxes_ego[:, 1]) / self.m_per_col - 0.5
        centre_row = (c.bev_range_ahead - boxes_ego[:, 0]) / self.m_per_row - 0.5
        cos, sin = np.cos(boxes_ego[:, 2]), np.sin(boxes_ego[:, 2])
        half_len, half_wid = 0.5 * boxes_ego[:, 3], 0.5 * boxes_ego[:, 4]
        # Axis-aligned half extents in pixels (rows along ego x, columns along ego y).
        half_rows = (np.abs(cos) * half_len + np.abs(sin) * half_wid) / self.m_per_row
        half_cols = (np.abs(sin) * half_len + np.abs(cos) * half_wid) / self.m_per_col
        in_view = ((centre_col + half_cols >= 0) & (centre_col - half_cols <= w - 1)
                   & (centre_row + half_rows >= 0) & (centre_row - half_rows <= h - 1))
        if not in_view.any():
            return
        sel_view = np.flatnonzero(in_view)
        boxes_ego, channels, values = boxes_ego[sel_view], channels[sel_view], values[sel_view]
        centre_col, centre_row = centre_col[sel_view], centre_row[sel_view]
        cos, sin, half_len, half_wid = cos[sel_view], sin[sel_view], half_len[sel_view], half_wid[sel_view]
        base_col, base_row = np.rint(centre_col).astype(np.int64), np.rint(centre_row).astype(np.int64)
        # Two patch sizes: boxes fitting a (2 * SMALL + 1)^2 patch, and the rest with their largest extents.
        half_rows, half_cols = half_rows[sel_view], half_cols[sel_view]
        small = (half_rows <= _SMALL_PATCH - 1.0) & (half_cols <= _SMALL_PATCH - 1.0)
        bucket = np.where(small, 0, 1)
        flat_index, flat_value = [], []
        for key in np.unique(bucket).tolist():
            if key == 0:
                half_r = half_c = _SMALL_PATCH
            else:
                half_r = int(np.ceil(half_rows[bucket == 1].max() + 1.0))
                half_c = int(np.ceil(half_cols[bucket == 1].max() + 1.0))
            sel = np.flatnonzero(bucket == key)
            cols = base_col[sel, None, None] + np.arange(-half_c, half_c + 1)[None, None, :]  # (k, 1, Q)
            rows = base_row[sel, None, None] + np.arange(-half_r, half_r + 1)[None, :, None]  # (k, P, 1)
            x = c.bev_range_ahead - (rows + 0.5) * self.m_per_row - boxes_ego[sel, 0, None, None]
            y = c.bev_range_side - (cols + 0.5) * self.m_per_col - boxes_ego[sel, 1, None, None]
            cs, sn = cos[sel, None, None], sin[sel, None, None]
            inside = ((np.abs(x * cs + y * sn) <= half_len[sel, None, None])
                      & (np.abs(y * cs - x * sn) <= half_wid[sel, None, None])
                      & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))
            flat = (channels[sel, None, None] * h + rows) * w + cols  # (k, P, Q)
            flat_index.append(flat[inside])
            flat_value.append(np.broadcast_to(values[sel, None, None], inside.shape)[inside])
        centre_ok = (base_row >= 0) & (base_row < h) & (base_col >= 0) & (base_col < w)
        flat_index.append(((channels * h + base_row) * w + base_col)[centre_ok])
        flat_value.append(values[centre_ok])
        np.maximum.at(layers.reshape(-1), np.concatenate(flat_index), np.concatenate(flat_value).astype(np.uint8))

    def _draw_lights(self, prepared: PreparedMap, scene: Scene, pose: np.ndarray, time: float) -> np.ndarray | int:
        """The TRAFFIC_LIGHTS layer (H, W), or 0 when no red/yellow stop line is in view."""
        patches = prepared.light_patches
        if not len(patches):
            return 0
        states = light_state_at_time(scene, time)[patches.value]
        lit = np.flatnonzero(states >= LIGHT_YELLOW)
        if not len(lit):
            return 0
        shown = np.intersect1d(self._visible(patches, pose), lit)
        if not len(shown):
            return 0
        shown = shown[np.argsort(states[shown] == LIGHT_RED, kind="stable")]  # yellow first, red on top
        values = np.where(states == LIGHT_RED, 255, YELLOW_LIGHT_VALUE).astype(np.int64)
        image = Image.new("L", (self.width, self.height), 0)
        self._draw_items(image, PackedItems(patches.points, patches.offsets, patches.bbox, values), pose,
                         as_lines=False, selection=shown)
        return np.asarray(image)

    def _ego_layer(self, vehicle: EgoVehicle) -> np.ndarray:
        key = (vehicle.front_length, vehicle.rear_length, vehicle.width)
        layer = self._ego_layers.get(key)
        if layer is None:
            box = np.array([[vehicle.rear_axle_to_center, 0.0, 0.0, vehicle.length, vehicle.width]])
            image = Image.new("L", (self.width, self.height), 0)
            ImageDraw.Draw(image).polygon(self.to_pixels(box_corners(box)[0]).ravel().tolist(), fill=255)
            layer = self._ego_layers[key] = np.asarray(image).copy()
        return layer


class BevObservation(RasterObservation):
    """Key ``bev``: (C, H, W) uint8 raster (channels :data:`BEV_CHANNELS`), batched by :meth:`observe_batch`."""

    key = "bev"
    renderer_class = BevRenderer