"""Reward hacking of PPO on the learned reward: measure it, counter it.

* :mod:`~baselines.hacking.probe`: :class:`RewardHackingProbe` (SB3 callback) and :class:`ProbeHook` (baselines
  training hook): the policy's plans on a fixed probe set scored by the reward model and by the rule-based scorer;
  gap, per-sub-score disagreement, over-rated fraction; TensorBoard scalars and a PNG.
* :mod:`~baselines.hacking.remedies`: the ensemble reward (``reward_models.ensemble``), relabel-and-refit
  (:class:`RelabelRefitCallback`, ``reward_models.refit``) and the KL / BC anchor (``baselines.anchor``).
* :mod:`~baselines.hacking.experiment`: ``irlvla hacking run``: ppo-vla-rwm with each remedy off and on; table and
  gap curves (:mod:`~baselines.hacking.report`). See README.md.
* :mod:`~baselines.hacking.config`: the presets' budgets and the ``irlvla hacking run`` flags (light).
"""

import importlib
from typing import Any

from baselines.hacking.config import PRESET_NAMES, REMEDIES

_LAZY = {"ProbeHook": "probe", "ProbeSet": "probe", "ProbeTracker": "probe", "RewardHackingProbe": "probe",
         "RelabelRefitCallback": "remedies", "RemedyConfig": "remedies"}


def __getattr__(name: str) -> Any:  # lazy: `irlvla --help` must not import SB3 / torch
    if name in _LAZY:
        return getattr(importlib.import_module(f"baselines.hacking.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'baselines.hacking' has no attribute {name!r}")


__all__ = ["PRESET_NAMES", "REMEDIES", *_LAZY]
