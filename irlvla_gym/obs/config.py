"""One configuration dataclass for every observation type (ranges, resolutions, lengths).

Env kwargs map onto these fields one to one (``IRLVLA-*`` envs take ``obs_config=ObsConfig(...)`` or a dict).
"""

from __future__ import annotations

from dataclasses import dataclass


AGENTS_FUTURES = ("none", "logged")


@dataclass(frozen=True)
class ObsConfig:
    """Observation settings. All distances in metres, times in seconds, angles in degrees where named ``*_deg``.

    BEV raster (key ``bev``):
        bev_size: (H, W) pixels. Default 128 x 128.
        bev_range_ahead / bev_range_behind: metres visible in front of / behind the ego's rear axle (image up / down).
            Default 48 m ahead, 16 m behind (64 m in total, 0.5 m per pixel at 128 rows): more is visible ahead.
        bev_range_side: metres visible to each side (image left = ego left). Default 32 m (64 m wide).
        bev_past_times: seconds before the current time at which agents are drawn faded into the ``agents_past``
            channel (older = fainter). Before the scene's t0 agents are extrapolated back at constant velocity.
        bev_cache_size: LRU entries of static map layers, keyed by (scene token, ego pose); prepared map geometry
            keeps 4x as many scenes. One entry is 3 x H x W bytes (48 kB at 128 x 128).

    Front camera (key ``camera``):
        camera_size: (H, W) pixels. Default 128 x 256.
        camera_source: 'auto' (real ``CAM_F0`` image when the scene has one on disk, else rendered), 'render'
            (always rendered) or 'real' (error when the scene has no image).
        camera_hfov_deg: horizontal field of view of the rendered pinhole camera.
        camera_height: camera height above the road (m). camera_x: camera position ahead of the rear axle (m).
        camera_pitch_deg: downward pitch (positive looks down).
        camera_far: geometry farther than this (m) is not drawn.

    Vectors (keys ``agents`` and ``map``):
        max_agents: agent slots (nearest first). agents_radius: agents farther than this (m) are dropped.
        max_polylines: map polyline slots (nearest first). points_per_polyline: resampled points per polyline.
        map_segment_length: centrelines are cut into pieces of at most this length (m) before resampling.
        map_radius: polylines with no point within this distance (m) are dropped.
        vector_coordinate_bound: |x|, |y| bound (m) of the vector spaces; values are clipped into it.
        agents_future: ``"none"`` (default) or ``"logged"``: the ``agents`` observation also returns
            ``agents_future``, the logged future of the same agent slots (privileged information: the log's answer,
            for reward models and other teachers that see what the scorer sees, never for a policy).

    Instruction (key ``instruction``):
        instruction_length: token ids per instruction (``[CLS] words [SEP]`` then padding with 0).
    """

    bev_size: tuple[int, int] = (128, 128)
    bev_range_ahead: float = 48.0
    bev_range_behind: float = 16.0
    bev_range_side: float = 32.0
    bev_past_times: tuple[float, ...] = (0.5, 1.0)
    bev_cache_size: int = 256

    camera_size: tuple[int, int] = (128, 256)
    camera_source: str = "auto"
    camera_hfov_deg: float = 70.0
    camera_height: float = 1.5
    camera_x: float = 1.7
    camera_pitch_deg: float = 2.0
    camera_far: float = 120.0

    max_agents: int = 32
    agents_radius: float = 64.0
    max_polylines: int = 64
    points_per_polyline: int = 20
    map_segment_length: float = 30.0
    map_radius: float = 64.0
    vector_coordinate_bound: float = 200.0
    agents_future: str = "none"

    instruction_length: int = 32

    def __post_init__(self) -> None:
        if self.camera_source not in ("auto", "render", "real"):
            raise ValueError(f"camera_source must be 'auto', 'render' or 'real', got {self.camera_source!r}")
        if min(self.bev_size) < 8 or min(self.camera_size) < 8:
            raise ValueError("bev_size and camera_size must be at least 8 x 8 pixels")
        if self.bev_range_ahead + self.bev_range_behind <= 0 or self.bev_range_side <= 0:
            raise ValueError("BEV ranges must span a positive area")
        if self.agents_future not in AGENTS_FUTURES:
            raise ValueError(f"agents_future must be one of {AGENTS_FUTURES}, got {self.agents_future!r}")
        if self.instruction_length < 4:
            raise ValueError("instruction_length must be >= 4")

    @property
    def bev_metres_per_pixel(self) -> tuple[float, float]:
        """(rows, columns) metres per BEV pixel: (forward extent / H, lateral extent / W)."""
        h, w = self.bev_size
        return (self.bev_range_ahead + self.bev_range_behind) / h, 2.0 * self.bev_range_side / w

    @classmethod
    def from_dict(cls, values: dict | "ObsConfig" | None) -> "ObsConfig":
        """Build from a dict of field values (lists become tuples); an ObsConfig or None passes through."""
        if values is None:
            return cls()
        if isinstance(values, ObsConfig):
            return values
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
