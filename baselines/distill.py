"""Reward-greedy distillation, the first part of a run with a ``distill:`` section (before PPO / DPPO).

For run directory ``R`` (all resumable; a finished step is not redone):

1. ``R/distill/greedy_plans.npz``: the learned reward's greedy picks around the pretrained policy's plans on the
   first ``distill.num_scenes`` training scenes (:func:`reward_models.greedy.greedy_plans`, perturbations seeded by
   the run's seed); the same file ``irlvla rwm greedy-plans`` writes;
2. ``R/distill/policy/``: the pretrained policy fine-tuned toward those plans by ``irlvla bc``'s trainer
   (``--init <pretrained> --target-plans R/distill/greedy_plans.npz``, MSE of the mean plan, ``distill.epochs``
   passes at peak learning rate ``distill.lr``; validation ADE on ``distill.val_scenes`` synthetic-val scenes
   against the expert, EPDMS of ``distill.val_score_scenes`` of them after the last epoch); its
   ``model.safetensors`` + ``config.json`` become the run's pretrained checkpoint.

Observations are rendered with the default ``ObsConfig`` (as ``irlvla bc`` does), whatever the run's env settings.
Only the learned reward teaches here (no scorer, no expert plans of the training scenes): the step belongs to
IRL-VLA's stage 3 like PPO itself. Equivalent commands::

    irlvla rwm greedy-plans --policy bc_default --reward smooth --num-scenes 4000 --seed S --out R/distill/greedy_plans.npz
    irlvla bc --init bc_default --target-plans R/distill/greedy_plans.npz --num-scenes 4000 --epochs 20 --lr 3e-4 \\
        --seed S --out R/distill/policy
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baselines.config import RunConfig


def distilled_policy(cfg: RunConfig, seed: int, run_dir: Path, progress: bool = True) -> str:
    """Run (or resume) the distillation of a run and return the distilled checkpoint directory (module docs)."""
    from baselines.pretrain import resolve_pretrained
    from irlvla_gym.policies.bc import BCConfig, train_bc

    d = cfg.distill
    out = Path(run_dir) / "distill"
    policy_dir = out / "policy"
    if (policy_dir / "model.safetensors").is_file() and (policy_dir / "bc_metrics.json").is_file() \
            and _epochs_done(policy_dir) >= d.epochs:
        return str(policy_dir)
    pretrained = resolve_pretrained(cfg.pretrained or "bc_default")
    scenes, split = cfg.env.get("scenes"), cfg.env.get("split", "synthetic-train")
    plans = out / "greedy_plans.npz"
    if not plans.is_file():
        _write_greedy_plans(pretrained, d, scenes, split, seed, plans, progress)
    bc = BCConfig(out=str(policy_dir), split=split, scenes=scenes, num_scenes=d.num_scenes, epochs=d.epochs,
                  batch_size=d.batch_size, lr=d.lr, init=pretrained, target_plans=str(plans), seed=seed,
                  num_val_scenes=d.val_scenes, val_score_scenes=d.val_score_scenes, score_every=d.epochs,
                  tensorboard=False, progress=progress)
    train_bc(bc)
    return str(policy_dir)


def _write_greedy_plans(pretrained: str, d: Any, scenes: str | None, split: str, seed: int, path: Path,
                        progress: bool) -> None:
    from irlvla_gym.agents import VLANetworkAgent
    from irlvla_gym.plans.files import save_plans
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.greedy import candidate_scores_of, greedy_plans

    source = SceneSource(scenes, split=split, num_scenes=d.num_scenes)
    picks = greedy_plans(VLANetworkAgent(pretrained), candidate_scores_of(d.reward), source, d.samples,
                         d.safety_margin, seed, progress=progress)
    print(f"[baselines] distill: greedy plans of {d.reward!r}: {picks.summary()}")
    save_plans(path, picks.tokens, picks.plans)


def distill_seconds(run_dir: Path, this_call_s: float) -> float:
    """Wall seconds the run's distillation took in all (``R/distill/timing.json`` accumulates across resumes)."""
    from baselines.common import read_json, write_json

    path = Path(run_dir) / "distill" / "timing.json"
    total = float(read_json(path)["seconds"]) if path.is_file() else 0.0
    if this_call_s > 0:
        total += this_call_s
        write_json(path, {"seconds": round(total, 3)})
    return total


def _epochs_done(policy_dir: Path) -> int:
    from baselines.common import read_json

    return int(read_json(policy_dir / "bc_metrics.json").get("epochs_done", 0))


__all__ = ["distill_seconds", "distilled_policy"]
