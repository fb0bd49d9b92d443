"""Plan-in-scene geometric features of the reward world model, computed in torch from observation-builder outputs.

Everything here consumes only the entries of ``irlvla_gym.obs`` (``bev``, ``ego``, ``agents`` + ``agents_mask``,
``map`` + ``map_mask``) and the plans; no :class:`~irlvla_gym.scenes.Scene` is needed, so the model runs on an env's
observation dict alone (see :class:`reward_models.reward_fn.RWMRewardFn`).

Shapes: ``B`` scenes, ``K`` plans per scene, ``T = 8`` plan poses at 0.5 s (t = 0.5 .. 4 s), plans (B, K, 8, 3)
[x, y, yaw] in the ego frame at t0 (rear axle; m, rad). All features are float32 and roughly unit-scaled.

Per-pose features (:func:`pose_features`, ``POSE_FEATURES`` columns):

* pose: t / 4 s, x / 20 m, y / 5 m, cos yaw, sin yaw;
* kinematics at 0.5 s resolution with the logged history (``ego`` entry) prepended: speed / 10 m/s, longitudinal
  acceleration / 3 m/s^2, lateral acceleration / 3, yaw rate (rad/s), yaw acceleration (rad/s^2), jerk / 5 m/s^3;
* BEV samples: the 7 scene channels (all but ``ego``) bilinearly sampled at the ego box's centre and 4 corners, at
  the pose and at the midpoint to the previous pose (2 x 5 x 7 = 70 values in [0, 1]), and an in-view flag;
* agents (forecast to the pose's time: constant velocity, or the ``agents_future`` entry when the scene encoding
  provides one, see :mod:`reward_models.forecast`): smallest clearance (centre
  distance minus both bounding radii) / 10 m, the nearest agent's offset in the pose frame (dx / 10, dy / 5), its
  closing speed / 10 m/s, the gap to the nearest agent in a 2.5 m wide corridor ahead / 20 m and that gap divided
  by the speed (a time-to-collision proxy, s, capped at 5), agents within 3 m;
* map (exact point-to-segment distances to the lane / connector centrelines of the ``map`` vectors, found through
  a per-scene nearest-segment raster, :func:`map_lookup`): distance to the nearest lane centreline / 2 m (capped
  at 3 m), cos and sin of the heading error to it, whether it is on the route and a connector; the distance to the
  nearest on-route centreline / 2 m and the heading alignment with it; the distance to the nearest red-light lane
  centreline / 2 m; and the centre's progress since the previous pose along the route tangent / 5 m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NUM_POSES = 8
PLAN_DT = 0.5  # s
# nuPlan Pacifica (EgoVehicle defaults): rear axle to front / back bumper, width (m)
FRONT, REAR, WIDTH = 4.049, 1.127, 2.297
CENTRE_OFFSET = (FRONT - REAR) / 2.0  # rear axle -> box centre (m)
EGO_RADIUS = math.hypot((FRONT + REAR) / 2.0, WIDTH / 2.0)
BEV_SCENE_CHANNELS = 7  # channels 0..6 (the ego channel 7 is constant)

# ego entry layout (irlvla_gym.obs.ego)
EGO_VEL, EGO_ACC, EGO_CMD, EGO_HIST, EGO_SPEED = slice(0, 2), slice(2, 4), slice(4, 8), slice(8, 20), 20
# agents entry layout (irlvla_gym.obs.vectors AGENT_FEATURES)
AG_X, AG_Y, AG_COS, AG_SIN, AG_VX, AG_VY, AG_LEN, AG_WID = range(8)
# map entry layout (MAP_FEATURES)
MP_X, MP_Y, MP_DX, MP_DY, MP_LANE, MP_CONN, MP_CROSS, MP_ROUTE, MP_RED, MP_YELLOW, MP_GREEN = range(11)

POSE_FEATURES = (
    ["t", "x", "y", "cos_yaw", "sin_yaw", "speed", "accel", "lat_accel", "yaw_rate", "yaw_acc", "jerk"]
    + [f"bev_{w}_{p}_{c}" for w in ("pose", "mid") for p in ("centre", "fl", "fr", "rl", "rr")
       for c in range(BEV_SCENE_CHANNELS)]
    + ["in_view"]
    + ["agent_clearance", "agent_dx", "agent_dy", "agent_closing", "front_gap", "front_ttc", "agents_close"]
    + ["lane_dist", "lane_cos", "lane_sin", "lane_on_route", "lane_connector", "route_dist", "route_cos",
       "red_dist", "route_progress"]
)
NUM_POSE_FEATURES = len(POSE_FEATURES)
AGENT_GEOMETRIES = ("circle", "box")


@dataclass(frozen=True)
class BevGeometry:
    """Metric extent of the BEV raster (``ObsConfig`` defaults: 48 m ahead, 16 m behind, 32 m to each side)."""

    range_ahead: float = 48.0
    range_behind: float = 16.0
    range_side: float = 32.0

    def to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Ego-frame points (..., 2) in m -> ``grid_sample`` coordinates (..., 2) [column, row] in [-1, 1]."""
        gx = -xy[..., 1] / self.range_side
        gy = 2.0 * (self.range_ahead - xy[..., 0]) / (self.range_ahead + self.range_behind) - 1.0
        return torch.stack([gx, gy], dim=-1)


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2.0 * math.pi) - math.pi


