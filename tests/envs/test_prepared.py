"""The persisted per-scene preparation (irlvla_gym/envs/prepared.py): bit-identical env outputs with no cache, a cache
being filled and a persisted one; exact round trip of every persisted value; corrupt and stale caches detected;
the store build hook; observations gathered into reused buffers without aliasing what callers keep."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.cache import clear_shared_caches
from irlvla_gym.envs import prepared as P
from irlvla_gym.envs.scoring import DEFAULT_INDEX_RESOLUTION_M, POLYGON_INDEX_SLOT, make_bundle
from irlvla_gym.envs.testing import SMALL_OBS
from irlvla_gym.metrics.maps import clear_packed_maps, polygon_index
from irlvla_gym.metrics.polyindex import PackedPolygonIndex
from irlvla_gym.scenes.store import SceneStore, build_store
from irlvla_gym.scenes.synthetic import iter_scenes

NUM_SCENES = 24


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """A 24-scene synthetic-train store in shards of 8 (no prepared caches)."""
    out = tmp_path_factory.mktemp("prep") / "store"
    build_store(iter_scenes("synthetic-train", NUM_SCENES), out, split="synthetic-train", source="synthetic",
                shard_size=8, progress=False)
    return out


def _fresh_process_state() -> None:
    """What a new process would have: no in-memory bundles, scorer pack or open tables."""
    P.clear_tables()
    clear_shared_caches()
    clear_packed_maps()


def _rollout(env_id: str, store: Path, n: int, steps: int, **kwargs) -> list:
    _fresh_process_state()
    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", scenes=str(store),
                        obs_config=SMALL_OBS, **kwargs)
    out = [envs.reset(seed=5)]
    rng = np.random.default_rng(1)
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (n, 24)).astype(np.float32)
        obs, rew, term, trunc, info = envs.step(actions)
        out.append(({k: v.copy() for k, v in obs.items()}, rew, term, trunc, info))
    envs.close()
    return out


def _assert_same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        _assert_same(list(a), list(b), path)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("env_id, n, steps", [("IRLVLA-Navsim-v2", 6, 5), ("IRLVLA-Navsim-ClosedLoop-v2", 3, 6)])
def test_no_cache_cold_and_persisted_are_bit_identical(store_dir, monkeypatch, env_id, n, steps):
    shutil_rm(store_dir / P.DIR_NAME)
    monkeypatch.setenv(P.ENV_SWITCH, "0")
    none = _rollout(env_id, store_dir, n, steps)
    assert not (store_dir / P.DIR_NAME).exists()
    monkeypatch.setenv(P.ENV_SWITCH, "1")
    cold = _rollout(env_id, store_dir, n, steps)  # prepared in memory, written through
    assert list((store_dir / P.DIR_NAME).glob("*/*.json"))
    warm = _rollout(env_id, store_dir, n, steps)  # every scene read back from the files
    _assert_same(none, cold)
    _assert_same(none, warm)
    shutil_rm(store_dir / P.DIR_NAME)
    P.prepare_store(store_dir, progress=False, obs=[(("bev", "ego", "instruction"), SMALL_OBS)])
    built = _rollout(env_id, store_dir, n, steps)
    _assert_same(none, built)
    _fresh_process_state()


class _ObservingReward:
    """A batched reward that reads an observation of the scene (as the reward world model does): the sum of its
    ego vector and BEV, from the observations the env hands in or from rendering them itself."""

    def __init__(self, hand_in: bool):
        from irlvla_gym.obs.registry import ObservationBuilder

        self.builder = ObservationBuilder(("bev", "ego"), SMALL_OBS)
        if hand_in:
            self.observation_spec = (("bev", "ego"), SMALL_OBS)
        self.handed_in = 0

    def score_batch(self, scenes, plans, observations=None):
        if observations is None:
            observations = [self.builder.observe(s) for s in scenes]
        else:
            self.handed_in += len(observations)
        return np.array([float(o["ego"].sum()) + 1e-6 * float(o["bev"].sum()) + float(p[-1, 0])
                         for o, p in zip(observations, plans)])

    def __call__(self, scene, plan):
        return float(self.score_batch([scene], plan[None])[0])


def test_reward_observations_are_cached_and_persisted(store_dir, monkeypatch):
    """A reward declaring ``observation_spec`` gets the t0 observations from the env (cached with the scene and
    written beside the store in a table of their own): the same rewards as rendering them itself, read back by a
    fresh process without rendering."""
    shutil_rm(store_dir / P.DIR_NAME)
    monkeypatch.setenv(P.ENV_SWITCH, "1")
    own = _rollout("IRLVLA-Navsim-v2", store_dir, 4, 5, reward=_ObservingReward(hand_in=False), obs_keys=("ego",))
    handed = _ObservingReward(hand_in=True)
    cold = _rollout("IRLVLA-Navsim-v2", store_dir, 4, 5, reward=handed, obs_keys=("ego",))
    assert handed.handed_in == 20
    keys = [json.loads((d / "key.json").read_text()).get("keys") for d in (store_dir / P.DIR_NAME).iterdir()
            if (d / "key.json").exists()]
    assert ["bev", "ego"] in keys, f"the reward's observation table was not written (tables: {keys})"
    monkeypatch.setattr("irlvla_gym.obs.registry.ObservationBuilder.observe_batch",
                        lambda *a, **k: pytest.fail("a persisted observation was rendered again"))
    warm = _rollout("IRLVLA-Navsim-v2", store_dir, 4, 5, reward=_ObservingReward(hand_in=True), obs_keys=("ego",))
    _assert_same(own, cold)
    _assert_same(own, warm)
    _fresh_process_state()


def test_step_pack_equals_shared_pack(store_dir):
    """A pool larger than the scene cache packs each step's scenes alone: same numbers as the shared pack."""
    shared = _rollout("IRLVLA-Navsim-v2", store_dir, 8, 4)
    step = _rollout("IRLVLA-Navsim-v2", store_dir, 8, 4, scene_cache_size=4)
    _assert_same(shared, step)
    _fresh_process_state()


