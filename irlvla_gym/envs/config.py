"""One configuration dataclass for both IRL-VLA envs; env kwargs map onto its fields one to one.

``gym.make("IRLVLA-Navsim-v2", traffic="idm")`` and ``gym.make("IRLVLA-Navsim-v2", config={"traffic": "idm"})``
are equivalent (highway-env style ``config`` dict; explicit kwargs win over ``config`` entries).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.rewards import parse_reward

RewardSpec = Union[str, Callable[..., float]]
DEFAULT_OBS_KEYS = ("bev", "ego", "instruction")
DEFAULT_SPLIT = "synthetic-train"
ACTION_TYPES = ("trajectory", "vocabulary", "residual")
RESIDUAL_REFERENCES = ("route", "constant_velocity")


@dataclass
class EnvConfig:
    """Settings of ``IRLVLA-Navsim-v2`` and ``IRLVLA-Navsim-ClosedLoop-v2``.

    Attributes:
        scenes: where scenes come from: a synthetic split name (``"synthetic-train"``, ``"synthetic-val"``, ...), a
            scene-store directory (path), a :class:`~irlvla_gym.scenes.store.SceneStore`, or a list of
            :class:`~irlvla_gym.scenes.scene.Scene`. None: the ``split``.
        split: synthetic split used when ``scenes`` is None (default ``"synthetic-train"``).
        num_scenes: use only the first ``num_scenes`` scenes of the source (a fixed pool); None: all.
        obs_keys: observation keys (``irlvla_gym.obs`` registry: bev, camera, ego, instruction, agents, map, and the
            derived ``compact`` feature vector).
        obs_config: :class:`~irlvla_gym.obs.config.ObsConfig` or a dict of its fields.
        flatten_obs: return the observation as one float32 ``Box`` (the entries of ``obs_keys`` flattened and
            concatenated in order) instead of a ``Dict`` (default False).
        action_type: ``"trajectory"`` (Box(-1, 1, (24,))), ``"vocabulary"`` (Discrete(vocabulary_size)) or
            ``"residual"`` (Box(-1, 1, (4,)): smooth changes around a reference plan, :mod:`irlvla_gym.plans.residual`).
        vocabulary_size: K of the trajectory vocabulary.
        residual_reference: the reference plan of ``action_type="residual"`` (its action 0): ``"route"`` (follow
            the route centreline at the current speed) or ``"constant_velocity"`` (straight on at the current
            speed).
        reward: ``"epdms"`` (rule-based scorer), ``"rwm"`` (learned reward world model, shipped checkpoint) or
            ``"rwm:<checkpoint dir>"`` (see ``reward_models``),
            or a callable ``(scene, plan (8, 3)) -> float`` (plan in the scene's ego frame).
        traffic: ``"log"`` (non-reactive replay) or ``"idm"`` (reactive IDM agents).
        human_filter: NAVSIM v2's human false-positive filter (sub-scores the logged expert fails are set to 1).
        scene_cache_size: per-scene precomputations (scene, scoring context, replayed agents, expert rollout, t0
            observation) kept in an in-memory LRU; a revisited scene costs nothing to prepare.
        render_mode: None, ``"rgb_array"`` or ``"human"``.
        render_size: (H, W) pixels of rendered frames.
    """

    scenes: Any = None
    split: str = DEFAULT_SPLIT
    num_scenes: int | None = None
    obs_keys: Sequence[str] = DEFAULT_OBS_KEYS
    obs_config: ObsConfig | Mapping | None = None
    action_type: str = "trajectory"
    vocabulary_size: int = 256
    reward: RewardSpec = "epdms"
    traffic: str = "log"
    human_filter: bool = True
    scene_cache_size: int = 1024
    render_mode: str | None = None
    render_size: tuple[int, int] = (400, 400)
    flatten_obs: bool = False
    residual_reference: str = "route"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.obs_keys, str):
            self.obs_keys = (self.obs_keys,)
        self.obs_keys = tuple(self.obs_keys)
        self.obs_config = ObsConfig.from_dict(self.obs_config)
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {self.action_type!r}")
        if self.residual_reference not in RESIDUAL_REFERENCES:
            raise ValueError(f"residual_reference must be one of {RESIDUAL_REFERENCES}, "
                             f"got {self.residual_reference!r}")
        if self.traffic not in ("log", "idm"):
            raise ValueError(f"traffic must be 'log' or 'idm', got {self.traffic!r}")
        parse_reward(self.reward)  # one clear error for an unknown reward; the env builds it
        if self.num_scenes is not None and self.num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1 or None, got {self.num_scenes}")
        if self.scene_cache_size < 1:
            raise ValueError("scene_cache_size must be >= 1")

    @classmethod
    def from_kwargs(cls, config: Mapping[str, Any] | "EnvConfig" | None = None, **kwargs: Any) -> "EnvConfig":
        """Merge a ``config`` dict (or EnvConfig) with explicit kwargs (kwargs win). Unknown names raise TypeError."""
        base: dict[str, Any] = {}
        if isinstance(config, EnvConfig):
            base = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        elif config is not None:
            base = dict(config)
        base.update(kwargs)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(base) - names)
        if unknown:
            raise TypeError(f"unknown env argument(s) {unknown}; valid: {sorted(names - {'extra'})}")
        return cls(**base)

