"""Run configuration of a baseline: one yaml file per variant (``baselines/configs/<variant>.yaml``) with presets.

A config file holds the variant's settings at the top level and a ``presets:`` section whose entries (``quick``,
``full``) override some of them (deep merge). ``--set key.sub=value`` flags override last (values parsed as yaml)::

    variant: ppo-vla-rwm
    algorithm: ppo          # ppo (SB3 PPO; with the BC anchor term when bc.weight > 0) | dppo (baselines/dppo.py)
    policy: vla             # vla (VLAPolicy from `pretrained`) | cnn (SB3 MultiInputPolicy from scratch)
    pretrained: bc_default
    reward: rwm             # epdms (rule-based scorer) | rwm (shipped reward world model) | rwm:<checkpoint dir>
    env: {obs_keys: [camera, ego, instruction], num_scenes: 256}
    ppo: {n_steps: 64, batch_size: 128, n_epochs: 2, learning_rate: 3.0e-5}
    presets:
      quick: {total_timesteps: 4096}
      full: {total_timesteps: 200000, env: {num_scenes: null}}
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from irlvla_gym.rewards import parse_reward

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
VARIANTS = ("ppo-cnn-epdms", "ppo-vla-epdms", "ppo-vla-rwm", "ppo-vla-rwm-bc", "dppo-vla-rwm")
"""The five baselines, in table order."""
PRESETS = ("quick", "full")
ENV_ID = "IRLVLA-Navsim-v2"


@dataclass
class RunConfig:
    """Every setting of one baseline run (one variant, one seed).

    Attributes:
        variant: name (row of the table; a directory under the output root).
        algorithm: ``"ppo"`` (SB3 PPO, :class:`baselines.anchor.PPOWithAnchor` when ``bc["weight"] > 0``),
            ``"dppo"`` (diffusion PPO over the denoising chain, :mod:`baselines.dppo`) or ``"plugin"`` (any algorithm
            of the ``irlvla_gym.algorithms`` entry points, ``module:attr`` or a built-in SB3 name, trained on the same
            env by :func:`irlvla_gym.agents.train_algorithm`; see :mod:`baselines.plugin`).
        plugin: the algorithm spec for ``algorithm="plugin"``; ``plugin_kwargs``: extra constructor arguments (SB3).
        policy: ``"vla"`` (:class:`irlvla_gym.policies.VLAPolicy` initialised from ``pretrained``) or ``"cnn"``
            (SB3 ``MultiInputPolicy`` from scratch: NatureCNN on ``bev`` + MLP on ``ego``).
        pretrained: VLA checkpoint (``bc_default``, ``bc_diffusion`` = :data:`baselines.pretrain.BC_DIFFUSION`, or a
            directory); ignored for ``policy="cnn"``.
        reward: ``"epdms"``, ``"rwm"`` or ``"rwm:<checkpoint dir>"`` (the env's ``reward``).
        total_timesteps: env steps of training (one step = one planned scene).
        n_envs: parallel envs of the vector env.
        vec_env: ``"auto"`` (native batched vector env when its SB3 adapter exists, else DummyVecEnv), ``"native"``
            or ``"dummy"``. DPPO always uses the native gymnasium vector env.
        env: ``IRLVLA-Navsim-v2`` keyword arguments (:class:`irlvla_gym.envs.EnvConfig` fields) except ``reward``.
        ppo: SB3 ``PPO`` keyword arguments (n_steps per env, batch_size, n_epochs, learning_rate, ...).
        policy_kwargs: SB3 ``policy_kwargs`` (``log_std_init`` etc.; ``pretrained_path`` is set from ``pretrained``).
        bc: the behaviour-cloning anchor (:class:`baselines.anchor.BCAnchor`): ``weight`` (0 = off), ``kind``
            (``"nll"``: log-likelihood of the expert action, ``"mse"``: of the mean), ``batch_size``, ``num_scenes``
            (expert plans of the first N training scenes; None = the env's scenes).
        dppo: :class:`baselines.dppo.DPPOConfig` fields.
        eval: ``split`` and ``num_scenes`` of the evaluation (rule-based scorer, leaderboard protocol).
        checkpoint_every: env steps between checkpoints (at the end of an update).
        hook_interval: env steps between training-hook calls (0 = never); ``hooks``: hook specs
            (``{"class": "module:Class", "kwargs": {...}}``, see :mod:`baselines.hooks`).
        rwm_cache_size: scene encodings the learned reward keeps (>= the number of training scenes avoids
            re-encoding a scene).
    """

    variant: str
    algorithm: str = "ppo"
    policy: str = "vla"
    pretrained: str | None = "bc_default"
    reward: str = "epdms"
    total_timesteps: int = 4096
    n_envs: int = 8
    vec_env: str = "auto"
    env: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    bc: dict[str, Any] = field(default_factory=lambda: {"weight": 0.0})
    dppo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=lambda: {"split": "synthetic-test", "num_scenes": 100})
    checkpoint_every: int = 1024
    hook_interval: int = 0
    hooks: list[dict[str, Any]] = field(default_factory=list)
    rwm_cache_size: int = 4096
    description: str = ""
    plugin: str | None = None
    plugin_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algorithm not in ("ppo", "dppo", "plugin"):
            raise ValueError(f"algorithm must be 'ppo', 'dppo' or 'plugin', got {self.algorithm!r}")
        if self.algorithm == "plugin" and not self.plugin:
            raise ValueError("algorithm 'plugin' needs `plugin: <algorithm name or module:attr>`")
        if self.policy not in ("vla", "cnn"):
            raise ValueError(f"policy must be 'vla' or 'cnn', got {self.policy!r}")
        if self.vec_env not in ("auto", "native", "dummy"):
            raise ValueError(f"vec_env must be 'auto', 'native' or 'dummy', got {self.vec_env!r}")
        if callable(self.reward):
            raise ValueError("a run's reward must be a name ('epdms', 'rwm', 'rwm:<dir>', ...): it is written to the "
                             "run's config.json; register a custom reward with irlvla_gym.rewards.register_reward")
        parse_reward(self.reward)
        if self.total_timesteps < 1 or self.n_envs < 1:
            raise ValueError("total_timesteps and n_envs must be >= 1")

    @property
    def learned_reward(self) -> bool:
        return parse_reward(self.reward).learned

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"presets"})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid: {sorted(names)}")
        return cls(**{k: copy.deepcopy(v) for k, v in values.items() if k in names})


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in (nested dicts merge, everything else is replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"ppo.learning_rate=3e-5"`` -> ``{"ppo": {"learning_rate": 3e-05}}`` (the value parsed as yaml)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    value: Any = yaml.safe_load(raw)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def config_path(variant_or_path: str | Path) -> Path:
    """The yaml file of a variant name (``baselines/configs/<variant>.yaml``) or a path."""
    p = Path(variant_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    shipped = CONFIG_DIR / f"{variant_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"no baseline config {variant_or_path!r}: give a variant {list(VARIANTS)} or a yaml path")


def load_config(variant_or_path: str | Path, preset: str | None = "quick",
                overrides: Sequence[str | Mapping[str, Any]] = ()) -> RunConfig:
    """Read a variant's yaml, apply the preset (``None``: none) and the overrides, in that order."""
    path = config_path(variant_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    presets = raw.pop("presets", {}) or {}
    values = raw
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"{path.name} has no preset {preset!r} (has {sorted(presets)})")
        values = deep_merge(values, presets[preset])
    for item in overrides:
        values = deep_merge(values, parse_override(item) if isinstance(item, str) else item)
    return RunConfig.from_dict(values)


__all__ = ["CONFIG_DIR", "ENV_ID", "PRESETS", "RunConfig", "VARIANTS", "config_path", "deep_merge", "load_config",
           "parse_override"]
