"""The numba plan-feature kernels (reward_models.kernels) reproduce the torch reference (reward_models.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_models import features as Fe
from reward_models import kernels as Kn

TOL = 2e-5
RTOL = 1e-5


@pytest.fixture(scope="module")
def obs3():
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models.model import OBS_KEYS, prepare_obs

    spec = SPLITS["synthetic-test"]
    scenes = [generate_scene(spec.first_seed + i, spec.config, spec.name) for i in range(3)]
    return prepare_obs(ObservationBuilder(OBS_KEYS).observe_batch(scenes))


def _plans(B: int, seed: int = 0) -> torch.Tensor:
    """The 256-plan vocabulary per scene, partly perturbed: noisy, far outside the BEV, large yaws, zero motion,
    uniformly random poses."""
    from irlvla_gym.plans.vocabulary import load_vocabulary

    g = torch.Generator().manual_seed(seed)
    p = torch.as_tensor(np.asarray(load_vocabulary(256)), dtype=torch.float32)[None].repeat(B, 1, 1, 1)
    p[:, 64:128] += torch.randn(B, 64, 8, 3, generator=g) * torch.tensor([2.0, 1.0, 0.3])
    p[:, 128:160] *= torch.tensor([8.0, 8.0, 1.0])
    p[:, 160:192, :, 2] += torch.randn(B, 32, 8, generator=g) * 6.0
    p[:, 192:200] = 0.0
    p[:, 200:232] = (torch.rand(B, 32, 8, 3, generator=g) - 0.5) * torch.tensor([200.0, 150.0, 20.0])
    p[:, 232:240, :, :2] += 0.5 * torch.arange(1, 9, dtype=torch.float32)[:, None]  # off-grid x / y on cell edges
    return p.contiguous()


def _sub(obs, idx):
    return {k: v[idx] for k, v in obs.items()}


def _assert_close(ref: torch.Tensor, got: torch.Tensor, names=Fe.POSE_FEATURES):
    """Within TOL + RTOL |ref| (the pose kernel may contract and reassociate float operations: large finite
    differences of random plans, e.g. lateral accelerations of 1e3 m/s^2, differ in their last bits)."""
    assert ref.shape == got.shape and got.dtype == torch.float32
    excess = ((ref - got).abs() - RTOL * ref.abs()).reshape(-1, ref.shape[-1]).amax(0)
    bad = {names[i % len(names)]: float(excess[i]) for i in torch.nonzero(excess > TOL).flatten().tolist()}
    assert not bad, f"abs diff beyond {RTOL} x |ref| above {TOL} per column: {bad}"


def _assert_lookup_equal(ref: Fe.MapLookup, got: Fe.MapLookup):
    assert got.nearest.dtype == torch.int64
    assert torch.equal(ref.nearest, got.nearest), f"{int((ref.nearest != got.nearest).sum())} cells differ"
    for name in ("a", "b", "flags"):
        assert torch.equal(getattr(ref, name), getattr(got, name)), name


@pytest.mark.parametrize("idx", [slice(0, 1), slice(0, 3)], ids=["B1", "B3"])
def test_map_lookup_matches_torch(obs3, idx):
    o = _sub(obs3, idx)
    _assert_lookup_equal(Fe.map_lookup(o["map"], o["map_mask"]), Kn.map_lookup_fast(o["map"], o["map_mask"]))


def test_map_lookup_legacy_layout(obs3):
    """``legacy_layout=True``: the first checkpoints' interleaved tables, in both implementations."""
    ref = Fe.map_lookup(obs3["map"], obs3["map_mask"], legacy_layout=True)
    _assert_lookup_equal(ref, Kn.map_lookup_fast(obs3["map"], obs3["map_mask"], legacy_layout=True))
    fixed = Fe.map_lookup(obs3["map"], obs3["map_mask"]).nearest
    B, _, H, W = fixed.shape
    assert torch.equal(ref.nearest.reshape(B, H * W, 3).permute(0, 2, 1).reshape(B, 3, H, W), fixed)


