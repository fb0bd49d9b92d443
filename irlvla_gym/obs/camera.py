"""``camera`` observation: the front camera image, (H, W, 3) uint8 (default 128 x 256).

If the scene has a real ``CAM_F0`` image on disk (and ``camera_source`` is 'auto' or 'real'), it is loaded with
PIL and resized (bilinear) to the configured size. The real image shows the logged t0 view: in closed loop it does
not follow the simulated ego pose.

Otherwise the view is *rendered* from the scene, so vision policies train on the procedural default too: a pinhole
camera ``camera_height`` m above the road, ``camera_x`` m ahead of the rear axle, looking forward (pitched down by
``camera_pitch_deg``), ``camera_hfov_deg`` horizontal field of view. Drawn back to front (painter's algorithm):

1. sky (gradient) above the horizon, off-road ground below it;
2. drivable area in grey (holes in ground colour), route lanes tinted blue-grey, crosswalks as white stripes;
3. lane markings as thin ground strips: yellow on the left edge of a lane without a left neighbour, dashed white
   between same-direction lanes, solid white on the right road edge (none inside intersections / on connectors);
4. agents as shaded 3-D cuboids (length, width, height; visible faces only) and traffic lights of lanes that have a
   red, yellow or green light at the observed time, as signal heads 5 m above their stop line, all sorted far to near.

Projection is vectorised over all vertices of a frame; ground polygons and cuboid faces are clipped against the
near plane (0.5 m in front of the camera) before projection, so geometry crossing behind the camera is drawn
correctly. Per-scene geometry (rings, marking strips, crosswalk stripes, light positions) is prepared once and kept
in an LRU cache keyed by scene token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from irlvla_gym.cache import LRU
from irlvla_gym.obs.base import RasterObservation
from irlvla_gym.obs.common import (
    agents_at_time, as_pose, as_pose_batch, as_time_batch, box_corners, light_state_at_time,
    thick_polyline_ring, world_to_ego,
)
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import (
    BARRIER, BICYCLE, GENERIC_OBJECT, LIGHT_GREEN, LIGHT_NONE, LIGHT_RED, LIGHT_YELLOW, PEDESTRIAN, TRAFFIC_CONE,
    VEHICLE, Scene,
)

NEAR = 0.5  # m, near clipping plane
SKY_TOP, SKY_HORIZON = np.array([70, 120, 190]), np.array([185, 205, 225])
GROUND = (88, 102, 78)
ROAD = (110, 110, 112)
ROUTE = (98, 108, 128)
CROSSWALK = (220, 220, 220)
MARKING_WHITE = (235, 235, 235)
MARKING_YELLOW = (225, 185, 40)
AGENT_COLOURS = {
    VEHICLE: (200, 50, 50), PEDESTRIAN: (30, 190, 200), BICYCLE: (190, 60, 200), TRAFFIC_CONE: (255, 130, 0),
    BARRIER: (200, 200, 200), GENERIC_OBJECT: (140, 110, 80),
}
LIGHT_COLOURS = {LIGHT_RED: (255, 30, 30), LIGHT_YELLOW: (255, 200, 0), LIGHT_GREEN: (40, 230, 80)}
LIGHT_HEIGHT = 5.0  # m, centre of the signal head above the road
LIGHT_HEAD = (0.5, 1.2)  # m, width and height of the signal head
MARKING_HALF_WIDTH = 0.08  # m
DASH_ON, DASH_PERIOD = 3.0, 9.0  # m
CROSSWALK_STRIPE, CROSSWALK_PERIOD = 0.5, 1.2  # m

# Cuboid corner order: bottom 0..3, top 4..7, counter-clockwise from front-left (as box_corners).
CUBOID_FACES = np.array([[4, 5, 6, 7],  # top
                         [0, 3, 7, 4],  # front (+x)
                         [1, 0, 4, 5],  # left (+y)
                         [2, 1, 5, 6],  # back (-x)
                         [3, 2, 6, 7]])  # right (-y)
FACE_SHADE = np.array([1.0, 0.8, 0.65, 0.55, 0.7])


# --------------------------------------------------------------------------------------------------------------------
# Per-scene prepared geometry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundItems:
    """Flat ground polygons (z = 0) in the scene frame, drawn in order.

    Attributes:
        points: (P, 2) float64 vertices; offsets: (M + 1,) int64; colours: (M, 3) uint8; bbox: (M, 4).
    """

    points: np.ndarray
    offsets: np.ndarray
    colours: np.ndarray
    bbox: np.ndarray

    @classmethod
    def build(cls, rings: list[np.ndarray], colours: list[tuple[int, int, int]]) -> "GroundItems":
        keep = [i for i, r in enumerate(rings) if len(r) >= 3]
        rings = [np.asarray(rings[i], np.float64)[:, :2] for i in keep]
        offsets = np.r_[0, np.cumsum([len(r) for r in rings])].astype(np.int64)
        points = np.concatenate(rings) if rings else np.zeros((0, 2))
        bbox = np.array([np.r_[r.min(0), r.max(0)] for r in rings]) if rings else np.zeros((0, 4))
        return cls(points, offsets, np.array([colours[i] for i in keep], np.uint8).reshape(-1, 3), bbox)


def _dashes(line: np.ndarray, half_width: float) -> list[np.ndarray]:
    """Quads of DASH_ON m every DASH_PERIOD m along a polyline."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.r_[0.0, np.cumsum(seg)]
    starts = np.arange(0.0, cum[-1] - 0.5, DASH_PERIOD)
    if not len(starts):
        return []
    ends = np.minimum(starts + DASH_ON, cum[-1])
    a = np.stack([np.interp(starts, cum, line[:, 0]), np.interp(starts, cum, line[:, 1])], 1)
    b = np.stack([np.interp(ends, cum, line[:, 0]), np.interp(ends, cum, line[:, 1])], 1)
    d = b - a
    n = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9) * half_width
    return list(np.stack([a + n, b + n, b - n, a - n], axis=1))


