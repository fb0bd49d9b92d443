"""Observation registry: build observation spaces and observations from a list of keys.

Keys (``OBSERVATION_TYPES``) and the flat entries they contribute:

===========  ===========================================  ========  =====================================
key          entries (shape with default ObsConfig)        dtype     meaning
===========  ===========================================  ========  =====================================
bev          bev (8, 128, 128)                            uint8     BEV raster (``irlvla_gym.obs.bev``)
camera       camera (128, 256, 3)                         uint8     front image (``irlvla_gym.obs.camera``)
ego          ego (21,)                                    float32   kinematics, command, history
instruction  instruction (32,)                            int64     token ids (``[CLS] .. [SEP]`` + 0 pad)
agents       agents (32, 14), agents_mask (32,)           f32, u8   agent vectors, nearest first
map          map (64, 20, 11), map_mask (64,)             f32, u8   map polylines, nearest first
===========  ===========================================  ========  =====================================

Derived feature keys (``FEATURE_TYPES``: hand-made features computed from the same scene, accepted wherever a key
is; kept apart from the raw modalities above):

===========  ===========================================  ========  =====================================
compact      compact (126,)                               float32   ego, route, lights, lead, 8 agents
                                                                    (``irlvla_gym.obs.compact``)
===========  ===========================================  ========  =====================================

Usage::

    space = make_observation_space(["bev", "ego", "instruction"], ObsConfig())
    obs = observe(["bev", "ego", "instruction"], scene, ego_pose, time, config)        # one scene
    batch = observe_batch(["bev", "ego"], scenes, ego_poses, times, config)           # (N, ...) arrays

Builders (and their caches) are kept per (keys, config) in a :class:`ObservationBuilder`; the module functions use
a shared one per config. Envs should hold their own ``ObservationBuilder``.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import gymnasium as gym
import numpy as np

from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.bev import BevObservation
from irlvla_gym.obs.camera import CameraObservation
from irlvla_gym.obs.compact import CompactObservation
from irlvla_gym.obs.common import EgoStatus, as_pose, as_pose_batch, as_time_batch
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.obs.ego import EgoObservation
from irlvla_gym.obs.instruction import InstructionObservation
from irlvla_gym.obs.vectors import AgentsObservation, MapObservation
from irlvla_gym.scenes.scene import Scene

OBSERVATION_TYPES: dict[str, type[ObservationType]] = {
    "bev": BevObservation,
    "camera": CameraObservation,
    "ego": EgoObservation,
    "instruction": InstructionObservation,
    "agents": AgentsObservation,
    "map": MapObservation,
}
FEATURE_TYPES: dict[str, type[ObservationType]] = {
    "compact": CompactObservation,
}
"""Derived feature keys (see module docs)."""
ALL_TYPES: dict[str, type[ObservationType]] = {**OBSERVATION_TYPES, **FEATURE_TYPES}
"""Every key an :class:`ObservationBuilder` accepts."""
DEFAULT_KEYS = ("camera", "ego", "instruction")
"""What a VLA policy sees by default: front image, ego state + command, instruction."""


def _check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        keys = (keys,)
    unknown = [k for k in keys if k not in ALL_TYPES]
    if unknown:
        raise KeyError(f"unknown observation key(s) {unknown}; choose from {sorted(ALL_TYPES)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate observation keys in {list(keys)}")
    return tuple(keys)


class ObservationBuilder:
    """The observation types for a list of keys, sharing one :class:`ObsConfig` (and the types' caches).

    Args:
        keys: observation keys (see module docs), in the order the entries appear.
        config: :class:`ObsConfig` or a dict of its fields.
    """

    def __init__(self, keys: Sequence[str] = DEFAULT_KEYS, config: ObsConfig | Mapping | None = None):
        self.keys = _check_keys(keys)
        self.config = ObsConfig.from_dict(config)
        self.types = {k: ALL_TYPES[k](self.config) for k in self.keys}
        spaces: dict[str, gym.Space] = {}
        for t in self.types.values():
            spaces.update(t.space().spaces)
        self.space = gym.spaces.Dict(spaces)

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        """Entries for one scene from ``ego_pose`` (3,) in the scene t0 frame (default origin) at ``time`` s."""
        pose = as_pose(ego_pose)
        out: dict[str, np.ndarray] = {}
        for t in self.types.values():
            out.update(t.observe(scene, pose, float(time), ego_status))
        return out

    def observe_batch(self, scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                      times: np.ndarray | float | None = None,
                      ego_statuses: Sequence[EgoStatus | None] | None = None) -> dict[str, np.ndarray]:
        """Entries for N scenes, each ``(N, *shape)``; equal to stacking :meth:`observe` results."""
        n = len(scenes)
        poses, ts = as_pose_batch(ego_poses, n), as_time_batch(times, n)
        out: dict[str, np.ndarray] = {}
        for t in self.types.values():
            out.update(t.observe_batch(scenes, poses, ts, ego_statuses))
        return out

    def instruction_text(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                         ego_status: EgoStatus | None = None) -> str:
        """The instruction text (for ``info``), whether or not ``instruction`` is among the keys."""
        t = self.types.get("instruction") or InstructionObservation(self.config)
        return t.text(scene, ego_pose, time, ego_status)


@functools.lru_cache(maxsize=16)
def _shared_builder(keys: tuple[str, ...], config: ObsConfig) -> ObservationBuilder:
    return ObservationBuilder(keys, config)


def _builder(keys: Sequence[str], config: ObsConfig | Mapping | None) -> ObservationBuilder:
    return _shared_builder(_check_keys(keys), ObsConfig.from_dict(config))


def make_observation_space(keys: Sequence[str] = DEFAULT_KEYS,
                           config: ObsConfig | Mapping | None = None) -> gym.spaces.Dict:
    """Flat ``gymnasium.spaces.Dict`` of every entry the keys contribute (see module docs)."""
    return _builder(keys, config).space


def observe(keys: Sequence[str], scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
            config: ObsConfig | Mapping | None = None, ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
    """One observation dict (entries as in :func:`make_observation_space`)."""
    return _builder(keys, config).observe(scene, ego_pose, time, ego_status)


def observe_batch(keys: Sequence[str], scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                  times: np.ndarray | float | None = None, config: ObsConfig | Mapping | None = None,
                  ego_statuses: Sequence[EgoStatus | None] | None = None) -> dict[str, np.ndarray]:
    """Batched observation dict: each entry ``(N, *shape)``."""
    return _builder(keys, config).observe_batch(scenes, ego_poses, times, ego_statuses)
