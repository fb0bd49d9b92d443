"""The :class:`Planner` protocol shared by rule planners, learned policies and the evaluation tools.

A planner maps a :class:`~irlvla_gym.scenes.scene.Scene` to one plan: 8 poses ``[x, y, yaw]`` (m, m, rad) at
t = 0.5 .. 4.0 s in the scene's t0 ego frame (rear axle origin, x forward, y left), the format NAVSIM agents return
(navsim/agents/abstract_agent.py ``compute_trajectory``).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from irlvla_gym.scenes.scene import NUM_FUTURE, Scene

PLAN_SHAPE = (NUM_FUTURE, 3)
"""Shape of one plan: 8 poses [x, y, yaw] at 0.5 s steps."""


@runtime_checkable
class Planner(Protocol):
    """Something that plans: ``name`` plus :meth:`plan` and a batched :meth:`plan_batch`."""

    name: str

    def plan(self, scene: Scene) -> np.ndarray:
        """(8, 3) float64 poses [x, y, yaw] (m, rad) at t = 0.5 .. 4.0 s, t0 ego frame, rear axle."""
        ...

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        """(B, 8, 3) plans of B scenes (row b is ``plan(scenes[b])``)."""
        ...


class PlannerBase:
    """Convenience base: :meth:`plan_batch` loops over :meth:`plan`; override it where batching is cheaper."""

    name: str = "planner"

    def plan(self, scene: Scene) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        if not len(scenes):
            return np.zeros((0, *PLAN_SHAPE))
        return np.stack([self.plan(s) for s in scenes])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
