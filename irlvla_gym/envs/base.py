"""The single-env wrapper of the episode core: a ``gym.Env`` that is :class:`~irlvla_gym.envs.core.EnvCore` with one
row (N = 1), plus seeding through ``self.np_random`` and rendering. The public classes are in ``navsim_env.py``
(plan once) and ``closed_loop.py`` (closed loop); they differ only in their mode (:mod:`irlvla_gym.envs.modes`) and
a few mode-specific accessors."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from irlvla_gym.envs.config import EnvConfig
from irlvla_gym.envs.core import EnvCore, EpisodeMode, EpisodeState, StepOutput, row_info
from irlvla_gym.envs.render import FrameRenderer, HumanWindow
from irlvla_gym.envs.scoring import SceneBundle
from irlvla_gym.obs.registry import ObservationBuilder
from irlvla_gym.plans.codec import ActionType, Decoded
from irlvla_gym.rewards import make_reward
from irlvla_gym.scenes.source import SceneSource

ROW = np.zeros(1, np.int64)  # the single env's row index array (read-only use)


def resolve_reward(spec: Any) -> Callable[..., float] | None:
    """None for the built-in EPDMS reward, else the reward callable: a user callable, or a registered reward such as
    ``"rwm"`` / ``"rwm:<ckpt dir>"`` (the reward world model; :mod:`irlvla_gym.rewards`)."""
    return make_reward(spec)


class NavsimBaseEnv(gym.Env):
    """Base class (see the subclasses' docstrings for the manual). Subclasses set ``mode_class``.

    Attributes:
        core: the :class:`~irlvla_gym.envs.core.EnvCore` (shared resources and episode functions).
        state: the one-row :class:`~irlvla_gym.envs.core.EpisodeState` of this env.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 2}
    mode_class: type

    def __init__(self, *, config: Mapping[str, Any] | EnvConfig | None = None, scenes: Any = None,
                 split: str | None = None, num_scenes: int | None = None, obs_keys: Any = None,
                 obs_config: Any = None, action_type: str | None = None, vocabulary_size: int | None = None,
                 reward: Any = None, traffic: str | None = None, human_filter: bool | None = None,
                 scene_cache_size: int | None = None, render_mode: str | None = None,
                 render_size: tuple[int, int] | None = None, flatten_obs: bool | None = None,
                 residual_reference: str | None = None):
        given = {k: v for k, v in dict(
            scenes=scenes, split=split, num_scenes=num_scenes, obs_keys=obs_keys, obs_config=obs_config,
            action_type=action_type, vocabulary_size=vocabulary_size, reward=reward, traffic=traffic,
            human_filter=human_filter, scene_cache_size=scene_cache_size, render_mode=render_mode,
            render_size=render_size, flatten_obs=flatten_obs, residual_reference=residual_reference).items()
            if v is not None}
        cfg = EnvConfig.from_kwargs(config, **given)
        if cfg.render_mode is not None and cfg.render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {cfg.render_mode!r}")
        self.render_mode = cfg.render_mode
        mode: EpisodeMode = self.mode_class()
        self.core = EnvCore(cfg, mode)
        self.state: EpisodeState = self.core.new_state(1)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_kind.space()
        self._renderer: FrameRenderer | None = None
        self._window: HumanWindow | None = None

    # ---- shared resources (the core's) -------------------------------------------------------------------------

    @property
    def config(self) -> EnvConfig:
        return self.core.config

    @property
    def source(self) -> SceneSource:
        return self.core.source

    @property
    def obs_builder(self) -> ObservationBuilder:
        return self.core.obs_builder

    @property
    def action_kind(self) -> ActionType:
        return self.core.action_kind

    @property
    def reward_fn(self) -> Callable[..., float] | None:
        """The custom reward callable (None: the built-in EPDMS scorer); settable."""
        return self.core.reward_fn

    @reward_fn.setter
    def reward_fn(self, fn: Callable[..., float] | None) -> None:
        self.core.reward_fn = fn

    # ---- scenes ------------------------------------------------------------------------------------------------

    @property
    def num_scenes(self) -> int:
        return len(self.core.source)

    @property
    def bundle(self) -> SceneBundle | None:
        """The current episode's per-scene precompute (None before the first reset)."""
        return self.state.bundles[0]

    @property
    def scene(self):
        """The current episode's scene (None before the first reset)."""
        b = self.state.bundles[0]
        return None if b is None else b.scene

    def get_bundle(self, index: int) -> SceneBundle:
        """The cached per-scene precompute of scene ``index`` (made on first use)."""
        return self.core.get_bundle(index)

    def t0_observation(self, bundle: SceneBundle) -> tuple[dict[str, np.ndarray], str]:
        """The cached observation at the origin and t0 (read-only arrays, not copies) and the instruction text."""
        return self.core.t0_observation(bundle)

    # ---- actions -----------------------------------------------------------------------------------------------

    def decode_action(self, action: Any) -> Decoded:
        """The plan (8, 3) an action stands for, with the invalid / clipped flags (:mod:`irlvla_gym.plans.codec`;
        a residual action is decoded around the current reference plan, :mod:`irlvla_gym.plans.residual`)."""
        return self.core.decode_action(self.state, 0, action)

    def plan_to_action(self, plan: np.ndarray):
        """The action closest to a plan (8, 3) in the ego frame (e.g. the expert's ``scene.ego.future``)."""
        return self.core.encode_plan(self.state, 0, plan)

    def reference_plan(self) -> np.ndarray:
        """(8, 3) the plan of the residual action 0 from the current state (``action_type="residual"`` only)."""
        return self.core.decode_action(self.state, 0, np.zeros(self.action_space.shape, np.float32)).plan

    def expert_action(self):
        """The action encoding the logged expert's plan from the current state (plan-once: ``scene.ego.future``)."""
        if self.state.bundles[0] is None:
            raise RuntimeError("call reset() first")
        return self.plan_to_action(self.core.mode.expert_plan(self.core, self.state, 0))

    # ---- gym API -----------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        index = self.core.select_index(options, self.np_random)
        info = self.core.reset(self.state, ROW, [index])
        return self._observation(), row_info(info, 0)

    def step(self, action):
        return self._step_decoded(self.decode_action(action), None)

    def _step_decoded(self, decoded: Decoded, states: np.ndarray | None):
        out: StepOutput = self.core.step(self.state, ROW, decoded.plan[None], np.array([decoded.invalid]),
                                         np.array([decoded.clipped]), states)
        return (self._observation(), float(out.rewards[0]), bool(out.terminated[0]), bool(out.truncated[0]),
                row_info(out.info, 0))

    def _observation(self) -> dict[str, np.ndarray] | np.ndarray:
        """The current observation; shared read-only arrays (the cached t0 observation) are copied (``flatten_obs``:
        a new flat vector)."""
        if self.core.config.flatten_obs:
            return self.core.flatten(self.state.obs[0])
        return {k: v if v.flags.writeable else v.copy() for k, v in self.state.obs[0].items()}

    # ---- rendering ---------------------------------------------------------------------------------------------

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self.state.bundles[0] is None:
            raise RuntimeError("call reset() before render()")
        if self._renderer is None:
            self._renderer = FrameRenderer(self.config.render_size)
        frame = self.core.mode.frame(self.core, self.state, 0, self._renderer)
        if self.render_mode == "human":
            if self._window is None:
                self._window = HumanWindow()
            self._window.show(frame, self.metadata["render_fps"])
            return None
        return frame

    def close(self) -> None:
        self.core.close()  # scenes prepared by this env go to the persisted cache now, not only at exit
        if self._window is not None:
            self._window.close()
            self._window = None
        super().close()
