"""Persisted per-scene preparation of the envs: what :func:`~irlvla_gym.envs.scoring.make_bundle` and the t0
observation cost (~10 ms per scene on top of loading it) is computed once per scene store and read back in ~0.1 ms.

**What is kept.** Per scene, two tables:

* ``bundles-<traffic>``: the :class:`~irlvla_gym.envs.scoring.SceneBundle` values: the scoring context
  (:func:`irlvla_gym.metrics.prepare_scene`: map polygons, route, lights, history), its map index (the
  :class:`~irlvla_gym.metrics.polyindex.PolygonIndex`, the costliest part), the replayed agents, the expert's simulated
  states, its raw evaluation and the EP reference;
* ``obs``: the t0 observation arrays and instruction text for one observation config (keys + ``ObsConfig``).

**Where.** ``<store>/prepared/<table>-<key>/``, beside the store's ``shards/``. ``<key>`` hashes everything the
values depend on (:func:`bundle_key`, :func:`obs_key`): :data:`PREP_VERSION`, the scorer / simulator / observation
configs, the traffic model, the map-index cell size, a digest of the source files of the code that computes them
(``irlvla_gym/metrics``, ``sim``, ``obs``, ``scenes``, this module ...) and the store's own file checksums. A change
of any of them gives another directory: a stale cache is never read (a warning names the key fields that changed and
the old directory, which can be deleted).

**Format** (no pickle). A table holds *chunks*, each covering some scenes of one store shard: ``<name>.npy``, one
uint8 array (the scenes' field arrays back to back, 64-byte aligned, after an int64 index of offsets and shapes), and
``<name>.json`` (written last: field names and dtypes, scene indices and tokens, the file size, a crc32 of the index
and one crc32 per scene). Readers memory-map the ``.npy`` and build each field as a read-only view when it is first
read (:class:`SceneArrays`: a slice of the mapped bytes viewed as the field's dtype; the ~30 fields a bundle is made
of in one call, :meth:`SceneArrays.many`; the expert's evaluation and the map polygons only on demand). int64 fields
that are >= 0 are stored in the narrowest unsigned type that holds them (restored exactly; the map index's CSR
offsets as offsets, 2 bytes each: a cumsum from counts cost ~25 us per scene read; they are handed to the index as
stored, which widens them on first access, and the vector env's packed index reads them as they are).

**Integrity.** The index's crc32 is checked when a chunk is opened, each scene's crc32 and token the first time the
scene is read in a process (~50 us per 100 kB); a failing chunk is renamed ``*.corrupt``, a warning names the file
and its scenes are prepared again (and written again). crc32, not blake2b: the check runs on the env's hot path and
crc32 is 2.3x faster here; it detects corruption, not tampering.

**Writing.** ``python -m irlvla_gym.envs.prepared synthetic-train`` builds the split's default store if it is
missing and prepares it (a store directory: prepares it): one chunk per shard, with a progress bar, resumable
(covered scenes are skipped). Store builds run :func:`prepare_store` as a build hook
(:func:`irlvla_gym.scenes.source.run_build_hooks`) in every process that has imported this module (any process that
made an env; the benchmarks); for ``irlvla scenes build`` and ``python -m irlvla_gym.scenes.source --build`` in a
fresh process, the entry point ``[project.entry-points."irlvla_gym.store_hooks"] env-prepared =
"irlvla_gym.envs.prepared:prepare_store_hook"`` has to be declared in ``pyproject.toml``. Stores built before are filled on first use (write-through): the envs prepare unseen scenes as
before and append them as new chunks of at least :data:`CHUNK_MIN` scenes (and at close / exit). Every file is
written to a temporary name and renamed, and chunk names are unique, so processes sharing a store never see half a
chunk; two processes preparing the same scene write it twice, and readers take either (identical) copy.

Set ``IRLVLA_PREPARED=0`` to neither read nor write these caches. Results are the same bit for bit with a persisted
cache, a cache being filled and no cache (tests/envs/test_prepared.py).
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import dataclasses
import hashlib
import json
import math
import os
import time
import uuid
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from irlvla_gym.envs import scoring
from irlvla_gym.envs.scoring import SceneBundle, attach_polygon_index, make_bundle
from irlvla_gym.metrics.polyindex import INDEX_ARRAYS, WIDE_ARRAYS
from irlvla_gym.metrics.result import ScoreResult
from irlvla_gym.scenes.scene import EgoVehicle, Scene
from irlvla_gym.scenes.source import build_split_store, register_build_hook, split_store_path
from irlvla_gym.utils import atomic_write

PREP_VERSION = 1
"""Bump when what is persisted or how it is computed changes in a way the source digest cannot see."""
DIR_NAME = "prepared"
FORMAT_NAME = "irlvla-prepared"
CHUNK_MIN = 64
"""Scenes prepared on first use that are collected per store shard before they are written as one chunk."""
POOL_STORE_MIN = 64
"""Smallest training pool that fits the scene cache and still gets a store of its own (:func:`ensure_split_store`):
regenerating fewer scenes costs under a second per run, less than a store and its files are worth."""
ALIGN = 64  # bytes: every field starts on a 64-byte boundary of the mapped file (aligned views)
ENV_SWITCH = "IRLVLA_PREPARED"
# Key fields that select a table (other configurations have tables of their own) rather than version it.
SELECTORS = ("table", "traffic", "index_resolution_m", "keys", "obs_config")
RESCAN_S = 2.0  # a miss re-lists a table's chunks (written by other processes) at most this often

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The scene modules the computations import (not the adapters or the store: a stored scene is covered by the store's
# checksums), so editing an adapter does not invalidate every cache. tests/envs/test_prepared.py checks that these
# lists are closed under imports.
SCENE_CODE = ("scenes/scene.py", "scenes/routing.py", "scenes/geometry.py")
BUNDLE_CODE = ("metrics", "sim", *SCENE_CODE, "geometry.py", "cache.py", "utils.py", "envs/scoring.py",
               "envs/prepared.py")
OBS_CODE = ("obs", *SCENE_CODE, "geometry.py", "cache.py", "utils.py", "envs/prepared.py")

INDEX_ATTRS = ("num_polygons", "resolution", *INDEX_ARRAYS)  # PolygonIndex.to_arrays / from_arrays
INDEX_FIELDS = tuple(f"pi.{name}" for name in INDEX_ATTRS)  # their array keys, read on every first visit
CONTEXT_ARRAYS = ("polygon_is_lane", "polygon_is_on_route", "polygon_is_intersection", "lane_is_connector",
                  "red_connectors", "route_centerline", "history_states", "expert_poses")
CONTEXT_FIELDS = frozenset(CONTEXT_ARRAYS) | {"token", "vehicle", "config", "polygons", "num_lanes", "cache"}
# What bundle_from_arrays reads (in this order), and what it takes as stored (narrowed): the map index's CSR arrays
# (the index widens them on access) and two counts it converts with int()
EAGER_FIELDS = ("ctx.vehicle", "ctx.num_lanes", *(f"ctx.{n}" for n in CONTEXT_ARRAYS), *INDEX_FIELDS, "log.boxes",
                "log.valid", "log.category", "start_state", "human_states", "reference_progress")
NARROW_FIELDS = frozenset((*(f"pi.{n}" for n in WIDE_ARRAYS), "ctx.num_lanes", "pi.num_polygons"))
RESULT_SCALARS = {"has_ec": bool, "dt": float}
RESULT_DEFAULTS = {"human": None, "filtered": (), "unfiltered": {}}
# The persisted ScoreResult fields: (name, array key, scalar type or None), listed once (dataclasses.fields and the
# key per field cost ~8 us of each bundle read).
RESULT_FIELDS = [(f.name, f"hr.{f.name}", RESULT_SCALARS.get(f.name)) for f in dataclasses.fields(ScoreResult)
                 if f.name not in RESULT_DEFAULTS]


class PreparedFormatError(ValueError):
    """A value that this module cannot persist exactly (names the field); the env then prepares in memory only."""


# ---------------------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, ...], str] = {}


def source_digest(parts: Sequence[str]) -> str:
    """blake2b of the source files (paths relative to the ``irlvla_gym`` package; folders recursively, caches and
    markdown excluded) that compute a table's values: editing any of them invalidates the table."""
    key = tuple(parts)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        for part in parts:
            path = PACKAGE_ROOT / part
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".md"):
                    h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
                    h.update(f.read_bytes())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def store_digest(store: Any) -> str:
    """blake2b of a store's token file and shard file checksums: the scenes' identity, not the path."""
    manifest = store.manifest
    content = json.dumps([manifest.get("tokens"), [s.get("files") for s in manifest.get("shards", [])]],
                         sort_keys=True)
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


