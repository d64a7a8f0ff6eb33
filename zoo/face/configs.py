"""Configs of the face detector (task "face"): nested sections, handed to their builders whole.

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

`face_resnet50_wider` is the seed's recipe (section 3.5.2): ResNet50 (ImageNet weights), FPN
P3-P6, anchors 14^2 .. 220^2 px, mini-batch 3, 350 000 iterations, learning rate 0.005 divided
by 10 at 200 000, sizes 512/576/640 drawn per batch, horizontal flips. The seed does not name its
optimizer; SGD with momentum 0.9 and weight decay 1e-4 is RetinaNet's, which the rest of the
recipe follows, so that is the choice here. With ImageNet weights and 3 images per batch the
backbone's batch norms are frozen (their batch statistics would be too noisy), as in RetinaNet.

`face_small_synthetic` is CPU-sized: a narrow ResNet18 trained from scratch on the synthetic
WIDER-format set (`pipelines.synthetic_faces`, generated into `data_dir` when absent, no
download). Target: AP >= 0.90 / 0.85 / 0.60 (easy / medium / hard) on the synthetic validation
split after <= 30 min of CPU training; measure with `handgrad-eval`.

Configs saved by handgrad 0.1 were flat (47 fields, e.g. `min_anchor_size`); `from_flat` maps
them onto the sections (`LEGACY_NAMES`), so old `config.json` and `.keras` files still load.

What each field accepts is in `handgrad/zoo/run/config_rules.py` (checked once a config is final;
a new field needs a rule there, `tests/test_bad_input.py` checks).
"""

import dataclasses


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
    ResNet50 .h5 / .keras file (ResNet50 only)."""

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
    """In-graph post-processing: score threshold, NMS IoU, top-k per level, detections kept."""

    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.4
    pre_nms_top_k: int = 1000
    max_detections: int = 750


@dataclasses.dataclass
class DataConfig:
    """Input. dataset: "synthetic", "wider" or "wider_geometry"; image_sizes: one drawn per
    training batch; flip: random horizontal flips; max_boxes: faces kept per image;
    num_train / num_val / data_seed: the synthetic set (data_seed also seeds WIDER-geometry);
    val_limit: images used by evaluation.

    augment: the training policy, "seed" (keep-aspect resize to image_sizes + flip,
    `augment.ResizeFlipPolicy`) or "crop_photometric" (random square crops of crop_min ..
    crop_max of the short side, photometric distortion, resize to image_sizes, flip).
    eval_mode: "original" (each image at its own size, padded to a multiple of the largest
    stride, never resized; batch 1) or "resize" (keep-aspect resize to eval_size, padded square);
    eval_scales: test-time scale factors of the original image (detections of all scales, and of
    their mirror images with eval_flip, merged by NMS); ignored by "resize".
    geometry_source: the folder of the real `wider_face_val.mat` + `wider_*_val.mat` that
    "wider_geometry" takes its layouts from; train_renders / max_layouts: renders per train
    layout and layouts per split (None: all) of that set (`pipelines.wider_geometry`)."""

    dataset: str = "synthetic"
    image_sizes: tuple = (512, 576, 640)
    eval_size: int = 640
    flip: bool = True
    max_boxes: int = 1000
    num_train: int = 1000
    num_val: int = 200
    data_seed: int = 0
    val_limit: int | None = None
    augment: str = "seed"
    crop_min: float = 0.3
    crop_max: float = 1.0
    eval_mode: str = "original"
    eval_scales: tuple = (1.0,)
    eval_flip: bool = False
    geometry_source: str | None = None
    train_renders: int = 2
    max_layouts: int | None = None


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation. batch_size; epochs x steps_per_epoch iterations; optimizer "sgd" (momentum
    0.9) or "adam"; learning_rate, multiplied by lr_decay at each of lr_boundaries (iterations);
    weight_decay; clipnorm (global); validate_every_epoch: loss on the val split; seed."""

    batch_size: int = 3
    epochs: int = 70
    steps_per_epoch: int | None = 5000
    optimizer: str = "sgd"
    learning_rate: float = 0.005
    lr_boundaries: tuple = (200_000,)
    lr_decay: float = 0.1
    weight_decay: float = 1e-4
    clipnorm: float | None = None
    validate_every_epoch: bool = False
    seed: int = 0


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


