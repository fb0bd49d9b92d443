"""Where scenes come from: :class:`SceneSource` (a split name, a store, a store path or a list of scenes).

Split names (``"synthetic-train"`` ...) resolve to:

1. a prebuilt scene store at ``<cache dir>/scenes/<split>`` if one exists (build it once with
   ``python -m irlvla_gym.scenes.source --build synthetic-train``, progress bar included), else
2. with ``num_scenes = N``, the prebuilt store of the split's first N scenes at ``<cache dir>/scenes/<split>-firstN``
   if one exists (:func:`build_pool_store`; training commands build it for a pool that fits the envs' scene cache,
   so that later runs read the envs' persisted preparation of those scenes, :mod:`irlvla_gym.envs.prepared`), else
3. lazy generation: scene ``i`` is ``generate_scene(first_seed + i, split=...)`` made on first use (~30 ms). The env
   keeps its per-scene precomputations in an in-memory LRU (``EnvConfig.scene_cache_size``), so a pool of scenes
   that fits the LRU is generated once per process; ``num_scenes`` restricts episodes to such a pool.

Tokens of a split are known without generating (``f"{split}-{i:05d}"``), so ``options={"token": ...}`` is free.
Used by the envs, BC, the reward-model dataset and the leaderboard.

**Build hooks.** Floors above the scenes (the envs' persisted per-scene preparation,
:mod:`irlvla_gym.envs.prepared`) add work to a finished store build without this floor importing them: a hook
``fn(store_dir: Path, progress: bool) -> None`` is registered at run time with :func:`register_build_hook`, or
declared as a package entry point in the group ``irlvla_gym.store_hooks`` (as rewards are, :mod:`irlvla_gym.rewards`).
:func:`build_split_store` and ``irlvla scenes build`` run them after the store is written (:func:`run_build_hooks`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from irlvla_gym.scenes.scene import Scene
from irlvla_gym.utils import cache_dir


def split_store_path(split: str) -> Path:
    """Where a prebuilt store of a synthetic split lives: ``<cache dir>/scenes/<split>``."""
    return Path(cache_dir()) / "scenes" / split


def pool_store_path(split: str, num_scenes: int) -> Path:
    """Where a prebuilt store of the first ``num_scenes`` scenes of a synthetic split lives:
    ``<cache dir>/scenes/<split>-first<num_scenes>``."""
    return Path(cache_dir()) / "scenes" / f"{split}-first{int(num_scenes)}"


_VERIFIED: dict[str, tuple[int, int]] = {}
"""Store directory (real path) -> (mtime_ns, size) of its manifest when this process last verified every checksum."""


def open_verified_store(path: str | os.PathLike):
    """Open a scene store with every file's checksum verified, once per process and store version.

    Every consumer (envs, BC, the reward-model dataset, the leaderboard) opens stores through :class:`SceneSource`,
    so a corrupt or altered store is refused (:class:`~irlvla_gym.scenes.store.CorruptStoreError` naming the file)
    before any of its data is used. The full check hashes every file once (~18 kB per scene); later opens in the same
    process with an unchanged manifest only check sizes (the store itself always does).
    """
    from irlvla_gym.scenes.store import SceneStore

    real = os.path.realpath(path)
    try:
        stat = os.stat(os.path.join(real, "manifest.json"))
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # SceneStore raises the clear error
    if stamp is not None and _VERIFIED.get(real) == stamp:
        return SceneStore(path, verify=False)
    store = SceneStore(path, verify=True)
    if stamp is not None:
        _VERIFIED[real] = stamp
    return store


class SceneSource:
    """Indexable scenes with tokens, from a split name, a store (object or path) or a list of scenes.

    Args:
        scenes: see :class:`~irlvla_gym.envs.config.EnvConfig` ``scenes``; None uses ``split``.
        split: synthetic split name used when ``scenes`` is None.
        num_scenes: keep only the first ``num_scenes``.
    """

    def __init__(self, scenes: Any = None, split: str = "synthetic-train", num_scenes: int | None = None):
        from irlvla_gym.scenes.store import SceneStore

        self._split_spec = None
        self._store = None
        self._list: list[Scene] | None = None
        if scenes is None:
            scenes = split
        if isinstance(scenes, Scene):
            scenes = [scenes]
        if isinstance(scenes, (str, os.PathLike)) and not os.path.isdir(scenes):
            from irlvla_gym.scenes.synthetic import SPLITS

            name = str(scenes)
            if name not in SPLITS:
                raise ValueError(f"scenes={name!r} is neither a synthetic split ({', '.join(SPLITS)}) nor a "
                                 "scene-store directory")
            prebuilt = split_store_path(name)
            pool = (pool_store_path(name, num_scenes) if isinstance(num_scenes, int) and
                    not isinstance(num_scenes, bool) and num_scenes >= 1 else None)
            if (prebuilt / "manifest.json").exists():
                self._store = open_verified_store(prebuilt)
            elif pool is not None and (pool / "manifest.json").exists():
                self._store = open_verified_store(pool)
            else:
                self._split_spec = SPLITS[name]
            self.name = name
        elif isinstance(scenes, (str, os.PathLike)):
            self._store = open_verified_store(scenes)
            self.name = str(scenes)
        elif isinstance(scenes, SceneStore):
            self._store = scenes
            self.name = str(scenes.path)
        else:
            self._list = list(scenes)
            if not self._list or not all(isinstance(s, Scene) for s in self._list):
                raise ValueError("scenes must be a split name, a store, a store path or a non-empty list of Scene")
            self.name = "list"
        if self._store is not None:
            self._tokens = [str(t) for t in self._store.tokens]
        elif self._list is not None:
            self._tokens = [s.token for s in self._list]
        else:
            spec = self._split_spec
            self._tokens = [f"{spec.name}-{i:05d}" for i in range(spec.size)]
        if num_scenes is not None:
            if isinstance(num_scenes, bool) or int(num_scenes) != num_scenes or not 1 <= num_scenes <= len(self._tokens):
                raise ValueError(f"num_scenes={num_scenes!r}: expected an integer from 1 to {len(self._tokens)} "
                                 f"(the scenes of {self.name}), or None for all")
            self._tokens = self._tokens[:int(num_scenes)]
        self._index = {t: i for i, t in enumerate(self._tokens)}

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def cache_key(self) -> tuple[Hashable, Any]:
        """(key, keep_alive): identifies what ``load(i)`` returns, for :func:`shared_lru` (scene ``i`` of a source
        does not depend on ``num_scenes``)."""
        if self._list is not None:
            return ("list", tuple(id(s) for s in self._list)), self._list
        if self._store is not None:
            path = getattr(self._store, "path", None)
            if path is not None:
                return ("store", os.path.realpath(str(path))), None
            return ("store-object", id(self._store)), self._store
        return ("split", self._split_spec.name), None

    @property
    def store(self) -> Any:
        """The :class:`~irlvla_gym.scenes.store.SceneStore` the scenes are read from (None: a list or lazy
        generation)."""
        return self._store

    def token(self, index: int) -> str:
        return self._tokens[index]

    def index_of(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise KeyError(f"scene token {token!r} is not in the env's scenes ({self.name})") from None

    def load(self, index: int) -> Scene:
        """Scene ``index`` (generated, read from the store or taken from the list)."""
        if not 0 <= index < len(self):
            raise IndexError(f"scene_index {index} out of range for {len(self)} scenes")
        if self._list is not None:
            return self._list[index]
        if self._store is not None:
            return self._store[index]
        from irlvla_gym.scenes.synthetic import generate_scene

        spec = self._split_spec
        return generate_scene(spec.first_seed + index, spec.config, spec.name)


BuildHook = Callable[[Path, bool], None]
HOOK_ENTRY_POINT_GROUP = "irlvla_gym.store_hooks"
_HOOKS: dict[str, BuildHook] = {}


def register_build_hook(name: str, hook: BuildHook) -> None:
    """Run ``hook(store_dir, progress)`` after every store build of this process (a later registration of the same
    name replaces the earlier one)."""
    _HOOKS[name] = hook


def build_hooks() -> dict[str, BuildHook]:
    """The registered hooks plus those declared as entry points (group ``irlvla_gym.store_hooks``), by name."""
    hooks = {}
    for ep in importlib.metadata.entry_points(group=HOOK_ENTRY_POINT_GROUP):
        if ep.name not in _HOOKS:
            hooks[ep.name] = ep.load()
    hooks.update(_HOOKS)
    return hooks


def run_build_hooks(store_dir: str | os.PathLike, progress: bool = True) -> list[str]:
    """Run every build hook on a finished store; returns their names (in order)."""
    hooks = build_hooks()
    for hook in hooks.values():
        hook(Path(store_dir), progress)
    return list(hooks)


def build_split_store(split: str, num: int | None = None, progress: bool = True, hooks: bool = True) -> Path:
    """Build (or finish) the cached store of a synthetic split at :func:`split_store_path`, then run the build
    hooks (``hooks=False``: not); returns its path."""
    from irlvla_gym.scenes.store import build_store
    from irlvla_gym.scenes.synthetic import iter_scenes, split_size

    out = split_store_path(split)
    total = split_size(split) if num is None else min(num, split_size(split))
    build_store(iter_scenes(split, total), out, split=split, source="synthetic", total=total, progress=progress)
    if hooks:
        run_build_hooks(out, progress)
    return out


def build_pool_store(split: str, num_scenes: int, progress: bool = True) -> Path:
    """Build the store of a synthetic split's first ``num_scenes`` scenes at :func:`pool_store_path` (the scenes lazy
    generation makes, bit for bit) and return its path. Written to a temporary directory renamed into place, so a
    concurrent build of the same pool leaves one complete store. No build hooks: the envs prepare its scenes on
    first use and persist them beside it (what later runs read instead of generating and preparing them again)."""
    import shutil

    from irlvla_gym.scenes.store import build_store
    from irlvla_gym.scenes.synthetic import iter_scenes

    out = pool_store_path(split, num_scenes)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_store(iter_scenes(split, num_scenes), tmp, split=split, source="synthetic", total=num_scenes,
                progress=progress)
    try:
        os.rename(tmp, out)
    except OSError:  # another process built it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prebuild the env's scene store of a synthetic split.")
    parser.add_argument("--build", required=True, metavar="SPLIT")
    parser.add_argument("--num", type=int, default=None)
    parser.add_argument("--no-hooks", action="store_true", help="do not run the build hooks (e.g. env preparation)")
    args = parser.parse_args(argv)
    print(build_split_store(args.build, args.num, hooks=not args.no_hooks))


if __name__ == "__main__":
    main()


__all__ = ["BuildHook", "HOOK_ENTRY_POINT_GROUP", "SceneSource", "open_verified_store", "build_hooks",
           "build_pool_store", "build_split_store", "pool_store_path", "register_build_hook", "run_build_hooks",
           "split_store_path"]
