"""The scene store: a sharded, column-wise, memory-mapped cache of :class:`Scene` objects (no pickle).

Layout of a store directory::

    out_dir/
      build.json                 build parameters (split, source, shard size); guards resumed builds
      shards/00000/              one directory per shard of up to ``shard_size`` scenes
        index.npy                (n, F, 4 + D) int64 per-scene, per-field table, see below
        <field>.npy              one uncompressed .npy per flattened Scene field (``Scene.to_arrays`` keys)
        shard.json               written LAST (atomically): field layouts, file sizes, blake2b checksums, tokens
      tokens.npy                 (N,) unicode, scene tokens in store order
      manifest.json              written LAST of all (atomically): count, split, source, fields, per-shard files
                                 with sizes and checksums, skipped items. No manifest = no store.

Field files. For every field of ``Scene.to_arrays()`` a shard stores the values of its ``n`` scenes in one array:

* layout ``"concat"``: when all scenes' arrays share their trailing shape ``shape[1:]`` (polylines ``(P, 2)``, per
  lane ``(L,)``, fixed ``(4, 3)``...), the arrays concatenated along axis 0; scene i is rows ``start:stop``.
* layout ``"flat"``: otherwise (``agents.boxes`` is ``(9, N, 8)`` with N varying), every array flattened (C order)
  and concatenated; scene i is elements ``start:stop``, reshaped to its shape.

String fields are fixed-width unicode (``<U{w}``, w = the widest in the shard); each scene's own width is kept in
the index so a loaded scene gets back exactly the dtype it was saved with.

``index.npy`` row ``[i, f]`` = ``[start, stop, str_width, ndim, shape[0], .., shape[D-1]]`` (unused dims are 0).

Loading scene i = one row of the index plus ~45 slices of memory-mapped arrays (``np.load(mmap_mode="r")``), so a
loaded scene's arrays are read-only views into the files. Opening verifies every file's size (always) and blake2b
checksum (``verify=True``); anything missing, truncated or altered raises :class:`CorruptStoreError` naming the file.

Builds are resumable: each shard is complete once its ``shard.json`` exists, and a rerun with the same ``out_dir``
reuses complete shards whose tokens match (no rewrite). ``manifest.json`` is removed when a build starts and
written only when it has finished, so an interrupted build never leaves a manifest claiming missing data.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import hashlib
import json
import mmap
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from irlvla_gym.scenes.scene import Scene
from irlvla_gym.scenes.sources import SkippedItem
from irlvla_gym.utils import atomic_write

FORMAT_NAME = "irlvla-scene-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUILD_PARAMS = "build.json"
SHARD_META = "shard.json"
INDEX_FILE = "index.npy"
TOKENS_FILE = "tokens.npy"
SHARDS_DIR = "shards"
_INDEX_FIXED_COLS = 4  # start, stop, str_width, ndim; then the shape dims
_HASH_CHUNK = 1 << 22


class CorruptStoreError(ValueError):
    """A store file is missing, truncated, altered or unreadable. The message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"corrupt scene store: {self.path}: {problem}")


# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------


