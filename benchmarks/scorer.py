"""EPDMS scorer speed on one core: the vectorised scorer (K plans x 1 scene, and rows x many scenes) vs the reference.

Run ``python -m benchmarks.scorer`` (a table), ``--json`` (one JSON object), ``--scenes N`` (default 50).

Per scene: 256 candidate plans (the expert future scaled in speed and bent sideways) are simulated once with
``irlvla_gym.sim.simulate_plans`` (not timed), agents are log-replayed, then ``score_states`` is timed on the
simulated states of the first K = 1, 8 and 256 plans, human filter included (so K + 1 trajectories are scored;
the same path the envs, planners, RWM dataset and leaderboard take). Multi-scene: ``--rows`` rows (one plan each,
scenes drawn at random, as the N envs of a vector env) through ``score_rows`` + ``finalize_rows``. The per-scene
map precompute (``prepare_scene`` + the vectorised scorer's map pack + the reference's shapely trees) is timed
separately; it is built once per scene and cached. The reference runs on the first ``--reference-plans`` plans of
each scene (default 32) to keep the run short; its plans/s is what it would sustain. Peak memory of one K = 256
call is measured with tracemalloc.

Goals: K = 256 >= 2,000 plans/s (median over scenes) and >= 50x the reference.
Scenes: the synthetic generator (seeds 0..N-1) when installed, else hand-made straight-road variants.
:func:`measure` takes the scorer as a namespace, so another version of it can be measured the same way.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, at_least, report  # noqa: E402
from irlvla_gym.scenes.scene import Scene  # noqa: E402
from irlvla_gym.sim import simulate_plans  # noqa: E402

K = 256
PLAN_COUNTS = (1, 8, K)


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


def current_scorer() -> SimpleNamespace:
    """The scorer of this checkout as the namespace :func:`measure` takes: ``prepare_scene``, ``agent_tracks``,
    ``score_states`` (single scene, finalised), ``score_rows`` / ``finalize_rows`` / ``human_zero_mask``
    (multi-scene), ``build_maps(ctx)`` (the vectorised scorer's per-scene precompute), ``build_reference(ctx)``."""
    from irlvla_gym import metrics
    from irlvla_gym.metrics.maps import scene_maps
    from irlvla_gym.metrics.reference import shapely_map

    return SimpleNamespace(prepare_scene=metrics.prepare_scene, agent_tracks=metrics.agent_tracks,
                           score_states=metrics.score_states, score_rows=metrics.score_rows,
                           finalize_rows=metrics.finalize_rows, human_zero_mask=metrics.human_zero_mask,
                           build_maps=scene_maps, build_reference=shapely_map)


def _time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _prepare(scorer: SimpleNamespace, scene_list: list[Scene]) -> tuple[list[dict], list[float]]:
    """Per scene: simulated plans and human, agents, context (maps built); and the precompute times (s)."""
    rng = np.random.default_rng(0)
    data, prep_s = [], []
    for scene in scene_list:
        states = simulate_plans(scene, candidate_plans(scene, rng))
        human = simulate_plans(scene, scene.ego.future[None])
        agents = scorer.agent_tracks(scene)
        start = time.perf_counter()
        ctx = scorer.prepare_scene(scene)
        scorer.build_maps(ctx)
        scorer.build_reference(ctx)
        prep_s.append(time.perf_counter() - start)
        data.append(dict(states=states, human=human, agents=agents, ctx=ctx))
    return data, prep_s


def _rows_rate(scorer: SimpleNamespace, data: list[dict], num_rows: int, repeats: int) -> float:
    """Rows/s of one multi-scene call (score_rows + finalize_rows, human filter on) over ``num_rows`` rows."""
    rng = np.random.default_rng(1)
    pick = rng.integers(len(data), size=num_rows)
    plan = rng.integers(K, size=num_rows)
    contexts = [data[i]["ctx"] for i in pick]
    agents = [data[i]["agents"] for i in pick]
    states = np.stack([data[i]["states"][k] for i, k in zip(pick, plan)])
    cfg = contexts[0].config
    humans = {i: scorer.score_rows([data[i]["ctx"]], data[i]["human"], [data[i]["agents"]])[0] for i in set(pick)}
    human_zero = scorer.human_zero_mask([humans[i] for i in pick], cfg)
    reference = np.array([float(humans[i].progress[0]) for i in pick])

    def run():
        raw, has_ec = scorer.score_rows(contexts, states, agents)
        scorer.finalize_rows(raw, cfg, reference, human_zero, has_ec)

    run()  # builds the process-wide map pack of these scenes
    run()
    return num_rows / _time(run, repeats)


def measure(scorer: SimpleNamespace, scene_list: list[Scene], *, reference_plans: int = 32, repeats: int = 2,
            rows: int = 128) -> dict:
    """Raw measurements of one scorer version: per-scene rates (plans/s) at each K, the reference's, rows/s of
    the multi-scene call, precompute times and peak memory of a K = 256 call."""
    data, prep_s = _prepare(scorer, scene_list)
    rate = {k: [] for k in PLAN_COUNTS}
    ref_rate = []
    for d in data:
        ctx, states, human, agents = d["ctx"], d["states"], d["human"], d["agents"]
        for k in PLAN_COUNTS:
            x = states[:k]
            inner = max(1, 32 // k)  # small K: time a few calls together (one call is ~1 ms)

            def run(x=x, inner=inner, ctx=ctx, agents=agents, human=human):
                for _ in range(inner):
                    scorer.score_states(ctx, x, agents, human_states=human, impl="fast")

            rate[k].append(k * inner / _time(run, repeats if k == K else repeats + 3))
        R = min(reference_plans, K)
        t_ref = _time(lambda ctx=ctx, x=states[:R], agents=agents, human=human: scorer.score_states(
            ctx, x, agents, human_states=human, impl="reference"), 1)
        ref_rate.append(R / t_ref)  # the human trajectory (the filter) is scored too; it is not counted
    d = data[0]
    tracemalloc.start()
    scorer.score_states(d["ctx"], d["states"], d["agents"], human_states=d["human"], impl="fast")
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return dict(rate=rate, ref_rate=ref_rate, rows_rate=_rows_rate(scorer, data, rows, repeats + 3),
                prep_s=prep_s, peak_mb=peak_mb, agents=[d["agents"].num_agents for d in data], rows=rows)


def results(m: dict, source: str) -> list[BenchResult]:
    """The reported quantities of :func:`measure`'s output."""
    n = len(m["prep_s"])
    note = f"{n} scenes ({source}), human filter on, agents median {int(np.median(m['agents']))}"
    out = []
    for k in PLAN_COUNTS:
        r = m["rate"][k]
        goal = 2000.0 if k == K else None
        name = "fast scorer" if k == K else f"fast scorer K={k}"
        out.append(at_least(name, float(np.median(r)), "plans/s", goal,
                            f"K={k} plans x 1 scene (score_states); " + note + f"; min {min(r):,.0f}",
                            per_scene=[round(x, 1) for x in r], ms_per_call=round(1e3 * k / float(np.median(r)), 3)))
    out += [
        at_least("multi-scene rows", m["rows_rate"], "rows/s", None,
                 f"{m['rows']} rows x {n} scenes, one plan each (score_rows + finalize_rows)",
                 ms_per_call=round(1e3 * m["rows"] / m["rows_rate"], 3)),
        at_least("reference scorer", float(np.median(m["ref_rate"])), "plans/s", None,
                 "plans per scene as --reference-plans", per_scene=[round(x, 2) for x in m["ref_rate"]]),
        at_least("fast / reference", float(np.median(np.asarray(m["rate"][K]) / np.asarray(m["ref_rate"]))), "x",
                 50.0, "median of per-scene ratios, K=256"),
        at_least("scene precompute", 1.0 / float(np.median(m["prep_s"])), "scenes/s", None,
                 "prepare_scene + map pack + shapely trees, once per scene"),
    ]
    try:
        import resource

        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - not on Windows
        max_rss_mb = float("nan")
    out.append(at_least("fast peak memory (K=256)", m["peak_mb"], "MiB", None,
                        f"tracemalloc; process max RSS {max_rss_mb:.0f} MiB"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--scenes", type=int, default=50, help="number of scenes (default 50)")
    parser.add_argument("--reference-plans", type=int, default=32, help="plans per scene for the reference")
    parser.add_argument("--repeats", type=int, default=2, help="timing: best of this many runs (+3 below K=256)")
    parser.add_argument("--rows", type=int, default=128, help="rows of the multi-scene call (default 128)")
    args = parser.parse_args(argv)

    scene_list, source = scenes(args.scenes)
    m = measure(current_scorer(), scene_list, reference_plans=args.reference_plans, repeats=args.repeats,
                rows=args.rows)
    return report("EPDMS scorer", results(m, source), as_json=args.json,
                  meta={"scenes": len(scene_list), "K": list(PLAN_COUNTS), "rows": args.rows,
                        "reference_plans": args.reference_plans})


if __name__ == "__main__":
    sys.exit(main())
