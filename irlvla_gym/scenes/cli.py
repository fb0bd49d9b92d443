"""``irlvla scenes ...``: build a scene store from a source, summarise it, render a scene.

Examples::

    irlvla scenes build --source synthetic --split synthetic-train --num 1000 --out cache/synthetic-train
    irlvla scenes build --source av2 --path ../shared/data/av2_sensor_logs --out cache/av2
    irlvla scenes build --source av2-forecasting --path ../shared/data/av2_forecasting --out cache/av2f
    irlvla scenes build --source scenarionet --path ../shared/data/scenarionet_nuscenes \\
        --drivable-area ../shared/data/nuscenes_drivable_areas --out cache/nusc
    irlvla scenes build --source scenarionet --path ../shared/data/scenarionet_waymo --out cache/waymo
    irlvla scenes build --source navsim --path navsim_logs/test --maps-root $NUPLAN_MAPS_ROOT --out cache/navtest
    irlvla scenes info cache/synthetic-train
    irlvla scenes render cache/synthetic-train --index 3 --out scene3.png

User errors (missing paths, bad arguments, a drivable area of another city) raise FileNotFoundError / ValueError with
one line naming the path or argument; ``irlvla_gym.cli.main`` prints them without a traceback. ``build`` prints the
store summary and the dropped items per reason; a build that stores no scene exits 1 with the reasons.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from irlvla_gym.scenes.scene import COMMANDS, Scene
from irlvla_gym.scenes.sources import SkippedItem, skipped_by_reason


@dataclass
class SourceInput:
    """What a source hands to the store builder.

    Attributes:
        items: the adapter's scene stream (already limited to ``--num`` scenes).
        total: expected number of items for the progress bar (None if unknown).
        start_item: items of the full stream already covered by complete shards on disk (seekable sources only).
        split: split name recorded in the manifest (None: ``--split``, else the source name).
    """

    items: Iterable[Scene | SkippedItem]
    total: int | None = None
    start_item: int = 0
    split: str | None = None


def _limit_scenes(items: Iterable[Scene | SkippedItem], num: int | None) -> Iterator[Scene | SkippedItem]:
    """Pass items through until ``num`` scenes have been yielded (skipped items do not count)."""
    if num is None:
        yield from items
        return
    if num <= 0:
        return
    scenes = 0
    for item in items:
        yield item
        if isinstance(item, Scene):
            scenes += 1
            if scenes >= num:
                return


def _adapter(name: str):
    """Import ``irlvla_gym.scenes.<name>``; a missing adapter module becomes a one-line ValueError."""
    module = f"irlvla_gym.scenes.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ValueError(f"--source {name}: adapter module {module} is not available in this install") from None


def _require_path(args: argparse.Namespace, flag: str = "--path") -> Path:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is None:
        raise ValueError(f"{flag} is required for --source {args.source}")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or directory")
    return path


def _synthetic_input(args: argparse.Namespace) -> SourceInput:
    synthetic = _adapter("synthetic")
    split = args.split or "synthetic-train"
    if hasattr(synthetic, "SPLITS") and split not in synthetic.SPLITS:
        raise ValueError(f"--split {split!r}: unknown synthetic split (choose from {', '.join(synthetic.SPLITS)})")
    size = synthetic.split_size(split) if hasattr(synthetic, "split_size") else None
    num = args.num if args.num is not None else size
    if num is not None and size is not None and num > size:
        raise ValueError(f"--num {num}: split {split!r} has only {size} scenes")
    # The generator is seekable: resume an interrupted build after its last complete shard.
    from irlvla_gym.scenes.store import BUILD_PARAMS, resume_point

    start = 0
    if (Path(args.out) / BUILD_PARAMS).exists():
        start = resume_point(args.out, shard_size=args.shard_size).items
        if num is not None:
            start = min(start, num)
    count = None if num is None else num - start
    if "start" in inspect.signature(synthetic.iter_scenes).parameters:
        items = synthetic.iter_scenes(split, num=count, start=start)
    else:
        items, start = synthetic.iter_scenes(split, num=num), 0
        count = num
    return SourceInput(items, total=num, start_item=start, split=split)


def _av2_input(args: argparse.Namespace) -> SourceInput:
    av2 = _adapter("av2")

    return SourceInput(_limit_scenes(av2.iter_scenes(_require_path(args), stride=args.stride), args.num))


def _av2_forecasting_input(args: argparse.Namespace) -> SourceInput:
    forecasting = _adapter("av2_forecasting")

    items = forecasting.iter_scenes(_require_path(args), stride=args.stride, ego=args.ego)
    return SourceInput(_limit_scenes(items, args.num))


def _scenarionet_input(args: argparse.Namespace) -> SourceInput:
    scenarionet = _adapter("scenarionet")

    path = _require_path(args)
    drivable = _require_path(args, "--drivable-area") if args.drivable_area is not None else None
    areas = scenarionet.CityDrivableAreas(drivable)  # a single file is read (and a broken one refused) once, here
    files = scenarionet.scenario_files(path)
    if drivable is not None and files:
        # The usual mistake, another city's file, fails before the store folder is created (later files are
        # checked as the build reaches them).
        try:
            first = scenarionet.load_scenario(files[0])
        except scenarionet.ScenarioNetFormatError:
            first = None  # reported as a skipped file by the build
        if first is not None:
            areas.for_scenario(first, str(files[0]))
    items = scenarionet.iter_scenes(path, drivable_area=areas, stride=args.stride)
    return SourceInput(_limit_scenes(items, args.num))


def _navsim_input(args: argparse.Namespace) -> SourceInput:
    navsim = _adapter("navsim")

    logs = _require_path(args)
    maps_root = args.maps_root or os.environ.get("NUPLAN_MAPS_ROOT")
    if maps_root is None:
        raise ValueError("--maps-root is required for --source navsim (or set NUPLAN_MAPS_ROOT)")
    if not Path(maps_root).exists():
        raise FileNotFoundError(f"--maps-root {maps_root}: no such directory")
    return SourceInput(_limit_scenes(navsim.iter_scenes(logs, maps_root), args.num))


SOURCES: dict[str, Callable[[argparse.Namespace], SourceInput]] = {
    "synthetic": _synthetic_input,
    "navsim": _navsim_input,
    "av2": _av2_input,
    "av2-forecasting": _av2_forecasting_input,
    "scenarionet": _scenarionet_input,
}
"""``--source`` name -> function turning the parsed arguments into a :class:`SourceInput` (tests may add one)."""


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from irlvla_gym.scenes.store import build_store

    if args.num is not None and args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    if args.source == "synthetic" and args.path is not None:
        raise ValueError("--path is not used with --source synthetic")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    source_input = SOURCES[args.source](args)
    report = build_store(source_input.items, out, split=source_input.split or args.split or args.source, source=args.source,
                         shard_size=args.shard_size, total=source_input.total, progress=not args.no_progress,
                         start_item=source_input.start_item)
    print(report.summary())
    print(dropped_summary(args.source, report.count, report.skipped))
    if report.count == 0:  # nothing usable: a failed build, not an empty success
        reasons = "; ".join(f"{item.item}: {item.error}" for item in report.skipped[:3]) or "the input yielded no items"
        more = f" (and {len(report.skipped) - 3} more skipped)" if len(report.skipped) > 3 else ""
        print(f"irlvla scenes build: error: no scene was stored in {out}: {reasons}{more}", file=sys.stderr)
        return 1
    if not args.no_hooks:  # e.g. the envs' persisted per-scene preparation (irlvla_gym.scenes.source build hooks)
        from irlvla_gym.scenes.source import run_build_hooks

        ran = run_build_hooks(out, not args.no_progress)
        if ran:
            print(f"build hooks: {', '.join(ran)}")
    return 0


def dropped_summary(source: str, built: int, skipped: Iterable[SkippedItem]) -> str:
    """The build report's count of dropped items (windows, files) per reason (:func:`skipped_by_reason`), e.g.::

        scenarionet: 29 scene(s) built, 2 item(s) dropped
          2 x ego not valid through the window   (e.g. a.pkl@t=7.5s: sdc track 'ego' is not valid at ...)
    """
    groups = skipped_by_reason(skipped)
    lines = [f"{source}: {built} scene(s) built, {sum(n for _, n, _ in groups)} item(s) dropped"
             + (" (none)" if not groups else ", by reason:")]
    for reason, n, example in groups:
        lines.append(f"  {n} x {reason}   (e.g. {example})")
    return "\n".join(lines)


def _stats(values: np.ndarray) -> str:
    if len(values) == 0:
        return "-"
    return f"min {values.min()}, mean {values.mean():.1f}, max {values.max()}"


def cmd_info(args: argparse.Namespace) -> int:
    from irlvla_gym.scenes.store import CorruptStoreError, SceneStore

    verify_error = None
    try:
        store = SceneStore(args.dir, verify=True)
    except CorruptStoreError as exc:
        verify_error = exc
        store = SceneStore(args.dir, verify=False)  # sizes still checked: raises if the damage is structural
    m = store.manifest
    n = len(store)
    commands = Counter(int(c[0]) for c in store.column("command"))
    agents = store.shapes("agents.category")[:, 0] if n else np.zeros(0, int)
    lanes = store.shapes("map.lane_ids")[:, 0] if n else np.zeros(0, int)
    maps = Counter(str(s[3]) or "?" for s in store.column("meta.strings"))
    num_files = 1 + sum(len(s["files"]) for s in m["shards"])
    print(f"store:        {store.path}")
    print(f"scenes:       {n} in {len(m['shards'])} shard(s) of up to {m.get('shard_size')}")
    print(f"split:        {store.split}")
    print(f"source:       {store.source}")
    print(f"created:      {m.get('created')}  (format {m['format']} v{m['format_version']})")
    print("commands:     " + ", ".join(f"{name} {commands.get(i, 0)} ({100 * commands.get(i, 0) / max(n, 1):.0f}%)"
                                       for i, name in enumerate(COMMANDS)))
    print(f"agents/scene: {_stats(agents)}")
    print(f"lanes/scene:  {_stats(lanes)}")
    print("maps:         " + (", ".join(f"{k} ({v})" for k, v in maps.most_common(8)) or "-")
          + (f", ... {len(maps) - 8} more" if len(maps) > 8 else ""))
    skipped = store.skipped
    print(f"skipped:      {len(skipped)} item(s)")
    for s in skipped[:5]:
        print(f"  - {s}")
    if len(skipped) > 5:
        print(f"  ... and {len(skipped) - 5} more (see {store.path / 'manifest.json'})")
    print(f"size on disk: {store.disk_bytes() / 1e6:.1f} MB")
    if verify_error is None:
        print(f"verify:       ok ({num_files} files: sizes and blake2b checksums match)")
        return 0
    print(f"verify:       FAILED: {verify_error}")
    return 1


def cmd_render(args: argparse.Namespace) -> int:
    from irlvla_gym.scenes.render import render_scene
    from irlvla_gym.scenes.store import SceneStore

    if (args.index is None) == (args.token is None):
        raise ValueError("give exactly one of --index or --token")
    store = SceneStore(args.dir, verify=not args.no_verify)
    if args.token is not None:
        try:
            index = store.index_of(args.token)
        except KeyError:
            raise ValueError(f"--token {args.token!r}: not in scene store {store.path}") from None
    else:
        index = args.index
        if not -len(store) <= index < len(store):
            raise ValueError(f"--index {index}: out of range for {store.path} ({len(store)} scenes)")
    scene = store[index]
    view = tuple(args.view_range) if args.view_range else None
    kwargs = {"view_range": view} if view else {}
    render_scene(scene, args.out, **kwargs)
    print(f"wrote {args.out} (scene {index % len(store)}: {scene.token}, command {scene.command_name})")
    return 0


def merged_scenes(stores: list, counts: list) -> Iterator:
    """The scenes of ``stores`` in order, the first ``counts[i]`` of store i (None: all); a token seen twice is an
    error naming both stores (a store's tokens index its scenes)."""
    seen: dict[str, str] = {}
    for store, count in zip(stores, counts):
        for i in range(len(store) if count is None else min(count, len(store))):
            scene = store[i]
            if scene.token in seen:
                raise ValueError(f"scene {scene.token!r} is in both {seen[scene.token]} and {store.path}")
            seen[scene.token] = str(store.path)
            yield scene


def cmd_merge(args: argparse.Namespace) -> int:
    """``irlvla scenes merge STORE[:N] ... --out DIR``: one store of the scenes of several (e.g. synthetic scenes
    and real windows for training on both)."""
    from irlvla_gym.scenes.store import SceneStore, build_store

    stores, counts = [], []
    for spec in args.stores:
        path, _, num = spec.partition(":") if not os.path.isdir(spec) else (spec, "", "")
        if num and not num.isdigit():
            raise ValueError(f"{spec!r}: expected STORE or STORE:N (the first N scenes)")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"store {spec!r}: {path} is not a scene-store directory")
        stores.append(SceneStore(path))
        counts.append(int(num) if num else None)
    total = sum(len(st) if n is None else min(n, len(st)) for st, n in zip(stores, counts))
    report = build_store(merged_scenes(stores, counts), args.out, split=args.split, source="merged", total=total,
                         progress=not args.no_progress)
    print(f"{args.out}: {report.count} scenes from {len(stores)} stores")
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``scenes build | info | render`` to the ``irlvla`` command line."""
    scenes = subparsers.add_parser("scenes", help="build, inspect and render scene stores",
                                   description="Build, inspect and render scene stores (cached canonical scenes).")
    sub = scenes.add_subparsers(dest="scenes_command", metavar="SUBCOMMAND")
    sub.required = True

    build = sub.add_parser("build", help="convert a source into a scene store",
                           description="Convert scenes from a source into a scene store (resumable: rerun the same "
                                       "command after an interruption).")
    build.add_argument("--source", required=True, choices=sorted(SOURCES), help="scene source")
    build.add_argument("--split", help="split name (synthetic: a generator split, default synthetic-train; others: "
                                       "a label recorded in the store, default the source name)")
    build.add_argument("--num", type=int, help="at most this many scenes (default: all)")
    build.add_argument("--path", help="input: NAVSIM logs dir, AV2 log dir/root, AV2 motion-forecasting scenario "
                                      "folder/root, ScenarioNet .pkl or folder")
    build.add_argument("--maps-root", help="nuPlan maps root for --source navsim (default $NUPLAN_MAPS_ROOT)")
    build.add_argument("--drivable-area",
                       help="--source scenarionet: a folder of <city>_drivable_area.json GeoJSON files (each scene's "
                            "city, from its metadata, picks one) or one GeoJSON file (an error if its city is not the "
                            "scene's)")
    build.add_argument("--ego", choices=("av", "focal"), default="av",
                       help="--source av2-forecasting: the ego track, the recording vehicle (av, default) or the "
                            "scenario's focal track")
    build.add_argument("--stride", type=int, default=1,
                       help="take every STRIDE-th 2 Hz window (av2, av2-forecasting, scenarionet)")
    build.add_argument("--shard-size", type=int, default=512, help="scenes per shard (default 512)")
    build.add_argument("--out", required=True, help="output store directory")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--no-hooks", action="store_true",
                       help="skip the build hooks (e.g. the envs' persisted per-scene preparation)")
    build.set_defaults(func=cmd_build)

    merge = sub.add_parser("merge", help="one store of the scenes of several",
                           description="Write one scene store holding the scenes of several (in order), e.g. "
                                       "synthetic scenes and real windows to train on both.")
    merge.add_argument("stores", nargs="+", metavar="STORE[:N]", help="store directories; :N takes the first N scenes")
    merge.add_argument("--out", required=True, help="output store directory")
    merge.add_argument("--split", default="merged", help="split label recorded in the store (default: merged)")
    merge.add_argument("--no-progress", action="store_true", help="no progress bar")
    merge.set_defaults(func=cmd_merge)

    info = sub.add_parser("info", help="summarise a scene store and verify its checksums")
    info.add_argument("dir", help="store directory")
    info.set_defaults(func=cmd_info)

    render = sub.add_parser("render", help="draw one scene of a store to a PNG")
    render.add_argument("dir", help="store directory")
    render.add_argument("--index", type=int, help="scene index (negative counts from the end)")
    render.add_argument("--token", help="scene token")
    render.add_argument("--out", required=True, help="output PNG path")
    render.add_argument("--view-range", type=float, nargs=4, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
                        help="view in the ego frame (m); default -20 60 -40 40")
    render.add_argument("--no-verify", action="store_true", help="skip checksum verification (sizes still checked)")
    render.set_defaults(func=cmd_render)


if __name__ == "__main__":  # pragma: no cover  (``irlvla scenes ...`` is the documented spelling)
    parser = argparse.ArgumentParser(prog="python -m irlvla_gym.scenes.cli")
    register(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["scenes", *sys.argv[1:]])
    sys.exit(int(arguments.func(arguments) or 0))
