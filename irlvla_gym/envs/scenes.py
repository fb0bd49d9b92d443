"""The envs' process-wide per-scene caches (:func:`shared_lru`).

:class:`SceneSource` moved to :mod:`irlvla_gym.scenes.source` (it serves BC, the reward model and the leaderboard
too); it is re-exported here so ``from irlvla_gym.envs.scenes import SceneSource`` keeps working.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

from irlvla_gym.scenes.source import SceneSource, build_split_store, split_store_path

V = TypeVar("V")


class LRU(Generic[V]):
    """A small least-recently-used cache: ``get(key, make)`` returns the cached value or stores ``make()``."""

    def __init__(self, size: int):
        self.size = int(size)
        self._data: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = make()
        self._data[key] = value
        if len(self._data) > self.size:
            self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


_SHARED: dict[Hashable, tuple[LRU, Any]] = {}


def shared_lru(key: Hashable, size: int, keep_alive: Any = None) -> LRU:
    """A process-wide LRU for ``key`` (created on first use, grown to the largest ``size`` asked for).

    The envs keep their per-scene precompute here, keyed by scene source and traffic model, so N envs of one
    process (gymnasium's SyncVectorEnv, SB3's DummyVecEnv, the native vector envs) prepare each scene once instead
    of N times, and hold one copy of it. ``keep_alive`` is stored with the cache (e.g. the scene list whose object
    ids are part of ``key``, so the ids cannot be reused while the cache exists).
    """
    entry = _SHARED.get(key)
    if entry is None:
        entry = _SHARED[key] = (LRU(size), keep_alive)
    lru = entry[0]
    lru.size = max(lru.size, int(size))
    return lru


def clear_shared_caches() -> None:
    """Drop every process-wide scene cache (frees memory; envs rebuild entries on demand)."""
    _SHARED.clear()


__all__ = ["LRU", "SceneSource", "build_split_store", "clear_shared_caches", "shared_lru", "split_store_path"]


if __name__ == "__main__":  # the old spelling of ``python -m irlvla_gym.scenes.source --build SPLIT``
    from irlvla_gym.scenes.source import main

    main()