def file_blake2b(path: str | os.PathLike) -> str:
    """Hex blake2b (32-byte digest) of a file, streamed in 4 MiB chunks."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Save ``array`` (no pickle) atomically; return ``{"size": bytes, "blake2b": hex}``."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return {"size": path.stat().st_size, "blake2b": file_blake2b(path)}


def _field_file(name: str) -> str:
    return f"{name}.npy"


def _dtype_str(dtype: np.dtype) -> str:
    """Manifest dtype: ``'str'`` for unicode of any width, else the numpy dtype string (``'<f8'``, ``'|b1'``...)."""
    return "str" if dtype.kind == "U" else dtype.str


def _shard_name(k: int) -> str:
    return f"{k:05d}"


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """What :func:`build_store` did.

    Attributes:
        out_dir: the store directory.
        count: scenes in the store.
        skipped: items not stored (adapter skips, duplicate tokens), in stream order.
        shards_written / shards_reused: shards written by this run / reused from an earlier interrupted run.
        items_consumed: items (scenes + skipped) read from the input.
        seconds: wall time of the build (s).
        bytes_on_disk: total size of the store's files.
    """

    out_dir: Path
    count: int
    skipped: list[SkippedItem]
    shards_written: int
    shards_reused: int
    items_consumed: int
    seconds: float
    bytes_on_disk: int

    @property
    def scenes_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def summary(self, max_skipped: int = 10) -> str:
        """Human-readable multi-line summary (the CLI prints it)."""
        lines = [f"scene store {self.out_dir}: {self.count} scenes in {self.shards_written + self.shards_reused} "
                 f"shard(s) ({self.shards_written} written, {self.shards_reused} reused), "
                 f"{self.bytes_on_disk / 1e6:.1f} MB, {self.seconds:.1f} s ({self.scenes_per_second:.0f} scenes/s)",
                 f"skipped: {len(self.skipped)} item(s)"]
        for s in self.skipped[:max_skipped]:
            lines.append(f"  - {s}")
        if len(self.skipped) > max_skipped:
            lines.append(f"  ... and {len(self.skipped) - max_skipped} more (see manifest.json)")
        return "\n".join(lines)


def _write_shard(shard_dir: Path, scenes_arrays: list[dict[str, np.ndarray]], tokens: list[str],
                 field_dtypes: dict[str, str], skipped: list[SkippedItem], items_end: int) -> dict[str, Any]:
    """Write one shard's field files, ``index.npy`` and finally ``shard.json``; return the shard.json content.

    Args:
        scenes_arrays: the shard's scenes as ``Scene.to_arrays()`` dicts (same keys).
        field_dtypes: name -> manifest dtype string; arrays are cast (same-kind) to it.
        skipped: items skipped since the previous shard ended (recorded for resumed builds).
        items_end: number of input items consumed when this shard was complete.
    """
    if shard_dir.exists():
        shutil.rmtree(shard_dir)  # an incomplete leftover, or a shard whose scenes changed
    shard_dir.mkdir(parents=True)
    names = list(field_dtypes)
    n = len(scenes_arrays)
    max_ndim = max(scenes_arrays[0][k].ndim for k in names)
    for a in scenes_arrays:
        if set(a) != set(names):
            raise ValueError(f"scene {a['meta.strings'][0]!r} has fields {sorted(set(a) ^ set(names))} that differ "
                             "from the store's fields")
        max_ndim = max(max_ndim, max(a[k].ndim for k in names))
    index = np.zeros((n, len(names), _INDEX_FIXED_COLS + max_ndim), np.int64)
    files: dict[str, dict[str, Any]] = {}
    layouts: dict[str, str] = {}
    for f, name in enumerate(names):
        want = field_dtypes[name]
        values = []
        for a in scenes_arrays:
            v = np.asarray(a[name])
            if want == "str":
                if v.dtype.kind != "U":
                    raise ValueError(f"scene {a['meta.strings'][0]!r}: field {name!r} should be str, got {v.dtype}")
            elif v.dtype.str != want:
                v = v.astype(want, casting="same_kind")
            values.append(v)
        ndims = {v.ndim for v in values}
        concat = len(ndims) == 1 and ndims.pop() >= 1 and len({v.shape[1:] for v in values}) == 1
        parts = values if concat else [v.reshape(-1) for v in values]
        lengths = np.array([len(p) for p in parts], np.int64)
        stops = np.cumsum(lengths)
        index[:, f, 0] = stops - lengths
        index[:, f, 1] = stops
        for i, v in enumerate(values):
            index[i, f, 2] = v.dtype.itemsize // 4 if v.dtype.kind == "U" else 0
            index[i, f, 3] = v.ndim
            index[i, f, _INDEX_FIXED_COLS:_INDEX_FIXED_COLS + v.ndim] = v.shape
        data = np.concatenate(parts, axis=0)
        if want == "str" and data.dtype.kind != "U":  # all-empty concatenation may lose the str dtype
            data = data.astype("<U1")
        files[_field_file(name)] = _save_npy(shard_dir / _field_file(name), data)
        layouts[name] = "concat" if concat else "flat"
    files[INDEX_FILE] = _save_npy(shard_dir / INDEX_FILE, index)
    meta = {"count": n, "fields": layouts, "files": files, "tokens": tokens,
            "skipped": [{"item": s.item, "error": s.error} for s in skipped], "items_end": items_end}
    _write_json(shard_dir / SHARD_META, meta)
    return meta


def _read_shard_meta(shard_dir: Path) -> dict[str, Any] | None:
    """The shard's shard.json if the shard is complete (json parses and every listed file has its size)."""
    try:
        meta = json.loads((shard_dir / SHARD_META).read_text())
        for fname, info in meta["files"].items():
            if (shard_dir / fname).stat().st_size != info["size"]:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_store(
    items: Iterable[Scene | SkippedItem],
    out_dir: str | os.PathLike,
    *,
    split: str,
    source: str,
    shard_size: int = 512,
    total: int | None = None,
    progress: bool = True,
    start_item: int = 0,
) -> BuildReport:
    """Write scenes from an adapter stream to a scene store at ``out_dir`` (see the module docs for the format).

    Skipped items (and scenes whose token repeats an earlier one) are recorded in the manifest and do not stop the
    build. Rerunning an interrupted build with the same ``out_dir`` and parameters reuses its complete shards.

    Args:
        items: scenes and :class:`SkippedItem` s, e.g. ``synthetic.iter_scenes(...)``.
        out_dir: store directory (created).
        split, source: recorded in the manifest.
        shard_size: scenes per shard (the last may hold fewer).
        total: expected number of items, for the progress bar only.
        progress: show a tqdm progress bar.
        start_item: for resuming without re-reading the input: ``items`` starts after this many items of the full
            stream, and those items are covered by complete shards already on disk (use :func:`resume_point`).

    Returns:
        a :class:`BuildReport`.

    Raises:
        ValueError: bad arguments, an ``out_dir`` built with other parameters, or a ``start_item`` that does not
            fall on a complete shard boundary.
    """
    t_start = time.perf_counter()
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    _claim_out_dir(out, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "split": split, "source": source,
                         "shard_size": shard_size})
    writer = _ShardWriter(out / SHARDS_DIR, shard_size, start_item)
    if start_item:
        writer.reuse_leading_shards(resume_point(out, shard_size=shard_size), out)
    reused_at_start = len(writer.shard_metas)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_item, unit="item", desc=f"build {out.name}", dynamic_ncols=True)
    try:
        for item in items:
            if bar is not None:
                bar.update(1)
            writer.add(item)
        writer.flush_partial()
    finally:
        if bar is not None:
            bar.close()

    writer.remove_other_shards()
    tokens = _write_manifest(out, writer, split=split, source=source, shard_size=shard_size)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return BuildReport(out, int(len(tokens)), writer.all_skipped, writer.shards_written,
                       writer.shards_reused + reused_at_start, writer.items_consumed, time.perf_counter() - t_start,
                       size)


