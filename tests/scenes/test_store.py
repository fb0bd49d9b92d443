"""Scene store: exact round trip, resumable builds, corruption detection, skipped items."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from irlvla_gym.scenes.scene import PEDESTRIAN, Scene
from irlvla_gym.scenes.sources import SkippedItem
from irlvla_gym.scenes.store import (
    MANIFEST, CorruptStoreError, SceneStore, build_store, resume_point,
)
from irlvla_gym.scenes.testing import straight_road_scene


def make_scenes(n: int, prefix: str = "tok") -> list[Scene]:
    """Scenes that differ in agent count (0..3), lane count (1..3), token length and agent categories."""
    out = []
    for i in range(n):
        agents = [dict(x=8.0 + 6 * j, y=-3.5 * (j % 2), vx=2.0 * j, category=PEDESTRIAN if j == 2 else 0)
                  for j in range(i % 4)]
        out.append(straight_road_scene(token=f"{prefix}{i:0{1 + i % 5}d}", agents=agents, num_lanes=1 + i % 3,
                                       speed=5.0 + i % 7))
    return out


def assert_same_arrays(a: Scene, b: Scene) -> None:
    x, y = a.to_arrays(), b.to_arrays()
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].dtype == y[k].dtype, k
        assert x[k].shape == y[k].shape, k
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_round_trip_identical_arrays(tmp_path: Path) -> None:
    scenes = make_scenes(23)
    report = build_store(scenes, tmp_path / "s", split="unit", source="handmade", shard_size=5, progress=False)
    assert report.count == 23 and report.skipped == [] and report.shards_written == 5
    store = SceneStore(tmp_path / "s")
    assert len(store) == 23 and store.split == "unit" and store.source == "handmade"
    assert list(store.tokens) == [s.token for s in scenes]
    for i, s in enumerate(scenes):
        assert_same_arrays(s, store[i])
    assert [s.token for s in store] == [s.token for s in scenes]
    assert store.index_of(scenes[7].token) == 7
    assert store[-1].token == scenes[-1].token
    with pytest.raises(KeyError, match="nope"):
        store.index_of("nope")
    with pytest.raises(IndexError):
        store[23]
    # Loaded scenes are valid scenes, and read-only (views into the store's files).
    validated = SceneStore(tmp_path / "s", verify=False, validate=True)[4]
    assert_same_arrays(scenes[4], validated)
    with pytest.raises(ValueError):
        store[4].ego.future[0, 0] = 1.0
    np.testing.assert_array_equal(store.shapes("agents.category")[:, 0], [i % 4 for i in range(23)])
    # Few open shards (LRU eviction) and a pickled copy (as sent to worker processes) load the same scenes.
    small = SceneStore(tmp_path / "s", verify=False, max_open_shards=1)
    copy = pickle.loads(pickle.dumps(store))
    assert not copy._open  # the mapped data is not pickled, only the tables
    for i in np.random.default_rng(0).permutation(23):
        assert_same_arrays(scenes[i], small[int(i)])
        assert_same_arrays(scenes[i], copy[int(i)])


def test_round_trip_synthetic(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("irlvla_gym.scenes.synthetic")
    items = list(synthetic.iter_scenes("synthetic-train", num=3))
    scenes = [s for s in items if isinstance(s, Scene)]
    build_store(items, tmp_path / "s", split="synthetic-train", source="synthetic", shard_size=2, progress=False)
    store = SceneStore(tmp_path / "s")
    assert len(store) == len(scenes)
    for s, loaded in zip(scenes, store):
        assert_same_arrays(s, loaded)


def test_skipped_items_and_duplicates_recorded(tmp_path: Path) -> None:
    scenes = make_scenes(4)
    items = [scenes[0], SkippedItem("log_a.pkl#3", "field 'x': bad"), scenes[1], scenes[1], scenes[2],
             SkippedItem("log_b.pkl", "unreadable"), scenes[3]]
    report = build_store(items, tmp_path / "s", split="unit", source="handmade", shard_size=2, progress=False)
    assert report.count == 4 and len(report.skipped) == 3
    assert "log_a.pkl#3" in report.summary() and "duplicate token" in report.summary()
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["num_skipped"] == 3
    assert manifest["skipped"][0] == {"item": "log_a.pkl#3", "error": "field 'x': bad"}
    assert "duplicate token" in manifest["skipped"][1]["error"]
    assert SceneStore(tmp_path / "s").skipped[2].item == "log_b.pkl"


def test_empty_build(tmp_path: Path) -> None:
    report = build_store([SkippedItem("a", "b")], tmp_path / "s", split="u", source="h", progress=False)
    assert report.count == 0
    store = SceneStore(tmp_path / "s")
    assert len(store) == 0 and list(store) == [] and len(store.skipped) == 1


class Interrupted(RuntimeError):
    pass


def test_resumable_build(tmp_path: Path) -> None:
    scenes = make_scenes(11)
    items = scenes[:5] + [SkippedItem("bad", "reason")] + scenes[5:]
    out = tmp_path / "s"

    def interrupted_stream():
        for k, item in enumerate(items):
            if k == 9:
                raise Interrupted("killed mid-build")
            yield item

    with pytest.raises(Interrupted):
        build_store(interrupted_stream(), out, split="unit", source="handmade", shard_size=3, progress=False)
    assert not (out / MANIFEST).exists()  # never claims data that isn't there
    with pytest.raises(CorruptStoreError, match="manifest.json.*interrupted build"):
        SceneStore(out)
    point = resume_point(out, shard_size=3)
    assert point.scenes == 6 and point.items == 7  # two complete shards, one skipped item among them

    # Rerun with the full stream: complete shards are reused, not rewritten.
    report = build_store(items, out, split="unit", source="handmade", shard_size=3, progress=False)
    assert report.shards_reused == 2 and report.shards_written == 2 and report.count == 11
    store = SceneStore(out)
    for s, loaded in zip(scenes, store):
        assert_same_arrays(s, loaded)
    assert [s.item for s in store.skipped] == ["bad"]

    # Resume without re-reading the covered items (seekable sources such as the synthetic generator).
    out2 = tmp_path / "s2"
    with pytest.raises(Interrupted):
        build_store(interrupted_stream(), out2, split="unit", source="handmade", shard_size=3, progress=False)
    point = resume_point(out2, shard_size=3)
    report = build_store(items[point.items:], out2, split="unit", source="handmade", shard_size=3, progress=False,
                         start_item=point.items)
    assert report.shards_reused == 2 and report.count == 11 and len(report.skipped) == 1
    store = SceneStore(out2)
    assert list(store.tokens) == [s.token for s in scenes]
    assert_same_arrays(scenes[10], store[10])


def test_rebuild_guards(tmp_path: Path) -> None:
    out = tmp_path / "s"
    build_store(make_scenes(4), out, split="unit", source="handmade", shard_size=2, progress=False)
    with pytest.raises(ValueError, match="other parameters"):
        build_store(make_scenes(4), out, split="other", source="handmade", shard_size=2, progress=False)
    # A shorter rebuild drops the stale shards; changed scenes are rewritten.
    report = build_store(make_scenes(3, prefix="new"), out, split="unit", source="handmade", shard_size=2,
                         progress=False)
    assert report.shards_written == 2 and report.shards_reused == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000", "00001"]
    assert list(SceneStore(out).tokens) == ["new0", "new01", "new002"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a scene store"):
        build_store(make_scenes(1), tmp_path / "junk", split="u", source="h", progress=False)
    with pytest.raises(ValueError, match="start_item"):
        build_store(make_scenes(1), out, split="unit", source="handmade", shard_size=2, progress=False,
                    start_item=1)


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    out = tmp_path / "s"
    build_store(make_scenes(6), out, split="unit", source="handmade", shard_size=4, progress=False)
    return out


def test_missing_dir_and_manifest(tmp_path: Path, built: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SceneStore(tmp_path / "nowhere")
    (built / MANIFEST).unlink()
    with pytest.raises(CorruptStoreError, match="manifest.json: missing"):
        SceneStore(built)


def test_invalid_manifest(built: Path) -> None:
    (built / MANIFEST).write_text('{"format": "irlvla-scene-store", "count": ')
    with pytest.raises(CorruptStoreError, match="manifest.json: invalid manifest"):
        SceneStore(built)
    (built / MANIFEST).write_text('{"format": "irlvla-scene-store", "format_version": 1}')
    with pytest.raises(CorruptStoreError, match="manifest.json: invalid manifest"):
        SceneStore(built)


def test_truncated_file(built: Path) -> None:
    path = built / "shards" / "00001" / "agents.boxes.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(CorruptStoreError, match=r"00001/agents\.boxes\.npy: size .*truncated"):
        SceneStore(built, verify=False)


def test_flipped_byte(built: Path) -> None:
    path = built / "shards" / "00000" / "map.lane_centerlines.points.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=r"00000/map\.lane_centerlines\.points\.npy: blake2b checksum"):
        SceneStore(built)
    assert len(SceneStore(built, verify=False)) == 6  # sizes still match: only verify=True catches a flip


def test_missing_file(built: Path) -> None:
    path = built / "shards" / "00001" / "index.npy"
    path.unlink()
    with pytest.raises(CorruptStoreError, match=r"00001/index\.npy: missing"):
        SceneStore(built, verify=False)
    (built / "tokens.npy").unlink()
    with pytest.raises(CorruptStoreError, match=r"tokens\.npy: missing"):
        SceneStore(built, verify=False)


def test_header_tampering_detected_on_load(built: Path) -> None:
    """A file replaced by a same-size file with another dtype is caught when its shard is opened."""
    path = built / "shards" / "00000" / "command.npy"
    arr = np.load(path)
    header = path.read_bytes()[: len(path.read_bytes()) - arr.nbytes]
    np.save(path, arr.astype(np.float64))
    fixed = path.read_bytes()
    assert len(fixed) - len(header) == arr.nbytes  # same itemsize (int64 -> float64): same size
    store = SceneStore(built, verify=False)
    with pytest.raises(CorruptStoreError, match=r"command\.npy: dtype"):
        store[0]


def test_index_tampering_detected(built: Path) -> None:
    """An index whose slice lengths disagree with the recorded shapes is caught when its shard is opened."""
    path = built / "shards" / "00000" / "index.npy"
    index = np.load(path)
    index[1, :, 1] += 1
    np.save(path, index)
    store = SceneStore(built, verify=False)
    with pytest.raises(CorruptStoreError, match=r"00000/index\.npy: scene 1"):
        store[0]