def test_map_lookup_cells_hold_their_own_nearest_segment(obs3):
    """Table l at cell (i, j) lists a segment within the cap of that cell's centre (the legacy layout does not)."""
    lk = Kn.map_lookup_fast(obs3["map"], obs3["map_mask"])
    g = Fe.FIELD_GRID
    b, l, i, j = torch.nonzero(lk.nearest >= 0, as_tuple=True)
    seg = lk.nearest[b, l, i, j]
    px, py = g.x_max - (i + 0.5) * g.res, g.y_half - (j + 0.5) * g.res
    a, e = lk.a[b, seg], lk.b[b, seg]
    ab = e - a
    u = (((px - a[:, 0]) * ab[:, 0] + (py - a[:, 1]) * ab[:, 1]) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    d = torch.hypot(px - a[:, 0] - u * ab[:, 0], py - a[:, 1] - u * ab[:, 1])
    assert len(d) > 100 and float(d.max()) < g.cap + g.res


def test_pose_features_with_agent_forecast_and_compact_inputs(obs3):
    """The ``agents_future`` entry (lane-following forecast) and the extrema-compacted score inputs."""
    from reward_models.forecast import forecast_agents
    from reward_models.model import compact_bev_samples

    times = np.arange(1, 9, dtype=np.float32) * 0.5
    o = dict(obs3, agents_future=torch.from_numpy(forecast_agents(
        obs3["agents"], obs3["agents_mask"], obs3["map"], obs3["map_mask"], times, "lane")))
    plans = _plans(3, seed=4)
    ref = Fe.pose_features(plans, o)
    assert not torch.allclose(ref, Fe.pose_features(plans, obs3))  # the forecast changes the agent columns
    _assert_close(ref, Kn.pose_features_fast(plans, o))
    c = compact_bev_samples(ref)
    x = torch.cat([c.flatten(2), c.amax(dim=2), c.amin(dim=2)], dim=-1)
    got = Kn.plan_inputs_fast(plans, o, compact=True)
    assert got.shape == x.shape
    assert float(((x - got).abs() - RTOL * x.abs()).max()) < TOL


@pytest.mark.parametrize("forecast", [False, True], ids=["cv", "lane"])
def test_box_agent_geometry_matches_torch(obs3, forecast):
    """``agent_geometry="box"``: oriented-box separations instead of bounding circles, in both implementations."""
    from reward_models.forecast import forecast_agents

    o = obs3
    if forecast:
        times = np.arange(1, 9, dtype=np.float32) * 0.5
        o = dict(obs3, agents_future=torch.from_numpy(forecast_agents(
            obs3["agents"], obs3["agents_mask"], obs3["map"], obs3["map_mask"], times, "lane")))
    plans = _plans(3, seed=5)
    ref = Fe.pose_features(plans, o, agent_geometry="box")
    circle = Fe.pose_features(plans, o)
    col = Fe.POSE_FEATURES.index("agent_clearance")
    overlap = ref[..., col] < -1e-4
    assert overlap.any() and (circle[..., col][overlap] < 0).all()  # the circles enclose the boxes
    assert not torch.allclose(ref[..., col], circle[..., col])
    _assert_close(ref, Kn.pose_features_fast(plans, o, agent_geometry="box"))
    x = torch.cat([ref.flatten(2), ref.amax(dim=2), ref.amin(dim=2)], dim=-1)
    _assert_close(x, Kn.plan_inputs_fast(plans, o, agent_geometry="box"))


def test_box_separation_of_known_boxes():
    """Aligned boxes: the gap between their edges; perpendicular ones; overlapping ones are negative."""
    t = torch.tensor
    hl, hw = (Fe.FRONT + Fe.REAR) / 2, Fe.WIDTH / 2
    gap = Fe.box_separation(t(10.0), t(0.0), t(1.0), t(0.0), t(2.0), t(1.0))
    assert float(gap) == pytest.approx(10.0 - hl - 2.0)
    side = Fe.box_separation(t(0.0), t(5.0), t(0.0), t(1.0), t(2.0), t(1.0))  # perpendicular, beside the ego
    assert float(side) == pytest.approx(5.0 - hw - 2.0)
    assert float(Fe.box_separation(t(1.0), t(0.5), t(0.7), t(0.7), t(2.0), t(1.0))) < 0


@pytest.mark.parametrize("idx", [slice(0, 1), slice(0, 3)], ids=["B1", "B3"])
def test_pose_features_match_torch(obs3, idx):
    o = _sub(obs3, idx)
    B = o["ego"].shape[0]
    plans = _plans(B)
    lookup = Fe.map_lookup(o["map"], o["map_mask"])
    ref = Fe.pose_features(plans, dict(o, map_lookup=lookup))
    _assert_close(ref, Kn.pose_features_fast(plans, dict(o, map_lookup=lookup)))
    _assert_close(ref, Kn.pose_features_fast(plans, o))  # builds its own lookup
    _assert_close(ref, Kn.pose_features_fast(plans, o, lookup=Kn.map_lookup_fast(o["map"], o["map_mask"])))
    x = torch.cat([ref.flatten(2), ref.amax(dim=2), ref.amin(dim=2)], dim=-1)
    _assert_close(x, Kn.plan_inputs_fast(plans, o, lookup=lookup))


def test_pose_features_one_plan_per_scene(obs3):
    plans = _plans(3, seed=1)[:, ::37].contiguous()  # (3, 7, 8, 3)
    _assert_close(Fe.pose_features(plans, obs3), Kn.pose_features_fast(plans, obs3))


def test_pose_features_no_agents_no_map(obs3):
    """Scenes without real agents / polylines (all-padding slots), alone and next to a normal scene."""
    o = dict(obs3)
    am, mm = o["agents_mask"].clone(), o["map_mask"].clone()
    am[1] = False
    mm[2] = False
    o.update(agents_mask=am, map_mask=mm)
    plans = _plans(3, seed=2)
    _assert_lookup_equal(Fe.map_lookup(o["map"], mm), Kn.map_lookup_fast(o["map"], mm))
    _assert_close(Fe.pose_features(plans, o), Kn.pose_features_fast(plans, o))
    empty = dict(_sub(o, slice(0, 1)), agents_mask=torch.zeros_like(am[:1]), map_mask=torch.zeros_like(mm[:1]))
    _assert_lookup_equal(Fe.map_lookup(empty["map"], empty["map_mask"]),
                         Kn.map_lookup_fast(empty["map"], empty["map_mask"]))
    _assert_close(Fe.pose_features(plans[:1], empty), Kn.pose_features_fast(plans[:1], empty))


def test_pose_features_with_legacy_lookup_layout(obs3):
    """Given the legacy (interleaved) lookup, the kernel still matches the torch feature code."""
    plans = _plans(3, seed=3)
    ref = Fe.pose_features(plans, dict(obs3, map_lookup=Fe.map_lookup(obs3["map"], obs3["map_mask"], legacy_layout=True)))
    _assert_close(ref, Kn.pose_features_fast(plans, obs3, lookup=Kn.map_lookup_fast(
        obs3["map"], obs3["map_mask"], legacy_layout=True)))


def test_wrap_matches_torch_remainder():
    g = torch.Generator().manual_seed(0)
    a = torch.cat([(torch.rand(20000, generator=g) - 0.5) * 60.0, torch.tensor([0.0, -0.0, np.pi, -np.pi, 2 * np.pi,
                                                                              -2 * np.pi, 3 * np.pi, 1e4])])
    plans = torch.zeros(1, a.numel() // 8, 8, 3)
    plans[..., 2] = a[: plans.shape[1] * 8].view(1, -1, 8)
    out = np.empty((1, plans.shape[1], 8, 2), dtype=np.float32)
    Kn._yaws_kernel(plans.numpy(), out)
    prev = torch.cat([torch.zeros(1, plans.shape[1], 1), plans[:, :, :-1, 2]], dim=2)
    mid = prev + Fe._wrap(plans[..., 2] - prev) / 2
    assert torch.equal(torch.from_numpy(out[..., 1]), mid)


def test_uint8_raster_gives_the_float_results():
    """The model keeps the BEV as bytes on the CPU: pooling and sampling them equals the float-raster path."""
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models.model import OBS_KEYS, prepare_obs

    spec = SPLITS["synthetic-test"]
    raw = ObservationBuilder(OBS_KEYS).observe_batch([generate_scene(spec.first_seed + i, spec.config, spec.name)
                                                      for i in range(2)])
    f32, u8 = prepare_obs(raw), prepare_obs(raw, bev_uint8=True)
    assert u8["bev"].dtype == torch.uint8 and f32["bev"].dtype == torch.float32
    pooled = torch.nn.functional.avg_pool2d(f32["bev"], 4)
    assert float((Kn.pool_bev(u8["bev"]) - pooled).abs().max()) < 1e-6
    plans = _plans(2, seed=5)
    _assert_close(Kn.pose_features_fast(plans, f32), Kn.pose_features_fast(plans, u8))
    _assert_close(Fe.pose_features(plans, f32), Fe.pose_features(plans, u8))
    with pytest.raises(ValueError, match="divisible"):
        Kn.pool_bev(torch.zeros(1, 8, 30, 30, dtype=torch.uint8))
