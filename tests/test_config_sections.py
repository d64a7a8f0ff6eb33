"""Config sections and model_dirs: dotted overrides, config.json round trips, and model_dirs
written by handgrad 0.1 (flat config.json, flat FaceDetector config inside model.keras), checked
against outputs and fields that the 0.1 code itself saved (tests/data/legacy_*_v0_1)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from handgrad.zoo.face.retinanet.model import FaceDetector
from handgrad.zoo.run import model_dir, registry

DATA = Path(__file__).parent / "data"


def test_dotted_overrides_convert_types_and_name_unknown_fields():
    config = registry.apply_overrides(registry.get_config("face_small_synthetic"), {
        "anchors.min_size": "10", "anchors.strides": "4,8,16,32,64",
        "training.clipnorm": "none", "data.flip": "false", "model.backbone": "resnet34"})
    assert config.anchors.min_size == 10.0 and config.anchors.strides == (4, 8, 16, 32, 64)
    assert config.training.clipnorm is None and config.data.flip is False
    assert config.model.backbone == "resnet34"
    assert registry.get_config("face_small_synthetic").anchors.min_size == 14.0  # a copy
    with pytest.raises(ValueError, match=r"no field 'anchors\.min'\. Known fields: .*"
                                         r"anchors\.min_size"):
        registry.apply_overrides(config, {"anchors.min": "3"})
    with pytest.raises(ValueError, match=r"'anchors' is a section; set one of its fields, e\.g\. "
                                         r"anchors\.min_size=\.\.\."):
        registry.apply_overrides(config, {"anchors": "3"})
    with pytest.raises(ValueError, match=r"training\.epochs expects a value like 12\. "
                                         r"Received: 'x'"):
        registry.apply_overrides(config, {"training.epochs": "x"})


def test_config_json_round_trip(tmp_path):
    config = registry.apply_overrides(registry.get_config("mlp"), {
        "model.hidden": "64,32", "model.activation": "tanh", "data.test_limit": "100",
        "training.steps_per_epoch": "none"})
    model_dir.write_config(tmp_path, model_dir.config_record("mlp", config, replicas=1))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["model"] == {"name": "mlp", "hidden": [64, 32], "activation": "tanh"}
    assert model_dir.saved_config(tmp_path) == config


def test_legacy_face_model_dir_loads_with_its_saved_outputs(tmp_path):
    """model.keras and config.json written by handgrad 0.1: the model rebuilds from its flat
    config, its weights restore, and it reproduces the outputs the 0.1 code recorded."""
    shutil.copytree(DATA / "legacy_face_v0_1", tmp_path / "run")
    model, config = model_dir.load_trained(tmp_path / "run")
    flat = json.loads((DATA / "legacy_face_v0_1" / "config.json").read_text())
    assert isinstance(model, FaceDetector)
    assert config.model.backbone == f"resnet{flat['backbone_depth']}"
    assert config.model.backbone_width == flat["base_filters"]
    assert config.anchors.min_size == flat["min_anchor_size"]
    assert config.loss.normalization == flat["loss_normalization"]
    assert config.training.batch_size == flat["batch_size"]
    assert config.data.image_sizes == tuple(flat["image_sizes"])
    reference = np.load(DATA / "legacy_face_v0_1" / "reference_outputs.npz")
    out = model(reference["images"].astype(np.float32) / 255.0)
    np.testing.assert_allclose(out["cls_logits"].numpy(), reference["cls_logits"], atol=1e-6)
    np.testing.assert_allclose(out["box_deltas"].numpy(), reference["box_deltas"], atol=1e-6)
    assert model.get_config()["anchors"]["min_size"] == flat["min_anchor_size"]


def test_legacy_mnist_config_json_converts():
    flat = json.loads((DATA / "legacy_mnist_v0_1" / "config.json").read_text())
    config = model_dir.saved_config(DATA / "legacy_mnist_v0_1")
    assert config.model.filters == tuple(flat["filters"]) and config.model.name == "mnist_cnn"
    assert config.loss.name == flat["loss"]
    assert config.data.augment_shift == flat["augment_shift"]
    assert config.training.learning_rate == flat["learning_rate"]
    assert config.training.warmup_epochs == flat["warmup_epochs"]


def test_invalid_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        model_dir.saved_config(tmp_path)
