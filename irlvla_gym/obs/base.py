"""Base class of the observation types (highway-env style: small classes with ``space()`` and ``observe()``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import gymnasium as gym
import numpy as np

from irlvla_gym.obs.common import EgoStatus, as_pose_batch, as_time_batch
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import Scene


class ObservationType(ABC):
    """One observation key. It may contribute several flat entries (e.g. ``agents`` and ``agents_mask``).

    Subclasses implement :meth:`space` and :meth:`observe`; :meth:`observe_batch` defaults to stacking singles and
    is overridden where a batched path is faster. Batched results always equal the stacked singles exactly.
    """

    key: str = ""

    def __init__(self, config: ObsConfig | None = None):
        self.config = ObsConfig.from_dict(config)

    @abstractmethod
    def space(self) -> gym.spaces.Dict:
        """Flat Dict of the entries this type contributes (entry name -> Box)."""

    @abstractmethod
    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        """Entries for one scene seen from ``ego_pose`` (3,) [x, y, yaw] (scene t0 frame) at ``time`` s after t0.

        ``ego_status`` (simulated velocity, acceleration, history, command) defaults to the logged one.
        """

    def observe_batch(self, scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                      times: np.ndarray | float | None = None,
                      ego_statuses: Sequence[EgoStatus | None] | None = None) -> dict[str, np.ndarray]:
        """Entries for N scenes, each stacked on a leading axis: ``(N, *entry_shape)``."""
        n = len(scenes)
        poses, ts = as_pose_batch(ego_poses, n), as_time_batch(times, n)
        statuses = list(ego_statuses) if ego_statuses is not None else [None] * n
        singles = [self.observe(s, p, float(t), st) for s, p, t, st in zip(scenes, poses, ts, statuses)]
        return stack_entries(singles, self.space())


class RasterObservation(ObservationType):
    """An image key drawn by a batched renderer (``renderer_class(config, cache)`` with ``shape``, ``render`` and
    ``render_batch``): one uint8 Box entry named :attr:`key`. The renderer keeps per-scene caches."""

    renderer_class: type

    def __init__(self, config: ObsConfig | None = None, cache: bool = True):
        super().__init__(config)
        self.renderer = self.renderer_class(self.config, cache=cache)

    def space(self) -> gym.spaces.Dict:
        return gym.spaces.Dict({self.key: gym.spaces.Box(0, 255, self.renderer.shape, np.uint8)})

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        return {self.key: self.renderer.render(scene, ego_pose, time)}

    def observe_batch(self, scenes: Sequence[Scene], ego_poses: np.ndarray | None = None,
                      times: np.ndarray | float | None = None,
                      ego_statuses: Sequence[EgoStatus | None] | None = None) -> dict[str, np.ndarray]:
        return {self.key: self.renderer.render_batch(scenes, ego_poses, times)}


def stack_entries(singles: Sequence[dict[str, np.ndarray]], space: gym.spaces.Dict) -> dict[str, np.ndarray]:
    """Stack per-scene entry dicts into ``(N, ...)`` arrays (empty batches get shape (0, ...))."""
    out = {}
    for name, sub in space.spaces.items():
        if singles:
            out[name] = np.stack([s[name] for s in singles])
        else:
            out[name] = np.zeros((0,) + sub.shape, sub.dtype)
    return out