def _config_dict(obj: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def bundle_key(store: Any, traffic: str, resolution: float) -> dict[str, Any]:
    """Everything a ``bundles-<traffic>`` table's values depend on (``resolution``: the map index's cells, m)."""
    from irlvla_gym.metrics.config import DEFAULT_CONFIG
    from irlvla_gym.sim.config import SimConfig, TrafficConfig

    return {"table": f"bundles-{traffic}", "prep_version": PREP_VERSION, "traffic": traffic,
            "scorer": _config_dict(DEFAULT_CONFIG), "sim": _config_dict(SimConfig()),
            "traffic_config": _config_dict(TrafficConfig()), "index_resolution_m": float(resolution),
            "code": source_digest(BUNDLE_CODE), "store": store_digest(store)}


def obs_key(store: Any, builder: Any) -> dict[str, Any]:
    """Everything an ``obs`` table's values depend on (observation keys and config)."""
    return {"table": "obs", "prep_version": PREP_VERSION, "keys": list(builder.keys),
            "obs_config": _config_dict(builder.config), "code": source_digest(OBS_CODE),
            "store": store_digest(store)}


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Per-scene values <-> flat dicts of arrays
# ---------------------------------------------------------------------------------------------------------------------


class PackedPolygons(Sequence):
    """``ScoringContext.polygons`` (``[[exterior, hole, ...], ...]``, (n, 2) float64 rings) read from packed arrays:
    rings are made on access (the scorer reads only a few: the red connectors; the map index is persisted).

    Args: a: the bundle's arrays (read on first access), ``ctx.ring_xy`` (V, 2) float64 ring vertices (m),
    ``ctx.ring_start`` (R + 1,) int64, ``ctx.poly_start`` (P + 1,) int64 (rings of polygon p are
    ``poly_start[p]:poly_start[p + 1]``).
    """

    def __init__(self, a: Mapping[str, np.ndarray]):
        self.arrays = a
        self._lists: tuple[list[int], list[int]] | None = None  # the offsets as lists, made on first access

    def _offset_lists(self) -> tuple[list[int], list[int]]:
        if self._lists is None:
            self._lists = self.arrays["ctx.ring_start"].tolist(), self.arrays["ctx.poly_start"].tolist()
        return self._lists

    def __len__(self) -> int:
        return len(self._offset_lists()[1]) - 1

    def __getitem__(self, p):  # type: ignore[override]
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        if p < 0:
            p += len(self)
        if not 0 <= p < len(self):
            raise IndexError(f"polygon {p} out of range for {len(self)} polygons")
        rs, ps = self._offset_lists()
        xy = self.arrays["ctx.ring_xy"]
        return [xy[rs[r]:rs[r + 1]] for r in range(ps[p], ps[p + 1])]


def _polygon_arrays(polygons: Sequence[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    rings = [r for poly in polygons for r in poly]
    for r in rings:
        if not isinstance(r, np.ndarray) or r.dtype != np.float64 or r.ndim != 2 or r.shape[1] != 2:
            raise PreparedFormatError("ScoringContext.polygons: rings must be (n, 2) float64 arrays")
    return {"ctx.ring_xy": np.concatenate(rings) if rings else np.zeros((0, 2)),
            "ctx.ring_start": np.r_[0, np.cumsum([len(r) for r in rings], dtype=np.int64)].astype(np.int64),
            "ctx.poly_start": np.r_[0, np.cumsum([len(p) for p in polygons], dtype=np.int64)].astype(np.int64)}


def _index_arrays(index: Any) -> dict[str, np.ndarray]:
    names = set(vars(index)) - {"narrow"}  # narrow: the not yet widened arrays of an index read back
    if not names <= set(INDEX_ATTRS) or (names != set(INDEX_ATTRS) and "narrow" not in vars(index)):
        # a new attribute would silently not be persisted
        raise PreparedFormatError(f"PolygonIndex attributes changed: {sorted(names ^ set(INDEX_ATTRS))}")
    return {f"pi.{name}": value for name, value in index.to_arrays().items()}


def index_from_arrays(a: Mapping[str, np.ndarray]) -> Any:
    """The :class:`~irlvla_gym.metrics.polyindex.PolygonIndex` persisted by :func:`bundle_arrays` (the same
    attributes, values and dtypes as the one built, without rebuilding it). From a chunk's :class:`SceneArrays`
    its large CSR offsets are handed over as stored (uint16, ...): the index widens them on first access, and a
    packed index (the vector env's) reads them as they are."""
    return _polygon_index(_read(a, INDEX_FIELDS))


def _polygon_index(values: Sequence[np.ndarray]) -> Any:
    """A :class:`PolygonIndex` from the values of :data:`INDEX_FIELDS`, in that order."""
    from irlvla_gym.metrics.polyindex import PolygonIndex

    return PolygonIndex.from_arrays(dict(zip(INDEX_ATTRS, values)))


def _read(a: Mapping[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray]:
    """Fields ``names`` of a bundle's arrays: of a :class:`SceneArrays` in one call (:data:`NARROW_FIELDS` as
    stored), else one by one."""
    if isinstance(a, SceneArrays):
        return a.many(names, NARROW_FIELDS)
    return [a[n] for n in names]


def bundle_arrays(bundle: SceneBundle) -> dict[str, np.ndarray]:
    """The persisted values of a bundle (see module docs) as a flat dict of arrays. Raises
    :class:`PreparedFormatError` naming what cannot be stored exactly (a field added to the scorer's types)."""
    from irlvla_gym.metrics.config import DEFAULT_CONFIG

    ctx, scene = bundle.ctx, bundle.scene
    names = {f.name for f in dataclasses.fields(ctx)}
    if names != CONTEXT_FIELDS:
        raise PreparedFormatError(f"ScoringContext fields changed: {sorted(names ^ CONTEXT_FIELDS)}")
    if ctx.config != DEFAULT_CONFIG or ctx.token != scene.token or ctx.vehicle != scene.ego.vehicle:
        raise PreparedFormatError(f"scene {scene.token}: context config / token / vehicle not the defaults")
    if "polygon_index" not in ctx.cache:
        raise PreparedFormatError(f"scene {scene.token}: the context has no map index to persist")
    out = {f"ctx.{n}": getattr(ctx, n) for n in CONTEXT_ARRAYS}
    out["ctx.num_lanes"] = np.int64(ctx.num_lanes)
    out["ctx.vehicle"] = ctx.vehicle.as_array()  # read back without loading the scene
    out.update(_polygon_arrays(ctx.polygons))
    out.update(_index_arrays(ctx.cache["polygon_index"]))
    log = bundle.log_agents
    out.update({"log.boxes": log.boxes, "log.valid": log.valid, "log.category": log.category})
    raw = bundle.human_raw
    for f in dataclasses.fields(ScoreResult):
        value = getattr(raw, f.name)
        if f.name in RESULT_SCALARS:
            out[f"hr.{f.name}"] = np.asarray(value, np.float64)
        elif f.name in RESULT_DEFAULTS:
            if value != RESULT_DEFAULTS[f.name]:
                raise PreparedFormatError(f"scene {scene.token}: expert evaluation field {f.name!r} is set")
        elif isinstance(value, np.ndarray):
            out[f"hr.{f.name}"] = value
        else:
            raise PreparedFormatError(f"ScoreResult.{f.name}: {type(value).__name__} cannot be persisted")
    out.update({"start_state": bundle.start_state, "human_states": bundle.human_states,
                "reference_progress": np.float64(bundle.reference_progress)})
    return {k: np.asarray(v) for k, v in out.items()}


def bundle_from_arrays(index: int, token: str, scene: Scene | Callable[[], Scene],
                       a: Mapping[str, np.ndarray]) -> SceneBundle:
    """The :class:`SceneBundle` of scene ``index`` (``token``) from :func:`bundle_arrays` values (read-only views);
    ``scene``: the scene or a function that loads it (:attr:`SceneBundle.scene`)."""
    from irlvla_gym.metrics import AgentTracks, ScoringContext
    from irlvla_gym.metrics.config import DEFAULT_CONFIG

    f = _read(a, EAGER_FIELDS)  # the fields every first visit reads, at once
    n_ctx, n_index = 2 + len(CONTEXT_ARRAYS), 2 + len(CONTEXT_ARRAYS) + len(INDEX_ATTRS)
    ctx = ScoringContext(token=token, vehicle=EgoVehicle.from_array(f[0]), config=DEFAULT_CONFIG,
                         polygons=PackedPolygons(a), num_lanes=int(f[1]), **dict(zip(CONTEXT_ARRAYS, f[2:n_ctx])))
    attach_polygon_index(ctx, _polygon_index(f[n_ctx:n_index]))
    boxes, valid, category, start_state, human_states, reference_progress = f[n_index:]
    return SceneBundle(index, scene, ctx, start_state, AgentTracks(boxes, valid, category), human_states,
                       PersistedResult(a), float(reference_progress))


_RESULT_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}  # field names -> their array keys (PersistedResult)


class PersistedResult:
    """The expert's persisted :class:`~irlvla_gym.metrics.result.ScoreResult` of a bundle, read lazily: its
    attributes are the fields' arrays (read on access: the human filter reads six), :meth:`result` builds it
    (:attr:`SceneBundle.human_raw`).

    Args: a: the bundle's arrays (:func:`bundle_arrays` keys; a lazy :class:`SceneArrays`).
    """

    def __init__(self, a: Mapping[str, np.ndarray]):
        self.arrays = a

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("__") or name == "arrays":
            raise AttributeError(name)
        try:
            return self.arrays[f"hr.{name}"]
        except KeyError:
            raise AttributeError(name) from None

    def first_values(self, names: tuple[str, ...]) -> list[float]:
        """:meth:`ScoreResult.first_values`, the fields read at once (:meth:`SceneArrays.many`)."""
        keys = _RESULT_KEYS.get(names)
        if keys is None:
            keys = _RESULT_KEYS[names] = tuple(f"hr.{n}" for n in names)
        return [float(v[0]) for v in _read(self.arrays, keys)]

    def result(self) -> ScoreResult:
        a = self.arrays
        return ScoreResult(**{name: a[key] if convert is None else convert(a[key])
                              for name, key, convert in RESULT_FIELDS})


def obs_arrays(obs: Mapping[str, np.ndarray], text: str) -> dict[str, np.ndarray]:
    """A t0 observation and its instruction text as a flat dict of arrays (text as UTF-8 bytes)."""
    out = {f"obs.{k}": np.asarray(v) for k, v in obs.items()}
    out["text"] = np.frombuffer(text.encode("utf-8"), np.uint8)
    return out


def obs_from_arrays(a: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """(observation dict of read-only arrays, instruction text) from :func:`obs_arrays` values."""
    names = a.chunk.names if isinstance(a, SceneArrays) else tuple(a)
    obs, text = {}, None
    for k, v in zip(names, _read(a, names)):
        if k.startswith("obs."):
            v.setflags(write=False)  # shared by every env and episode of the scene, as the rendered ones
            obs[k[4:]] = v
        elif k == "text":
            text = bytes(v).decode("utf-8")
    return obs, text


# ---------------------------------------------------------------------------------------------------------------------
# Chunks: one .npy blob + one .json per group of scenes of a shard
# ---------------------------------------------------------------------------------------------------------------------


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _narrow(values: list[np.ndarray]) -> np.dtype:
    """The storage dtype of one field over a chunk's scenes: int64 fields that are >= 0 in the narrowest unsigned
    type holding them (restored exactly on read); every other dtype as it is."""
    dtype = values[0].dtype
    if dtype != np.int64:
        return dtype
    sizes = [v for v in values if v.size]
    lo = min((int(v.min()) for v in sizes), default=0)
    hi = max((int(v.max()) for v in sizes), default=0)
    if lo < 0:
        return dtype
    for small in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(small).max:
            return np.dtype(small)
    return dtype


def write_chunk(table_dir: Path, shard: int, key: str, table: str, items: Sequence[tuple[int, str, dict]]) -> Path:
    """Write one chunk of scenes ``items`` = [(scene index, token, arrays)] (same field names and dtypes), blob
    first, its ``.json`` last (the chunk exists once the json does). Returns the json path."""
    names = sorted(items[0][2])
    for index, _, arrays in items:
        if sorted(arrays) != names:
            raise PreparedFormatError(f"scene {index}: fields {sorted(set(arrays) ^ set(names))} differ from the "
                                      "chunk's")
        for n in names:
            if arrays[n].dtype != items[0][2][n].dtype:
                raise PreparedFormatError(f"scene {index}, field {n!r}: dtype {arrays[n].dtype} differs")
    store = {n: _narrow([a[n] for _, _, a in items]) for n in names}
    S, F = len(items), len(names)
    D = max(max(a[n].ndim for n in names) for _, _, a in items)
    header = _aligned(8 * (S * F * (2 + D) + 2 * S))
    index, ranges = np.zeros((S, F, 2 + D), np.int64), np.zeros((S, 2), np.int64)
    offset = header
    for s, (_, _, arrays) in enumerate(items):
        ranges[s, 0] = offset
        for f, n in enumerate(names):
            a = arrays[n]
            index[s, f, :2] = offset, a.ndim
            index[s, f, 2:2 + a.ndim] = a.shape
            offset = _aligned(offset + a.size * store[n].itemsize)
        ranges[s, 1] = offset
    blob = np.zeros(offset, np.uint8)
    blob[:index.nbytes] = index.view(np.uint8).ravel()
    blob[index.nbytes:index.nbytes + ranges.nbytes] = ranges.view(np.uint8).ravel()
    for s, (_, _, arrays) in enumerate(items):
        for f, n in enumerate(names):
            data = np.ascontiguousarray(arrays[n], store[n]).view(np.uint8).ravel()
            start = int(index[s, f, 0])
            blob[start:start + len(data)] = data
    name = f"s{shard:05d}-{items[0][0]:07d}-{S}-{uuid.uuid4().hex[:8]}"
    with atomic_write(table_dir / f"{name}.npy") as fh:
        np.save(fh, blob, allow_pickle=False)
    meta = {"format": FORMAT_NAME, "prep_version": PREP_VERSION, "table": table, "key": key, "shard": shard,
            "scenes": [int(i) for i, _, _ in items], "tokens": [t for _, t, _ in items], "max_ndim": D,
            "fields": [[n, store[n].str, items[0][2][n].dtype.str] for n in names], "blob": f"{name}.npy",
            "blob_bytes": int(offset), "file_bytes": (table_dir / f"{name}.npy").stat().st_size,
            "crc32_header": zlib.crc32(blob[:header]),
            "crc32": [zlib.crc32(blob[a:b]) for a, b in ranges.tolist()]}
    json_path = table_dir / f"{name}.json"
    with atomic_write(json_path, "w") as fh:
        json.dump(meta, fh)
    return json_path


class Chunk:
    """A chunk opened for reading (its blob memory-mapped on first use).

    Raises (on open / :meth:`arrays`): :class:`CorruptChunkError` naming the file.
    """

    def __init__(self, json_path: Path):
        self.path = json_path
        try:
            meta = json.loads(json_path.read_text())
            if meta.get("format") != FORMAT_NAME:
                raise ValueError(f"format {meta.get('format')!r}")
            self.scenes = [int(i) for i in meta["scenes"]]
            self.tokens = [str(t) for t in meta["tokens"]]
            self.fields = [(str(n), np.dtype(s), np.dtype(d)) for n, s, d in meta["fields"]]
            self.positions = {name: f for f, (name, _, _) in enumerate(self.fields)}  # in each index row
            self.names = tuple(self.positions)
            # per field: (stored dtype, dtype, stored as it is) - what field_array needs, looked up once
            self.storage = [(stored, dtype, stored == dtype) for _, stored, dtype in self.fields]
            self.width = 2 + int(meta["max_ndim"])  # index entries per field
            self.plans: dict[tuple, list[tuple[int, bool]]] = {}  # field_views plans by (names, narrow)
            self.meta = meta
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptChunkError(json_path, f"unreadable ({exc})") from None
        self.key = meta.get("key")
        self._raw: np.ndarray | None = None
        self._views: list[np.ndarray] = []
        self._index: np.ndarray | None = None
        self._ranges: np.ndarray | None = None

    def _open(self) -> None:
        blob = self.path.with_name(self.meta["blob"])
        try:
            size = blob.stat().st_size
        except OSError:
            raise CorruptChunkError(blob, "missing") from None
        if size != self.meta["file_bytes"]:
            raise CorruptChunkError(blob, f"{size} bytes, the chunk's json says {self.meta['file_bytes']} "
                                    "(truncated or altered)")
        try:
            raw = np.load(blob, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptChunkError(blob, f"unreadable ({exc})") from None
        if raw.dtype != np.uint8 or raw.shape != (self.meta["blob_bytes"],):
            raise CorruptChunkError(blob, f"holds {raw.shape} {raw.dtype}, expected ({self.meta['blob_bytes']},) "
                                    "uint8 (truncated?)")
        raw = raw.view(np.ndarray)  # plain ndarray: slicing skips memmap bookkeeping
        S, F, D = len(self.scenes), len(self.fields), int(self.meta["max_ndim"])
        n_index = S * F * (2 + D)
        header = _aligned(8 * (n_index + 2 * S))
        if zlib.crc32(raw[:header]) != self.meta["crc32_header"]:
            raise CorruptChunkError(blob, "crc32 of the index does not match (corrupted)")
        table = np.frombuffer(raw, np.int64, n_index + 2 * S)
        self._index = table[:n_index].reshape(S, F, 2 + D)  # rows read per scene (.tolist() of all: 14 ms)
        self._ranges = table[n_index:].reshape(S, 2)
        # per field, the mapped bytes viewed as its stored dtype (fields start 64-byte aligned): a field is a slice
        # of it (~0.12 us; a view through the buffer protocol, np.ndarray / frombuffer, ~0.42 us)
        typed = {}
        for stored, _, _ in self.storage:
            if stored not in typed:
                typed[stored] = raw[:len(raw) - len(raw) % stored.itemsize].view(stored)
        self._views = [typed[stored] for stored, _, _ in self.storage]
        self._raw = raw

    def check(self, pos: int) -> None:
        """Verify scene ``pos``'s crc32 (once per process, by the caller)."""
        if self._raw is None:
            self._open()
        a, b = self._ranges[pos].tolist()
        if zlib.crc32(self._raw[a:b]) != self.meta["crc32"][pos]:
            raise CorruptChunkError(self.path.with_name(self.meta["blob"]),
                                    f"scene {self.scenes[pos]} ({self.tokens[pos]}) fails its crc32 (corrupted)")

    def arrays(self, pos: int) -> SceneArrays:
        """Scene ``pos`` of the chunk: field -> read-only view (narrowed integers restored as copies), each made
        on first access (:class:`SceneArrays`)."""
        if self._raw is None:
            self._open()
        # one flat list per scene ([offset, ndim, *shape (padded to max_ndim)] per field), not a list per field:
        # ~70 fewer tracked objects per first visit (allocations that trigger the garbage collector)
        return SceneArrays(self, self._index[pos].ravel().tolist())

    def field_array(self, f: int, row: list[int], restore: bool = True) -> np.ndarray:
        """Field ``f`` of a scene whose flat index row is ``row``; ``restore=False``: a narrowed integer field as
        stored (a read-only view, same values), not restored to its dtype."""
        return self.field_views(((f, restore),), row)[0]

    def field_views(self, plan: Sequence[tuple[int, bool]], row: list[int]) -> list[np.ndarray]:
        """Fields (position ``f``, restore a narrowed integer field to its dtype) of a scene whose flat index row
        is ``row`` ([offset, ndim, *shape (padded to max_ndim)] per field): read-only views of the mapped bytes
        (narrowed integers restored as copies). One loop for many fields: a first visit makes ~40."""
        views, width, storage = self._views, self.width, self.storage
        out = []
        for f, restore in plan:
            stored, dtype, as_is = storage[f]
            base = f * width
            ndim = row[base + 1]
            start = row[base] // stored.itemsize
            if ndim == 1:  # most fields: a slice, no shape tuple nor reshape
                count = row[base + 2]
                a = views[f][start:start + count] if count else np.zeros(0, stored)
            else:
                shape = tuple(row[base + 2:base + 2 + ndim])
                count = math.prod(shape)
                a = views[f][start:start + count].reshape(shape) if count else np.zeros(shape, stored)
            out.append(a if as_is or not restore else a.astype(dtype))
        return out

    def plan(self, names: tuple[str, ...], narrow: frozenset[str] = frozenset()) -> list[tuple[int, bool]]:
        """The :meth:`field_views` plan of fields ``names`` (those in ``narrow`` as stored), made once per chunk."""
        key = (names, narrow)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = [(self.positions[n], n not in narrow) for n in names]
        return plan


class SceneArrays(Mapping):
    """One scene's arrays of a :class:`Chunk` (field name -> read-only array), each made on first access and kept.
    Why: a bundle has ~70 fields and a plan-once step reads ~30 of them on a first visit (the expert's full
    evaluation and the map polygons are read only on demand); making one costs ~1 us."""

    def __init__(self, chunk: Chunk, row: list[int]):
        self.chunk, self.row, self.made = chunk, row, {}

    def __getitem__(self, name: str) -> np.ndarray:
        a = self.made.get(name)  # not try / except KeyError: every field's first read would raise (~1 us)
        if a is None:
            a = self.made[name] = self.chunk.field_array(self.chunk.positions[name], self.row)
        return a

    def stored(self, name: str) -> np.ndarray:
        """Field ``name`` as stored: a narrowed integer field not restored (a read-only view, same values; not
        kept), any other field as :meth:`__getitem__` gives it."""
        a = self.made.get(name)
        return a if a is not None else self.chunk.field_array(self.chunk.positions[name], self.row, restore=False)

    def many(self, names: tuple[str, ...], narrow: frozenset[str] = frozenset()) -> list[np.ndarray]:
        """Fields ``names`` at once (as :meth:`__getitem__`; those in ``narrow`` as :meth:`stored`), made in one
        loop and not kept (a first visit reads ~30 fields once each: ~0.4 us less per field than one by one)."""
        return self.chunk.field_views(self.chunk.plan(names, narrow), self.row)

    def __iter__(self) -> Iterator[str]:
        return iter(self.chunk.positions)

    def __len__(self) -> int:
        return len(self.chunk.fields)


class CorruptChunkError(ValueError):
    """A chunk file that cannot be used: ``path`` and ``reason``."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


# ---------------------------------------------------------------------------------------------------------------------
# A table: the chunks of one key in one store
# ---------------------------------------------------------------------------------------------------------------------


class PreparedTable:
    """The chunks of one table key in one store (process-wide, :func:`table_for`): read, verify, fill.

    Args:
        store: the :class:`~irlvla_gym.scenes.store.SceneStore`.
        key: :func:`bundle_key` / :func:`obs_key` output.
    """

    def __init__(self, store: Any, key: Mapping[str, Any]):
        self.store = store
        self.key = dict(key)
        self.hash = key_hash(key)
        self.name = str(key["table"])
        self.root = Path(store.path) / DIR_NAME
        self.dir = self.root / f"{self.name}-{self.hash}"
        counts = [int(s["count"]) for s in store.manifest["shards"]]
        self.starts = np.r_[0, np.cumsum(counts)].astype(np.int64).tolist()
        self.where: dict[int, tuple[Chunk, int]] = {}
        self.checked: set[int] = set()
        self.pending: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        self.writable = True
        self.disabled = False
        self.chunks: dict[str, Chunk] = {}
        self._last_scan = -np.inf
        self._warned_stale = False
        self.scan()

    def shard_of(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def scan(self) -> None:
        """(Re)list the table's chunks (others may have written some since)."""
        self._last_scan = time.monotonic()
        if not self.dir.is_dir():
            self._warn_stale()
            return
        for path in sorted(self.dir.glob("*.json")):
            if path.name in self.chunks or path.name == "key.json":
                continue
            try:
                chunk = Chunk(path)
                if chunk.key != self.hash:
                    raise CorruptChunkError(path, f"key {chunk.key} is not this table's {self.hash} (stale)")
            except CorruptChunkError as exc:
                self._discard(path, exc)
                continue
            self.chunks[path.name] = chunk
            for pos, index in enumerate(chunk.scenes):
                self.where.setdefault(index, (chunk, pos))

    def _warn_stale(self) -> None:
        """Say once when older tables of this kind exist but none for this key (code / config / store changed)."""
        if self._warned_stale or not self.root.is_dir():
            return
        old, changed = [], set()
        for p in self.root.glob(f"{self.name}-*"):
            if not p.is_dir() or p == self.dir:
                continue
            try:
                prev = json.loads((p / "key.json").read_text())
            except (OSError, ValueError):
                continue
            if any(prev.get(k) != self.key.get(k) for k in SELECTORS):
                continue  # another observation config: a table of its own, not an older version of this one
            old.append(p)
            changed |= {k for k in set(prev) | set(self.key) if prev.get(k) != self.key.get(k)}
        if not old:
            return
        self._warned_stale = True
        warnings.warn(f"prepared cache {self.name} of {self.store.path} is stale (changed: {sorted(changed)}); "
                      f"preparing again into {self.dir.name} (old: {', '.join(p.name for p in old)}, safe to delete)",
                      stacklevel=3)

    def _discard(self, path: Path, exc: Exception) -> None:
        """Stop using a bad chunk (warns, renames its json ``*.corrupt`` so no process reads it again)."""
        warnings.warn(f"prepared cache: {exc}; ignoring the chunk and preparing its scenes again", stacklevel=3)
        chunk = self.chunks.pop(path.name, None)
        if chunk is not None:
            for index in chunk.scenes:
                if self.where.get(index, (None,))[0] is chunk:
                    del self.where[index]
                    self.checked.discard(index)
            for other in self.chunks.values():  # another copy of the same scenes (two writers) takes over
                for pos, index in enumerate(other.scenes):
                    self.where.setdefault(index, (other, pos))
        try:
            path.rename(path.with_suffix(".corrupt"))
        except OSError:
            pass

    def get(self, index: int) -> dict[str, np.ndarray] | None:
        """Scene ``index``'s arrays (verified on first read), None when it is not (validly) in the table."""
        if self.disabled:
            return None
        hit = self.where.get(index)
        if hit is None and time.monotonic() - self._last_scan > RESCAN_S:
            self.scan()
            hit = self.where.get(index)
        if hit is None:
            return None
        chunk, pos = hit
        try:
            if index not in self.checked:
                if chunk.tokens[pos] != str(self.store.tokens[index]):
                    raise CorruptChunkError(chunk.path, f"scene {index} is {chunk.tokens[pos]!r} in the chunk but "
                                            f"{self.store.tokens[index]!r} in the store (stale)")
                chunk.check(pos)
                self.checked.add(index)
            return chunk.arrays(pos)
        except CorruptChunkError as exc:
            self._discard(chunk.path, exc)
            return self.get(index) if index in self.where else None

    def put(self, index: int, arrays: dict[str, np.ndarray], limit: int | None = None) -> None:
        """Queue scene ``index``'s arrays for writing; a shard's queue is written as one chunk once it holds
        :data:`CHUNK_MIN` scenes or every scene of the shard below ``limit`` not yet in the table."""
        if self.disabled or not self.writable or index in self.where:
            return
        shard = self.shard_of(index)
        queue = self.pending.setdefault(shard, {})
        queue[index] = arrays
        end = self.starts[shard + 1] if limit is None else min(self.starts[shard + 1], limit)
        missing = sum(1 for i in range(self.starts[shard], end) if i not in self.where)
        if len(queue) >= min(CHUNK_MIN, missing):
            self.flush(shard)

    def flush(self, shard: int | None = None) -> None:
        """Write the queued scenes (of one shard, or all) as chunks."""
        for k in ([shard] if shard is not None else list(self.pending)):
            queue = self.pending.pop(k, None)
            if not queue or not self.writable:
                continue
            items = [(i, str(self.store.tokens[i]), queue[i]) for i in sorted(queue) if i not in self.where]
            if items:
                self._write(k, items)

    def _write(self, shard: int, items: list) -> None:
        if not Path(self.store.path).is_dir():
            return  # the store was deleted (e.g. a temporary one, flushed at exit): nothing to keep the cache for
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "key.json").exists():
                with atomic_write(self.dir / "key.json", "w") as fh:
                    json.dump(self.key, fh, indent=1, sort_keys=True)
            path = write_chunk(self.dir, shard, self.hash, self.name, items)
        except OSError as exc:  # a read-only store: prepare in memory only
            self.writable = False
            warnings.warn(f"prepared cache: cannot write to {self.dir} ({exc}); preparing in memory only",
                          stacklevel=3)
            return
        except PreparedFormatError as exc:
            self.disabled = True
            warnings.warn(f"prepared cache {self.name}: {exc}; not persisting", stacklevel=3)
            return
        chunk = Chunk(path)
        self.chunks[path.name] = chunk
        for pos, index in enumerate(chunk.scenes):
            self.where.setdefault(index, (chunk, pos))

    def covered(self, indices: Sequence[int]) -> list[int]:
        """The ``indices`` not yet in the table."""
        return [i for i in indices if i not in self.where]


_TABLES: dict[tuple[str, str], PreparedTable] = {}


def table_for(store: Any, key: Mapping[str, Any]) -> PreparedTable:
    """The process-wide table of ``key`` in ``store`` (every env of the process shares its maps and queue)."""
    ident = (os.path.realpath(str(store.path)), key_hash(key))
    if ident not in _TABLES:
        _TABLES[ident] = PreparedTable(store, key)
    return _TABLES[ident]


def flush_all() -> None:
    """Write every queued scene of this process (run at exit)."""
    for table in list(_TABLES.values()):
        try:
            table.flush()
        except Exception as exc:  # noqa: BLE001 - at exit: a cache that is not written is only slower next time
            warnings.warn(f"prepared cache {table.dir}: not written at exit ({exc})", stacklevel=2)


atexit.register(flush_all)


def clear_tables() -> None:
    """Forget the open tables of this process (queued scenes are written first)."""
    flush_all()
    _TABLES.clear()


def enabled() -> bool:
    """False when ``IRLVLA_PREPARED=0``: the envs neither read nor write prepared caches."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


# ---------------------------------------------------------------------------------------------------------------------
# What the env core uses
# ---------------------------------------------------------------------------------------------------------------------


class PreparedScenes:
    """The bundle and t0-observation tables of one env configuration (None from :func:`open_prepared` when the
    scenes do not come from a store).

    Args:
        store: the source's store. limit: scenes of the source (``num_scenes``). traffic: ``"log"`` / ``"idm"``.
        builder: the env's :class:`~irlvla_gym.obs.registry.ObservationBuilder`. resolution: the map index's cells
        (m, :data:`irlvla_gym.envs.scoring.INDEX_RESOLUTION_M`).
    """

    def __init__(self, store: Any, limit: int, traffic: str, builder: Any, resolution: float):
        self.limit = limit
        self.store = store
        self.bundles = table_for(store, bundle_key(store, traffic, resolution))
        self.obs = table_for(store, obs_key(store, builder))
        self.builder = builder
        self.other_obs: dict[Any, PreparedTable] = {}  # tables of other builders, by (keys, config)

    def obs_table(self, builder: Any = None) -> PreparedTable:
        """The t0-observation table of ``builder`` (None: the env's own observation). Other builders are the
        observations a reward model reads (``EnvCore.t0_observations``): each has its own table."""
        if builder is None or builder is self.builder:
            return self.obs
        ident = (tuple(builder.keys), builder.config)
        if ident not in self.other_obs:
            self.other_obs[ident] = table_for(self.store, obs_key(self.store, builder))
        return self.other_obs[ident]

    def bundle(self, index: int, scene: Scene | Callable[[], Scene]) -> SceneBundle | None:
        """The persisted bundle of scene ``index`` (None: not prepared yet); ``scene``: the scene or a function that
        loads it when the bundle's :attr:`~SceneBundle.scene` is first read."""
        arrays = self.bundles.get(index)
        return None if arrays is None else bundle_from_arrays(index, str(self.store.tokens[index]), scene, arrays)

    def save_bundle(self, bundle: SceneBundle) -> None:
        """Queue a bundle prepared in memory for writing."""
        if self.bundles.disabled or not self.bundles.writable:
            return
        try:
            arrays = bundle_arrays(bundle)
        except PreparedFormatError as exc:
            self.bundles.disabled = True
            warnings.warn(f"prepared cache {self.bundles.name}: {exc}; not persisting", stacklevel=2)
            return
        self.bundles.put(bundle.index, arrays, self.limit)

    def t0_observation(self, index: int, builder: Any = None) -> tuple[dict[str, np.ndarray], str] | None:
        """The persisted t0 observation and instruction text of scene ``index`` for ``builder`` (None: the env's
        own observation); None when not prepared yet."""
        arrays = self.obs_table(builder).get(index)
        return None if arrays is None else obs_from_arrays(arrays)

    def save_t0_observation(self, index: int, obs: Mapping[str, np.ndarray], text: str, builder: Any = None) -> None:
        """Queue a rendered t0 observation (of ``builder``, None: the env's own) for writing."""
        self.obs_table(builder).put(index, obs_arrays(obs, text), self.limit)

    def flush(self) -> None:
        self.bundles.flush()
        self.obs.flush()
        for table in self.other_obs.values():
            table.flush()


def open_prepared(source: Any, traffic: str, builder: Any, resolution: float) -> PreparedScenes | None:
    """The prepared tables of an env's scenes: None for lists of scenes and generated splits (no store to keep
    them beside) and when disabled (:func:`enabled`)."""
    store = getattr(source, "store", None)
    if store is None or getattr(store, "path", None) is None or not enabled():
        return None
    return PreparedScenes(store, len(source), traffic, builder, resolution)


# ---------------------------------------------------------------------------------------------------------------------
# Build time
# ---------------------------------------------------------------------------------------------------------------------


def _shards(table: PreparedTable) -> Iterator[tuple[int, list[int]]]:
    for k in range(len(table.starts) - 1):
        yield k, list(range(table.starts[k], table.starts[k + 1]))


def prepare_store(store_dir: str | os.PathLike, *, traffic: Sequence[str] = ("log",),
                  obs: Sequence[tuple[Sequence[str], Any]] | None = None, progress: bool = True,
                  batch: int = 64, scene_cache_size: int | None = None) -> dict[str, int]:
    """Prepare every scene of a store not yet prepared (resumable): bundles for each ``traffic`` model and t0
    observations for each ``(obs keys, obs config)`` (default: the envs' default observation), one chunk per shard
    and table. The map index gets the cells an env over the whole store uses (:func:`~irlvla_gym.envs.scoring.
    map_pack_mode` with ``scene_cache_size``, default the envs' default).

    Returns:
        table name -> scenes prepared now.
    """
    from irlvla_gym.envs.config import DEFAULT_OBS_KEYS, EnvConfig
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(store_dir, verify=False)
    cache_size = EnvConfig().scene_cache_size if scene_cache_size is None else scene_cache_size
    resolution = scoring.INDEX_RESOLUTION_M[scoring.map_pack_mode(len(store), cache_size)]
    specs = [(DEFAULT_OBS_KEYS, None)] if obs is None else list(obs)
    builders = [ObservationBuilder(keys, config) for keys, config in specs]
    bundle_tables = {t: table_for(store, bundle_key(store, t, resolution)) for t in traffic}
    obs_tables = [(b, table_for(store, obs_key(store, b))) for b in builders]
    tables = list(bundle_tables.values()) + [t for _, t in obs_tables]
    todo = len({i for t in tables for i in t.covered(range(len(store)))})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=todo, unit="scene", desc=f"prepare {Path(store_dir).name}", dynamic_ncols=True)
    done = {t.name: 0 for t in tables}
    try:
        for _, indices in _shards(tables[0]):
            for start in range(0, len(indices), batch):
                part = [i for i in indices[start:start + batch] if any(i not in t.where for t in tables)]
                if not part:
                    continue
                _prepare_batch(store, part, bundle_tables, obs_tables, done, resolution)
                if bar is not None:
                    bar.update(len(part))
            for t in tables:
                t.flush()  # one chunk per shard and table
    finally:
        if bar is not None:
            bar.close()
    return done


def _prepare_batch(store: Any, part: list[int], bundle_tables: Mapping[str, PreparedTable],
                   obs_tables: Sequence[tuple[Any, PreparedTable]], done: dict[str, int], resolution: float) -> None:
    """Prepare scenes ``part`` (one shard) for every table that lacks them; queue them (written per shard)."""
    scenes = {i: store[i] for i in part}
    for traffic, table in bundle_tables.items():
        for i in table.covered(part):
            bundle = make_bundle(i, scenes[i], traffic, resolution)
            table.pending.setdefault(table.shard_of(i), {})[i] = bundle_arrays(bundle)
            done[table.name] += 1
    for builder, table in obs_tables:
        missing = table.covered(part)
        if not missing:
            continue
        batch = builder.observe_batch([scenes[i] for i in missing])
        for j, i in enumerate(missing):
            obs = {k: v[j] for k, v in batch.items()}
            table.pending.setdefault(table.shard_of(i), {})[i] = obs_arrays(obs, builder.instruction_text(scenes[i]))
            done[table.name] += 1


def prepare_store_hook(store_dir: Path, progress: bool) -> None:
    """The store build hook (:func:`irlvla_gym.scenes.source.register_build_hook`): :func:`prepare_store` with the
    defaults (log replay, the default observation)."""
    prepare_store(store_dir, progress=progress)


register_build_hook("env-prepared", prepare_store_hook)


def ensure_split_store(scenes: Any, num_scenes: int | None = None, *, progress: bool = True,
                       scene_cache_size: int | None = None) -> Path | None:
    """Build a store of a synthetic split's training pool once, so that runs stop regenerating its scenes (~15 ms
    each) and re-preparing them (~25 ms, the RWM's inputs included): later runs and processes read the envs'
    persisted preparation instead (~0.1 ms per scene; :class:`PreparedScenes`). Training commands call it.

    * A pool larger than the in-memory scene cache (``num_scenes`` None: the whole split): the split's default store
      and its prepared caches (without it the pool's scenes are made again on every revisit).
    * A pool of at least :data:`POOL_STORE_MIN` scenes that fits the cache (the quick preset's 256): the store of
      the split's first ``num_scenes`` scenes (:func:`~irlvla_gym.scenes.source.build_pool_store`, ~4 s for 256),
      which the envs over that pool read (:class:`~irlvla_gym.scenes.source.SceneSource`) and prepare on first use.

    Returns the built store's path (None: not a synthetic split name, a store exists already, the pool is smaller
    than :data:`POOL_STORE_MIN`, or prepared caches are disabled)."""
    from irlvla_gym.envs.config import EnvConfig
    from irlvla_gym.scenes.source import build_pool_store, pool_store_path
    from irlvla_gym.scenes.synthetic import SPLITS, split_size

    if not isinstance(scenes, str) or scenes not in SPLITS or not enabled():
        return None
    path = split_store_path(scenes)
    if (path / "manifest.json").exists():
        return None
    cache = EnvConfig().scene_cache_size if scene_cache_size is None else scene_cache_size
    pool = split_size(scenes) if num_scenes is None else min(int(num_scenes), split_size(scenes))
    if pool <= cache:
        pool_path = pool_store_path(scenes, pool)
        if pool < POOL_STORE_MIN or pool == split_size(scenes) or (pool_path / "manifest.json").exists():
            return None
        print(f"[scenes] storing the {pool}-scene pool of {scenes} once (later runs read its prepared scenes): "
              f"{pool_path}", flush=True)
        return build_pool_store(scenes, pool, progress=progress)
    print(f"[scenes] building the {scenes} store once ({split_size(scenes)} scenes, ~2-3 min on one core; "
          f"later runs reuse it): {path}", flush=True)
    return build_split_store(scenes, progress=progress)


def disk_bytes(store_dir: str | os.PathLike) -> int:
    """Bytes of a store's prepared caches (every table and key)."""
    root = Path(store_dir) / DIR_NAME
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the envs' per-scene caches of a scene store "
                                                 "(resumable; see irlvla_gym/envs/prepared.py).")
    parser.add_argument("store", help="store directory, or a synthetic split name (its store in the cache dir, "
                                      "built first when missing)")
    parser.add_argument("--traffic", nargs="+", default=["log"], choices=["log", "idm"])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    if os.path.isdir(args.store):
        path = Path(args.store)
    else:
        path = split_store_path(args.store)
        if not (path / "manifest.json").exists():  # build the split's store; the hook prepares it (log replay)
            build_split_store(args.store, progress=progress)
    done = prepare_store(path, traffic=args.traffic, progress=progress)
    print(f"{path}: scenes prepared by this run {done}; prepared caches {disk_bytes(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()


__all__ = [
    "CHUNK_MIN", "Chunk", "CorruptChunkError", "ENV_SWITCH", "POOL_STORE_MIN", "PREP_VERSION", "PackedPolygons",
    "PersistedResult", "PreparedFormatError", "PreparedScenes", "PreparedTable", "SceneArrays", "bundle_arrays",
    "bundle_from_arrays", "bundle_key", "clear_tables", "disk_bytes", "enabled", "ensure_split_store",
    "flush_all", "index_from_arrays", "obs_arrays", "obs_from_arrays", "obs_key", "open_prepared",
    "prepare_store", "prepare_store_hook", "source_digest", "store_digest", "table_for", "write_chunk",
]