def test_round_trip_is_exact(store_dir, tmp_path):
    store = SceneStore(store_dir, verify=False)
    items = []
    for i in range(3):
        bundle = make_bundle(i, store[i], "log")
        items.append((i, str(store.tokens[i]), P.bundle_arrays(bundle)))
    path = P.write_chunk(tmp_path, 0, "k", "bundles-log", items)
    chunk = P.Chunk(path)
    for pos, (i, _, _) in enumerate(items):
        chunk.check(pos)
        original = make_bundle(i, store[i], "log")
        back = P.bundle_from_arrays(i, str(store.tokens[i]), lambda: store[i], chunk.arrays(pos))
        assert polygon_index(back.ctx) is back.ctx.cache[POLYGON_INDEX_SLOT]  # the scorer reads the slot
        built, read = original.ctx.cache[POLYGON_INDEX_SLOT], back.ctx.cache[POLYGON_INDEX_SLOT]
        assert read.stored("cell_start").dtype != np.int64  # the offsets are narrowed on disk, read as stored
        # the packed index (the vector env's) reads them as stored: the same arrays as from the built index
        _assert_same(vars(PackedPolygonIndex([built, built])), vars(PackedPolygonIndex([read, read])))
        for name in P.INDEX_ATTRS:  # attributes widened on first access: same values and dtypes
            _assert_same(getattr(built, name), getattr(read, name), name)
        assert set(vars(read)) - {"narrow"} == set(vars(built))
        for name in P.CONTEXT_ARRAYS:
            _assert_same(getattr(original.ctx, name), getattr(back.ctx, name), name)
        assert [[r.tolist() for r in p] for p in original.ctx.polygons] == \
            [[r.tolist() for r in p] for p in back.ctx.polygons]
        for f in dataclasses.fields(original.human_raw):
            _assert_same(getattr(original.human_raw, f.name), getattr(back.human_raw, f.name), f.name)
        for name in ("boxes", "valid", "category"):
            _assert_same(getattr(original.log_agents, name), getattr(back.log_agents, name), name)
        _assert_same([original.start_state, original.human_states, original.reference_progress],
                     [back.start_state, back.human_states, back.reference_progress])
        assert back.ctx.token == original.ctx.token and back.ctx.vehicle == original.ctx.vehicle
        assert back.scene.token == original.scene.token  # loaded on first access


