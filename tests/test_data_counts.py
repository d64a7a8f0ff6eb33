"""What the face training pipeline drops reaches the epoch logs (history.csv, TensorBoard):
undecodable images, faces over the `max_boxes` cap, faces whose centre leaves the crop. The
expected numbers come from the annotation file, read by the WIDER parser, not from the counters.
"""

import numpy as np
import pytest

from handgrad.pipelines import wider_face
from handgrad.pipelines.generators import synthetic_faces
from handgrad.zoo.face.retinanet.task import FaceTask
from handgrad.zoo.run.callbacks import LogCounts
from handgrad.zoo.run.registry import apply_overrides, get_config

SET = {"data.num_train": 6, "data.num_val": 1, "data.data_seed": 5}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A synthetic WIDER-format set whose first training image is corrupt."""
    root = tmp_path_factory.mktemp("counts")
    synthetic_faces.generate(root, num_train=6, num_val=1, seed=5)
    records = wider_face.parse_annotations(wider_face.find_annotation_file(root, "train"))
    (wider_face.images_dir(root, "train") / records[0].path).write_bytes(b"not a jpeg")
    return root


def _epoch_logs(data_dir, **overrides):
    """One pass over the training split through FaceTask; returns the epoch's logs."""
    config = apply_overrides(get_config("face_small_synthetic"), keep_none=True, overrides={
        **SET, "data.image_sizes": (128,), "data.eval_size": 128, "training.batch_size": 2,
        "training.steps_per_epoch": None, **overrides})
    task = FaceTask()
    train, _ = task.datasets(config, data_dir)
    for _ in train:
        pass
    logs = {"loss": 1.0}
    LogCounts(task.data_counts.logs).on_epoch_end(0, logs)
    return logs


def _faces_per_decodable_image(data_dir):
    records = wider_face.parse_annotations(wider_face.find_annotation_file(data_dir, "train"))
    return np.array([len(r.boxes) for r in records[1:]])  # records[0] is the corrupt one


def test_cap_and_undecodable_image_are_logged(data_dir):
    faces = _faces_per_decodable_image(data_dir)
    assert faces.max() > 2, "the set must hold images over the cap for this test"
    logs = _epoch_logs(data_dir, **{"data.max_boxes": 2, "data.augment": "seed"})
    assert logs["loss"] == 1.0  # the other logs are kept
    assert logs["data_images"] == 5 and logs["data_images_skipped"] == 1
    assert logs["data_faces_dropped_by_cap"] == int(np.maximum(faces - 2, 0).sum())
    assert logs["data_faces_dropped_empty"] == 0
    assert "data_faces_dropped_by_crop" not in logs  # the seed's policy never crops


def test_crop_drops_are_logged_and_every_face_is_counted(data_dir):
    faces = _faces_per_decodable_image(data_dir)
    logs = _epoch_logs(data_dir, **{"data.max_boxes": 1000, "data.augment": "crop_photometric",
                                    "data.crop_min": 0.3, "data.crop_max": 0.3})
    assert logs["data_faces"] == int(faces.sum())
    assert 0 < logs["data_faces_dropped_by_crop"] < logs["data_faces"]  # 0.3 crops drop some
    assert logs["data_faces_dropped_by_cap"] == 0


def test_a_clean_stream_reports_no_skipped_image_mid_epoch(tmp_path):
    """Mid-stream (training repeats the data), files still being decoded are not "skipped":
    a set with no corrupt file reports 0 while the decoder runs ahead of the batches."""
    synthetic_faces.generate(tmp_path, num_train=6, num_val=1, seed=5)
    config = apply_overrides(get_config("face_small_synthetic"), {
        **SET, "data.image_sizes": (128,), "data.eval_size": 128, "training.batch_size": 2,
        "training.steps_per_epoch": 5})
    task = FaceTask()
    train, _ = task.datasets(config, tmp_path)
    for _ in train.take(10):
        pass
    logs = task.data_counts.logs()
    assert logs["data_images"] >= 20 and logs["data_images_skipped"] == 0
