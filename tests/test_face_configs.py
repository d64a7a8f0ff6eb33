"""The WIDER-geometry / improved face configs against their stated recipes, and the data options.

References: the seed's recipe (SEED_NOTES application 2: 350 000 iterations of batch 3, lr 0.005
/ 10 at 200 000, sizes 512-640) and RetinaFace's (250 epochs of the 12 880 WIDER training images
in batches of 32, decays at epochs 190 and 220) as literal numbers; the generator's own marker
and the real ground-truth files for the WIDER-geometry data option."""

import math

import numpy as np
import pytest
import scipy.io

from handgrad.pipelines.generators import wider_geometry
from handgrad.zoo.face import data as face_data
from handgrad.zoo.face.configs import DataConfig
from handgrad.zoo.face.retinanet.anchors import Anchors
from handgrad.zoo.run import registry

WIDER_TRAIN_IMAGES = 12_880


def test_seed_recipe_is_unchanged():
    config = registry.get_config("face_resnet50_wider")
    training = config.training
    assert training.epochs * training.steps_per_epoch == 350_000
    assert (training.batch_size, training.learning_rate, training.lr_boundaries) == (
        3, 0.005, (200_000,))
    assert config.data.image_sizes == (512, 576, 640)
    assert (config.data.augment, config.data.eval_mode, config.data.eval_size) == (
        "seed", "resize", 640)
    assert (config.anchors.min_size, config.anchors.strides) == (14.0, (8, 16, 32, 64))


def test_resnet50_improved_follows_retinaface_epochs():
    training = registry.get_config("face_resnet50_wider_improved").training
    assert training.batch_size == 32
    # one epoch is one pass over the training images, no more than one batch over
    assert training.steps_per_epoch == math.ceil(WIDER_TRAIN_IMAGES / training.batch_size)
    assert training.epochs == 250
    assert training.lr_boundaries == (190 * training.steps_per_epoch,
                                      220 * training.steps_per_epoch)
    assert training.learning_rate * training.lr_decay ** 2 == pytest.approx(1e-4)


def test_small_configs_differ_only_in_recipe():
    seed = registry.get_config("face_small_wider_geometry")
    improved = registry.get_config("face_small_wider_geometry_improved")
    assert seed.model == improved.model and seed.training == improved.training
    assert seed.loss == improved.loss and seed.postprocess == improved.postprocess
    assert (seed.data.augment, seed.data.eval_mode) == ("seed", "resize")
    assert (improved.data.augment, improved.data.eval_mode) == ("crop_photometric", "original")


def test_small_face_anchors_cover_8_px_faces():
    """An 8 px face centred on a stride-8 cell: its best anchor's IoU passes the positive
    threshold with the improved anchors and not with the seed's (IoU of concentric squares is
    (small / large)^2)."""
    for name, passes in (("face_small_wider_geometry_improved", True),
                         ("face_small_wider_geometry", False)):
        anchors = registry.get_config(name).anchors
        smallest = Anchors(**vars(anchors)).sizes_per_level[0][0]
        iou = (min(smallest, 8.0) / max(smallest, 8.0)) ** 2
        assert (iou >= anchors.positive_iou) == passes, (name, smallest, iou)


@pytest.mark.parametrize("field,value,message", [
    ("eval_mode", "full", "data.eval_mode must be one of"),
    ("augment", "mosaic", "data.augment must be one of"),
])
def test_bad_data_options_name_the_field(field, value, message):
    data = DataConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        face_data.eval_policy(data, 64) if field == "eval_mode" else face_data.policy(data)


def test_wider_geometry_is_generated_once_and_evaluated_on_the_real_lists(wider_dir, tmp_path):
    data = DataConfig(dataset="wider_geometry", geometry_source=str(wider_dir / "ground_truth"),
                      train_renders=1, max_layouts=1)
    root, source = face_data.resolve(data, tmp_path / "wg")
    assert source == "files"
    marker = wider_geometry.read_marker(root)
    assert marker["complete"] and marker["summary"]["val"]["images"] == 1
    stamp = (root / wider_geometry.MARKER).stat().st_mtime_ns
    assert face_data.resolve(data, root)[0] == root  # reused, not regenerated
    assert (root / wider_geometry.MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other options"):
        face_data.resolve(DataConfig(**{**vars(data), "train_renders": 2}), root)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a generated set")
    with pytest.raises(FileExistsError, match="refusing"):
        face_data.resolve(data, tmp_path / "other")
    # the validation image's easy list is the real one of that image
    real = scipy.io.loadmat(wider_dir / "ground_truth" / "wider_easy_val.mat")
    written = scipy.io.loadmat(root / "ground_truth" / "wider_easy_val.mat")
    event = str(written["event_list"][0, 0][0])
    name = str(written["file_list"][0, 0][0, 0][0])
    events = [str(e[0]) for e in real["event_list"][:, 0]]
    i = events.index(event)
    j = [str(f[0]) for f in real["file_list"][i, 0][:, 0]].index(name)
    np.testing.assert_array_equal(written["gt_list"][0, 0][0, 0], real["gt_list"][i, 0][j, 0])