def _corrupt_one_scene(table_dir: Path) -> tuple[Path, int]:
    path = sorted(table_dir.glob("s*.json"))[0]
    meta = json.loads(path.read_text())
    blob = path.with_name(meta["blob"])
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # inside the last scene's data
    blob.write_bytes(bytes(data))
    return path, meta["scenes"][-1]


def test_corrupt_chunk_is_detected_and_prepared_again(store_dir):
    shutil_rm(store_dir / P.DIR_NAME)
    P.prepare_store(store_dir, progress=False)
    _fresh_process_state()
    store = SceneStore(store_dir, verify=False)
    table = P.table_for(store, P.bundle_key(store, "log", DEFAULT_INDEX_RESOLUTION_M))
    path, index = _corrupt_one_scene(table.dir)
    with pytest.warns(UserWarning, match="crc32"):
        assert table.get(index) is None
    assert path.with_suffix(".corrupt").exists() and not path.exists()
    truncated = sorted(table.dir.glob("s*.json"))[0]
    blob = truncated.with_name(json.loads(truncated.read_text())["blob"])
    blob.write_bytes(blob.read_bytes()[:-64])
    _fresh_process_state()
    table = P.table_for(store, P.bundle_key(store, "log", DEFAULT_INDEX_RESOLUTION_M))
    with pytest.warns(UserWarning, match="truncated"):
        assert table.get(json.loads(truncated.read_text())["scenes"][0]) is None
    _fresh_process_state()


def test_stale_cache_is_not_used(store_dir, monkeypatch):
    shutil_rm(store_dir / P.DIR_NAME)
    P.prepare_store(store_dir, progress=False)
    _fresh_process_state()
    monkeypatch.setattr(P, "PREP_VERSION", P.PREP_VERSION + 1)
    store = SceneStore(store_dir, verify=False)
    with pytest.warns(UserWarning, match=r"stale \(changed: \['prep_version'\]\)"):
        table = P.table_for(store, P.bundle_key(store, "log", DEFAULT_INDEX_RESOLUTION_M))
    assert table.get(0) is None
    _fresh_process_state()


def test_build_hook_runs_after_a_store_build(tmp_path, monkeypatch):
    from irlvla_gym.cli import main
    from irlvla_gym.scenes.source import build_hooks

    assert build_hooks()["env-prepared"] is P.prepare_store_hook
    out = tmp_path / "store"
    assert main(["scenes", "build", "--source", "synthetic", "--num", "4", "--out", str(out), "--no-progress"]) == 0
    tables = sorted(p.name.rsplit("-", 1)[0] for p in (out / P.DIR_NAME).iterdir())
    assert tables == ["bundles-log", "obs"]
    assert sum(len(json.loads(p.read_text())["scenes"]) for p in (out / P.DIR_NAME).glob("*/s*.json")) == 8
    other = tmp_path / "plain"
    assert main(["scenes", "build", "--source", "synthetic", "--num", "2", "--out", str(other), "--no-progress",
                 "--no-hooks"]) == 0
    assert not (other / P.DIR_NAME).exists()
    _fresh_process_state()