def _box_points(pose: torch.Tensor) -> torch.Tensor:
    """Centre and 4 corners of the ego box at rear-axle poses (..., 3) -> (..., 5, 2) m."""
    local = pose.new_tensor([[CENTRE_OFFSET, 0.0], [FRONT, WIDTH / 2], [FRONT, -WIDTH / 2],
                             [-REAR, WIDTH / 2], [-REAR, -WIDTH / 2]])
    c, s = torch.cos(pose[..., 2:3]), torch.sin(pose[..., 2:3])
    x = pose[..., :1] + c * local[:, 0] - s * local[:, 1]
    y = pose[..., 1:2] + s * local[:, 0] + c * local[:, 1]
    return torch.stack([x, y], dim=-1)


def box_separation(lon: torch.Tensor, lat: torch.Tensor, cos_d: torch.Tensor, sin_d: torch.Tensor,
                   half_len: torch.Tensor, half_wid: torch.Tensor) -> torch.Tensor:
    """Signed separation (m) of the ego box and agent boxes by the separating-axis test on the four box axes: the
    largest gap between the two boxes' projections on any axis, negative when they overlap (then minus the
    smallest penetration over the axes). Positive values are a lower bound of the true distance (exact when the
    boxes are aligned). All arguments broadcast together.

    Args:
        lon, lat: the agent's centre in the frame of the ego box centre (x along the ego heading; m).
        cos_d, sin_d: cos and sin of the agent's heading relative to the ego's.
        half_len, half_wid: the agent's half length and half width (m).
    """
    cd, sd = cos_d.abs(), sin_d.abs()
    hl, hw = (FRONT + REAR) / 2.0, WIDTH / 2.0
    on_ego = torch.maximum(lon.abs() - (hl + cd * half_len + sd * half_wid),
                           lat.abs() - (hw + sd * half_len + cd * half_wid))
    a_lon = cos_d * lon + sin_d * lat  # ego centre in the agent frame, up to sign
    a_lat = cos_d * lat - sin_d * lon
    on_agent = torch.maximum(a_lon.abs() - (half_len + cd * hl + sd * hw), a_lat.abs() - (half_wid + sd * hl + cd * hw))
    return torch.maximum(on_ego, on_agent)


