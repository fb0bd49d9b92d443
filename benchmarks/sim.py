"""Simulation speed, on one core: the LQR tracker + bicycle (plans/s) and the traffic models.

Run ``python -m benchmarks.sim`` (a table) or ``python -m benchmarks.sim --json`` (one JSON object).

Rows:

* tracker K=1 / 16 / 256: ``simulate_plans`` on K perturbed expert plans of one scene (plans/s, best of repeats).
* log replay: ``log_replay`` of a scene (scenes/s).
* IDM traffic K=1 / 16: ``IDMTraffic.simulate`` against K ego rollouts (rollouts/s), setup (``IDMTraffic(...)``)
  timed separately; the agent count is noted.

Scenes come from the synthetic generator when it is installed, else from a hand-made straight road with 30 vehicles.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import BenchResult, add_common_args, at_least, report  # noqa: E402
from irlvla_gym.scenes.scene import Scene  # noqa: E402
from irlvla_gym.sim import IDMTraffic, log_replay, simulate_plans  # noqa: E402

TRACKER_BATCHES = (1, 16, 256)
TRAFFIC_BATCHES = (1, 16)


def _scene() -> tuple[Scene, str]:
    try:
        from irlvla_gym.scenes import synthetic

        best = None
        for item in synthetic.iter_scenes("synthetic-train", num=20):
            if isinstance(item, Scene) and (best is None or len(item.agents) > len(best.agents)):
                best = item
        if best is not None:
            return best, f"synthetic scene {best.token}"
    except Exception:  # noqa: BLE001 - any generator problem falls back to the hand-made scene
        pass
    from irlvla_gym.scenes.testing import straight_road_scene

    rng = np.random.default_rng(0)
    agents = [dict(x=float(x), y=-3.5 * int(lane), vx=float(v))
              for x, lane, v in zip(np.linspace(-80, 110, 30), rng.integers(0, 3, 30), rng.uniform(0, 12, 30))]
    return straight_road_scene(num_lanes=3, agents=agents, token="bench-straight"), "hand-made straight road"


def _best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _plans(scene: Scene, K: int, rng: np.random.Generator) -> np.ndarray:
    """K plans: the expert future with smooth random lateral / longitudinal perturbations."""
    plans = np.repeat(scene.ego.future[None], K, axis=0)
    u = np.arange(1, 9) / 8.0
    plans[:, :, 0] *= rng.uniform(0.7, 1.2, (K, 1))
    plans[:, :, 1] += rng.normal(0.0, 1.0, (K, 1)) * u**2
    plans[:, :, 2] += rng.normal(0.0, 0.05, (K, 1)) * u
    return plans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    scene, source = _scene()
    results: list[BenchResult] = []

    for K in TRACKER_BATCHES:
        plans = _plans(scene, K, rng)
        seconds = _best_time(lambda: simulate_plans(scene, plans), args.repeats)
        results.append(at_least(f"tracker K={K}", K / seconds, "plans/s", None,
                                note=f"{seconds * 1e3:.1f} ms per call", seconds=seconds, K=K))

    seconds = _best_time(lambda: log_replay(scene), args.repeats)
    results.append(at_least("log replay", 1.0 / seconds, "scenes/s", None, note=f"{len(scene.agents)} agents"))

    setup = _best_time(lambda: IDMTraffic(scene), args.repeats)
    traffic = IDMTraffic(scene)
    note = f"{int(traffic.reactive.sum())} IDM of {len(scene.agents)} agents; setup {setup * 1e3:.1f} ms"
    for K in TRAFFIC_BATCHES:
        egos = simulate_plans(scene, _plans(scene, K, rng))
        seconds = _best_time(lambda: traffic.simulate(egos), args.repeats)
        results.append(at_least(f"IDM traffic K={K}", K / seconds, "rollouts/s", None,
                                note=f"{seconds * 1e3:.1f} ms per call; {note}", seconds=seconds, K=K))
    return report("simulation benchmarks", results, as_json=args.json, meta={"scene": source,
                                                                           "repeats": args.repeats})


if __name__ == "__main__":
    sys.exit(main())
