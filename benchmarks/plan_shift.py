"""Where fine-tuned policies move their plans away from BC's, and whether the reward model agrees with the scorer
about lateral moves.

Run ``python -m benchmarks.plan_shift --runs RUN_DIR [RUN_DIR ...]`` (a table) or ``--json``. For the first
``--scenes`` scenes of ``--split`` (default synthetic-val) and, with ``--real``, the protocol's 113 real windows
(AV2 + nuScenes from ``../shared/data``), it plans with ``bc_default`` and with each run's policy and reports per run:

* ``end shift``: mean (dx, dy) in metres of the plan's last pose (4 s) against BC's, ego frame (y left);
* ``in span`` / ``outside``: rms of the normalised plan change (24 numbers) inside / outside the span of the smooth
  exploration directions (:func:`irlvla_gym.plans.exploration.smooth_basis`): the part outside is what PPO's ratio
  with ``exploration="smooth"`` never sees;
* ``worst windows``: the scenes where the run loses most EPDMS against BC (scorer, NAVSIM v2 protocol);
* ``ending behind the start``: scenes whose plan ends more than :data:`REVERSE_M` behind the ego's t0 position
  (x < -0.3 m at 4 s: the plan reverses), in all scenes and in the slow ones (t0 speed below :data:`SLOW_MPS`),
  for the run and for BC (no logged human plan here reverses), with the mean EPDMS the plans would have if they
  never reversed (x clamped non-negative and non-decreasing, :func:`forward_only`).

and, for the reward model (``--reward``, default the shipped one) around BC's plans, the mean of
``reward(plan + d) - reward(plan - d)`` for a lateral shift ``d`` (``lat_acc`` coefficient ``--lateral`` m/s^2, i.e.
``8 * lateral`` m at 4 s) next to the scorer's: positive = the model / the scorer prefers the left shift.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import os  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, report  # noqa: E402


REVERSE_M = 0.3
"""A plan whose last pose is more than this far behind the t0 position (m) reverses."""
SLOW_MPS = 3.0
"""Scenes slower than this at t0 (m/s) are 'slow' (queues, stops, creeping)."""


def forward_only(plans: np.ndarray) -> np.ndarray:
    """``plans`` (..., 8, 3) with x made non-negative and non-decreasing along each plan (y and yaw kept): what the
    plans would be if they never reversed."""
    out = np.array(plans, np.float64)
    out[..., 0] = np.maximum.accumulate(np.maximum(out[..., 0], 0.0), axis=-1)
    return out


def reversing(scenes: Sequence[Any], plans: np.ndarray, agent: str, set_name: str,
              scores: tuple[float, float]) -> BenchResult:
    """How many of ``plans`` (S, 8, 3) end behind the start, in all and in the slow scenes; ``scores``: the mean
    EPDMS of the plans and of their :func:`forward_only` versions, reported with it."""
    slow = np.array([scene.ego.speed < SLOW_MPS for scene in scenes])
    behind = plans[:, -1, 0] < -REVERSE_M
    return BenchResult(f"{set_name}: {agent} plans ending behind the start", float(behind.sum()), "scenes",
                       note=f"{int(behind[slow].sum())} of the {int(slow.sum())} slow scenes (< {SLOW_MPS:g} m/s); "
                            f"{len(scenes)} scenes; EPDMS {scores[0]:.4f}, {scores[1]:.4f} if it never reversed",
                       extra={"slow": int(slow.sum()), "behind_slow": int(behind[slow].sum()),
                              "epdms": float(scores[0]), "epdms_forward_only": float(scores[1])})


def scene_sets(split: str, num_scenes: int, real: bool) -> dict[str, list]:
    """name -> scenes: the first ``num_scenes`` of ``split`` and (``real``) the protocol's real windows."""
    from irlvla_gym.scenes.synthetic import iter_scenes

    sets = {split: list(iter_scenes(split, num=num_scenes))}
    if real:
        from baselines.protocol import real_set

        windows = real_set(None, progress=False)
        if windows.scenes:
            sets["real"] = windows.scenes
    return sets


def plans_of(agents: Sequence[Any], scenes: Sequence[Any]) -> np.ndarray:
    """(agents, scenes, 8, 3) deterministic plans, each agent with its own observation settings."""
    from irlvla_gym.obs.config import ObsConfig
    from irlvla_gym.obs.registry import ObservationBuilder

    out = np.zeros((len(agents), len(scenes), 8, 3))
    for a, agent in enumerate(agents):
        builder = ObservationBuilder(tuple(agent.obs_keys), ObsConfig.from_dict(getattr(agent, "obs_config", None)))
        obs = [builder.observe(scene) for scene in scenes]
        stacked = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        out[a] = agent.plan_batch(stacked, list(scenes))
    return out


