"""Baselines of IRL-VLA on identical environments: six PPO recipes, one table.

=================  ===============================================================================================
variant            recipe
=================  ===============================================================================================
ppo-cnn-epdms      SB3 PPO, MultiInputPolicy from scratch (bev + ego), rule-based reward
ppo-vla-epdms      the VLA from its BC checkpoint (bc_default), SB3 PPO, rule-based reward
ppo-vla-rwm        the VLA from BC, SB3 PPO, learned reward world model (IRL-VLA)
ppo-vla-rwm-bc     as ppo-vla-rwm + a behaviour-cloning term on expert plans (:mod:`baselines.anchor`)
dppo-vla-rwm       the diffusion-head VLA fine-tuned by PPO over its last denoising steps (:mod:`baselines.dppo`)
=================  ===============================================================================================

``irlvla baselines run --preset quick`` trains every variant x seed, evaluates them with the leaderboard (rule-based
scorer, synthetic-test) beside constant velocity, PDM-Closed, the logged human and BC alone, and writes the table
and learning curves. Modules: :mod:`~baselines.config` (yaml configs + presets), :mod:`~baselines.envs`,
:mod:`~baselines.sb3_ppo`, :mod:`~baselines.dppo`, :mod:`~baselines.anchor` (BC / KL anchor terms, shared with the
reward-hacking work), :mod:`~baselines.hooks` (training hooks at a fixed interval), :mod:`~baselines.evaluate`,
:mod:`~baselines.runner`, :mod:`~baselines.report`, :mod:`~baselines.cli`. See README.md.
"""

from baselines.config import VARIANTS, RunConfig, load_config

__all__ = ["VARIANTS", "RunConfig", "load_config"]
