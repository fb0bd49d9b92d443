"""A demo irlvla-gym plug-in: an observation-based agent and a tiny "training" algorithm.

* :class:`StraightAgent` (entry point ``demo-straight`` in ``irlvla_gym.agents``): reads the ego speed from the
  ``ego`` observation and drives straight on at ``speed_factor`` times that speed.
* :func:`train_speed_fit` (entry point ``demo-fit`` in ``irlvla_gym.algorithms``): rolls the env with straight plans
  at a few speed factors for ``budget`` steps and returns the StraightAgent with the best mean reward.
* :func:`straight_plan`: the same policy as a plain function (for ``irlvla_demo_plugin:straight_plan`` specs).
"""

from __future__ import annotations

import numpy as np

TIMES = np.arange(1, 9) * 0.5  # s, plan times


def _speed(observation: dict) -> float:
    # irlvla_gym.obs.ego: the first two entries of the ego vector are vx, vy (m/s).
    return float(np.hypot(*np.asarray(observation["ego"], np.float64)[:2]))


class StraightAgent:
    """Straight ahead at ``speed_factor`` x the current speed (needs only the ``ego`` observation)."""

    obs_keys = ("ego",)

    def __init__(self, speed_factor: float = 1.0, name: str = "demo-straight"):
        self.speed_factor = float(speed_factor)
        self.name = name

    def plan(self, observation: dict, scene=None) -> np.ndarray:
        plan = np.zeros((8, 3))
        plan[:, 0] = self.speed_factor * _speed(observation) * TIMES
        return plan


def straight_plan(observation: dict, scene) -> np.ndarray:
    """Plan function: straight on at the current speed."""
    return StraightAgent().plan(observation, scene)


straight_plan.obs_keys = ("ego",)


def train_speed_fit(env_fn, budget: int, seed: int) -> StraightAgent:
    """Pick the speed factor in {0.8, 1.0, 1.2} with the best mean reward over ``budget`` env steps."""
    env = env_fn()
    rng = np.random.default_rng(seed)
    factors = (0.8, 1.0, 1.2)
    totals = {f: [] for f in factors}
    for step in range(int(budget)):
        factor = factors[step % len(factors)]
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        plan = StraightAgent(factor).plan(obs)
        action = env.unwrapped.plan_to_action(plan)
        _, reward, _, _, _ = env.step(action)
        totals[factor].append(reward)
    env.close()
    best = max(factors, key=lambda f: (np.mean(totals[f]) if totals[f] else -np.inf, -abs(f - 1.0)))
    return StraightAgent(best, name="demo-fit")