def test_returned_observations_are_never_overwritten(store_dir):
    _fresh_process_state()
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=4, vectorization_mode="vector_entry_point",
                        scenes=str(store_dir), obs_config=SMALL_OBS)
    kept, _ = envs.reset(seed=0)
    snapshot = {k: v.copy() for k, v in kept.items()}
    view = kept["bev"][1]
    actions = np.zeros((4, 24), np.float32)
    for _ in range(4):  # later steps must not write into arrays the caller still holds (or views of them)
        obs = envs.step(actions)[0]
        assert all(obs[k] is not kept[k] for k in obs)
    _assert_same(snapshot, kept)
    np.testing.assert_array_equal(view, snapshot["bev"][1])
    del kept, view, obs
    first = envs.step(actions)[0]["bev"]
    pool = {id(b["bev"]) for b in envs.state.obs_out.pool}
    assert id(first) in pool  # a released set is reused
    envs.close()
    _fresh_process_state()


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    assert not os.path.exists(path)


def test_ensure_split_store_builds_only_when_the_pool_outgrows_the_cache(tmp_path, monkeypatch):
    """Training builds the default store of a synthetic split once, only where lazy generation would regenerate
    scenes (pool larger than the scene cache) and only when no store exists; a smaller pool gets a store of its
    own (its first N scenes) from POOL_STORE_MIN scenes on."""
    import irlvla_gym.scenes.source as source

    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    built, pools = [], []
    monkeypatch.setattr(P, "build_split_store", lambda split, progress=True: built.append(split) or tmp_path / split)
    monkeypatch.setattr(source, "build_pool_store", lambda split, n, progress=True: pools.append((split, n)) or tmp_path)
    small = P.POOL_STORE_MIN - 1
    assert P.ensure_split_store("synthetic-train", small, scene_cache_size=1024, progress=False) is None
    assert P.ensure_split_store("synthetic-train", 100, scene_cache_size=1024, progress=False) is not None
    assert pools == [("synthetic-train", 100)]
    (tmp_path / "scenes" / "synthetic-train-first100").mkdir(parents=True)
    (tmp_path / "scenes" / "synthetic-train-first100" / "manifest.json").write_text("{}")
    assert P.ensure_split_store("synthetic-train", 100, scene_cache_size=1024, progress=False) is None
    assert pools == [("synthetic-train", 100)]
    assert P.ensure_split_store("/some/store/dir", 5000, scene_cache_size=10, progress=False) is None
    assert P.ensure_split_store("synthetic-train", 2000, scene_cache_size=1024, progress=False) is not None
    assert P.ensure_split_store("synthetic-train", None, scene_cache_size=1024, progress=False) is not None
    assert built == ["synthetic-train", "synthetic-train"]
    (tmp_path / "scenes" / "synthetic-train").mkdir(parents=True)
    (tmp_path / "scenes" / "synthetic-train" / "manifest.json").write_text("{}")
    assert P.ensure_split_store("synthetic-train", 2000, scene_cache_size=1024, progress=False) is None
    monkeypatch.setenv(P.ENV_SWITCH, "0")
    assert P.ensure_split_store("synthetic-val", None, scene_cache_size=1, progress=False) is None
    assert built == ["synthetic-train", "synthetic-train"]


@pytest.mark.parametrize("parts", [P.BUNDLE_CODE, P.OBS_CODE], ids=["bundles", "obs"])
def test_code_digest_covers_every_imported_module(parts):
    """The source digest that versions a table covers every project module its code imports (transitively; the
    scene store and the build-time helpers of prepared.py excepted): an edit that can change a persisted value
    always invalidates it."""
    import ast

    root = P.PACKAGE_ROOT
    covered = {f for part in parts for f in ((root / part).rglob("*.py") if (root / part).is_dir() else [root / part])}
    allowed = {root / "scenes" / "source.py", root / "scenes" / "store.py", root / "scenes" / "synthetic.py",
               root / "obs" / "tokenizer"}  # prepared.py's store building and split names, not its values
    def module_file(name: str):
        sub = root.joinpath(*name.split(".")[1:])
        return sub.with_suffix(".py") if sub.with_suffix(".py").exists() else sub / "__init__.py"

    missing = set()
    for path in sorted(covered - {root / "envs" / "prepared.py"}):  # the reader / writer, not a computation
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("irlvla_gym.")):
                continue
            for alias in node.names:  # ``from irlvla_gym.envs import scoring`` imports a module, not the package
                target = module_file(f"{node.module}.{alias.name}")
                target = target if target.exists() else module_file(node.module)
                if target.exists() and target not in covered and target not in allowed:
                    missing.add(f"{path.relative_to(root)} imports {node.module}")
    assert not missing, sorted(missing)


