"""Settings of the reward-hacking experiment: the budgets of each preset and the ``irlvla hacking run`` flags.

* :class:`HackingBudget`: what a preset fixes (probe and evaluation scenes, the RWM dataset size, the remedies'
  settings, the ppo-vla-rwm overrides); :data:`PRESETS` (an :class:`irlvla_gym.configs.Presets`, the project's one
  preset mechanism) holds ``quick`` (the defaults) and ``full`` as overrides of it.
* :class:`HackingConfig`: one ``irlvla hacking run`` (each field is the flag of the same name).

Light on purpose (no torch / SB3): ``irlvla --help`` builds the parser from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from irlvla_gym.configs import Presets, option

REMEDIES = ("none", "ensemble", "refit", "anchor")


@dataclass(frozen=True)
class HackingBudget:
    """Budgets of one preset of the experiment (defaults: ``quick``)."""

    run_preset: str = "quick"
    """preset of baselines/configs/ppo-vla-rwm.yaml the runs start from"""
    run: Mapping[str, Any] = field(default_factory=lambda: {"total_timesteps": 4096})
    """overrides of the ppo-vla-rwm run config (quick: 8 envs x 64 steps = 512 plans per update)"""
    probe_scenes: int = 32
    """scenes of the fixed probe set"""
    probe_split: str = "synthetic-val"
    """split of the probe set"""
    probe_every: int = 512
    """env steps between probe measurements"""
    eval_scenes: int = 50
    """synthetic-test scenes of the final evaluation (rule-based scorer)"""
    eval_split: str = "synthetic-test"
    """split of the final evaluation"""
    rwm_data_scenes: int = 256
    """synthetic-train scenes of the RWM dataset (ensemble members and refit)"""
    remedy: Mapping[str, Any] = field(default_factory=lambda: {
        "ensemble_members": 3, "ensemble_beta": 1.0, "ensemble_epochs": 24, "refit_every": 1024,
        "refit_max_plans": 256, "refit_steps": 20, "anchor_kind": "kl", "anchor_weight": 0.01})
    """baselines.hacking.remedies.RemedyConfig fields of every remedy"""


PRESETS = Presets("the hacking experiment", {
    "quick": {},
    "full": {
        "run_preset": "full",
        "run": {"total_timesteps": 100000, "env": {"num_scenes": 2000}},
        "probe_scenes": 64, "probe_every": 4096, "eval_scenes": 300, "rwm_data_scenes": 2400,
        "remedy": {"ensemble_members": 4, "ensemble_epochs": 4, "refit_every": 8192, "refit_max_plans": 1024,
                   "refit_steps": 50},
    },
})
PRESET_NAMES = tuple(PRESETS)


def budget(preset: str) -> HackingBudget:
    """The budgets of ``preset`` (ValueError naming the known presets otherwise)."""
    return PRESETS.apply(HackingBudget(), preset)


@dataclass
class HackingConfig:
    """One ``irlvla hacking run`` (:func:`baselines.hacking.experiment.run_experiment`)."""

    preset: str = option("quick", choices=PRESET_NAMES)
    """budgets of the experiment (baselines.hacking.config.PRESETS)"""
    out: str = "runs/hacking"
    """output root"""
    remedies: tuple[str, ...] = option(REMEDIES, choices=REMEDIES)
    """remedies to run, each in its own ppo-vla-rwm run ('none': the baseline)"""
    seeds: tuple[int, ...] = (0,)
    """seeds of every remedy"""
    rwm_data: str | None = None
    """an RWM dataset directory (default: build OUT/rwm_data)"""
    rwm_data_scenes: int | None = None
    """scenes of the RWM dataset (build / use; default: the preset's)"""
    overrides: list[str] = option(default_factory=list, flag="--set", action="append", metavar="KEY=VALUE")
    """ppo-vla-rwm config override key.sub=value (repeatable; as irlvla baselines)"""
    workers: int = 1
    """processes building the RWM dataset"""
    progress: bool = True
    """progress bars"""

    def __post_init__(self) -> None:
        PRESETS.resolve(self.preset)
        unknown = [r for r in self.remedies if r not in REMEDIES]
        if unknown:
            raise ValueError(f"remedy must be among {REMEDIES}, got {unknown}")

    @property
    def budget(self) -> HackingBudget:
        return budget(self.preset)


__all__ = ["HackingBudget", "HackingConfig", "PRESETS", "PRESET_NAMES", "REMEDIES", "budget"]
