"""Third-party algorithms as baselines: same env, scenes, budget and evaluation as the built-in variants.

A run with ``algorithm: plugin`` and ``plugin: <spec>`` trains the algorithm named by ``spec`` (an
``irlvla_gym.algorithms`` entry point, ``module:attr``, or a built-in SB3 name such as ``a2c``) with
:func:`irlvla_gym.agents.train_algorithm` on ``IRLVLA-Navsim-v2`` made from the run's ``env`` settings and ``reward``,
for ``total_timesteps`` env steps. The returned agent is evaluated by the runner exactly like the PPO variants, so the
row lands on the same table. SB3 models are saved to ``model.zip`` (+ sidecar); other agents live only in the run.

Example (``baselines/configs/plugin-a2c.yaml``)::

    irlvla baselines train plugin-a2c --preset quick --seed 0
    irlvla baselines train my-algo --config baselines/configs/plugin-a2c.yaml --set plugin=mypkg.algos:MyAlgo \
        --allow-import mypkg

``plugin`` comes from a config file, so only registered names resolve by default (built-in SB3 names and
``irlvla_gym.algorithms`` entry points); a ``module:attr`` is imported only under ``--allow-import`` /
``IRLVLA_ALLOW_IMPORT`` (:func:`check_plugin_spec`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym

from baselines.config import ENV_ID, RunConfig
from baselines.envs import env_kwargs


class _StepClock:
    """Seconds and env steps spent inside ``step`` across every env the algorithm makes."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0


class TimedEnv(gym.Wrapper):
    """Adds the time spent in ``step`` to a shared :class:`_StepClock` (the plug-in may make several envs)."""

    def __init__(self, env: gym.Env, clock: _StepClock):
        super().__init__(env)
        self.clock = clock

    def step(self, action):
        t = time.perf_counter()
        out = self.env.step(action)
        self.clock.seconds += time.perf_counter() - t
        self.clock.steps += 1
        return out


def check_plugin_spec(spec: str, source: str = "the run config", allow_import: Sequence[str] = ()) -> None:
    """Refuse (:class:`~irlvla_gym.agents.UntrustedInputError`, naming ``source`` and the field ``plugin``) a spec
    that is no registered algorithm name and whose module is not allowed by ``allow_import`` /
    ``IRLVLA_ALLOW_IMPORT``: resolving it would import code named by a config file."""
    from irlvla_gym.agents import UntrustedInputError, available_algorithms, import_allowed

    names = available_algorithms()
    if spec.strip() in names or spec.strip().lower() in names:
        return
    module = spec.partition(":")[0].strip()
    if not import_allowed(module, allow_import):
        raise UntrustedInputError(
            f"{source}: plugin = {spec!r} is not a registered algorithm ({sorted(names)}; plug-ins register in the "
            f"entry-point group 'irlvla_gym.algorithms'); importing {module!r} from a config needs --allow-import "
            f"{module} (or IRLVLA_ALLOW_IMPORT={module})")


def train_plugin(cfg: RunConfig, seed: int, run_dir: Path,
                 allow_import: Sequence[str] = ()) -> tuple[dict[str, Any], Any]:
    """Train ``cfg.plugin`` on the run's env; returns (metrics like the PPO runs', the trained agent)."""
    from irlvla_gym.agents import SB3ModelAgent, train_algorithm

    check_plugin_spec(str(cfg.plugin), f"config of variant {cfg.variant!r}", allow_import)

    kwargs = env_kwargs(cfg)
    clock = _StepClock()

    def env_fn() -> gym.Env:
        return TimedEnv(gym.make(ENV_ID, **kwargs), clock)

    t = time.perf_counter()
    agent = train_algorithm(cfg.plugin, env_fn, cfg.total_timesteps, seed, name=cfg.variant, **cfg.plugin_kwargs)
    wall = time.perf_counter() - t
    if isinstance(agent, SB3ModelAgent):
        agent.save(Path(run_dir) / "model.zip")
    agent.name = f"{cfg.variant}/s{seed}"
    return {"steps": max(clock.steps, 1), "wall_s": wall, "env_s": clock.seconds, "plugin": cfg.plugin}, agent


__all__ = ["TimedEnv", "check_plugin_spec", "train_plugin"]
