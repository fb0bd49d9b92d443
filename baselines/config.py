"""Run configuration of a baseline: one yaml file per variant (``baselines/configs/<variant>.yaml``) with presets.

A config file holds the variant's settings at the top level and a ``presets:`` section whose entries (``quick``,
``full``) override some of them (deep merge; :class:`irlvla_gym.configs.Presets`, the project's one preset
mechanism). ``--set key.sub=value`` flags override last (values parsed as yaml)::

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

The sections ``ppo``, ``dppo``, ``bc`` and ``eval`` are typed (:class:`PPOConfig`, :class:`DPPOConfig`,
:class:`BCAnchorConfig`, :class:`EvaluationConfig`: a misspelt key fails with the valid ones); ``env`` stays the
``IRLVLA-Navsim-v2`` keyword mapping and is checked against :class:`irlvla_gym.envs.config.EnvConfig`. A run's
``config.json`` is :meth:`RunConfig.to_dict` (every typed section in full) plus its seed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from irlvla_gym.configs import Presets, deep_merge, from_mapping, option
from irlvla_gym.rewards import parse_reward

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
VARIANTS = ("ppo-cnn-epdms", "ppo-vla-epdms", "ppo-vla-rwm", "ppo-vla-rwm-greedy", "ppo-vla-rwm-bc", "dppo-vla-rwm")
"""The six baselines, in table order."""
PRESETS = ("quick", "full", "paper")
"""The preset names every shipped config file defines (``--preset``)."""
ENV_ID = "IRLVLA-Navsim-v2"


# ---- typed sections -------------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    """SB3 ``PPO`` hyperparameters (the ``ppo:`` section; the defaults are SB3's)."""

    n_steps: int = 2048
    """env steps per env and rollout"""
    batch_size: int = 64
    """minibatch size (plans)"""
    n_epochs: int = 10
    """passes over each rollout"""
    learning_rate: float = 3e-4
    """Adam step size"""
    gamma: float = 0.99
    """discount (plan-once episodes are one step long: the advantage is r - V(s))"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_range: float = 0.2
    """PPO clip of the probability ratio"""
    clip_range_vf: float | None = None
    """clip of the value update (None: off)"""
    normalize_advantage: bool = True
    """per-minibatch advantage normalisation"""
    ent_coef: float = 0.0
    """entropy bonus weight"""
    vf_coef: float = 0.5
    """value-loss weight"""
    max_grad_norm: float = 0.5
    """gradient-norm clipping"""
    target_kl: float | None = None
    """stop an update early at this approximate KL (None: off)"""

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of SB3's ``PPO``."""
        return dataclasses.asdict(self)


@dataclass
class DPPOConfig:
    """DPPO settings (the ``dppo:`` section; the run's ``total_timesteps`` / ``n_envs`` apply;
    :mod:`baselines.dppo`)."""

    n_steps: int = 64
    """env steps per env and rollout"""
    batch_size: int = 128
    """minibatch size (plans)"""
    n_epochs: int = 2
    """passes over each rollout"""
    learning_rate: float = 3e-5
    """Adam step of the encoder and the diffusion head"""
    critic_learning_rate: float = 1e-3
    """Adam step of the critic"""
    clip_range: float = 0.1
    """PPO clip of every denoising step's ratio"""
    vf_coef: float = 0.5
    """value-loss weight"""
    max_grad_norm: float = 1.0
    """gradient-norm clipping"""
    gamma: float = 0.99
    """GAE discount (irrelevant for one-step episodes)"""
    gae_lambda: float = 0.95
    """GAE lambda (irrelevant for one-step episodes)"""
    ft_denoising_steps: int = 4
    """k, the last denoising steps that are stochastic and trained (1 <= k <= K)"""
    denoise_std: float = 0.05
    """sigma of every trained step (normalised action units; the action is x_0)"""
    freeze_encoder: bool = False
    """train only the diffusion head and the critic"""
    normalize_advantage: bool = True
    """per-minibatch advantage normalisation"""
    target_kl: float | None = None
    """stop an update early at this approximate KL (None: off)"""
    bc_weight: float = 0.0
    """weight of the BC anchor (the head's denoising loss on expert plans; 0: off)"""
    bc_batch_size: int = 64
    """expert plans per BC-anchor minibatch"""


@dataclass
class BCAnchorConfig:
    """The behaviour-cloning anchor of PPO (the ``bc:`` section; :class:`baselines.anchor.BCAnchor`)."""

    weight: float = 0.0
    """weight of the BC term in PPO's loss (0: off)"""
    kind: Literal["nll", "mse", "complement", "kl"] = "nll"
    """nll: log-likelihood of the expert action; mse: squared error of the policy's mean action; complement: no
    expert actions, the squared change of the mean action against the pretrained policy in the directions the smooth
    exploration never samples (baselines.anchor.ComplementAnchor); kl: KL(policy || pretrained policy) on the
    training scenes' observations (baselines.anchor.ReferenceKLAnchor)"""
    batch_size: int = 64
    """expert plans per minibatch"""
    num_scenes: int | None = None
    """expert plans of the first N training scenes (None: the env's scenes)"""
    targets: Literal["expert", "reward-greedy"] = "expert"
    """expert: the logged plans; reward-greedy: per scene the run's learned reward's pick among the pretrained
    policy's plan and greedy_samples smooth perturbations of it (kinds nll / mse)"""
    greedy_samples: int = 16
    """smooth perturbations per scene of targets reward-greedy"""


@dataclass
class DistillConfig:
    """Reward-greedy distillation before RL (the ``distill:`` section; :mod:`baselines.distill`): the pretrained
    policy is fine-tuned by supervised learning toward a learned reward's greedy picks around its own plans
    (:mod:`reward_models.greedy`), and RL starts from the result. Off while ``epochs`` is 0."""

    epochs: int = 0
    """supervised passes over the scenes (0: no distillation)"""
    reward: str = "smooth"
    """reward world model that picks (shipped name or checkpoint directory), or epdms: the rule-based scorer picks
    (a comparison recipe, not IRL-VLA)"""
    num_scenes: int = 4000
    """the first N scenes of the run's training split / store"""
    samples: int = 16
    """smooth perturbations per scene"""
    safety_margin: float | None = 0.02
    """a pick may predict NC, DAC and TTC at most this much below the policy's own plan (None: plain argmax)"""
    lr: float = 3e-4
    """peak learning rate (AdamW, warm-up then cosine decay, as irlvla bc)"""
    batch_size: int = 64
    """scenes per update"""
    val_scenes: int = 200
    """synthetic-val scenes of the fine-tuning's validation ADE / FDE (against the expert)"""
    val_score_scenes: int = 64
    """of those, scored with EPDMS after the last epoch"""


@dataclass
class EvaluationConfig:
    """The evaluation of a finished run (the ``eval:`` section): rule-based scorer, leaderboard protocol."""

    split: str = "synthetic-test"
    """synthetic split or scene-store directory"""
    num_scenes: int | None = 100
    """the first N scenes (None: all)"""


# ---- one run ---------------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Every setting of one baseline run (one variant, one seed)."""

    variant: str
    """name (row of the table; a directory under the output root)"""
    algorithm: Literal["ppo", "dppo", "plugin"] = "ppo"
    """ppo: SB3 PPO (baselines.anchor.PPOWithAnchor when bc.weight > 0); dppo: diffusion PPO over the denoising chain
    (baselines.dppo); plugin: any algorithm of the irlvla_gym.algorithms entry points, module:attr or a built-in
    SB3 name, trained on the same env by irlvla_gym.agents.train_algorithm (baselines.plugin)"""
    policy: Literal["vla", "cnn"] = "vla"
    """vla: irlvla_gym.policies.VLAPolicy initialised from `pretrained`; cnn: SB3 MultiInputPolicy from scratch
    (NatureCNN on bev + MLP on ego)"""
    pretrained: str | None = "bc_default"
    """VLA checkpoint (bc_default, bc_diffusion = baselines.pretrain.BC_DIFFUSION, or a directory); ignored for
    policy cnn"""
    reward: str = "epdms"
    """the env's reward: epdms, rwm or rwm:<checkpoint dir> (irlvla_gym.rewards)"""
    total_timesteps: int = 4096
    """env steps of training (one step = one planned scene)"""
    n_envs: int = 8
    """parallel envs of the vector env"""
    vec_env: Literal["auto", "native", "dummy"] = "auto"
    """auto: the native batched vector env when its SB3 adapter exists, else DummyVecEnv; DPPO always uses the native
    gymnasium vector env"""
    env: dict[str, Any] = field(default_factory=dict)
    """IRLVLA-Navsim-v2 keyword arguments (irlvla_gym.envs.EnvConfig fields) except reward"""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """SB3 PPO hyperparameters"""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """SB3 policy_kwargs (log_std_init etc.; pretrained_path is set from `pretrained`)"""
    bc: BCAnchorConfig = field(default_factory=BCAnchorConfig)
    """the behaviour-cloning anchor of PPO"""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """reward-greedy distillation of the pretrained policy before RL (off by default)"""
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    """DPPO hyperparameters (algorithm dppo)"""
    eval: EvaluationConfig = field(default_factory=EvaluationConfig)
    """evaluation split and scene count"""
    checkpoint_every: int = 1024
    """env steps between checkpoints (at the end of an update)"""
    hook_interval: int = 0
    """env steps between training-hook calls (0: never)"""
    hooks: list[dict[str, Any]] = field(default_factory=list)
    """hook specs ({"class": "module:Class", "kwargs": {...}}, see baselines.hooks)"""
    reward_baseline: Literal["none", "mean-plan", "group"] = "none"
    """none: PPO's advantage is reward - V(s); mean-plan: the reward paid is reward(sampled plan) - reward(the
    policy's mean plan) on the same scene (a self-critical per-scene baseline, scored by the env without stepping;
    baselines.envs.SelfCriticalReward); group: each step plans scene_group_size samples of one scene and each is
    paid its reward minus the mean of the others' (leave-one-out, baselines.envs.GroupRelativeReward). Plan-once
    env, algorithm ppo"""
    scene_group_size: int = 1
    """envs per scene group (reward_baseline group: >= 2, divides n_envs): a group's envs plan the same scene"""
    rwm_cache_size: int = 4096
    """scene encodings the learned reward keeps (>= the number of training scenes avoids re-encoding a scene)"""
    description: str = ""
    """one line for the table"""
    plugin: str | None = None
    """the algorithm spec of algorithm plugin"""
    plugin_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra constructor arguments of the plug-in algorithm (SB3)"""

    def __post_init__(self) -> None:
        if self.algorithm not in ("ppo", "dppo", "plugin"):
            raise ValueError(f"algorithm must be 'ppo', 'dppo' or 'plugin', got {self.algorithm!r}")
        if self.algorithm == "plugin" and not self.plugin:
            raise ValueError("algorithm 'plugin' needs `plugin: <algorithm name or module:attr>`")
        if self.policy not in ("vla", "cnn"):
            raise ValueError(f"policy must be 'vla' or 'cnn', got {self.policy!r}")
        if self.reward_baseline not in ("none", "mean-plan", "group"):
            raise ValueError(f"reward_baseline must be 'none', 'mean-plan' or 'group', got {self.reward_baseline!r}")
        if (self.reward_baseline == "group") != (self.scene_group_size > 1) or self.n_envs % self.scene_group_size:
            raise ValueError(f"reward_baseline 'group' goes with scene_group_size >= 2 dividing n_envs ({self.n_envs})"
                             f" and scene_group_size > 1 with reward_baseline 'group'; got {self.reward_baseline!r}, "
                             f"scene_group_size {self.scene_group_size}")
        if self.reward_baseline != "none" and self.algorithm != "ppo":
            raise ValueError(f"reward_baseline {self.reward_baseline!r} is implemented for algorithm 'ppo' only")
        if self.vec_env not in ("auto", "native", "dummy"):
            raise ValueError(f"vec_env must be 'auto', 'native' or 'dummy', got {self.vec_env!r}")
        if callable(self.reward):
            raise ValueError("a run's reward must be a name ('epdms', 'rwm', 'rwm:<dir>', ...): it is written to the "
                             "run's config.json; register a custom reward with irlvla_gym.rewards.register_reward")
        parse_reward(self.reward)
        if self.total_timesteps < 1 or self.n_envs < 1:
            raise ValueError("total_timesteps and n_envs must be >= 1")
        self.ppo = from_mapping(PPOConfig, self.ppo or {}, owner="ppo")
        self.dppo = from_mapping(DPPOConfig, self.dppo or {}, owner="dppo")
        self.bc = from_mapping(BCAnchorConfig, self.bc or {}, owner="bc")
        self.distill = from_mapping(DistillConfig, self.distill or {}, owner="distill")
        if self.distill.epochs > 0 and (self.policy != "vla" or self.algorithm == "plugin"):
            raise ValueError("distill needs policy 'vla' and algorithm 'ppo' or 'dppo' (it fine-tunes the pretrained "
                             f"VLA), got policy {self.policy!r}, algorithm {self.algorithm!r}")
        if self.bc.targets == "reward-greedy" and (self.policy != "vla" or not parse_reward(self.reward).learned):
            raise ValueError("bc.targets 'reward-greedy' needs policy 'vla' and a learned reward (the reward picks "
                             f"the targets), got policy {self.policy!r}, reward {self.reward!r}")
        self.eval = from_mapping(EvaluationConfig, self.eval or {}, owner="eval")
        self.env = dict(self.env or {})
        _check_env(self.env)

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


def _check_env(env: Mapping[str, Any]) -> None:
    """``env`` must make an :class:`~irlvla_gym.envs.config.EnvConfig` (the env's own check, run early)."""
    from irlvla_gym.envs.config import EnvConfig

    if "reward" in env:
        raise ValueError("env.reward: set the run's `reward` instead (it is made once and shared by the envs)")
    try:
        EnvConfig.from_kwargs(dict(env))
    except TypeError as exc:
        raise ValueError(f"env: {exc}") from None


# ---- yaml files, presets, overrides --------------------------------------------------------------------------------


def parse_override(text: str) -> dict[str, Any]:
    """``"ppo.learning_rate=3e-5"`` -> ``{"ppo": {"learning_rate": 3e-05}}`` (the value parsed as yaml)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    value: Any = yaml.safe_load(raw)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


@dataclass
class Overrides:
    """Config overrides given on the command line, applied after the preset in this order: every ``--set``, then the
    shortcuts."""

    sets: list[str] = option(default_factory=list, flag="--set", action="append", metavar="KEY=VALUE")
    """config override key.sub=value, the value parsed as yaml (repeatable)"""
    unsets: list[str] = option(default_factory=list, flag="--unset", action="append", metavar="KEY")
    """remove key.sub from the config (e.g. another algorithm's plugin_kwargs entry; repeatable; before --set)"""
    timesteps: int | None = None
    """env steps per run (total_timesteps)"""
    num_scenes: int | None = None
    """training scene pool (env.num_scenes)"""
    eval_scenes: int | None = None
    """evaluation scenes (eval.num_scenes)"""
    n_envs: int | None = None
    """parallel envs"""

    def as_list(self) -> list[str]:
        """The overrides as ``key.sub=value`` strings (what :func:`load_config` and the run reports take)."""
        out = [f"~{key}" for key in self.unsets] + list(self.sets)
        for key, value in (("total_timesteps", self.timesteps), ("env.num_scenes", self.num_scenes),
                           ("eval.num_scenes", self.eval_scenes), ("n_envs", self.n_envs)):
            if value is not None:
                out.append(f"{key}={value}")
        return out


def config_path(variant_or_path: str | Path) -> Path:
    """The yaml file of a variant name (``baselines/configs/<variant>.yaml``) or a path."""
    p = Path(variant_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    shipped = CONFIG_DIR / f"{variant_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"no baseline config {variant_or_path!r}: give a variant {list(VARIANTS)} or a yaml path")


def read_config(variant_or_path: str | Path) -> tuple[dict[str, Any], Presets]:
    """A config file's settings and its ``presets:`` section."""
    path = config_path(variant_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    return raw, Presets(path.name, raw.pop("presets", {}) or {})


def load_config(variant_or_path: str | Path, preset: str | None = "quick",
                overrides: Sequence[str | Mapping[str, Any]] = ()) -> RunConfig:
    """Read a variant's yaml, apply the preset (``None``: none) and the overrides, in that order."""
    values, presets = read_config(variant_or_path)
    values = presets.apply(values, preset)
    for item in overrides:
        if isinstance(item, str) and item.startswith("~"):
            values = remove_key(values, item[1:])
        else:
            values = deep_merge(values, parse_override(item) if isinstance(item, str) else item)
    return RunConfig.from_dict(values)


def remove_key(values: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``values`` without ``key.sub`` (``--unset``; a deep merge can only add or replace keys)."""
    out = copy.deepcopy(dict(values))
    *parents, last = key.strip().split(".")
    node: Any = out
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise ValueError(f"--unset {key}: no such key in the config")
    del node[last]
    return out


__all__ = ["BCAnchorConfig", "CONFIG_DIR", "DPPOConfig", "DistillConfig", "ENV_ID", "EvaluationConfig", "Overrides", "PPOConfig",
           "PRESETS", "RunConfig", "VARIANTS", "config_path", "deep_merge", "load_config", "parse_override",
           "read_config", "remove_key"]