def section(cls, value, name):
    """A config section from a dataclass, a dict of its fields (lists become tuples, as JSON
    turns them into lists) or None (the defaults); `name` is the argument, for errors."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {unknown}. Known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"{name} must be a {cls.__name__} or a dict. Received: {type(value).__name__}")


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


def face_resnet50_wider():
    """The seed's recipe on WIDER FACE (350 000 iterations of batch 3; GPU-sized)."""
    return FaceConfig(
        model=ModelConfig(backbone="resnet50", imagenet_weights="imagenet",
                          freeze_backbone_bn=True),
        data=DataConfig(dataset="wider", image_sizes=(512, 576, 640), eval_size=640,
                        eval_mode="resize"),
        training=TrainingConfig(batch_size=3, epochs=70, steps_per_epoch=5000, optimizer="sgd",
                                learning_rate=0.005, lr_boundaries=(200_000,)))


def face_small_synthetic():
    """Narrow ResNet18 from scratch on the synthetic WIDER-format set (CPU, <= 30 min)."""
    return FaceConfig(
        model=ModelConfig(backbone="resnet18", backbone_width=32, fpn_filters=64,
                          head_filters=64, bn_momentum=0.9),
        data=DataConfig(dataset="synthetic", image_sizes=(256, 320, 384), eval_size=384,
                        eval_mode="resize", num_train=1000, num_val=200, max_boxes=100),
        training=TrainingConfig(batch_size=8, epochs=12, steps_per_epoch=100, optimizer="adam",
                                learning_rate=1e-3, lr_boundaries=(900,), weight_decay=0.0,
                                clipnorm=10.0))


def _small_wider_geometry(data, anchors=None):
    """The CPU-sized ResNet18 of `face_small_synthetic` on the WIDER-geometry set: 1 000 steps
    of batch 4, Adam 1e-3 divided by 10 at step 800. Set `data.geometry_source` to the folder of
    the real `wider_face_val.mat` + `wider_*_val.mat` (the set is generated on first use)."""
    return FaceConfig(
        model=ModelConfig(backbone="resnet18", backbone_width=32, fpn_filters=64,
                          head_filters=64, bn_momentum=0.9),
        anchors=anchors or AnchorConfig(),
        data=data,
        training=TrainingConfig(batch_size=4, epochs=10, steps_per_epoch=100, optimizer="adam",
                                learning_rate=1e-3, lr_boundaries=(800,), weight_decay=0.0,
                                clipnorm=10.0))


def face_small_wider_geometry():
    """The seed's recipe on the WIDER-geometry set: keep-aspect resize to 512/576/640 + flips,
    anchors 14 .. 220 px on P3-P6, evaluation at the 640 keep-aspect resize."""
    return _small_wider_geometry(DataConfig(
        dataset="wider_geometry", image_sizes=(512, 576, 640), eval_size=640,
        eval_mode="resize", augment="seed", max_boxes=1000))


def small_face_anchors():
    """Anchors for faces down to ~8 px: 8 .. 220 px on P3-P6 (P3 holds 8.0, 10.8, 14.6 px)."""
    return AnchorConfig(min_size=8.0, max_size=220.0, strides=(8, 16, 32, 64))


def p2_face_anchors():
    """Anchors for faces down to ~8 px with a stride-4 level: 8 .. 220 px on P2-P6."""
    return AnchorConfig(min_size=8.0, max_size=220.0, strides=(4, 8, 16, 32, 64))


def face_small_wider_geometry_improved():
    """The improved recipe, same network and steps as `face_small_wider_geometry`: random square
    crops of 0.3-1.0 of the short side (RetinaFace), photometric distortion, resize to 640, flips;
    `p2_face_anchors`; evaluation at original resolution.

    P2 was chosen over `small_face_anchors` (the same 8 px anchors on P3-P6) by the WIDER-geometry
    benchmark: AP 0.542 / 0.571 / 0.434 against 0.324 / 0.322 / 0.180 after the same 600 steps,
    for 4 x the anchors (102 300 against 25 500 at 640) and ~1.5 x the training time."""
    return _small_wider_geometry(DataConfig(
        dataset="wider_geometry", image_sizes=(640,), eval_size=640, eval_mode="original",
        augment="crop_photometric", crop_min=0.3, crop_max=1.0, max_boxes=1000),
        p2_face_anchors())