def _claim_out_dir(out: Path, params: dict[str, Any]) -> None:
    """Make ``out`` a store directory under construction with build parameters ``params``: created if needed,
    refused if it is a file, a non-empty non-store directory or a store built with other parameters; its manifest
    is removed (the directory no longer claims to be a complete store) and ``build.json`` written."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    params_path = out / BUILD_PARAMS
    if params_path.exists():
        try:
            old = json.loads(params_path.read_text())
        except ValueError:
            old = None
        if old is not None and old != params:
            raise ValueError(f"{out} holds a store built with other parameters ({old}); delete it or choose another "
                             "output directory")
    elif any(out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a scene store; choose an empty or new output directory")
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the directory does not claim to be a complete store
    _write_json(params_path, params)
    (out / SHARDS_DIR).mkdir(exist_ok=True)


class _ShardWriter:
    """The state of one :func:`build_store` run: scenes are buffered and written ``shard_size`` at a time into
    ``shards_root/<k>`` (or a complete shard with the same scenes, left by an interrupted run, is reused)."""

    def __init__(self, shards_root: Path, shard_size: int, start_item: int):
        self.shards_root = shards_root
        self.shard_size = shard_size
        self.shard_metas: list[dict[str, Any]] = []  # shard.json contents of the shards so far
        self.all_skipped: list[SkippedItem] = []
        self.seen_tokens: dict[str, int] = {}  # token -> scene index in the store
        self.field_dtypes: dict[str, str] | None = None  # field name -> manifest dtype string
        self.buffer: list[dict[str, np.ndarray]] = []  # Scene.to_arrays() of the scenes of the next shard
        self.buffer_tokens: list[str] = []
        self.pending_skipped: list[SkippedItem] = []  # skipped since the last shard ended
        self.shards_written = self.shards_reused = 0
        self.items_consumed = start_item

    def reuse_leading_shards(self, point: "ResumePoint", out: Path) -> None:
        """Take over the complete shards covering the first ``items_consumed`` (= ``start_item``) input items."""
        start_item = self.items_consumed
        if start_item > point.items or start_item not in point.item_boundaries:
            raise ValueError(f"start_item={start_item} is not the end of a complete shard in {out} "
                             f"(complete shards end at items {point.item_boundaries[-5:]})")
        for k in range(point.item_boundaries.index(start_item)):
            meta = _read_shard_meta(self.shards_root / _shard_name(k))
            assert meta is not None
            self.shard_metas.append(meta)
            self.all_skipped.extend(SkippedItem(**s) for s in meta["skipped"])
            for tok in meta["tokens"]:
                self.seen_tokens[tok] = len(self.seen_tokens)
        if self.shard_metas:  # dtypes from the reused shards' first field file headers
            self.field_dtypes = _dtypes_of_shard(self.shards_root / _shard_name(0), self.shard_metas[0])

    def add(self, item: Scene | SkippedItem) -> None:
        """Consume one input item: record a skip (or a duplicate token), or buffer a scene (and write a full
        shard)."""
        self.items_consumed += 1
        if isinstance(item, SkippedItem):
            self.pending_skipped.append(item)
            self.all_skipped.append(item)
            return
        if not isinstance(item, Scene):
            raise TypeError(f"build_store expects Scene or SkippedItem items, got {type(item).__name__}")
        token = item.metadata.token
        if token in self.seen_tokens:
            skip = SkippedItem(f"scene {token}", f"duplicate token (first stored as scene {self.seen_tokens[token]})")
            self.pending_skipped.append(skip)
            self.all_skipped.append(skip)
            return
        self.seen_tokens[token] = len(self.seen_tokens)
        self.buffer.append(item.to_arrays())
        self.buffer_tokens.append(token)
        if len(self.buffer) == self.shard_size:
            self.flush()

    def flush_partial(self) -> None:
        """Write the last, partly filled shard (if any scenes are buffered)."""
        if self.buffer:
            self.flush()

    def flush(self) -> None:
        """Write the buffered scenes as the next shard, or reuse that shard if a complete one on disk holds the same
        tokens and ends at the same input item."""
        k = len(self.shard_metas)
        shard_dir = self.shards_root / _shard_name(k)
        old = _read_shard_meta(shard_dir)
        if old is not None and old["tokens"] == self.buffer_tokens and old.get("items_end") == self.items_consumed:
            meta = old  # complete from an interrupted earlier run, same scenes: keep it
            self.shards_reused += 1
            if self.field_dtypes is None:
                self.field_dtypes = _dtypes_of_shard(shard_dir, meta)
        else:
            if self.field_dtypes is None:
                self.field_dtypes = {k_: _dtype_str(v.dtype) for k_, v in self.buffer[0].items()}
            meta = _write_shard(shard_dir, self.buffer, list(self.buffer_tokens), self.field_dtypes,
                                self.pending_skipped, self.items_consumed)
            self.shards_written += 1
        self.shard_metas.append(meta)
        self.buffer.clear()
        self.buffer_tokens.clear()
        self.pending_skipped.clear()

    def remove_other_shards(self) -> None:
        """Remove shards left over from an earlier, longer build: they are not part of this store."""
        keep = {_shard_name(k) for k in range(len(self.shard_metas))}
        for child in self.shards_root.iterdir():
            if child.name not in keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def _write_manifest(out: Path, writer: _ShardWriter, *, split: str, source: str, shard_size: int) -> np.ndarray:
    """Write ``tokens.npy`` and then (last of all) ``manifest.json`` for the shards of ``writer``; returns the (N,)
    tokens in store order."""
    metas = writer.shard_metas
    tokens = np.array([t for m in metas for t in m["tokens"]]) if writer.seen_tokens else np.zeros(0, "<U1")
    tokens_info = _save_npy(out / TOKENS_FILE, tokens)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "count": int(len(tokens)),
        "split": split,
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shard_size": shard_size,
        "items_consumed": writer.items_consumed,
        "fields": dict(writer.field_dtypes or {}),
        "tokens": {"file": TOKENS_FILE, **tokens_info},
        "shards": [{"dir": f"{SHARDS_DIR}/{_shard_name(k)}", "count": m["count"], "fields": m["fields"],
                    "files": m["files"]} for k, m in enumerate(metas)],
        "num_skipped": len(writer.all_skipped),
        "skipped": [{"item": s.item, "error": s.error} for s in writer.all_skipped],
    }
    _write_json(out / MANIFEST, manifest)
    return tokens


def _dtypes_of_shard(shard_dir: Path, meta: dict[str, Any]) -> dict[str, str]:
    """Field dtypes (manifest form) read from a complete shard's .npy headers."""
    out = {}
    for name in meta["fields"]:
        arr = np.load(shard_dir / _field_file(name), mmap_mode="r", allow_pickle=False)
        out[name] = _dtype_str(arr.dtype)
    return out


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted build in a directory can resume.

    Attributes:
        scenes: scenes held by the leading run of complete shards.
        items: input items (scenes + skipped) those shards cover; pass it as ``build_store(start_item=...)`` with an
            input that starts at that item.
        item_boundaries: item counts at which each complete shard ends (0 first).
    """

    scenes: int
    items: int
    item_boundaries: list[int] = field(default_factory=lambda: [0])


def resume_point(out_dir: str | os.PathLike, *, shard_size: int) -> ResumePoint:
    """The leading complete shards of a (possibly interrupted) build in ``out_dir`` (nothing there: zeros).

    Only full shards (``shard_size`` scenes) count, so resuming appends to a clean boundary.
    """
    root = Path(out_dir) / SHARDS_DIR
    scenes, boundaries = 0, [0]
    k = 0
    while True:
        meta = _read_shard_meta(root / _shard_name(k))
        if meta is None or meta["count"] != shard_size or "items_end" not in meta:
            break
        scenes += meta["count"]
        boundaries.append(int(meta["items_end"]))
        k += 1
    return ResumePoint(scenes, boundaries[-1], boundaries)


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def map_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only as a plain ndarray (what ``np.load(path, mmap_mode="r")`` gives,
    without the ``np.memmap`` subclass: ~3x cheaper to open, which a store pays ~50 times per shard on a cold start).

    Raises OSError / ValueError as ``np.load`` does for a missing or malformed file.
    """
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(fh)
        offset = fh.tell()
        count = int(np.prod(shape, dtype=np.int64))
        if fortran_order or dtype.hasobject or count == 0:  # not written by this module: the general reader
            return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
        if offset + count * dtype.itemsize > os.fstat(fh.fileno()).st_size:
            raise ValueError(f"{path}: {shape} {dtype} needs more bytes than the file holds (truncated?)")
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype, count, offset).reshape(shape)


