"""The reward world model's inference paths agree with the reference ones: compiled plan inputs vs the torch
features, fused head composition vs ``compose``, projected keys/values vs ``nn.MultiheadAttention``; config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_models import features as Fe
from reward_models.model import ModelConfig, RewardWorldModel, compact_bev_samples


@pytest.fixture(scope="module")
def obs2():
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models.model import OBS_KEYS

    spec = SPLITS["synthetic-test"]
    return ObservationBuilder(OBS_KEYS).observe_batch([generate_scene(spec.first_seed + i, spec.config, spec.name)
                                                       for i in range(2)])


@pytest.fixture(scope="module")
def plans2():
    from irlvla_gym.plans.vocabulary import load_vocabulary

    rng = np.random.default_rng(0)
    p = np.stack([load_vocabulary(256)[::4]] * 2).astype(np.float32)
    return p + rng.normal(0, 0.3, p.shape).astype(np.float32)


FAST = dict(hidden=64, heads=2, bev_samples="extrema", bev_tokens=16, agent_forecast="lane")
LEGACY = dict(hidden=128, heads=4, bev_samples="full", bev_tokens=64, agent_forecast="cv", map_layout="interleaved")


@pytest.mark.parametrize("cfg", [LEGACY, FAST], ids=["legacy", "fast"])
def test_compiled_inputs_equal_the_torch_features(obs2, plans2, cfg):
    torch.manual_seed(0)
    model = RewardWorldModel(ModelConfig(**cfg)).eval()
    with torch.no_grad():
        enc = model.encode_scene(obs2)
        fast = model.plan_inputs(enc, plans2)  # CPU: one compiled pass
        ref_feats = Fe.pose_features(torch.from_numpy(plans2), enc.obs, model.config.bev)
        ref = model.plan_inputs(enc, None, feats=ref_feats)  # torch features, then compaction + pooling in torch
        assert fast.shape == ref.shape == (2, 64, 10 * model.config.plan_feature_dim)
        assert float((fast - ref).abs().max()) < 2e-5
        a = model.score(enc, plans2).reward
        b = model.score(enc, None, feats=ref_feats).reward
        assert float((a - b).abs().max()) < 1e-5


@pytest.mark.parametrize("use_ec", [False, True])
def test_fused_heads_equal_compose_and_attention_equals_multihead(obs2, plans2, use_ec):
    torch.manual_seed(1)
    model = RewardWorldModel(ModelConfig(**FAST, use_ec=use_ec)).eval()
    with torch.no_grad():
        enc = model.encode_scene(obs2)
        pred = model.score(enc, plans2)
        # the composition, written out from the per-head logits
        values = torch.tensor([0.0, 0.5, 1.0])
        e = {n: (pred.logits[n].softmax(-1) * values).sum(-1) if n in ("nc", "ddc") else torch.sigmoid(pred.logits[n])
             for n in pred.logits}
        for n, v in e.items():
            assert torch.allclose(v, pred.expected[n], atol=1e-6), n
        weighted = 5 * e["ep"] + 5 * e["ttc"] + 2 * e["lk"] + 2 * e["hc"] + (2 * e["ec"] if use_ec else 0)
        reward = e["nc"] * e["dac"] * e["ddc"] * e["tlc"] * weighted / (16 if use_ec else 14)
        assert torch.allclose(reward, pred.reward, atol=1e-6)
        # the per-head Linear layers are the parameters the fused product uses
        h = torch.randn(3, model.config.hidden)
        fused = model.compose(torch.cat([model.heads[n](h) for n in ("nc", "ddc", "dac", "tlc", "ep", "ttc", "lk",
                                                                       "hc", "ec")], -1))
        assert torch.allclose(fused.logits["ttc"], model.heads["ttc"](h).squeeze(-1))
        # cross-attention with the projected keys/values == nn.MultiheadAttention on the scene tokens
        block = model.blocks[0]
        q = torch.randn(2, 5, model.config.d_model)
        kvn = block.norm_kv(enc.tokens)
        attn = block.attn(block.norm_q(q), kvn, kvn, key_padding_mask=enc.mask, need_weights=False)[0]
        ref = q + attn
        ref = ref + block.ff(block.norm_ff(ref))
        assert torch.allclose(block(q, enc.tokens, enc.mask), ref, atol=1e-5)


def test_extrema_compaction_layout():
    feats = torch.randn(3, 4, 8, Fe.NUM_POSE_FEATURES)
    c = compact_bev_samples(feats)
    assert c.shape[-1] == ModelConfig(bev_samples="extrema").plan_feature_dim == Fe.NUM_POSE_FEATURES - 70 + 28
    first = Fe.POSE_FEATURES.index("bev_pose_centre_0")
    bev = feats[..., first:first + 70].reshape(3, 4, 8, 2, 5, 7)
    assert torch.equal(c[..., :first], feats[..., :first])
    assert torch.equal(c[..., first:first + 7], bev[..., 0, :, :].amax(-2))  # max over the pose's box points
    assert torch.equal(c[..., first + 21:first + 28], bev[..., 1, :, :].amin(-2))  # min over the midpoint's
    assert torch.equal(c[..., first + 28:], feats[..., first + 70:])


@pytest.mark.parametrize("field,value", [("bev_samples", "all"), ("bev_tokens", 32), ("agent_forecast", "idm"),
                                         ("map_layout", "rows"), ("heads", 3)])
def test_bad_config_values_are_named(field, value):
    with pytest.raises(ValueError, match=field if field != "heads" else "heads"):
        ModelConfig(**{field: value})


def test_configs_written_before_map_layout_load_the_legacy_layout():
    assert ModelConfig().map_layout == "cells"
    assert ModelConfig.from_dict({"hidden": 64}).map_layout == "interleaved"
    assert ModelConfig.from_dict(ModelConfig(hidden=64).to_dict()).map_layout == "cells"
