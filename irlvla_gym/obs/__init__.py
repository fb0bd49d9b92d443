"""Observation builders for the IRL-VLA envs: BEV raster, front camera, ego vector, instruction tokens, agent and
map vectors. Each key is a small :class:`ObservationType` with ``space()`` and ``observe()``."""

from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.obs.config import ObsConfig

__all__ = ["EgoStatus", "ObsConfig"]
