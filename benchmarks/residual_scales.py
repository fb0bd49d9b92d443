"""How drivable are random residual actions, and how much of the expert can the residual action express?

Run ``python -m benchmarks.residual_scales`` (a table) or ``--json``. For each of ``--scenes`` scenes of ``--split``
(default synthetic-train) and each reference (route / constant velocity) and scale multiplier ``m`` (x the default
:data:`irlvla_gym.plans.residual.RESIDUAL_RANGE`), it scores with the rule-based scorer (NAVSIM v2 protocol: EP
normalised by the logged expert x product as in the envs, human filter on):

* ``zero``: the action 0 (the reference plan);
* ``uniform`` / ``normal``: ``--k`` actions per scene drawn uniformly in [-1, 1]^4 (SB3's TD3/SAC warm-up and DQN's
  random actions) or from a std-1 Gaussian clipped to the box (SB3's PPO/A2C initial exploration); columns: mean
  EPDMS and the fraction of samples scoring > 0;
* each direction alone at -1 and +1 (route reference, default scale);
* ``expert fit``: the expert plan re-expressed as its least-squares residual action (clipped), decoded and scored:
  the ceiling of the parameterisation; ``in box``: fraction of the expert's coefficients inside [-1, 1].

Stand-still and the logged expert are printed for reference. This is how the default scales were chosen (see
:mod:`irlvla_gym.envs.residual`).
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


def measure(split: str, num_scenes: int, k: int, multipliers: list[float], seed: int) -> dict[str, Any]:
    from irlvla_gym.envs.scoring import make_bundle, score_states
    from irlvla_gym.plans.residual import (
        RESIDUAL_DIRECTIONS, RESIDUAL_RANGE, coeffs_to_actions, make_frame, plan_to_coeffs, residual_to_plan,
    )
    from irlvla_gym.scenes.source import SceneSource
    from irlvla_gym.sim import simulate_plans

    source = SceneSource(split)
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[float]]] = {}
    base = {"stand_still": [], "human": []}
    singles: dict[str, list[float]] = {}
    t0 = time.process_time()
    for index in range(min(num_scenes, len(source))):
        b = make_bundle(index, source.load(index))
        speed = float(np.hypot(*b.start_state[3:5]))

        def score(plans: np.ndarray) -> np.ndarray:
            states = simulate_plans(np.repeat(b.start_state[None], len(plans), 0), plans)
            return score_states(b, states, b.log_agents).epdms

        base["stand_still"].append(float(score(np.zeros((1, 8, 3)))[0]))
        base["human"].append(float(score(b.scene.ego.future[None])[0]))
        uniform = rng.uniform(-1, 1, (k, 4))
        normal = np.clip(rng.standard_normal((k, 4)), -1, 1)
        for ref in ("route", "constant_velocity"):
            frame = make_frame(speed, b.ctx.route_centerline, ref)
            coeffs = plan_to_coeffs(b.scene.ego.future, frame)
            for m in multipliers:
                scale = np.asarray(RESIDUAL_RANGE) * m
                row = rows.setdefault(f"{ref} x{m:g}", {c: [] for c in (
                    "zero", "zero>0", "uniform", "uniform>0", "normal", "normal>0", "expert_fit", "in_box",
                    "on_route")})
                unclipped = coeffs_to_actions(coeffs, scale)
                fit = np.clip(unclipped, -1, 1)
                plans = residual_to_plan(np.concatenate([np.zeros((1, 4)), fit[None], uniform, normal]), frame, scale)
                e = score(plans)
                row["zero"].append(e[0])
                row["zero>0"].append(float(e[0] > 0))
                row["expert_fit"].append(e[1])
                row["uniform"].append(e[2:2 + k].mean())
                row["uniform>0"].append((e[2:2 + k] > 0).mean())
                row["normal"].append(e[2 + k:].mean())
                row["normal>0"].append((e[2 + k:] > 0).mean())
                row["in_box"].append(float(np.mean(np.abs(unclipped) <= 1)))
                row["on_route"].append(float(frame.on_route))
            if ref == "route":  # each direction alone at -1 and +1 (default scale)
                single = np.concatenate([-np.eye(4), np.eye(4)])
                e = score(residual_to_plan(single, frame))
                for j, a in enumerate(single):
                    d = int(np.flatnonzero(a)[0])
                    singles.setdefault(f"{RESIDUAL_DIRECTIONS[d]}={a[d]:+.0f}", []).append(e[j])
    out = {name: {c: float(np.mean(v)) for c, v in row.items()} for name, row in rows.items()}
    out.update({f"route, {name}": {"epdms": float(np.mean(v)), ">0": float(np.mean(np.array(v) > 0))}
                for name, v in singles.items()})
    return {"rows": out, "baselines": {n: float(np.mean(v)) for n, v in base.items()},
            "cpu_s": time.process_time() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="synthetic-train")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--k", type=int, default=16, help="random actions per scene and family")
    parser.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    add_common_args(parser)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()
    m = measure(args.split, args.scenes, args.k, args.multipliers, args.seed)
    results = []
    for name, r in m["rows"].items():
        if "epdms" in r:
            results.append(BenchResult(f"{name}: EPDMS", r["epdms"], "EPDMS", note=f"> 0 in {r['>0']:.2f}"))
            continue
        note = " ".join(f"{c}={r[c]:.3f}" for c in ("zero", "zero>0", "uniform", "uniform>0", "normal", "normal>0",
                                                     "expert_fit", "in_box", "on_route"))
        results.append(BenchResult(f"{name}: normal > 0", r["normal>0"], "fraction", note=note, extra=r))
    meta = {"split": args.split, "scenes": args.scenes, "k": args.k, "seed": args.seed, **m["baselines"],
            "cpu_s": m["cpu_s"], "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    title = (f"residual actions ({args.scenes} scenes of {args.split}; stand still "
             f"{m['baselines']['stand_still']:.3f}, logged human {m['baselines']['human']:.3f})")
    return report(title, results, as_json=args.json, meta=meta)


if __name__ == "__main__":
    raise SystemExit(main())
