"""One small least-recently-used cache for the whole package (no dependencies; the lowest floor of the house).

Used for per-scene precomputations: the observation builders' prepared map geometry and static layers
(:mod:`irlvla_gym.obs`), and the envs' process-wide per-scene caches (:func:`shared_lru`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """A least-recently-used cache of at most ``size`` entries: ``get(key, make)`` returns the cached value (and marks
    it most recently used) or computes ``make()``, stores it and evicts the least recently used entry when full.

    ``size`` is a public attribute and may be changed later (a smaller value takes effect at the next insertion).
    With ``size <= 0`` nothing is kept: every ``get`` calls ``make()``.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self._data: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value cached for ``key``, else ``make()`` (cached when ``size > 0``)."""
        data = self._data
        if key in data:
            data.move_to_end(key)
            return data[key]
        value = make()
        if self.size > 0:
            data[key] = value
            while len(data) > self.size:
                data.popitem(last=False)
        return value

    def peek(self, key: Hashable) -> V | None:
        """The value cached for ``key`` or None, leaving the recency order as it is (a reader that must not keep
        entries alive nor add any)."""
        return self._data.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry."""
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


def existing_shared_lru(key: Hashable) -> LRU | None:
    """The process-wide LRU of ``key`` if :func:`shared_lru` made one, else None (nothing is created)."""
    entry = _SHARED.get(key)
    return None if entry is None else entry[0]


def clear_shared_caches() -> None:
    """Drop every process-wide cache made by :func:`shared_lru` (frees memory; users rebuild entries on demand)."""
    _SHARED.clear()
