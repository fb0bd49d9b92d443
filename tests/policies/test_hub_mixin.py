"""VLA save/load through huggingface_hub's PyTorchModelHubMixin (issue ecosystem): the shipped checkpoints load
unchanged with bit-identical outputs, the layout stays config.json + model.safetensors, transformers' AutoConfig reads
a saved config.json, and a Hub repo id loads through the mixin (offline: the download is faked with local files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from irlvla_gym.policies.config import MODEL_TYPE, VLAConfig, register_auto_config
from irlvla_gym.policies.network import CHECKPOINT_DIR, VLANetwork

SHIPPED = [name for name in ("bc_default", "irlvla_default") if (CHECKPOINT_DIR / name / "config.json").is_file()]
TINY = dict(obs_keys=("camera", "ego", "instruction"), image_size=(32, 64), vision_hidden=32, vision_layers=1,
            vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, hidden=32, fusion_layers=1, fusion_heads=2)


def reference_load(directory: Path) -> VLANetwork:
    """How the hand-written loader (before the mixin) built a network: config, then a strict state-dict load."""
    from safetensors.torch import load_file

    net = VLANetwork(VLAConfig.load(directory), load_pretrained=False)
    net.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    return net


def inputs_for(config: VLAConfig, batch: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h, w = config.image_size
    ids = torch.randint(1, config.vocab_size, (batch, config.max_tokens), generator=g)
    ids[:, 9:] = 0  # trailing padding, as the tokenizer writes it
    return {"camera": torch.rand(batch, 3, 2 * h, 2 * w, generator=g), "ego": torch.randn(batch, 21, generator=g),
            "instruction": ids, "bev": torch.rand(batch, config.bev_channels, 128, 128, generator=g)}


def outputs(net: VLANetwork) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(inputs_for(net.config))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoints_load_bit_identically(name, tmp_path):
    directory = CHECKPOINT_DIR / name
    new, old = VLANetwork.from_pretrained(name), reference_load(directory)
    assert new.training  # the mode of a new network, as before (the mixin's default loader would call eval())
    assert torch.equal(outputs(new), outputs(old))
    assert VLANetwork.from_pretrained(directory).config == old.config  # by path as well as by name
    # save again: the same two files, the same tensors, and now AutoConfig-readable
    out = new.save_pretrained(tmp_path / name)
    assert out == tmp_path / name
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    from safetensors.torch import load_file

    a, b = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((out / "config.json").read_text())
    assert saved.pop("model_type") == MODEL_TYPE
    shipped = json.loads((directory / "config.json").read_text())
    shipped.pop("model_type", None)  # checkpoints saved before the mixin have none
    assert saved == shipped  # otherwise the shipped file, unchanged
    assert torch.equal(outputs(VLANetwork.from_pretrained(out)), outputs(old))


def test_round_trip_autoconfig_and_model_card(tmp_path):
    torch.manual_seed(0)
    net = VLANetwork(TINY)
    out = net.save_pretrained(tmp_path / "net", metadata={"epoch": 3})
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == MODEL_TYPE and "auto_map" not in saved  # nothing for trust_remote_code to run
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "epoch": "3"}

    transformers = pytest.importorskip("transformers")
    register_auto_config()
    hf = transformers.AutoConfig.from_pretrained(str(out))
    assert hf.model_type == MODEL_TYPE and VLAConfig.from_auto_config(hf) == net.config
    assert VLAConfig.from_dict(saved) == net.config  # model_type accepted by the dataclass too
    with pytest.raises(TypeError, match="model_type"):
        VLAConfig.from_dict({**saved, "model_type": "bert"})

    loaded = VLANetwork.from_pretrained(out)
    assert torch.equal(outputs(loaded), outputs(net))
    card = net.save_pretrained(tmp_path / "card", model_card=True)
    assert sorted(p.name for p in card.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "irlvla-gym" in (card / "README.md").read_text()
    assert torch.equal(outputs(VLANetwork.from_pretrained(card)), outputs(net))


def test_hub_repo_id_goes_through_the_mixin(tmp_path, monkeypatch):
    """A ``user/repo`` id that is no local directory is downloaded by huggingface_hub (faked here: no network)."""
    import huggingface_hub
    import huggingface_hub.hub_mixin

    torch.manual_seed(1)
    net = VLANetwork(TINY)
    remote = net.save_pretrained(tmp_path / "remote")
    snapshot = tmp_path / "cache" / "snapshots" / "abc"
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("revision")))
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(remote / filename, snapshot / filename))

    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.chdir(tmp_path)  # no local folder "someone"
    loaded = VLANetwork.from_pretrained("someone/tiny-vla", revision="v1")
    assert {c[1] for c in calls} == {"config.json", "model.safetensors"} and {c[0] for c in calls} == {"someone/tiny-vla"}
    assert all(c[2] == "v1" for c in calls)
    assert torch.equal(outputs(loaded), outputs(net))


def test_missing_checkpoints_raise_file_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no VLA checkpoint"):
        VLANetwork.from_pretrained(tmp_path / "nothing")
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="no VLA checkpoint"):  # a local typo, not a Hub id
        VLANetwork.from_pretrained("runs/typo")
    with pytest.raises(FileNotFoundError, match="Hub repo could not be loaded"):  # never touches the network
        VLANetwork.from_pretrained("nobody/nothing", local_files_only=True, cache_dir=str(tmp_path / "hf"))
