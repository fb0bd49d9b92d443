"""Three trivial reference planners: the logged human, NAVSIM's constant-velocity agent and standing still."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from irlvla_gym.planners.base import PlannerBase
from irlvla_gym.scenes.scene import FUTURE_TIMES, Scene


class HumanPlanner(PlannerBase):
    """Returns the logged expert future ``scene.ego.future`` (NAVSIM's ``HumanAgent``,
    navsim/agents/human_agent.py): the upper reference every benchmark row is compared with."""

    name = "human"

    def plan(self, scene: Scene) -> np.ndarray:
        return np.array(scene.ego.future, dtype=np.float64, copy=True)

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        return np.stack([s.ego.future for s in scenes]).astype(np.float64) if len(scenes) else np.zeros((0, 8, 3))


class ConstantVelocityPlanner(PlannerBase):
    """Keeps the t0 speed and heading for 4 s (navsim/agents/constant_velocity_agent.py).

    NAVSIM's agent drives straight ahead along the current heading (ego-frame yaw 0) at the t0 speed
    ``|[vx, vy]|``: pose i is ``((i + 1) * 0.5 s * speed, 0, 0)``.
    """

    name = "constant_velocity"

    def plan(self, scene: Scene) -> np.ndarray:
        return self.plan_batch([scene])[0]

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        if not len(scenes):
            return np.zeros((0, 8, 3))
        speed = np.array([np.hypot(*s.ego.velocity) for s in scenes])  # (B,) m/s
        plans = np.zeros((len(scenes), len(FUTURE_TIMES), 3))
        plans[..., 0] = speed[:, None] * FUTURE_TIMES[None, :]
        return plans


class StandStillPlanner(PlannerBase):
    """Stays where it is: every pose of the plan is the t0 pose ``(0, 0, 0)``. A floor for every table: a policy that
    learned something useful has to beat not moving. Tracked by the simulator, a moving ego brakes as hard as the
    tracker allows and still rolls on a little, so EP is low but not always 0 and HC usually fails."""

    name = "stand_still"

    def plan(self, scene: Scene) -> np.ndarray:
        return self.plan_batch([scene])[0]

    def plan_batch(self, scenes: Sequence[Scene]) -> np.ndarray:
        return np.zeros((len(scenes), len(FUTURE_TIMES), 3))
