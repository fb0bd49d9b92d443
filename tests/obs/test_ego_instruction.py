"""Ego vector layout and the instruction text / tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.obs.ego import EGO_DIM, EGO_FIELDS, EgoObservation, ego_vector
from irlvla_gym.obs.instruction import (
    CLS_ID, PAD_ID, SEP_ID, TOKENIZER_CONFIG_PATH, TOKENIZER_PATH, InstructionObservation, all_instruction_texts,
    build_instruction, build_tokenizer_config_json, build_tokenizer_json, decode_instruction, encode_instruction,
    load_hf_tokenizer, vocabulary, write_tokenizer,
)
from irlvla_gym.scenes.scene import (
    COMMAND_LEFT, LIGHT_RED, NUM_TIMES, PEDESTRIAN, MapData, PolygonSet,
)
from irlvla_gym.scenes.testing import straight_road_scene


def test_ego_vector_layout():
    scene = straight_road_scene(speed=10.0)
    vec = EgoObservation().observe(scene)["ego"]
    assert vec.shape == (EGO_DIM,) == (21,) and vec.dtype == np.float32 and len(EGO_FIELDS) == EGO_DIM
    named = dict(zip(EGO_FIELDS, vec))
    assert named["vx"] == 10.0 and named["vy"] == 0.0 and named["speed"] == 10.0
    assert named["command_straight"] == 1.0 and vec[4:8].sum() == 1.0
    np.testing.assert_allclose(vec[8:20].reshape(4, 3), [[-15, 0, 0], [-10, 0, 0], [-5, 0, 0], [0, 0, 0]])
    assert EgoObservation().space()["ego"].contains(vec)


def test_ego_history_in_current_frame():
    # ego now at (10, 5) heading +90 deg; it came from (10, -5) driving along +y
    hist = np.array([[10.0, -10.0, np.pi / 2], [10.0, -5.0, np.pi / 2], [10.0, 0.0, np.pi / 2], [10.0, 5.0, np.pi / 2]])
    status = EgoStatus(np.array([10.0, 0.0]), np.array([1.0, 0.5]), hist, COMMAND_LEFT)
    vec = ego_vector(status)
    np.testing.assert_allclose(vec[8:20].reshape(4, 3), [[-15, 0, 0], [-10, 0, 0], [-5, 0, 0], [0, 0, 0]], atol=1e-5)
    np.testing.assert_allclose(vec[2:4], [1.0, 0.5])
    assert vec[4] == 1.0
    huge = EgoStatus(np.array([500.0, 0.0]), np.zeros(2), hist, COMMAND_LEFT)
    assert EgoObservation().space()["ego"].contains(ego_vector(huge))  # clipped into bounds


def test_instruction_lead_vehicle_and_determinism():
    scene = straight_road_scene(agents=[dict(x=20.0, y=0.0, vx=5.0)])
    assert build_instruction(scene) == "keep straight, follow the car ahead"
    stopped = straight_road_scene(agents=[dict(x=20.0, y=0.0)])
    assert build_instruction(stopped) == "keep straight, the car ahead is stopped"
    assert build_instruction(straight_road_scene()) == "keep straight"
    # the same call twice gives the same ids
    obs = InstructionObservation()
    np.testing.assert_array_equal(obs.observe(scene)["instruction"], obs.observe(scene)["instruction"])


def test_instruction_red_light_and_crosswalk_pedestrian():
    # the ego lane ends 30 m ahead: its light (at the lane end) is upcoming
    base = straight_road_scene(length_ahead=30.0,
                               agents=[dict(x=20.0, y=0.5, category=PEDESTRIAN, length=0.6, width=0.6)])
    mp = base.map
    light = np.zeros((NUM_TIMES, mp.num_lanes), np.int8)
    light[:, 0] = LIGHT_RED
    crosswalk = PolygonSet.from_exteriors([np.array([[18.0, -10.0], [22.0, -10.0], [22.0, 5.0], [18.0, 5.0]])])
    mp2 = MapData(**{**mp.__dict__, "lane_light_state": light, "crosswalks": crosswalk})
    scene = base.replace(map=mp2)
    text = build_instruction(scene)
    assert text == "keep straight, stop for the pedestrian on the crosswalk ahead, the light is red"
    ids = encode_instruction(text)
    assert decode_instruction(ids) == text


def test_tokenizer_roundtrip_and_shipped_file(tmp_path):
    assert TOKENIZER_PATH.read_text() == build_tokenizer_json()
    assert TOKENIZER_CONFIG_PATH.read_text() == build_tokenizer_config_json()
    assert TOKENIZER_PATH.stat().st_size < 4096
    write_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == TOKENIZER_PATH.read_bytes()
    hf = load_hf_tokenizer()
    assert hf.pad_token_id == PAD_ID and hf.cls_token_id == CLS_ID and hf.sep_token_id == SEP_ID
    vocab = vocabulary()
    assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    for text in all_instruction_texts():
        ids = encode_instruction(text, 32)
        assert ids.dtype == np.int64 and ids.shape == (32,)
        assert ids[0] == CLS_ID and SEP_ID in ids and 1 not in ids  # no [UNK]
        assert decode_instruction(ids) == text
        assert hf.decode(ids, skip_special_tokens=True) == text
        assert list(ids[ids != PAD_ID]) == hf(text)["input_ids"]


def test_encode_truncates_with_sep():
    ids = encode_instruction("keep straight, follow the car ahead", length=5)
    assert list(ids) == [CLS_ID, ids[1], ids[2], ids[3], SEP_ID]


@pytest.mark.parametrize("command", [0, 1, 2, 3])
def test_instruction_every_command(command):
    scene = straight_road_scene().replace(command=command)
    obs = InstructionObservation()
    out = obs.observe(scene)
    assert obs.space()["instruction"].contains(out["instruction"])