def face_resnet50_wider_improved():
    """The improved recipe on WIDER FACE for one GPU, adapted from RetinaFace-R50.

    RetinaFace trains batch 32 (4 GPUs x 8), SGD momentum 0.9, weight decay 5e-4, learning rate
    1e-3 warmed up to 1e-2, x0.1 at epochs 190 and 220 of 250, on 640 px crops of the 12 880
    training images. Here: the same batch 32 on one GPU (a ResNet50 RetinaNet at 640 in mixed
    precision fits an 80 GB card; smaller cards: `--set=training.batch_size=16` with
    `training.learning_rate=0.005`, the linear scaling rule), the same epochs as iterations: one
    epoch = ceil(12 880 / 32) = 403 steps, 250 epochs = 100 750 steps, decays at 190 x 403 =
    76 570 and 220 x 403 = 88 660. `TrainingConfig` has no warm-up (piecewise-constant
    schedule), so the global gradient norm is clipped at 10 to keep the first steps at 1e-2
    stable. Batch norms train (32 images per batch give usable batch statistics, as RetinaFace's
    do at 8 per GPU), ImageNet weights. Data: crops + photometric distortion, up to 2 000 faces per
    image (WIDER's densest training images hold over 1 000), small-face anchors, evaluation at
    original resolution (`--set=data.eval_flip=true` adds the mirrored pass)."""
    return FaceConfig(
        model=ModelConfig(backbone="resnet50", imagenet_weights="imagenet",
                          freeze_backbone_bn=False),
        anchors=small_face_anchors(),
        data=DataConfig(dataset="wider", image_sizes=(640,), eval_size=640, eval_mode="original",
                        augment="crop_photometric", crop_min=0.3, crop_max=1.0, max_boxes=2000),
        training=TrainingConfig(batch_size=32, epochs=250, steps_per_epoch=403, optimizer="sgd",
                                learning_rate=0.01, lr_boundaries=(76_570, 88_660),
                                lr_decay=0.1, weight_decay=5e-4, clipnorm=10.0))


def mobile_model():
    """RetinaFace-MobileNet0.25-sized network: MobileNetV1-0.25 backbone (conv1 of 8 channels),
    64-channel pyramid and heads with depthwise-separable 3x3 convolutions, 2 + 2 hidden head
    convolutions; ~0.30 M weights with 3 anchors per cell on P3-P6."""
    return ModelConfig(backbone="mobilenet_v1", backbone_width=8, fpn_filters=64,
                       head_filters=64, num_cls_convs=2, num_box_convs=2, separable_convs=True,
                       bn_momentum=0.9)


def face_mobile_synthetic():
    """The mobile network with everything else of `face_small_synthetic` (anchors, data,
    1 200 steps of Adam, clipnorm 10) but a 10 x larger learning rate: the accuracy comparison
    of issue 13 (goal: AP within 0.05 of the ResNet18's on each setting, same steps).

    The thin network learns far slower per step at the ResNet18's rate. Swept on this config
    (AP hard after the 1 200 steps, README): 1e-3 0.486, 3e-3 0.805, 6e-3 0.879, 1e-2 0.907,
    against the ResNet18's 0.938 at 1e-3."""
    small = face_small_synthetic()
    return dataclasses.replace(small, model=mobile_model(), training=dataclasses.replace(
        small.training, learning_rate=1e-2))


def face_mobile_wider_geometry():
    """The mobile network with everything else of `face_small_wider_geometry`."""
    return dataclasses.replace(face_small_wider_geometry(), model=mobile_model())


def face_mobile_wider_geometry_improved():
    """The mobile network with everything else of `face_small_wider_geometry_improved`."""
    return dataclasses.replace(face_small_wider_geometry_improved(), model=mobile_model())


def face_mobile_wider():
    """The mobile network on WIDER FACE, RetinaFace-MobileNet0.25's recipe: its anchors (P3-P5,
    no P6; 16, 32 | 64, 128 | 256, 512 px; matched at IoU 0.35), batch 32 of 640 px crops with
    photometric distortion (the data of `face_resnet50_wider_improved`), SGD 1e-3 (momentum 0.9,
    weight decay 5e-4) for 250 epochs of the 12 880 training images (403 steps each), the rate
    divided by 10 at epochs 190 and 220. From scratch (no ImageNet weights for this backbone
    here). GPU-sized."""
    return FaceConfig(
        model=mobile_model(),
        anchors=AnchorConfig(min_size=16.0, max_size=512.0, scales_per_level=2,
                             strides=(8, 16, 32), positive_iou=0.35, negative_iou=0.35),
        data=face_resnet50_wider_improved().data,
        training=TrainingConfig(batch_size=32, epochs=250, steps_per_epoch=403,
                                optimizer="sgd", learning_rate=1e-3, weight_decay=5e-4,
                                lr_boundaries=(190 * 403, 220 * 403)))
