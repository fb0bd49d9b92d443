"""The VLA network: every supported obs-key set, both heads, persistence, transformers from_pretrained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from irlvla_gym.policies.config import VLAConfig, network_input_keys
from irlvla_gym.policies.network import VLANetwork, prepare_observations

from .conftest import tiny_config

OBS_KEY_SETS = [("camera",), ("bev",), ("camera", "instruction", "ego"), ("camera", "bev", "ego", "instruction"),
                ("ego",), ("bev", "ego", "instruction"), ("agents", "map", "ego", "instruction"), ("agents",)]


@pytest.mark.parametrize("keys", OBS_KEY_SETS, ids=["+".join(k) for k in OBS_KEY_SETS])
def test_forward_shapes_for_every_obs_key_set(keys, obs_batch):
    torch.manual_seed(0)
    net = VLANetwork(tiny_config(obs_keys=keys))
    inputs = prepare_observations(obs_batch, keys)
    tokens = net.encoder(inputs)
    assert tokens.shape[0] == 4 and tokens.shape[2] == 32
    mean = net(inputs)
    assert mean.shape == (4, 24) and torch.isfinite(mean).all()
    plans = net.plan({k: obs_batch[k] for k in network_input_keys(keys)})
    assert plans.shape == (4, 8, 3) and plans.dtype == np.float64
    loss = net.bc_loss(inputs, torch.zeros(4, 24))["loss"]
    loss.backward()
    assert all(p.grad is not None for p in net.head.parameters() if p.requires_grad and p is not net.head.log_std)


def test_channels_first_camera_and_trimmed_padding_agree(obs_batch):
    net = VLANetwork(tiny_config(obs_keys=("camera", "instruction"))).eval()
    hwc = prepare_observations(obs_batch, net.obs_keys)
    chw = prepare_observations({"camera": obs_batch["camera"].transpose(0, 3, 1, 2),
                                "instruction": obs_batch["instruction"]}, net.obs_keys)
    with torch.no_grad():
        a, b = net(hwc), net(chw)
        # one sample alone (shorter padding trim) gives the same plan as inside the batch
        c = net({k: v[:1] for k, v in hwc.items()})
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:1], c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["gaussian", "diffusion"])
def test_vector_sets_ignore_masked_slots_and_batch_neighbours(obs_batch, head):
    """Agent / map slots whose mask is 0 never change a plan, and a row plans the same alone as in its batch
    (the Gaussian head trims to the batch's longest real prefix; the diffusion head keeps every slot)."""
    torch.manual_seed(0)
    keys = ("agents", "map", "ego")
    net = VLANetwork(tiny_config(obs_keys=keys, head=head)).eval()
    obs = {k: obs_batch[k] for k in ("agents", "agents_mask", "map", "map_mask", "ego")}
    assert obs["agents_mask"].sum() > 0 and obs["map_mask"].sum() > 0
    noisy = {k: v.copy() for k, v in obs.items()}
    noisy["agents"][obs["agents_mask"] == 0] = 7.0
    noisy["map"][obs["map_mask"] == 0] = -3.0
    with torch.no_grad():
        a = net(prepare_observations(obs, keys))
        b = net(prepare_observations(noisy, keys))
        alone = torch.cat([net(prepare_observations({k: v[i:i + 1] for k, v in obs.items()}, keys))
                           for i in range(len(a))])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(KeyError, match="agents_mask"):
        prepare_observations({k: v for k, v in obs.items() if k != "agents_mask"}, keys)


def test_config_validation_and_json_round_trip(tmp_path):
    with pytest.raises(ValueError):
        VLAConfig(obs_keys=("compact",))
    with pytest.raises(ValueError):
        VLAConfig(head="mlp")
    with pytest.raises(TypeError):
        VLAConfig.from_dict({"nope": 1})
    net = VLANetwork(tiny_config())
    cfg = net.config
    assert cfg.vision_config["model_type"] == "vit" and cfg.language_config["vocab_size"] == 39
    cfg.save(tmp_path)
    again = VLAConfig.load(tmp_path)
    assert again.to_dict() == cfg.to_dict()
    json.dumps(cfg.to_dict())


def test_language_vocab_matches_shipped_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from irlvla_gym.obs.instruction import TOKENIZER_DIR

    tok = PreTrainedTokenizerFast.from_pretrained(str(TOKENIZER_DIR))
    assert VLAConfig().vocab_size == len(tok)


@pytest.mark.parametrize("head", ["gaussian", "diffusion"])
def test_save_pretrained_round_trip(tmp_path, obs_batch, head):
    torch.manual_seed(1)
    net = VLANetwork(tiny_config(head=head)).eval()
    net.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = VLANetwork.from_pretrained(tmp_path).eval()
    inputs = prepare_observations(obs_batch, net.obs_keys)
    with torch.no_grad():
        torch.testing.assert_close(net(inputs), loaded(inputs))


@pytest.mark.parametrize("kind", ["vit", "siglip"])
def test_vision_encoder_from_a_local_pretrained_checkpoint(tmp_path, obs_batch, kind):
    """The real loading path: transformers from_pretrained on a tiny model saved to a temp dir."""
    import shutil

    from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

    torch.manual_seed(2)
    sizes = dict(patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if kind == "vit":
        model = ViTModel(ViTConfig(image_size=48, **sizes), add_pooling_layer=False)
    else:
        model = SiglipVisionModel(SiglipVisionConfig(image_size=48, **sizes))
    src = tmp_path / "vision"
    model.save_pretrained(src)
    net = VLANetwork(tiny_config(obs_keys=("camera", "ego"), vision_pretrained_path=str(src))).eval()
    assert net.config.image_size == (48, 48) and net.config.vision_model == kind
    for name, value in model.state_dict().items():
        torch.testing.assert_close(net.encoder.vision.state_dict()[name], value)
    inputs = prepare_observations(obs_batch, net.obs_keys)
    with torch.no_grad():
        before = net(inputs)
    # the saved VLA network rebuilds from its own config: the source checkpoint is no longer needed
    net.save_pretrained(tmp_path / "vla")
    shutil.rmtree(src)
    with torch.no_grad():
        torch.testing.assert_close(VLANetwork.from_pretrained(tmp_path / "vla").eval()(inputs), before)


def test_diffusion_head_sample_shape_and_deterministic_mean(obs_batch):
    torch.manual_seed(3)
    net = VLANetwork(tiny_config(head="diffusion")).eval()
    inputs = prepare_observations(obs_batch, net.obs_keys)
    with torch.no_grad():
        tokens = net.encoder(inputs)
        samples = net.head.sample(tokens, num_samples=3, generator=torch.Generator().manual_seed(0))
        assert samples.shape == (4, 3, 24) and samples.abs().max() <= 1.0
        torch.testing.assert_close(net(inputs), net(inputs))  # the mean is deterministic
    abar = net.head.alphas_cumprod
    assert abar.shape == (4,) and bool((abar[1:] < abar[:-1]).all())
    out = net.bc_loss(inputs, torch.zeros(4, 24))
    assert set(out) >= {"loss", "mse", "denoise"} and torch.isfinite(out["loss"])


def test_shipped_checkpoint_loads_by_name(obs_batch):
    from irlvla_gym.policies.network import CHECKPOINT_DIR

    if not (CHECKPOINT_DIR / "bc_default" / "config.json").is_file():
        pytest.skip("no shipped checkpoint")
    net = VLANetwork.from_pretrained("bc_default")
    size = sum(p.stat().st_size for p in (CHECKPOINT_DIR / "bc_default").iterdir())
    assert size < 8 * 2**20
    assert net.plan({k: obs_batch[k] for k in net.obs_keys}).shape == (4, 8, 3)