def epdms_of(scenes: Sequence[Any], plans: np.ndarray) -> np.ndarray:
    """(P, scenes) scorer EPDMS of plans (P, scenes, 8, 3), EP normalised by PDM-Closed (leaderboard protocol)."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import pdm_reference_progress

    out = np.zeros(plans.shape[:2])
    for s, scene in enumerate(scenes):
        out[:, s] = score_plans(scene, plans[:, s], reference_progress=pdm_reference_progress(scene)).epdms
    return out


def lateral_preference(scenes: Sequence[Any], bc: np.ndarray, reward: Any, coefficient: float) -> tuple[float, float]:
    """Mean over scenes of (left - right) for the reward model and for the scorer, around BC's plans (S, 8, 3)."""
    from irlvla_gym.plans.codec import PLAN_SCALE
    from irlvla_gym.plans.exploration import smooth_basis

    shift = coefficient * smooth_basis(("lat_acc",))[0].reshape(8, 3) * PLAN_SCALE
    left, right = bc + shift, bc - shift
    model = np.array([reward.score(sc, np.stack([lp, rp])) for sc, lp, rp in zip(scenes, left, right)])
    scorer = epdms_of(scenes, np.stack([left, right]))
    return float(np.mean(model[:, 0] - model[:, 1])), float(np.mean(scorer[0] - scorer[1]))


def measure(runs: Sequence[str], split: str, num_scenes: int, real: bool, reward_ckpt: str | None,
            coefficient: float, worst: int) -> list[BenchResult]:
    from baselines.evaluate import load_run_agent
    from irlvla_gym.agents import load_agent
    from irlvla_gym.plans.codec import PLAN_SCALE
    from irlvla_gym.plans.exploration import smooth_basis
    from reward_models.reward_fn import SceneRewardFn

    agents = [load_agent("bc_default")] + [load_run_agent(r) for r in runs]
    basis = smooth_basis()
    span = np.linalg.pinv(basis) @ basis  # (24, 24) projector onto the explored directions
    reward = SceneRewardFn(reward_ckpt)
    results = []
    for set_name, scenes in scene_sets(split, num_scenes, real).items():
        plans = plans_of(agents, scenes)
        scores = epdms_of(scenes, plans)
        forward = epdms_of(scenes, forward_only(plans))
        results += [reversing(scenes, plans[a], agent.name, set_name, (scores[a].mean(), forward[a].mean()))
                    for a, agent in enumerate(agents)]
        for a, agent in enumerate(agents[1:], start=1):
            change = ((plans[a] - plans[0]) / PLAN_SCALE).reshape(len(scenes), -1)
            inside = change @ span
            end = (plans[a, :, -1, :2] - plans[0, :, -1, :2]).mean(axis=0)
            loss = scores[a] - scores[0]
            order = np.argsort(loss)[:worst]
            listing = ", ".join(f"{scenes[i].token} {scores[0, i]:.2f}->{scores[a, i]:.2f}" for i in order)
            results.append(BenchResult(
                f"{set_name}: {agent.name} end shift dy (left +)", float(end[1]), "m",
                note=f"dx {end[0]:+.3f} m; rms change in span {np.sqrt((inside ** 2).sum(1)).mean():.4f}, outside "
                     f"{np.sqrt(((change - inside) ** 2).sum(1)).mean():.4f}; EPDMS {scores[a].mean():.3f} vs BC "
                     f"{scores[0].mean():.3f}; worst: {listing}",
                extra={"dx": float(end[0]), "dy": float(end[1]), "epdms": float(scores[a].mean()),
                       "bc_epdms": float(scores[0].mean()), "worst": [scenes[i].token for i in order]}))
        model, scorer = lateral_preference(scenes, plans[0], reward, coefficient)
        results.append(BenchResult(f"{set_name}: reward model left - right (+-{8 * coefficient:.2f} m)", model,
                                   "reward", note=f"scorer {scorer:+.4f} EPDMS; {len(scenes)} scenes",
                                   extra={"scorer": scorer}))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished run directories (<out>/<variant>/seedK)")
    parser.add_argument("--split", default="synthetic-val")
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--real", action="store_true", help="also the protocol's real windows (../shared/data)")
    parser.add_argument("--reward", default=None, help="reward world model checkpoint (default: the shipped one)")
    parser.add_argument("--lateral", type=float, default=0.03, help="lat_acc coefficient of the probe, m/s^2")
    parser.add_argument("--worst", type=int, default=4, help="worst scenes listed per run and set")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()
    results = measure(args.runs, args.split, args.scenes, args.real, args.reward, args.lateral, args.worst)
    meta = {"runs": args.runs, "split": args.split, "scenes": args.scenes, "real": args.real,
            "lateral": args.lateral, "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    return report("plan shift against bc_default", results, as_json=args.json, meta=meta)


if __name__ == "__main__":
    raise SystemExit(main())
