"""Stable-Baselines3 with its defaults on ``IRLVLA-Navsim-Residual-v2``: does each algorithm beat standing still?

Run ``python -m benchmarks.sb3_defaults`` (a markdown table) or ``--json``. For each algorithm it does what a user
would, naming only the env id and the policy class (``seed`` fixed for reproducibility; every hyperparameter is
SB3's default, e.g. PPO's 2,048-step rollouts, SAC's and TD3's 1M-transition replay buffers)::

    PPO("MlpPolicy", "IRLVLA-Navsim-Residual-v2", seed=0).learn(budget)        # A2C, SAC, TD3 alike
    DQN("MlpPolicy", gym.make("IRLVLA-Navsim-Residual-v2", action_type="vocabulary"), seed=0).learn(budget)

trained on the env's default scenes (all of synthetic-train), then scores the deterministic policy
(``model.predict(obs, deterministic=True)``) on the first ``--scenes`` scenes of synthetic-val with the env's own
reward: EPDMS with NAVSIM v2's human filter, EP relative to the logged expert's progress (the env's protocol; the
leaderboard's normalises EP by PDM-Closed instead, so its numbers are a little different). On the same scenes it
scores the stand-still plan (all poses at the origin), NAVSIM's constant-velocity agent, the residual action 0
(the reference plan: the current speed along the route), the logged human, and the best *constant* residual
action (a 5 x 5 grid of braking coefficients, chosen on as many synthetic-train scenes): EPDMS rewards slowing
down (fewer collisions and red lights for a little progress), so a policy has to beat that to show it uses its
observation.

Columns: ``EPDMS`` of the trained policy, ``train ep_rew_mean`` (SB3's mean reward of the last 100 training
episodes, stochastic actions), wall and CPU seconds of ``learn``. A row passes when its EPDMS beats stand-still.
The load average is recorded (the wall times are noisy on a shared machine). A store prebuilt with
``python -m irlvla_gym.scenes.source --build synthetic-train`` makes the env's first visits to scenes cheaper.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, report  # noqa: E402

ENV_ID = "IRLVLA-Navsim-Residual-v2"
ALGORITHMS = ("PPO", "A2C", "SAC", "TD3", "DQN")
EVAL_SPLIT = "synthetic-val"


def train(algo: str, budget: int, seed: int) -> tuple[Any, dict[str, float]]:
    """``algo`` with SB3's defaults on the env id (DQN: the vocabulary action type), trained for ``budget`` steps."""
    import gymnasium as gym
    import stable_baselines3 as sb3

    import irlvla_gym  # noqa: F401  (registers the ids)

    cls = getattr(sb3, algo)
    env: Any = gym.make(ENV_ID, action_type="vocabulary") if algo == "DQN" else ENV_ID
    w0, c0 = time.perf_counter(), time.process_time()
    model = cls("MlpPolicy", env, seed=seed)
    model.learn(budget)
    stats = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
             "ep_rew_mean": float(np.mean([e["r"] for e in model.ep_info_buffer])) if model.ep_info_buffer
             else float("nan")}
    return model, stats


def evaluate(model: Any, algo: str, num_scenes: int) -> float:
    """Mean EPDMS of the deterministic policy on the first ``num_scenes`` evaluation scenes."""
    import gymnasium as gym

    kwargs = {"action_type": "vocabulary"} if algo == "DQN" else {}
    env = gym.make(ENV_ID, scenes=EVAL_SPLIT, num_scenes=num_scenes, **kwargs)
    rewards = []
    for i in range(num_scenes):
        obs, _ = env.reset(options={"scene_index": i})
        action, _ = model.predict(obs, deterministic=True)
        rewards.append(env.step(action)[1])
    env.close()
    return float(np.mean(rewards))


def _mean_reward(env: Any, action: np.ndarray, num_scenes: int) -> float:
    rewards = []
    for i in range(num_scenes):
        env.reset(options={"scene_index": i})
        rewards.append(env.step(action)[1])
    return float(np.mean(rewards))