def test_pool_store_holds_the_split_scenes_and_sources_of_that_pool_read_it(tmp_path, monkeypatch):
    """A pool store holds the scenes lazy generation makes, bit for bit; a split source of exactly that pool reads
    it (so its envs persist their preparation beside it), other pools still generate."""
    import irlvla_gym.scenes.source as source
    from irlvla_gym.scenes.synthetic import generate_scene, SPLITS

    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    lazy = source.SceneSource("synthetic-val", num_scenes=3)
    path = source.build_pool_store("synthetic-val", 3, progress=False)
    assert path == source.pool_store_path("synthetic-val", 3) and (path / "manifest.json").is_file()
    assert not list(path.parent.glob("*.tmp-*"))
    pooled = source.SceneSource("synthetic-val", num_scenes=3)
    assert pooled.store is not None and pooled.cache_key[0] == ("store", os.path.realpath(path))
    assert source.SceneSource("synthetic-val", num_scenes=2).store is None
    assert source.SceneSource("synthetic-val").store is None
    spec = SPLITS["synthetic-val"]
    for i in range(3):
        scene = pooled.load(i)
        assert scene.token == lazy.load(i).token == f"synthetic-val-{i:05d}"
        assert_same_fields(scene, generate_scene(spec.first_seed + i, spec.config, spec.name))


def assert_same_fields(got, want, where: str = "scene") -> None:
    """Dataclass trees equal field by field: arrays in dtype, shape and value (NaN == NaN), the rest with ==."""
    if dataclasses.is_dataclass(want):
        assert type(got) is type(want), where
        for f in dataclasses.fields(want):
            assert_same_fields(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, (list, tuple)) and len(want) and not isinstance(want[0], (int, float, str)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_fields(a, b, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            assert_same_fields(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape, where
        np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert got == want, where


def test_corrupt_narrowed_index_field_is_detected_before_use(store_dir):
    """A flipped byte inside a scene's map-index offsets (stored narrowed, handed to the index as stored and
    widened only on access) fails the scene's crc32 before any bundle is built from it."""
    shutil_rm(store_dir / P.DIR_NAME)
    P.prepare_store(store_dir, progress=False)
    _fresh_process_state()
    store = SceneStore(store_dir, verify=False)
    table = P.table_for(store, P.bundle_key(store, "log", DEFAULT_INDEX_RESOLUTION_M))
    path = sorted(table.dir.glob("s*.json"))[0]
    chunk = P.Chunk(path)
    arrays = chunk.arrays(1)
    original = np.array(arrays.stored("pi.cell_start"))
    assert original.dtype != np.int64
    offset = arrays.row[chunk.positions["pi.cell_start"] * chunk.width]  # the field's first byte in the blob
    blob = path.with_name(chunk.meta["blob"])
    data = bytearray(blob.read_bytes())
    data[len(data) - chunk.meta["blob_bytes"] + offset] ^= 0x01  # the blob's array data ends the .npy file
    del arrays, chunk
    blob.write_bytes(bytes(data))
    unchecked = P.Chunk(path).arrays(1).stored("pi.cell_start")  # read without the scene's crc32: altered
    assert (unchecked != original).sum() == 1
    del unchecked
    _fresh_process_state()
    table = P.table_for(store, P.bundle_key(store, "log", DEFAULT_INDEX_RESOLUTION_M))
    scene = json.loads(path.read_text())["scenes"][1]
    with pytest.warns(UserWarning, match="crc32"):
        assert table.get(scene) is None
    assert not path.exists()
    _fresh_process_state()
