"""Shared machinery of the two IRL-VLA envs: configuration, scene selection, per-scene caches, reward providers,
invalid-action handling and rendering. The public classes are in ``navsim_env.py`` and ``closed_loop.py``."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from irlvla_gym.plans.codec import ActionType, Decoded, make_action_type
from irlvla_gym.envs.config import EnvConfig
from irlvla_gym.envs.render import FrameRenderer, HumanWindow
from irlvla_gym.envs.scenes import LRU, shared_lru
from irlvla_gym.scenes.source import SceneSource
from irlvla_gym.envs.scoring import SceneBundle, make_bundle
from irlvla_gym.obs.registry import ObservationBuilder
from irlvla_gym.rewards import make_reward


def resolve_reward(spec: Any) -> Callable[..., float] | None:
    """None for the built-in EPDMS reward, else the reward callable: a user callable, or a registered reward such as
    ``"rwm"`` / ``"rwm:<ckpt dir>"`` (the reward world model; :mod:`irlvla_gym.rewards`)."""
    return make_reward(spec)


class NavsimBaseEnv(gym.Env):
    """Base class (see the subclasses' docstrings for the manual)."""

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 2}

    def __init__(self, *, config: Mapping[str, Any] | EnvConfig | None = None, scenes: Any = None,
                 split: str | None = None, num_scenes: int | None = None, obs_keys: Any = None,
                 obs_config: Any = None, action_type: str | None = None, vocabulary_size: int | None = None,
                 reward: Any = None, traffic: str | None = None, human_filter: bool | None = None,
                 scene_cache_size: int | None = None, render_mode: str | None = None,
                 render_size: tuple[int, int] | None = None):
        given = {k: v for k, v in dict(
            scenes=scenes, split=split, num_scenes=num_scenes, obs_keys=obs_keys, obs_config=obs_config,
            action_type=action_type, vocabulary_size=vocabulary_size, reward=reward, traffic=traffic,
            human_filter=human_filter, scene_cache_size=scene_cache_size, render_mode=render_mode,
            render_size=render_size).items() if v is not None}
        self.config: EnvConfig = EnvConfig.from_kwargs(config, **given)
        cfg = self.config
        if cfg.render_mode is not None and cfg.render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {cfg.render_mode!r}")
        self.render_mode = cfg.render_mode
        self.reward_fn = resolve_reward(cfg.reward)
        self.source = SceneSource(cfg.scenes, cfg.split, cfg.num_scenes)
        self.obs_builder = ObservationBuilder(cfg.obs_keys, cfg.obs_config)
        self.observation_space = self.obs_builder.space
        self.action_kind: ActionType = make_action_type(cfg.action_type, cfg.vocabulary_size)
        self.action_space = self.action_kind.space()
        # Per-scene precompute, shared by every env of this process with the same scenes and traffic model.
        source_key, keep_alive = self.source.cache_key
        self._bundles: LRU[SceneBundle] = shared_lru((source_key, cfg.traffic), cfg.scene_cache_size, keep_alive)
        self._bundle: SceneBundle | None = None
        self._renderer: FrameRenderer | None = None
        self._window: HumanWindow | None = None

    # ---- scenes ------------------------------------------------------------------------------------------------

    @property
    def num_scenes(self) -> int:
        return len(self.source)

    @property
    def scene(self):
        """The current episode's scene (None before the first reset)."""
        return None if self._bundle is None else self._bundle.scene

    def get_bundle(self, index: int) -> SceneBundle:
        """The cached per-scene precompute of scene ``index`` (made on first use)."""
        return self._bundles.get(index, lambda: make_bundle(index, self.source.load(index), self.config.traffic))

    def _select_index(self, options: Mapping[str, Any] | None) -> int:
        options = options or {}
        if options.get("scene_index") is not None:
            index = int(options["scene_index"])
            if not 0 <= index < len(self.source):
                raise IndexError(f"scene_index {index} out of range for {len(self.source)} scenes")
            return index
        if options.get("token") is not None:
            return self.source.index_of(str(options["token"]))
        return int(self.np_random.integers(len(self.source)))

    @property
    def _obs_key(self) -> tuple:
        """Key of this env's t0 observation in ``bundle.extras`` (bundles are shared by envs whose observation
        keys / configs may differ)."""
        return ("obs0", self.obs_builder.keys, self.obs_builder.config)

    def t0_observation(self, bundle: SceneBundle) -> tuple[dict[str, np.ndarray], str]:
        """The cached observation at the origin and t0 (read-only arrays, not copies) and the instruction text."""
        key = self._obs_key
        if key not in bundle.extras:
            obs = self.obs_builder.observe(bundle.scene)
            for value in obs.values():
                value.setflags(write=False)  # shared by every env and episode of this scene
            bundle.extras[key] = (obs, self.obs_builder.instruction_text(bundle.scene))
        return bundle.extras[key]

    def _cached_t0_observation(self, bundle: SceneBundle) -> tuple[dict[str, np.ndarray], str]:
        """Observation (copies) and instruction text at the origin and t0 (cached in the bundle)."""
        obs, text = self.t0_observation(bundle)
        return {k: v.copy() for k, v in obs.items()}, text

    # ---- actions -----------------------------------------------------------------------------------------------

    def decode_action(self, action: Any) -> Decoded:
        """The plan (8, 3) an action stands for, with the invalid / clipped flags (see :mod:`irlvla_gym.plans.codec`)."""
        return self.action_kind.decode(action)

    def plan_to_action(self, plan: np.ndarray):
        """The action closest to a plan (8, 3) in the ego frame (e.g. the expert's ``scene.ego.future``)."""
        return self.action_kind.encode(plan)

    def expert_action(self):
        """The action encoding the logged expert plan of the current scene (valid in the plan-once env)."""
        if self._bundle is None:
            raise RuntimeError("call reset() first")
        return self.plan_to_action(self._bundle.scene.ego.future)

    # ---- rendering ---------------------------------------------------------------------------------------------

    def _frame(self) -> np.ndarray:  # implemented by subclasses
        raise NotImplementedError

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._bundle is None:
            raise RuntimeError("call reset() before render()")
        if self._renderer is None:
            self._renderer = FrameRenderer(self.config.render_size)
        frame = self._frame()
        if self.render_mode == "human":
            if self._window is None:
                self._window = HumanWindow()
            self._window.show(frame, self.metadata["render_fps"])
            return None
        return frame

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
        super().close()