def best_constant_action(num_scenes: int) -> tuple[np.ndarray, float]:
    """The best residual action that ignores the observation: a grid over braking (``lon_acc``, ``lon_jerk`` in
    -1 .. 0, lateral 0), chosen by mean EPDMS on the first ``num_scenes`` scenes of synthetic-train."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401  (registers the ids)

    env = gym.make(ENV_ID, num_scenes=num_scenes)
    grid = np.linspace(-1.0, 0.0, 5)
    best = max(((_mean_reward(env, np.array([a, j, 0, 0], np.float32), num_scenes), a, j)
                for a in grid for j in grid))
    env.close()
    return np.array([best[1], best[2], 0.0, 0.0], np.float32), best[0]


def baselines(num_scenes: int, constant: np.ndarray) -> dict[str, float]:
    """Mean EPDMS of the reference planners and of the best constant action on the evaluation scenes (the env's
    scorer, same protocol)."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401
    from irlvla_gym.planners import ConstantVelocityPlanner
    from irlvla_gym.plans.codec import Decoded

    env = gym.make(ENV_ID, scenes=EVAL_SPLIT, num_scenes=num_scenes)
    u = env.unwrapped
    plans = {"stand_still": lambda: np.zeros((8, 3)),
             "constant_velocity": lambda: ConstantVelocityPlanner().plan(u.scene),
             "reference (action 0)": u.reference_plan,
             "logged human": lambda: u.scene.ego.future}
    out = {name: [] for name in plans}
    for i in range(num_scenes):
        for name, plan in plans.items():
            env.reset(options={"scene_index": i})
            out[name].append(u.finish_step(Decoded(np.asarray(plan(), np.float64)), None)[1])
    means = {name: float(np.mean(v)) for name, v in out.items()}
    means["best constant action"] = _mean_reward(env, constant, num_scenes)
    env.close()
    return means


def table(rows: list[dict[str, Any]], base: dict[str, float], meta: dict[str, Any]) -> str:
    lines = ["| algorithm | policy | budget (env steps) | EPDMS | stand-still | constant velocity | "
             "reference (action 0) | best constant action | train ep_rew_mean | learn wall s / CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['algorithm']} | MlpPolicy{' (vocabulary)' if r['algorithm'] == 'DQN' else ''} | "
                     f"{r['budget']:,} | **{r['epdms']:.3f}** | {base['stand_still']:.3f} | "
                     f"{base['constant_velocity']:.3f} | {base['reference (action 0)']:.3f} | "
                     f"{base['best constant action']:.3f} | "
                     f"{r['ep_rew_mean']:.3f} | {r['wall_s']:.0f} / {r['cpu_s']:.0f} |")
    lines.append(f"\nEPDMS on the first {meta['scenes']} {EVAL_SPLIT} scenes (env reward; logged human "
                 f"{base['logged human']:.3f}); best constant action {meta['constant_action']} (chosen on "
                 f"{meta['scenes']} synthetic-train scenes, where it scored {meta['constant_train']:.3f}); "
                 f"seed {meta['seed']}; load average {meta['loadavg_start'][0]:.1f} at the start, "
                 f"{meta['loadavg_end'][0]:.1f} at the end; {meta['wall_s']:.0f} s in all.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=8192, help="env steps of training per algorithm")
    parser.add_argument("--scenes", type=int, default=100, help="synthetic-val scenes scored")
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seed", type=int, default=0)
    add_common_args(parser)
    args = parser.parse_args(argv)
    meta: dict[str, Any] = {"env_id": ENV_ID, "budget": args.budget, "scenes": args.scenes, "seed": args.seed,
                            "eval_split": EVAL_SPLIT, "loadavg_start": os.getloadavg()}
    w0 = time.perf_counter()
    constant, constant_train = best_constant_action(args.scenes)
    meta.update(constant_action=constant.tolist(), constant_train=constant_train)
    base = baselines(args.scenes, constant)
    rows = []
    for algo in args.algos:
        model, stats = train(algo, args.budget, args.seed)
        rows.append({"algorithm": algo, "budget": args.budget, "epdms": evaluate(model, algo, args.scenes),
                     **stats})
        del model
    meta.update(baselines=base, loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - w0)
    results = [BenchResult(f"{r['algorithm']} EPDMS", r["epdms"], "EPDMS", f"> stand-still {base['stand_still']:.3f}",
                           r["epdms"] > base["stand_still"], note=f"{r['budget']} env steps", extra=r) for r in rows]
    if args.json:
        return report("sb3 defaults on " + ENV_ID, results, as_json=True, meta=meta)
    print(table(rows, base, meta))
    return 1 if any(not r.passed for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
