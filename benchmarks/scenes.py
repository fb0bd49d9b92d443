"""Scene pipeline speed, on one core: generation, conversions, store build, store load.

Run ``python -m benchmarks.scenes`` (a table) or ``python -m benchmarks.scenes --json`` (one JSON object).

Rows (scenes/s unless noted):

* synthetic generation: ``synthetic.iter_scenes`` for ``--num`` scenes; goal 1,000 scenes in < 60 s (>= 16.7/s).
* av2 conversion / scenarionet conversion: every 2 Hz window of the sample logs in ``../shared/data`` (if present).
* navsim export + import: ``export_navsim`` then ``navsim.iter_scenes`` on the exported logs (round trip).
* store build: ``build_store`` of ``--num`` scenes (flatten, write, checksum).
* store open (verify): opening with blake2b verification (MB/s).
* store load (random access): ``store[i]`` for ``--load-samples`` random indices; goal >= 5,000 scenes/s.

Scenes for the store rows come from the synthetic generator if it is installed, else from the AV2 sample (re-tokened
copies), else from the hand-made test scenes.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import itertools  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BenchResult, add_common_args, at_least, report, shared_data_dir, skipped, stopwatch,
)
from irlvla_gym.scenes.scene import Scene  # noqa: E402

SYNTHETIC_GOAL = 1000 / 60.0  # scenes/s: 1,000 scenes in under a minute on one core
LOAD_GOAL = 5000.0  # scenes/s, random access from an opened store


def _split(items) -> tuple[list[Scene], int]:
    scenes = [s for s in items if isinstance(s, Scene)]
    return scenes, len(items) - len(scenes)


def bench_synthetic(num: int) -> tuple[BenchResult, list[Scene]]:
    name = "synthetic generation"
    try:
        from irlvla_gym.scenes import synthetic
    except ImportError as exc:
        return skipped(name, "scenes/s", f"{exc}", SYNTHETIC_GOAL), []
    with stopwatch() as t:
        items = list(synthetic.iter_scenes("synthetic-train", num=num))
    scenes, n_skipped = _split(items)
    rate = len(items) / t[0]
    return at_least(name, rate, "scenes/s", SYNTHETIC_GOAL,
                    note=f"{len(items)} items in {t[0]:.1f} s ({n_skipped} skipped); 1,000 take {1000 / rate:.0f} s",
                    seconds=t[0], items=len(items)), scenes


def bench_conversion(name: str, make_items, data_path: Path | None) -> tuple[BenchResult, list[Scene]]:
    if data_path is None or not data_path.exists():
        return skipped(name, "scenes/s", f"no sample data at {data_path}"), []
    try:
        with stopwatch() as t:
            items = list(make_items(data_path))
    except ImportError as exc:
        return skipped(name, "scenes/s", str(exc)), []
    scenes, n_skipped = _split(items)
    return at_least(name, len(scenes) / t[0], "scenes/s", None,
                    note=f"{len(scenes)} scenes ({n_skipped} skipped) from {data_path.name} in {t[0]:.1f} s",
                    seconds=t[0], scenes=len(scenes)), scenes


def _exported_paths(result, out_dir: Path) -> tuple[Path, Path]:
    """(logs, maps_root) from whatever ``export_navsim`` returned (tuple, mapping or object), else guesses."""
    if isinstance(result, tuple) and len(result) == 2:
        return Path(result[0]), Path(result[1])
    get = result.get if isinstance(result, dict) else (lambda k, d=None: getattr(result, k, d))
    logs = get("logs") or get("logs_dir") or get("logs_root") or out_dir / "logs"
    maps = get("maps_root") or get("maps") or out_dir / "maps"
    return Path(logs), Path(maps)


def bench_navsim_round_trip(scenes: list[Scene], tmp: Path) -> BenchResult:
    name = "navsim export + import"
    if not scenes:
        return skipped(name, "scenes/s", "no scenes to export")
    try:
        from irlvla_gym.scenes import navsim
    except ImportError as exc:
        return skipped(name, "scenes/s", str(exc))
    out = tmp / "navsim_export"
    try:
        with stopwatch() as t_export:
            result = navsim.export_navsim(scenes, out)
        logs, maps_root = _exported_paths(result, out)
        with stopwatch() as t_import:
            back, n_skipped = _split(list(navsim.iter_scenes(logs, maps_root)))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        return skipped(name, "scenes/s", f"{type(exc).__name__}: {exc}")
    total = t_export[0] + t_import[0]
    return at_least(name, len(scenes) / total, "scenes/s", None,
                    note=f"{len(scenes)} exported in {t_export[0]:.1f} s, {len(back)} imported "
                         f"({n_skipped} skipped) in {t_import[0]:.1f} s",
                    export_scenes_per_s=len(scenes) / t_export[0], import_scenes_per_s=len(back) / t_import[0])


def store_scenes(num: int, synthetic: list[Scene], real: list[Scene]) -> tuple[list[Scene], str]:
    """``num`` scenes for the store rows: synthetic, else re-tokened copies of the real ones, else hand-made."""
    if len(synthetic) >= num:
        return synthetic[:num], "synthetic"
    base, kind = (synthetic, "synthetic") if synthetic else (real, "av2/scenarionet copies")
    if not base:
        from irlvla_gym.scenes.testing import straight_road_scene

        base = [straight_road_scene(token=f"hand{i}", num_lanes=1 + i % 3,
                                    agents=[dict(x=10.0 + 7 * j, y=-3.5 * (j % 2), vx=5.0) for j in range(i % 6)])
                for i in range(20)]
        kind = "hand-made copies"
    out = []
    for k, s in enumerate(itertools.islice(itertools.cycle(base), num)):
        meta = s.metadata.__class__(**{**s.metadata.__dict__, "token": f"{s.token}#{k}"})
        out.append(Scene(meta, s.ego, s.agents, s.map, s.route_lanes, s.command, s.cameras, validate=False))
    return out, kind


def bench_store(scenes: list[Scene], kind: str, tmp: Path, load_samples: int, seed: int) -> list[BenchResult]:
    from irlvla_gym.scenes.store import SceneStore, build_store

    path = tmp / "store"
    with stopwatch() as t_build:
        report_ = build_store(scenes, path, split="bench", source=kind, shard_size=256, progress=False)
    mb = report_.bytes_on_disk / 1e6
    build = at_least("store build", len(scenes) / t_build[0], "scenes/s", None,
                     note=f"{len(scenes)} scenes ({kind}), {mb:.1f} MB ({mb * 1e3 / len(scenes):.0f} kB/scene)",
                     seconds=t_build[0], megabytes=mb)
    with stopwatch() as t_open:
        store = SceneStore(path, verify=True)
    open_ = at_least("store open (verify)", mb / t_open[0], "MB/s", None,
                     note=f"sizes + blake2b of {mb:.1f} MB in {t_open[0]:.2f} s", seconds=t_open[0])
    rng = np.random.default_rng(seed)
    order = rng.integers(0, len(store), size=load_samples).tolist()
    store[order[0]]  # map the shards' files in before timing the steady state
    with stopwatch() as t_load:
        for i in order:
            store[i]
    load = at_least("store load (random access)", load_samples / t_load[0], "scenes/s", LOAD_GOAL,
                    note=f"{load_samples} random store[i] over {len(store)} scenes", seconds=t_load[0])
    validated = SceneStore(path, verify=False, validate=True)
    with stopwatch() as t_valid:
        for i in order[:500]:
            validated[i]
    load_valid = at_least("store load (validate=True)", min(500, load_samples) / t_valid[0], "scenes/s", None,
                          note="same, with Scene validation on every load")
    return [build, open_, load, load_valid]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenes", description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=200, help="synthetic scenes to generate and store (default 200)")
    parser.add_argument("--store-num", type=int, default=None,
                        help="scenes in the store for the build/load rows (default: --num)")
    parser.add_argument("--load-samples", type=int, default=20_000, help="random loads to time (default 20000)")
    parser.add_argument("--stride", type=int, default=1, help="window stride for the av2/scenarionet conversions")
    parser.add_argument("--data", type=Path, default=None, help="sample data root (default ../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.num < 1 or args.load_samples < 1:
        parser.error("--num and --load-samples must be >= 1")
    data = args.data or shared_data_dir()

    results: list[BenchResult] = []
    synth_result, synthetic = bench_synthetic(args.num)
    results.append(synth_result)

    def av2_items(p: Path):
        from irlvla_gym.scenes import av2

        return av2.iter_scenes(p, stride=args.stride)

    def scenarionet_items(p: Path):
        from irlvla_gym.scenes import scenarionet

        drivable = p / "boston_drivable_area.json"
        return scenarionet.iter_scenes(p, drivable_area=drivable if drivable.exists() else None, stride=args.stride)

    av2_result, av2_scenes = bench_conversion("av2 conversion", av2_items,
                                              data / "av2_sensor_logs" if data else None)
    sn_result, sn_scenes = bench_conversion("scenarionet conversion", scenarionet_items,
                                            data / "scenarionet_nuscenes" if data else None)
    results += [av2_result, sn_result]

    tmp = Path(tempfile.mkdtemp(prefix="irlvla-bench-scenes-"))
    try:
        results.append(bench_navsim_round_trip((synthetic or av2_scenes)[:min(args.num, 50)], tmp))
        scenes, kind = store_scenes(args.store_num or args.num, synthetic, av2_scenes + sn_scenes)
        results += bench_store(scenes, kind, tmp, args.load_samples, args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"num": args.num, "store_num": args.store_num or args.num, "load_samples": args.load_samples,
            "stride": args.stride, "data": str(data) if data else None}
    return report("scene benchmarks (1 thread)", results, as_json=args.json, meta=meta)


if __name__ == "__main__":
    sys.exit(main())