def kinematics(plans: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
    """(B, K, 8, 6) [speed, accel, lat_accel, yaw_rate, yaw_acc, jerk] per plan pose, raw units (m/s, m/s^2, rad/s,
    rad/s^2, m/s^3), by finite differences at 0.5 s over history poses (t-1.5 .. t0, from ``ego``) + plan."""
    B, K = plans.shape[:2]
    hist = ego[:, EGO_HIST].reshape(B, 1, 4, 3).expand(B, K, 4, 3)
    seq = torch.cat([hist, plans], dim=2)  # (B, K, 12, 3)
    d = seq[:, :, 1:] - seq[:, :, :-1]
    speed = torch.hypot(d[..., 0], d[..., 1]) / PLAN_DT  # (B, K, 11)
    yaw_rate = _wrap(d[..., 2]) / PLAN_DT
    accel = (speed[:, :, 1:] - speed[:, :, :-1]) / PLAN_DT  # (B, K, 10)
    yaw_acc = (yaw_rate[:, :, 1:] - yaw_rate[:, :, :-1]) / PLAN_DT
    jerk = (accel[:, :, 1:] - accel[:, :, :-1]) / PLAN_DT  # (B, K, 9)
    sp, yr = speed[:, :, -8:], yaw_rate[:, :, -8:]
    return torch.stack([sp, accel[:, :, -8:], sp * yr, yr, yaw_acc[:, :, -8:], jerk[:, :, -8:]], dim=-1)


def _sample_bev(bev: torch.Tensor, points: torch.Tensor, geom: BevGeometry) -> torch.Tensor:
    """Bilinear samples of the 7 scene channels. bev (B, 8, H, W) float in [0, 1] (or uint8 0..255);
    points (B, Q, 2) -> (B, Q, 7)."""
    if bev.dtype == torch.uint8:
        bev = bev[:, :BEV_SCENE_CHANNELS].float() / 255.0
    grid = geom.to_grid(points).unsqueeze(2)  # (B, Q, 1, 2)
    out = F.grid_sample(bev[:, :BEV_SCENE_CHANNELS], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(-1).transpose(1, 2)


@dataclass(frozen=True)
class FieldGrid:
    """The map lookup raster: ``res`` m cells over x in [x_min, x_max) (rows, x decreasing downwards) and
    y in [-y_half, y_half) (columns, y decreasing to the right); segments farther than ``cap`` m are not listed."""

    x_min: float = -20.0
    x_max: float = 84.0
    y_half: float = 40.0
    res: float = 2.0
    cap: float = 3.0

    @property
    def shape(self) -> tuple[int, int]:
        return int(round((self.x_max - self.x_min) / self.res)), int(round(2 * self.y_half / self.res))


FIELD_GRID = FieldGrid()
LOOKUPS = ("lane", "route", "red")
_SEG_BITS = 12  # up to 4096 segments (64 polylines x 19 segments = 1216)


@dataclass
class MapLookup:
    """Per-scene nearest-segment lookup tables built by :func:`map_lookup`.

    Attributes:
        nearest: (B, 3, H, W) int64 index of the nearest lane / on-route lane / red-light lane segment to each cell
            centre (-1 where none lies within ``cap``).
        a, b: (B, S, 2) segment end points (m). flags: (B, S, 7) the polyline flags [lane, connector, crosswalk,
            on_route, red, yellow, green] of each segment.
    """

    nearest: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    flags: torch.Tensor


def map_lookup(mp: torch.Tensor, mmask: torch.Tensor, grid: FieldGrid = FIELD_GRID,
               legacy_layout: bool = False) -> MapLookup:
    """Nearest centreline segments per raster cell, once per scene, from (B, P, L, 11) polylines + (B, P) mask.

    ``legacy_layout=True`` reproduces the table layout of the first checkpoints (``ModelConfig.map_layout =
    "interleaved"``): the three (B*H*W,) tables were stacked as (B*H*W, 3) and viewed as (B, 3, H, W), so entry
    [b, l, i, j] held table q % 3 at cell q // 3 (q = l*H*W + i*W + j), and the lane / route / red-light features
    came from the wrong cells. Those checkpoints were trained on it, so it stays available for them.

    Cells are filled by scattering, for every segment, its point-to-segment distance to the cells of a window around
    it (``scatter_reduce`` amin on distance-and-index keys): O(segments x window), not O(cells x points). Queries
    then compute the exact distance to the listed segment (:func:`map_features`).
    """
    B = mp.shape[0]
    P = max(int(mmask.sum(1).max().item()) if mmask.numel() else 0, 1)
    H, W = grid.shape
    mp, mmask = mp[:, :P], mmask[:, :P]
    pts = mp[:, :, list(range(0, mp.shape[2] - 1, 2)) + [mp.shape[2] - 1], :2]  # every other point + the last
    L = pts.shape[2]
    S = P * (L - 1)
    a = pts[:, :, :-1].reshape(B, S, 2)
    b = pts[:, :, 1:].reshape(B, S, 2)
    seg_poly = torch.arange(S, device=mp.device) // (L - 1)
    flags = mp[:, :, 0, 4:][:, seg_poly]  # (B, S, 7)
    lane_s = mmask[:, seg_poly] & ((flags[..., 0] > 0.5) | (flags[..., 1] > 0.5))
    oks = (lane_s, lane_s & (flags[..., 3] > 0.5), lane_s & (flags[..., 4] > 0.5))
    w = int(math.ceil((grid.cap + grid.res) / grid.res + 0.5))
    off = torch.arange(-w, w + 1, device=mp.device)
    di, dj = (x.reshape(-1) for x in torch.meshgrid(off, off, indexing="ij"))
    mid = (a + b) / 2
    i = torch.floor((grid.x_max - mid[..., 0]) / grid.res).long()[..., None] + di  # (B, S, Wn)
    j = torch.floor((grid.y_half - mid[..., 1]) / grid.res).long()[..., None] + dj
    px = grid.x_max - (i.to(mp.dtype) + 0.5) * grid.res
    py = grid.y_half - (j.to(mp.dtype) + 0.5) * grid.res
    ab = (b - a)[..., None, :]
    len2 = (ab * ab).sum(-1).clamp_min(1e-9)
    rx, ry = px - a[..., None, 0], py - a[..., None, 1]
    u = ((rx * ab[..., 0] + ry * ab[..., 1]) / len2).clamp(0.0, 1.0)
    dist = torch.hypot(rx - u * ab[..., 0], ry - u * ab[..., 1])
    inside = (i >= 0) & (i < H) & (j >= 0) & (j < W) & (dist < grid.cap + grid.res)
    cell = (torch.arange(B, device=mp.device)[:, None, None] * (H * W) + i.clamp(0, H - 1) * W
            + j.clamp(0, W - 1)).reshape(-1)
    key = ((dist / (2 * grid.cap + 2 * grid.res) * (1 << 20)).long().clamp(0, (1 << 20) - 1) << _SEG_BITS) \
        + torch.arange(S, device=mp.device)[None, :, None]
    none = (1 << 20) << _SEG_BITS
    nearest = []
    for ok in oks:
        k = key.masked_fill(~(inside & ok[..., None]), none).reshape(-1)
        keys = torch.full((B * H * W,), none, dtype=torch.long, device=mp.device)
        keys.scatter_reduce_(0, cell, k, reduce="amin", include_self=True)
        nearest.append(torch.where(keys < none, keys & ((1 << _SEG_BITS) - 1), torch.full_like(keys, -1)))
    if legacy_layout:
        return MapLookup(torch.stack(nearest, 1).view(B, 3, H, W), a, b, flags)
    return MapLookup(torch.stack([n.view(B, H, W) for n in nearest], 1), a, b, flags)


def map_features(lookup: MapLookup, points: torch.Tensor, grid: FieldGrid = FIELD_GRID) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Nearest lane / on-route lane / red-light lane segment of ego-frame points (B, Q, 2).

    The candidates are the segments listed in the 4 cells around each point (the bilinear neighbours); the exact
    point-to-segment distance picks among them. Returns (B, Q, 3, 4) [distance (m, ``cap`` where none), unit tangent
    x, y (0 where none), found flag] per lookup, and the chosen segment indices (B, 3, Q) (-1 where none).
    """
    B, Q, _ = points.shape
    H, W = grid.shape
    fi = (grid.x_max - points[..., 0]) / grid.res - 0.5
    fj = (grid.y_half - points[..., 1]) / grid.res - 0.5
    i0, j0 = torch.floor(fi).long(), torch.floor(fj).long()
    i = torch.stack([i0, i0, i0 + 1, i0 + 1], -1)  # (B, Q, 4)
    j = torch.stack([j0, j0 + 1, j0, j0 + 1], -1)
    inside = (i >= 0) & (i < H) & (j >= 0) & (j < W)
    flat = (i.clamp(0, H - 1) * W + j.clamp(0, W - 1)).view(B, 1, Q * 4).expand(B, 3, Q * 4)
    seg = torch.gather(lookup.nearest.view(B, 3, H * W), 2, flat).view(B, 3, Q, 4)
    seg = seg.masked_fill(~inside[:, None], -1)
    s = seg.clamp_min(0).view(B, -1)
    ax, ay = (torch.gather(lookup.a[..., c], 1, s).view(B, 3, Q, 4) for c in (0, 1))
    bx, by = (torch.gather(lookup.b[..., c], 1, s).view(B, 3, Q, 4) for c in (0, 1))
    abx, aby = bx - ax, by - ay
    len2 = (abx * abx + aby * aby).clamp_min(1e-9)
    rx = points[..., 0].view(B, 1, Q, 1) - ax
    ry = points[..., 1].view(B, 1, Q, 1) - ay
    u = ((rx * abx + ry * aby) / len2).clamp(0.0, 1.0)
    dist = torch.hypot(rx - u * abx, ry - u * aby)
    dist = dist.masked_fill(seg < 0, 1e3)
    best, k = dist.min(-1)  # (B, 3, Q)
    chosen = seg.gather(-1, k[..., None]).squeeze(-1)
    found = (best < grid.cap) & (chosen >= 0)
    f = found.to(points.dtype)
    tx, ty = abx.gather(-1, k[..., None]).squeeze(-1), aby.gather(-1, k[..., None]).squeeze(-1)
    norm = torch.hypot(tx, ty).clamp_min(1e-6)
    tangent = torch.stack([tx / norm * f, ty / norm * f], dim=-1)
    dist = torch.where(found, best, torch.full_like(best, grid.cap))
    out = torch.stack([dist, tangent[..., 0], tangent[..., 1], f], dim=-1)  # (B, 3, Q, 4)
    return out.transpose(1, 2), chosen.masked_fill(~found, -1)


def segment_flags(lookup: MapLookup, seg: torch.Tensor) -> torch.Tensor:
    """Flags (B, Q, 7) of the lane segments ``seg`` (B, Q) (zeros where -1)."""
    s = seg.clamp_min(0)
    fl = torch.gather(lookup.flags, 1, s[..., None].expand(-1, -1, lookup.flags.shape[-1]))
    return fl * (seg >= 0)[..., None].to(fl.dtype)


def _agent_distance(rx, ry, lon, lat, c_, s_, ag, avx, avy, agent_geometry: str) -> tuple[torch.Tensor, float]:
    """(B, K, T, N) distance of the ego box at each pose to each agent (m; :func:`pose_features`
    ``agent_geometry``) and the distance below which an agent counts as close. rx, ry, lon, lat: the agents'
    centres relative to the ego box centre, in the t0 frame and in the pose frame; c_, s_: (B, K, T, 1) pose
    heading; ag: (B, N, 14) agents; avx, avy: their forecast velocities (broadcasting to (B, K, T, N))."""
    if agent_geometry == "box":
        a_speed = torch.hypot(avx, avy)
        moving = a_speed > 1.0
        a_cos = torch.where(moving, avx / a_speed.clamp_min(1e-6), ag[:, None, None, :, AG_COS])
        a_sin = torch.where(moving, avy / a_speed.clamp_min(1e-6), ag[:, None, None, :, AG_SIN])
        return box_separation(lon, lat, a_cos * c_ + a_sin * s_, a_sin * c_ - a_cos * s_,
                              ag[:, None, None, :, AG_LEN] / 2, ag[:, None, None, :, AG_WID] / 2), 1.0
    a_rad = 0.5 * torch.hypot(ag[..., AG_LEN], ag[..., AG_WID])  # (B, N)
    return torch.hypot(rx, ry) - a_rad[:, None, None] - EGO_RADIUS, 3.0


def pose_features(plans: torch.Tensor, obs: dict[str, torch.Tensor], geom: BevGeometry = BevGeometry(),
                  agent_geometry: str = "circle") -> torch.Tensor:
    """(B, K, 8, NUM_POSE_FEATURES) per-pose features (module docs).

    Args:
        plans: (B, K, 8, 3) float32 plans in the t0 ego frame.
        obs: ``bev`` (B, 8, H, W) float in [0, 1] (see :func:`reward_models.model.prepare_obs`), ``ego`` (B, 21),
            ``agents`` (B, N, 14), ``agents_mask`` (B, N) bool, ``map`` (B, P, L, 11), ``map_mask`` (B, P) bool.
        agent_geometry: how ``agent_clearance``, the nearest agent and ``agents_close`` measure distance to the
            agents: ``"circle"`` (centre distance minus both bounding radii; close = within 3 m) or ``"box"`` (the
            signed separation of the two oriented boxes, :func:`box_separation`, each agent heading along its
            forecast velocity when faster than 1 m/s, else its observed heading; close = within 1 m).
    """
    if agent_geometry not in AGENT_GEOMETRIES:
        raise ValueError(f"agent_geometry must be one of {AGENT_GEOMETRIES}, got {agent_geometry!r}")
    B, K, T, _ = plans.shape
    dev, dt = plans.device, plans.dtype
    t = torch.arange(1, T + 1, device=dev, dtype=dt) * PLAN_DT  # (T,)
    cos, sin = torch.cos(plans[..., 2]), torch.sin(plans[..., 2])
    kin = kinematics(plans, obs["ego"])
    speed = kin[..., 0]

    # BEV samples at the poses and at the midpoints to the previous pose (origin before the first)
    prev = torch.cat([plans.new_zeros(B, K, 1, 3), plans[:, :, :-1]], dim=2)
    mid = torch.cat([(plans[..., :2] + prev[..., :2]) / 2, (prev[..., 2:] + _wrap(plans[..., 2:] - prev[..., 2:]) / 2)],
                    dim=-1)
    pts = torch.stack([_box_points(plans), _box_points(mid)], dim=3)  # (B, K, T, 2, 5, 2)
    bev = _sample_bev(obs["bev"], pts.reshape(B, -1, 2), geom).reshape(B, K, T, 2 * 5 * BEV_SCENE_CHANNELS)
    centre = pts[:, :, :, 0, 0]  # (B, K, T, 2)
    in_view = ((centre[..., 0] < geom.range_ahead) & (centre[..., 0] > -geom.range_behind)
               & (centre[..., 1].abs() < geom.range_side)).to(dt)

    # agents at the pose times, constant velocity
    ag, amask = obs["agents"], obs["agents_mask"]
    n_agents = max(int(amask.sum(1).max()) if amask.numel() else 0, 1)  # real agents come first (nearest first)
    ag, amask = ag[:, :n_agents], amask[:, :n_agents]
    cx, cy = centre[..., 0].unsqueeze(-1), centre[..., 1].unsqueeze(-1)  # (B, K, T, 1)
    future = obs.get("agents_future")  # (B, N, T, 4) [x, y, vx, vy] from reward_models.forecast, else constant velocity
    if future is None:
        ax = (ag[:, None, :, AG_X] + t[None, :, None] * ag[:, None, :, AG_VX]).unsqueeze(1)  # (B, 1, T, N)
        ay = (ag[:, None, :, AG_Y] + t[None, :, None] * ag[:, None, :, AG_VY]).unsqueeze(1)
        avx, avy = ag[:, None, None, :, AG_VX], ag[:, None, None, :, AG_VY]  # (B, 1, 1, N)
    else:
        future = future[:, :n_agents].transpose(1, 2).unsqueeze(1)  # (B, 1, T, N, 4)
        ax, ay, avx, avy = future.unbind(-1)
    rx, ry = ax - cx, ay - cy  # (B, K, T, N)
    amask4 = amask[:, None, None]
    c_, s_ = cos.unsqueeze(-1), sin.unsqueeze(-1)
    lon = c_ * rx + s_ * ry  # (B, K, T, N) in the pose frame
    lat = c_ * ry - s_ * rx
    clear, close_within = _agent_distance(rx, ry, lon, lat, c_, s_, ag, avx, avy, agent_geometry)
    clear = clear.masked_fill(~amask4, 1e3)
    clearance, nearest = clear.min(dim=-1)  # (B, K, T)
    v_lon = c_ * avx + s_ * avy
    pick = nearest.unsqueeze(-1)
    n_lon, n_lat = lon.gather(-1, pick).squeeze(-1), lat.gather(-1, pick).squeeze(-1)
    closing = (speed - v_lon.gather(-1, pick).squeeze(-1)) * (n_lon > 0).to(dt)
    half_w = ag[:, None, None, :, AG_WID] / 2
    in_front = amask4 & (lon > 0) & (lat.abs() < 1.25 + half_w)
    gap = lon - ag[:, None, None, :, AG_LEN] / 2 - (FRONT - CENTRE_OFFSET)
    front_gap = gap.masked_fill(~in_front, 1e3).min(dim=-1).values.clamp(-5.0, 60.0)
    front_ttc = (front_gap.clamp_min(0.0) / speed.clamp_min(0.5)).clamp_max(5.0)
    close = (clear < close_within).sum(-1).to(dt)

    # map: exact distances to the nearest lane / on-route lane / red-light lane segment (scene-once lookup)
    lookup = obs.get("map_lookup")
    if lookup is None:
        lookup = map_lookup(obs["map"], obs["map_mask"])
    mf, seg = map_features(lookup, centre.reshape(B, K * T, 2))  # (B, KT, 3, 4)
    lane_flags = segment_flags(lookup, seg[:, 0]).reshape(B, K, T, -1)
    mf = mf.reshape(B, K, T, 3, 4)
    heading = torch.stack([cos, sin], dim=-1)
    lane_t, route_t = mf[..., 0, 1:3], mf[..., 1, 1:3]
    route_dir = torch.where(mf[..., 1, 3:4] > 0.5, route_t, heading)
    step = centre - torch.cat([centre.new_zeros(B, K, 1, 2) + centre.new_tensor([CENTRE_OFFSET, 0.0]),
                               centre[:, :, :-1]], dim=2)
    progress = (step * route_dir).sum(-1)
    lane_cos = (heading * lane_t).sum(-1)
    lane_sin = heading[..., 0] * lane_t[..., 1] - heading[..., 1] * lane_t[..., 0]
    route_cos = (heading * route_t).sum(-1)
    feats = [
        (t / 4.0).expand(B, K, T), plans[..., 0] / 20.0, plans[..., 1] / 5.0, cos, sin,
        kin[..., 0] / 10.0, kin[..., 1] / 3.0, kin[..., 2] / 3.0, kin[..., 3], kin[..., 4], kin[..., 5] / 5.0,
    ]
    tail = [
        in_view, clearance.clamp(-5.0, 30.0) / 10.0, n_lon.clamp(-30, 30) / 10.0, n_lat.clamp(-15, 15) / 5.0,
        closing.clamp(-20, 20) / 10.0, front_gap / 20.0, front_ttc, close,
        mf[..., 0, 0] / 2.0, lane_cos, lane_sin, lane_flags[..., 3], lane_flags[..., 1], mf[..., 1, 0] / 2.0,
        route_cos, mf[..., 2, 0] / 2.0, progress / 5.0,
    ]
    return torch.cat([torch.stack(feats, -1), bev, torch.stack(tail, -1)], dim=-1)


__all__ = ["AGENT_GEOMETRIES", "POSE_FEATURES", "NUM_POSE_FEATURES", "BevGeometry", "box_separation", "FieldGrid", "MapLookup", "map_lookup",
           "map_features", "pose_features", "kinematics"]