def _crosswalk_stripes(polygon) -> list[np.ndarray]:
    """Stripe polygons of a crosswalk (shapely Polygon): bands parallel to its long side, across the short side."""
    from shapely import affinity
    from shapely.geometry import box

    rect = np.asarray(polygon.minimum_rotated_rectangle.exterior.coords)[:4]
    edges = np.diff(np.vstack([rect, rect[:1]]), axis=0)
    lengths = np.linalg.norm(edges, axis=1)
    long_dir = edges[int(np.argmax(lengths))]
    angle = np.degrees(np.arctan2(long_dir[1], long_dir[0]))
    centre = polygon.centroid
    aligned = affinity.rotate(polygon, -angle, origin=centre)  # long side along x
    minx, miny, maxx, maxy = aligned.bounds
    stripes = []
    for x0 in np.arange(minx + 0.3, maxx - 0.2, CROSSWALK_PERIOD):
        piece = aligned.intersection(box(x0, miny - 1.0, x0 + CROSSWALK_STRIPE, maxy + 1.0))
        for part in getattr(piece, "geoms", [piece]):
            if part.geom_type == "Polygon" and not part.is_empty:
                stripes.append(np.asarray(affinity.rotate(part, angle, origin=centre).exterior.coords)[:-1])
    return stripes


