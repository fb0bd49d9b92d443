"""Observation builders for the IRL-VLA envs: BEV raster, front camera, ego vector, instruction tokens, agent and
map vectors, and derived feature vectors (``compact``). Each key is a small :class:`ObservationType` with ``space()`` and ``observe()``; the registry
(:mod:`irlvla_gym.obs.registry`) composes them into one flat ``gymnasium.spaces.Dict``."""

from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.bev import BEV_CHANNELS, BevRenderer
from irlvla_gym.obs.camera import CameraRenderer
from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.obs.ego import EGO_FIELDS
from irlvla_gym.obs.instruction import build_instruction, decode_instruction, encode_instruction
from irlvla_gym.obs.registry import (
    DEFAULT_KEYS, FEATURE_TYPES, OBSERVATION_TYPES, ObservationBuilder, make_observation_space, observe, observe_batch,
)
from irlvla_gym.obs.vectors import AGENT_FEATURES, MAP_FEATURES

__all__ = [
    "AGENT_FEATURES", "BEV_CHANNELS", "DEFAULT_KEYS", "EGO_FIELDS", "FEATURE_TYPES", "MAP_FEATURES",
    "OBSERVATION_TYPES", "BevRenderer",
    "CameraRenderer", "EgoStatus", "ObsConfig", "ObservationBuilder", "ObservationType", "build_instruction",
    "decode_instruction", "encode_instruction", "make_observation_space", "observe", "observe_batch",
]
