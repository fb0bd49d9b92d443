"""Exploration distributions of the VLA's plan head: how good are the plans PPO samples, and can the learned reward
tell them apart?

Run ``python -m benchmarks.exploration`` (a table) or ``--json``. For each of ``--scenes`` scenes of ``--split``
(default synthetic-val: no recipe tunes on it... except this benchmark's choice of stds), it plans with the BC
checkpoint (``--policy``, default ``bc_default``), draws ``--k`` samples around the plan from each exploration
family and scores the BC plan and the samples with the rule-based scorer (NAVSIM v2 protocol: EP normalised by
PDM-Closed, human filter) and with the reward world model (``--reward``, default the shipped one):

* ``diagonal s``: SB3's diagonal Gaussian, std ``s`` on every normalised plan number (the recipes' -4 log-std is
  s = 0.018);
* ``smooth xm``: :func:`irlvla_gym.plans.exploration.perturb_actions` at ``m`` x the default stds.

Columns (means over scenes, EPDMS as fractions): ``sample`` mean EPDMS of the samples, ``hc`` their history comfort,
``best`` best of {BC plan, samples} by the scorer, ``rwm pick`` the scorer's EPDMS of the plan the RWM ranks first,
``pick gain`` that minus the BC plan's (what one greedy step on the learned reward gains), ``rho`` within-scene
Spearman of RWM vs scorer over {BC plan, samples} (scenes where all samples tie are skipped).

``--swap`` adds, for the ``smooth x1`` family, the pick gain when the model's prediction of one sub-score is replaced
by the scorer's value in the model's own EPDMS composition (``true nc`` ... ``true hc``): which head's errors cost the
greedy pick most.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, report  # noqa: E402


def families() -> dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]]:
    """name -> sampler(mean action (24,), k, rng) -> (k, 24) unclipped actions."""
    from irlvla_gym.plans.exploration import SMOOTH_STD, perturb_actions

    def diagonal(std: float):
        return lambda a, k, rng: a[None] + std * rng.standard_normal((k, a.size))

    def smooth(scale: float):
        return lambda a, k, rng: perturb_actions(a, k, rng, std=np.asarray(SMOOTH_STD) * scale)

    return {"diagonal 0.018": diagonal(0.018), "diagonal 0.05": diagonal(0.05), "smooth x0.5": smooth(0.5),
            "smooth x1": smooth(1.0), "smooth x2": smooth(2.0)}


def swap_gains(rwm: Any, scene: Any, plans: np.ndarray, scored: Any) -> dict[str, float]:
    """Pick gain (vs plan 0) with each sub-score's prediction replaced by the scorer's value."""
    import torch

    from irlvla_gym.metrics.config import DEFAULT_CONFIG, SUB_SCORES
    from irlvla_gym.metrics.result import epdms

    true = np.asarray(scored.epdms, np.float64)
    with torch.no_grad():
        expected = rwm.model.score(rwm.encode(scene), plans.astype(np.float32)).expected
    use_ec = bool(rwm.model.config.use_ec)  # the model composes EC only when it predicts it
    names = [n for n in SUB_SCORES if use_ec or n != "ec"]
    predicted = {n: expected[n][0].numpy().astype(np.float64) for n in names}
    out = {}
    for name in names:  # the model's composition is the metric's EPDMS of its expected sub-scores
        mixed = epdms({**predicted, name: np.asarray(getattr(scored, name), np.float64)}, DEFAULT_CONFIG,
                      has_ec=use_ec)
        out[f"true {name}"] = float(true[int(np.argmax(mixed))] - true[0])
    return out


def measure(split: str, num_scenes: int, k: int, policy: str, reward: str | None, seed: int,
            swap: bool = False) -> dict[str, Any]:
    from baselines.evaluate import VLANetworkAgent
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.obs.config import ObsConfig
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.planners import default_planner
    from irlvla_gym.plans.codec import action_to_plan, plan_to_action
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.metrics import spearman
    from reward_models.reward_fn import SceneRewardFn

    source = SceneSource(split)
    agent = VLANetworkAgent(policy, "bc")
    builder = ObservationBuilder(agent.obs_keys, ObsConfig())
    reference = default_planner("log")
    rwm = SceneRewardFn(reward)
    fams = families()
    cols = ("bc", "sample", "hc", "best", "rwm_pick", "pick_gain", "rho")
    out = {name: {c: [] for c in cols} for name in fams}
    swaps: dict[str, list[float]] = {}
    rng = np.random.default_rng(seed)
    t0 = time.process_time()
    for index in range(min(num_scenes, len(source))):
        scene = source.load(index)
        plan = agent.plan(builder.observe(scene), scene)
        mean = plan_to_action(plan).reshape(-1)
        ctx = reference.context(scene)
        progress = reference.run(scene, ctx).reference_progress
        for name, sample in fams.items():
            acts = np.clip(sample(mean, k, rng), -1.0, 1.0)
            plans = np.concatenate([plan[None], action_to_plan(acts).reshape(k, 8, 3)])
            scored = score_plans(scene, plans, reference_progress=progress, context=ctx)
            true, hc = np.asarray(scored.epdms), np.asarray(scored.hc)
            pred = rwm.score(scene, plans)
            row = out[name]
            row["bc"].append(true[0])
            row["sample"].append(true[1:].mean())
            row["hc"].append(hc[1:].mean())
            row["best"].append(true.max())
            row["rwm_pick"].append(true[int(np.argmax(pred))])
            row["pick_gain"].append(true[int(np.argmax(pred))] - true[0])
            row["rho"].append(spearman(pred, true))
            if swap and name == "smooth x1":
                for key, gain in swap_gains(rwm, scene, plans, scored).items():
                    swaps.setdefault(key, []).append(gain)
    cpu = time.process_time() - t0
    return {"families": {n: {c: float(np.nanmean(v)) for c, v in r.items()} for n, r in out.items()},
            "swaps": {k: float(np.mean(v)) for k, v in swaps.items()},
            "scenes": min(num_scenes, len(source)), "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="synthetic-val")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--k", type=int, default=16, help="samples per scene and family")
    parser.add_argument("--policy", default="bc_default")
    parser.add_argument("--reward", default=None, help="reward world model checkpoint (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--swap", action="store_true", help="smooth x1: pick gain with one sub-score made true")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()
    m = measure(args.split, args.scenes, args.k, args.policy, args.reward, args.seed, args.swap)
    results = []
    for name, row in m["families"].items():
        note = " ".join(f"{c}={row[c]:.3f}" for c in ("bc", "sample", "hc", "best", "rwm_pick", "rho"))
        results.append(BenchResult(f"{name}: rwm pick gain", row["pick_gain"], "EPDMS", note=note, extra=row))
    for key, gain in m["swaps"].items():
        results.append(BenchResult(f"smooth x1: pick gain with {key}", gain, "EPDMS"))
    meta = {"split": args.split, "scenes": m["scenes"], "k": args.k, "policy": args.policy,
            "reward": args.reward or "default", "cpu_s": m["cpu_s"], "loadavg_start": load0,
            "loadavg_end": os.getloadavg()}
    return report("exploration families (BC plan + k samples per scene)", results, as_json=args.json, meta=meta)


if __name__ == "__main__":
    raise SystemExit(main())