class _OpenShard:
    """Memory-mapped field arrays of one shard, as plain read-only ndarrays, plus its index."""

    __slots__ = ("index", "data", "flat", "first")

    def __init__(self, shard_dir: Path, names: Sequence[str], layouts: dict[str, str], count: int, first: int,
                 field_dtypes: dict[str, str]):
        self.first = first
        try:
            index = np.load(shard_dir / INDEX_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(shard_dir / INDEX_FILE, f"unreadable index ({exc})") from None
        if index.ndim != 3 or index.shape[:2] != (count, len(names)) or index.dtype != np.int64:
            raise CorruptStoreError(shard_dir / INDEX_FILE, f"index shape {index.shape} {index.dtype} does not match "
                                    f"{count} scenes x {len(names)} fields")
        self.index = index
        self.data: list[np.ndarray] = []
        self.flat = [layouts[name] == "flat" for name in names]
        for name in names:
            path = shard_dir / _field_file(name)
            try:
                arr = map_npy(path)
            except (OSError, ValueError) as exc:
                raise CorruptStoreError(path, f"unreadable .npy ({exc})") from None
            if _dtype_str(arr.dtype) != field_dtypes[name]:
                raise CorruptStoreError(path, f"dtype {arr.dtype} != manifest {field_dtypes[name]}")
            self.data.append(arr)
        if count:
            self._check_index(shard_dir, names)

    def _check_index(self, shard_dir: Path, names: Sequence[str]) -> None:
        """Every scene's slice of every field lies in its file and holds exactly its recorded shape (rows for
        concat fields, elements for flat ones); all fields at once, the first bad field (in field order) named."""
        index = self.index
        rows = np.array([len(a) for a in self.data], np.int64)
        beyond = (index[:, :, 1].max(axis=0) > rows) | (index[:, :, 0].min(axis=0) < 0)  # (F,)
        length = index[:, :, 1] - index[:, :, 0]  # (count, F)
        dims = index[:, :, _INDEX_FIXED_COLS:]
        used = np.arange(dims.shape[2]) < index[:, :, 3:4]
        expect = np.where(np.array(self.flat), np.prod(np.where(used, dims, 1), axis=2),
                          np.where(index[:, :, 3] > 0, dims[:, :, 0], 1))
        wrong = length != expect
        bad_field = beyond | wrong.any(axis=0)
        if not bad_field.any():
            return
        f = int(np.flatnonzero(bad_field)[0])
        if beyond[f]:
            raise CorruptStoreError(shard_dir / _field_file(names[f]), f"holds {rows[f]} rows, the index needs "
                                    f"{index[:, f, 1].max()}")
        bad = int(np.flatnonzero(wrong[:, f])[0])
        raise CorruptStoreError(shard_dir / INDEX_FILE, f"scene {bad}, field {names[f]!r}: slice of "
                                f"{length[bad, f]} does not match its recorded shape")


class SceneStore(Sequence[Scene]):
    """Random access to the scenes of a store written by :func:`build_store`.

    ``store[i]`` returns a :class:`Scene` whose arrays are read-only views into memory-mapped files (no copy).

    Args:
        path: store directory.
        verify: check every file's blake2b checksum at open (sizes are always checked).
        validate: run Scene validation on every loaded scene (slower; the checksums already vouch for the data).
        max_open_shards: shards kept memory-mapped at once (LRU); default from the open-file limit.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptStoreError: manifest missing/invalid, a file missing, truncated or with a wrong checksum.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True, *, validate: bool = False,
                 max_open_shards: int | None = None):
        self.path = Path(path)
        self.validate = validate
        if not self.path.exists():
            raise FileNotFoundError(f"scene store {self.path} does not exist")
        if not self.path.is_dir():
            raise FileNotFoundError(f"scene store {self.path} is not a directory")
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            hint = (" (an interrupted build? rerun the same build command to finish it)"
                    if (self.path / SHARDS_DIR).exists() else " (not a scene store?)")
            raise CorruptStoreError(manifest_path, "missing" + hint)
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != FORMAT_NAME:
                raise CorruptStoreError(manifest_path, f"format {manifest.get('format')!r} is not {FORMAT_NAME!r}")
            if manifest.get("format_version") != FORMAT_VERSION:
                raise CorruptStoreError(manifest_path, f"format version {manifest.get('format_version')} is not "
                                        f"supported (this code reads version {FORMAT_VERSION})")
            self._fields: dict[str, str] = dict(manifest["fields"])
            shards = manifest["shards"]
            counts = [int(s["count"]) for s in shards]
            count = int(manifest["count"])
            tokens_info = manifest["tokens"]
        except CorruptStoreError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStoreError(manifest_path, f"invalid manifest ({type(exc).__name__}: {exc})") from None
        if sum(counts) != count:
            raise CorruptStoreError(manifest_path, f"shard counts sum to {sum(counts)}, manifest count is {count}")
        self.manifest: dict[str, Any] = manifest
        self._shard_dirs = [self.path / s["dir"] for s in shards]
        self._layouts = [s["fields"] for s in shards]
        self._counts = counts
        self._starts = [0]
        for c in counts:
            self._starts.append(self._starts[-1] + c)
        self._names = list(self._fields)

        # Verify: sizes always, checksums on request.
        to_check = [(self.path / tokens_info["file"], tokens_info)]
        for d, s in zip(self._shard_dirs, shards):
            to_check.extend((d / fname, info) for fname, info in s["files"].items())
            missing = [n for n in self._names if _field_file(n) not in s["files"]] + (
                [] if INDEX_FILE in s["files"] else [INDEX_FILE])
            if missing:
                raise CorruptStoreError(d / missing[0], "not listed in the manifest")
        for p, info in to_check:
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                raise CorruptStoreError(p, "missing") from None
            if size != info["size"]:
                raise CorruptStoreError(p, f"size {size} bytes, manifest says {info['size']} (truncated or altered)")
        if verify:
            for p, info in to_check:
                if file_blake2b(p) != info["blake2b"]:
                    raise CorruptStoreError(p, "blake2b checksum mismatch (file altered or corrupted)")
        self.verified = verify

        try:
            tokens = np.load(self.path / tokens_info["file"], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(self.path / tokens_info["file"], f"unreadable ({exc})") from None
        if tokens.shape != (count,):
            raise CorruptStoreError(self.path / tokens_info["file"], f"shape {tokens.shape}, expected ({count},)")
        self._tokens = tokens
        self._token_index: dict[str, int] | None = None

        if max_open_shards is None:
            try:
                import resource

                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            except (ImportError, ValueError, OSError):
                limit = 1024
            # Each open shard holds one descriptor per field file; keep half the process limit free.
            max_open_shards = max(2, (limit // 2) // (len(self._names) + 1))
        self._max_open = max_open_shards
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (e.g. to vector-env worker processes) sends the path and tables, not the mapped data."""
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_token_index"] = None
        return state

    # ---- metadata ----------------------------------------------------------------------------------------------

    @property
    def split(self) -> str:
        return str(self.manifest["split"])

    @property
    def source(self) -> str:
        return str(self.manifest["source"])

    @property
    def tokens(self) -> np.ndarray:
        """(N,) str: scene tokens in store order."""
        return self._tokens

    @property
    def fields(self) -> dict[str, str]:
        """Field name -> dtype ('str' for unicode)."""
        return dict(self._fields)

    @property
    def skipped(self) -> list[SkippedItem]:
        return [SkippedItem(s["item"], s["error"]) for s in self.manifest.get("skipped", [])]

    def index_of(self, token: str) -> int:
        """Store index of the scene with this token. Raises KeyError naming the token if absent."""
        if self._token_index is None:
            self._token_index = {str(t): i for i, t in enumerate(self._tokens.tolist())}
        try:
            return self._token_index[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in scene store {self.path}") from None

    def __len__(self) -> int:
        return self._starts[-1]

    # ---- loading -----------------------------------------------------------------------------------------------

    def _shard(self, k: int) -> _OpenShard:
        shard = self._open.get(k)
        if shard is not None:
            self._open.move_to_end(k)
            return shard
        shard = _OpenShard(self._shard_dirs[k], self._names, self._layouts[k], self._counts[k], self._starts[k],
                           self._fields)
        self._open[k] = shard
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return shard

    def arrays(self, i: int) -> dict[str, np.ndarray]:
        """Scene i as its flat ``Scene.to_arrays()`` dict (read-only views)."""
        n = self._starts[-1]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"scene index {i} out of range for a store of {n} scenes")
        k = bisect.bisect_right(self._starts, i) - 1
        shard = self._shard(k)
        out: dict[str, np.ndarray] = {}
        for name, data, flat, row in zip(self._names, shard.data, shard.flat, shard.index[i - shard.first].tolist()):
            a = data[row[0]:row[1]]
            if flat:
                a = a.reshape(row[_INDEX_FIXED_COLS:_INDEX_FIXED_COLS + row[3]])
            if row[2] and a.dtype.itemsize != 4 * row[2]:
                a = a.astype(f"<U{row[2]}")
            out[name] = a
        return out

    def __getitem__(self, i: int) -> Scene:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("SceneStore indices must be integers (iterate or use a list comprehension for slices)")
        return Scene.from_arrays(self.arrays(int(i)), validate=self.validate)

    def __iter__(self) -> Iterator[Scene]:
        for i in range(len(self)):
            yield self[i]

    def scene(self, token: str) -> Scene:
        """The scene with this token."""
        return self[self.index_of(token)]

    # ---- column access (statistics without building scenes) ----------------------------------------------------

    def shapes(self, name: str) -> np.ndarray:
        """(N, D) int64: each scene's shape of field ``name`` (unused dims 0)."""
        f = self._names.index(name)
        rows = [self._shard(k).index[:, f, 3:] for k in range(len(self._counts))]
        D = max((r.shape[1] - 1 for r in rows), default=0)
        out = np.zeros((len(self), D), np.int64)
        for k, r in enumerate(rows):
            out[self._starts[k]:self._starts[k + 1], :r.shape[1] - 1] = r[:, 1:]
        return out

    def column(self, name: str) -> list[np.ndarray]:
        """Field ``name`` of every scene (a list of N arrays; cheap views), without building Scene objects."""
        f = self._names.index(name)
        out = []
        for k in range(len(self._counts)):
            shard = self._shard(k)
            data, flat = shard.data[f], shard.flat[f]
            for row in shard.index[:, f].tolist():
                a = data[row[0]:row[1]]
                out.append(a.reshape(row[_INDEX_FIXED_COLS:_INDEX_FIXED_COLS + row[3]]) if flat else a)
        return out

    def disk_bytes(self) -> int:
        """Total size of the store's files (bytes)."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def __repr__(self) -> str:
        return f"SceneStore({str(self.path)!r}, {len(self)} scenes, split={self.split!r}, source={self.source!r})"