@dataclass(frozen=True)
class PreparedCameraScene:
    """Static geometry of one scene for the camera: ground items and traffic-light positions (scene frame)."""

    ground: GroundItems
    light_lanes: np.ndarray  # (K,) lane index whose light a signal head shows
    light_positions: np.ndarray  # (K, 2) stop-line points

    @classmethod
    def from_scene(cls, scene: Scene) -> "PreparedCameraScene":
        mp = scene.map
        rings, colours = [], []
        for ring, hole in zip(mp.drivable_area.rings, mp.drivable_area.ring_is_hole):
            rings.append(ring)
            colours.append(GROUND if hole else ROAD)
        for lane in scene.route_lanes:
            rings.append(mp.lane_polygons.exterior(int(lane)))
            colours.append(ROUTE)
        if mp.crosswalks.count:
            for polygon in mp.crosswalks.to_shapely():
                for stripe in _crosswalk_stripes(polygon):
                    rings.append(stripe)
                    colours.append(CROSSWALK)
        painted = ~(mp.lane_is_connector | mp.lane_is_intersection)
        for i in np.flatnonzero(painted):
            left = mp.lane_left_boundaries[int(i)].astype(np.float64)
            right = mp.lane_right_boundaries[int(i)].astype(np.float64)
            if mp.lane_left_neighbor[i] >= 0:
                for dash in _dashes(left, MARKING_HALF_WIDTH):
                    rings.append(dash)
                    colours.append(MARKING_WHITE)
            else:
                rings.append(thick_polyline_ring(left, MARKING_HALF_WIDTH))
                colours.append(MARKING_YELLOW)
            if mp.lane_right_neighbor[i] < 0:
                rings.append(thick_polyline_ring(right, MARKING_HALF_WIDTH))
                colours.append(MARKING_WHITE)
        # Signal heads: one per distinct stop-line point of a lane that ever shows a light.
        has_light = np.flatnonzero(np.any(mp.lane_light_state != LIGHT_NONE, axis=0))
        lanes, positions, seen = [], [], set()
        for i in has_light:
            line = mp.lane_centerlines[int(i)]
            at_start = mp.lane_is_connector[i] or mp.lane_is_intersection[i]
            point = np.asarray(line[0] if at_start else line[-1], np.float64)
            key = tuple(np.round(point * 2.0).astype(int))
            if key not in seen:
                seen.add(key)
                lanes.append(int(i))
                positions.append(point)
        return cls(GroundItems.build(rings, colours), np.asarray(lanes, np.int64),
                   np.asarray(positions, np.float64).reshape(-1, 2))


# --------------------------------------------------------------------------------------------------------------------
# Projection helpers
# --------------------------------------------------------------------------------------------------------------------


