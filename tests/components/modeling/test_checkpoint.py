import pytest
import torch

from components.config import ResNetConfig
from components.core.io import sha256_file
from components.modeling.architectures import build_model
from components.modeling.checkpoint import load_checkpoint, save_checkpoint


def test_checkpoint_round_trips_with_weights_only(tmp_path):
    cfg = ResNetConfig(width=8, blocks=[4])
    model = build_model(cfg, (1, 8, 8), 4, mean=0.2, std=0.3).eval()
    save_checkpoint(tmp_path, model, cfg, (1, 8, 8), 4, {"kind": "teacher"})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)  # no pickled module inside
    assert payload["arch"]["arch"] == "resnet"
    ckpt = load_checkpoint(tmp_path)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(ckpt.model(x), model(x))
    assert ckpt.metadata["kind"] == "teacher" and ckpt.metadata["sha256"] == ckpt.sha256


def test_checkpoint_whose_weights_do_not_match_its_spec_is_refused(tmp_path):
    cfg = ResNetConfig(width=8, blocks=[4])
    model = build_model(cfg, (1, 8, 8), 4)
    save_checkpoint(tmp_path, model, ResNetConfig(width=8, blocks=[5]), (1, 8, 8), 4, {})
    with pytest.raises(ValueError, match="do not match the architecture spec"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_with_a_flipped_byte_is_refused_naming_file_and_both_hashes(tmp_path):
    cfg = ResNetConfig(width=8, blocks=[4])
    path = save_checkpoint(tmp_path, build_model(cfg, (1, 8, 8), 4), cfg, (1, 8, 8), 4, {})
    recorded = load_checkpoint(tmp_path).metadata["sha256"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    actual = sha256_file(path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path)
    assert str(path) in str(e.value) and actual in str(e.value) and recorded in str(e.value)
    assert str(tmp_path / "metadata.json") in str(e.value)


def test_recorded_sha256_is_the_file_s_even_if_the_caller_passes_one(tmp_path):
    cfg = ResNetConfig(width=8, blocks=[4])
    path = save_checkpoint(tmp_path, build_model(cfg, (1, 8, 8), 4), cfg, (1, 8, 8), 4,
                           {"sha256": "0" * 64})
    assert load_checkpoint(tmp_path).metadata["sha256"] == sha256_file(path)
