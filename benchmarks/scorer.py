"""EPDMS scorer speed on one core: fast (numpy) vs reference (shapely loops), K = 256 plans per scene.

Run ``python -m benchmarks.scorer`` (a table), ``--json`` (one JSON object), ``--scenes N`` (default 50).

Per scene: 256 candidate plans (the expert future scaled in speed and bent sideways) are simulated once with
``irlvla_gym.sim.simulate_plans`` (not timed), agents are log-replayed, then the scorer is timed on the simulated
states, human filter included (so K + 1 trajectories are scored). The per-scene map precompute
(``prepare_scene`` + the fast path's polygon index) is timed separately; it is built once per scene and cached.
The reference runs on the first ``--reference-plans`` plans of each scene (default 32) to keep the run short;
its plans/s is what it would sustain. Peak memory of one fast K = 256 call is measured with tracemalloc.

Goals: fast >= 2,000 plans/s (median over scenes) and >= 50x the reference.
Scenes: the synthetic generator (seeds 0..N-1) when installed, else hand-made straight-road variants.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import add_common_args, at_least, report  # noqa: E402
from irlvla_gym.metrics import agent_tracks, prepare_scene, score_states  # noqa: E402
from irlvla_gym.metrics.fast import _fast_map  # noqa: E402
from irlvla_gym.metrics.reference import _shapely_map  # noqa: E402
from irlvla_gym.scenes.scene import Scene  # noqa: E402
from irlvla_gym.sim import simulate_plans  # noqa: E402

K = 256


def scenes(num: int) -> tuple[list[Scene], str]:
    """``num`` scenes: synthetic when available, else straight-road variants with random traffic."""
    try:
        from irlvla_gym.scenes.synthetic import generate_scene

        return [generate_scene(seed) for seed in range(num)], "synthetic generator"
    except ImportError:
        from irlvla_gym.scenes.testing import straight_road_scene

        out = []
        for seed in range(num):
            rng = np.random.default_rng(seed)
            n = int(rng.integers(5, 40))
            agents = [dict(x=float(x), y=-3.5 * int(lane), vx=float(v)) for x, lane, v in
                      zip(rng.uniform(-60, 110, n), rng.integers(0, 3, n), rng.uniform(0, 12, n))]
            out.append(straight_road_scene(num_lanes=3, agents=agents, speed=float(rng.uniform(3, 15)),
                                           token=f"bench-{seed}"))
        return out, "hand-made straight roads"


def candidate_plans(scene: Scene, rng: np.random.Generator, num: int = K) -> np.ndarray:
    """(num, 8, 3) plans around the expert future: speed scaled 0..1.5, bent sideways up to +-4 m."""
    future = np.asarray(scene.ego.future, np.float64)
    scale = rng.uniform(0.0, 1.5, (num, 1, 1))
    plans = future[None] * np.array([1.0, 1.0, 1.0])
    plans = plans.repeat(num, axis=0)
    plans[..., :2] *= scale
    lateral = rng.uniform(-4.0, 4.0, (num, 1)) * np.linspace(0.05, 1.0, 8)[None] ** 2
    heading = np.asarray(future[:, 2])
    plans[..., 0] -= np.sin(heading)[None] * lateral
    plans[..., 1] += np.cos(heading)[None] * lateral
    return plans


def _time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--scenes", type=int, default=50, help="number of scenes (default 50)")
    parser.add_argument("--reference-plans", type=int, default=32, help="plans per scene for the reference")
    parser.add_argument("--repeats", type=int, default=2, help="fast timing: best of this many runs")
    args = parser.parse_args(argv)

    scene_list, source = scenes(args.scenes)
    rng = np.random.default_rng(0)
    fast_rate, ref_rate, prep_s, agents_n = [], [], [], []
    peak_mb = 0.0
    for i, scene in enumerate(scene_list):
        plans = candidate_plans(scene, rng)
        states = simulate_plans(scene, plans)
        human = simulate_plans(scene, scene.ego.future[None])
        agents = agent_tracks(scene)
        start = time.perf_counter()
        ctx = prepare_scene(scene)
        _fast_map(ctx)
        _shapely_map(ctx)
        prep_s.append(time.perf_counter() - start)
        agents_n.append(agents.num_agents)

        t_fast = _time(lambda: score_states(ctx, states, agents, human_states=human, impl="fast"), args.repeats)
        fast_rate.append(K / t_fast)
        R = min(args.reference_plans, K)
        t_ref = _time(lambda: score_states(ctx, states[:R], agents, human_states=human, impl="reference"), 1)
        # Both calls also score the human trajectory once (the filter); it is not counted as a plan.
        ref_rate.append(R / t_ref)
        if i == 0:
            tracemalloc.start()
            score_states(ctx, states, agents, human_states=human, impl="fast")
            peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()

    fast_med, ref_med = float(np.median(fast_rate)), float(np.median(ref_rate))
    ratio = float(np.median(np.asarray(fast_rate) / np.asarray(ref_rate)))
    try:
        import resource

        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - not on Windows
        max_rss_mb = float("nan")
    note = f"{len(scene_list)} scenes ({source}), K={K}, human filter on, agents median {int(np.median(agents_n))}"
    results = [
        at_least("fast scorer", fast_med, "plans/s", 2000.0, note + f"; min {min(fast_rate):,.0f}",
                 per_scene=[round(x, 1) for x in fast_rate]),
        at_least("reference scorer", ref_med, "plans/s", None, f"{args.reference_plans} plans per scene",
                 per_scene=[round(x, 2) for x in ref_rate]),
        at_least("fast / reference", ratio, "x", 50.0, "median of per-scene ratios"),
        at_least("scene precompute", 1.0 / float(np.median(prep_s)), "scenes/s", None,
                 "prepare_scene + polygon index + shapely trees, once per scene"),
        at_least("fast peak memory (K=256)", peak_mb, "MiB", None, f"tracemalloc; process max RSS {max_rss_mb:.0f} MiB"),
    ]
    return report("EPDMS scorer", results, as_json=args.json,
                  meta={"scenes": len(scene_list), "K": K, "reference_plans": args.reference_plans})


if __name__ == "__main__":
    sys.exit(main())