def clip_near(points: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Clip a polygon (n, 3) in camera coordinates [right, down, depth] to depth >= near (Sutherland-Hodgman,
    one plane, vectorised). Returns (m, 3), m = 0 when the polygon lies wholly behind the plane."""
    d = points[:, 2] - near
    inside = d >= 0.0
    if inside.all():
        return points
    if not inside.any():
        return points[:0]
    nxt, d_next = np.roll(points, -1, axis=0), np.roll(d, -1)
    crossing = inside != (d_next >= 0.0)
    t = np.where(crossing, d / np.where(crossing, d - d_next, 1.0), 0.0)
    intersections = points + t[:, None] * (nxt - points)
    candidates = np.stack([points, intersections], axis=1).reshape(-1, 3)
    return candidates[np.stack([inside, crossing], axis=1).reshape(-1)]


class CameraRenderer:
    """Renders (or loads) front-camera images, (H, W, 3) uint8. See the module docs for what is drawn."""

    def __init__(self, config: ObsConfig | None = None, cache: bool = True):
        self.config = ObsConfig.from_dict(config)
        c = self.config
        self.height, self.width = c.camera_size
        self.focal = 0.5 * self.width / np.tan(0.5 * np.radians(c.camera_hfov_deg))
        pitch = np.radians(c.camera_pitch_deg)
        # Camera axes in the ego frame (x forward, y left, z up): right, down, forward (depth).
        self.axes = np.array([[0.0, -1.0, 0.0],
                              [-np.sin(pitch), 0.0, -np.cos(pitch)],
                              [np.cos(pitch), 0.0, -np.sin(pitch)]])
        self.origin = np.array([c.camera_x, 0.0, c.camera_height])
        self._prepared: LRU = LRU(4 * c.bev_cache_size if cache else 0)
        self._background = self._make_background()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    # ---- API ---------------------------------------------------------------------------------------------------

    def render(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0) -> np.ndarray:
        """(H, W, 3) uint8 image of ``scene`` from ``ego_pose`` (scene t0 frame) at ``time`` s."""
        real = self._real_image_path(scene)
        if real is not None:
            return _load_resized(real, self.width, self.height).copy()
        return self._render_synthetic(scene, as_pose(ego_pose), float(time))

    def render_batch(self, scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                     times: np.ndarray | float | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 images."""
        n = len(scenes)
        poses, ts = as_pose_batch(ego_poses, n), as_time_batch(times, n)
        out = np.empty((n,) + self.shape, np.uint8)
        for i in range(n):
            out[i] = self.render(scenes[i], poses[i], float(ts[i]))
        return out

    def project(self, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego-frame points (..., 3) -> camera coordinates (..., 3) [right, down, depth] and PIL pixel coordinates
        (..., 2) [column, row] (valid where depth > 0)."""
        cam = (points_ego - self.origin) @ self.axes.T
        depth = np.maximum(cam[..., 2], 1e-6)
        pixels = np.stack([0.5 * self.width + self.focal * cam[..., 0] / depth - 0.5,
                           0.5 * self.height + self.focal * cam[..., 1] / depth - 0.5], axis=-1)
        return cam, pixels

    def _to_pixels(self, cam: np.ndarray) -> list[float]:
        return np.stack([0.5 * self.width + self.focal * cam[:, 0] / cam[:, 2] - 0.5,
                         0.5 * self.height + self.focal * cam[:, 1] / cam[:, 2] - 0.5], axis=-1).ravel().tolist()

    # ---- internals ---------------------------------------------------------------------------------------------

    def _real_image_path(self, scene: Scene) -> str | None:
        source = self.config.camera_source
        if source == "render":
            return None
        path = scene.cameras.get("CAM_F0")
        if path and Path(path).is_file():
            return str(path)
        if source == "real":
            raise FileNotFoundError(f"scene {scene.token!r}: camera_source='real' but CAM_F0 {path!r} is missing")
        return None

    def _make_background(self) -> np.ndarray:
        h, w = self.height, self.width
        pitch = np.radians(self.config.camera_pitch_deg)
        horizon = 0.5 * h - self.focal * np.tan(pitch)
        rows = np.arange(h, dtype=np.float64) + 0.5
        frac = np.clip(rows / max(horizon, 1.0), 0.0, 1.0)[:, None]
        sky = (SKY_TOP[None] * (1 - frac) + SKY_HORIZON[None] * frac)
        colour = np.where((rows < horizon)[:, None], sky, np.array(GROUND)[None])
        return np.repeat(colour[:, None, :], w, axis=1).astype(np.uint8)

    def _render_synthetic(self, scene: Scene, pose: np.ndarray, time: float) -> np.ndarray:
        prepared = self._prepared.get(scene.metadata.token, lambda: PreparedCameraScene.from_scene(scene))
        image = Image.fromarray(self._background)
        draw = ImageDraw.Draw(image)
        self._draw_ground(draw, prepared.ground, pose)
        self._draw_objects(draw, scene, prepared, pose, time)
        return np.asarray(image)

    def _draw_ground(self, draw: ImageDraw.ImageDraw, ground: GroundItems, pose: np.ndarray) -> None:
        if not len(ground.colours):
            return
        far = self.config.camera_far
        # Cull by bounding box: items wholly behind the camera or beyond the far distance.
        cam_xy = pose[:2] + self.config.camera_x * np.array([np.cos(pose[2]), np.sin(pose[2])])
        corners = ground.bbox[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (M, 4, 2)
        local = world_to_ego(corners.reshape(-1, 2), pose).reshape(-1, 4, 2)
        ahead = local[..., 0].max(1) > self.config.camera_x + NEAR
        dx = np.maximum(np.maximum(ground.bbox[:, 0] - cam_xy[0], cam_xy[0] - ground.bbox[:, 2]), 0.0)
        dy = np.maximum(np.maximum(ground.bbox[:, 1] - cam_xy[1], cam_xy[1] - ground.bbox[:, 3]), 0.0)
        keep = np.flatnonzero(ahead & (dx * dx + dy * dy < far * far))
        if not len(keep):
            return
        starts, ends = ground.offsets[keep], ground.offsets[keep + 1]
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        pts_ego = np.zeros((len(take), 3))
        pts_ego[:, :2] = world_to_ego(ground.points[take], pose)
        cam = (pts_ego - self.origin) @ self.axes.T
        local_ends = np.cumsum(ends - starts)
        local_starts = local_ends - (ends - starts)
        colours = [tuple(c) for c in ground.colours[keep].tolist()]
        for s, e, colour in zip(local_starts.tolist(), local_ends.tolist(), colours):
            clipped = clip_near(cam[s:e])
            if len(clipped) >= 3:
                draw.polygon(self._to_pixels(clipped), fill=colour)

    def _draw_objects(self, draw: ImageDraw.ImageDraw, scene: Scene, prepared: PreparedCameraScene,
                      pose: np.ndarray, time: float) -> None:
        """Agents (cuboids) and signal heads, far to near."""
        objects: list[tuple[float, int, int]] = []  # (distance, kind 0 agent / 1 light, index)
        far = self.config.camera_far
        # Agents.
        boxes, valid = agents_at_time(scene, time)
        idx = np.flatnonzero(valid)
        faces_cam = None
        if len(idx):
            local = np.empty((len(idx), 5))
            local[:, :2] = world_to_ego(boxes[idx, :2], pose)
            local[:, 2] = boxes[idx, 2] - pose[2]
            local[:, 3:5] = boxes[idx, 3:5]
            ground_corners = box_corners(local)  # (K, 4, 2)
            corners = np.zeros((len(idx), 8, 3))
            corners[:, :4, :2] = ground_corners
            corners[:, 4:, :2] = ground_corners
            corners[:, 4:, 2] = boxes[idx, 5, None]
            cam = (corners - self.origin) @ self.axes.T  # (K, 8, 3)
            dist = np.hypot(local[:, 0] - self.config.camera_x, local[:, 1])
            in_front = cam[..., 2].max(1) > NEAR
            faces_cam = cam[:, CUBOID_FACES]  # (K, 5, 4, 3)
            # A face is visible when the camera lies on its outer side.
            face_centre = corners[:, CUBOID_FACES].mean(axis=2)  # (K, 5, 3)
            box_centre = corners.mean(axis=1, keepdims=True)
            outward = face_centre - box_centre
            visible = np.einsum("kfi,kfi->kf", self.origin - face_centre, outward) > 0.0
            for k in np.flatnonzero(in_front & (dist < far)):
                objects.append((float(dist[k]), 0, int(k)))
        # Traffic lights.
        light_cam = None
        if len(prepared.light_lanes):
            states = light_state_at_time(scene, time)[prepared.light_lanes]
            local = world_to_ego(prepared.light_positions, pose)
            head = np.zeros((len(local), 3))
            head[:, :2] = local
            head[:, 2] = LIGHT_HEIGHT
            light_cam = (head - self.origin) @ self.axes.T
            shown = (states != LIGHT_NONE) & (light_cam[:, 2] > 2.0) & (light_cam[:, 2] < far)
            for k in np.flatnonzero(shown):
                objects.append((float(light_cam[k, 2]), 1, int(k)))
        objects.sort(key=lambda o: -o[0])
        category = scene.agents.category
        for _, kind, k in objects:
            if kind == 0:
                base = np.array(AGENT_COLOURS.get(int(category[idx[k]]), (150, 150, 150)), np.float64)
                for f in np.flatnonzero(visible[k]):
                    clipped = clip_near(faces_cam[k, f])
                    if len(clipped) >= 3:
                        colour = tuple(int(v) for v in np.clip(base * FACE_SHADE[f], 0, 255))
                        draw.polygon(self._to_pixels(clipped), fill=colour, outline=(30, 30, 30))
            else:
                self._draw_signal_head(draw, light_cam[k], int(states[k]))

    def _draw_signal_head(self, draw: ImageDraw.ImageDraw, centre_cam: np.ndarray, state: int) -> None:
        col, row = self._to_pixels(centre_cam[None])
        scale = self.focal / centre_cam[2]
        half_w = max(1.0, 0.5 * LIGHT_HEAD[0] * scale)
        half_h = max(2.0, 0.5 * LIGHT_HEAD[1] * scale)
        draw.rectangle([col - half_w, row - half_h, col + half_w, row + half_h], fill=(25, 25, 25))
        lamp_row = row + {LIGHT_RED: -2.0 / 3.0, LIGHT_YELLOW: 0.0, LIGHT_GREEN: 2.0 / 3.0}[state] * half_h
        radius = max(1.0, 0.8 * half_w)
        draw.ellipse([col - radius, lamp_row - radius, col + radius, lamp_row + radius], fill=LIGHT_COLOURS[state])


@functools.lru_cache(maxsize=64)
def _load_resized(path: str, width: int, height: int) -> np.ndarray:
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB").resize((width, height), Image.BILINEAR))
    arr.setflags(write=False)
    return arr


class CameraObservation(RasterObservation):
    """Key ``camera``: (H, W, 3) uint8 front image, real ``CAM_F0`` when available, else rendered."""

    key = "camera"
    renderer_class = CameraRenderer