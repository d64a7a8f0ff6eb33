"""Named configs of the face detector (task "face", see `zoo/face_task.py`).

    handgrad-train --config=face_small_synthetic --model_dir=/tmp/face_small
    handgrad-train --config=face_resnet50_wider --model_dir=/tmp/face_r50 --data_dir=WIDER_ROOT
    handgrad-eval  --model_dir=...      (WIDER FACE AP easy / medium / hard + PR-curve PNG)

`face_resnet50_wider` is the seed's recipe (section 3.5.2): ResNet50 (ImageNet weights), FPN
P3-P6, anchors 14^2 .. 220^2 px, mini-batch 3, 350 000 iterations, learning rate 0.005 divided
by 10 at 200 000, sizes 512/576/640 drawn per batch, horizontal flips. The seed does not name its
optimizer; SGD with momentum 0.9 and weight decay 1e-4 is RetinaNet's, which the rest of the
recipe follows, so that is the choice here. With ImageNet weights and 3 images per batch the
backbone's batch norms are frozen (their batch statistics would be too noisy), as in RetinaNet.

`face_small_synthetic` is CPU-sized: a narrow ResNet18 trained from scratch on the synthetic
WIDER-format set (`pipelines.synthetic_faces`, generated into `data_dir` when absent, no
download). Target (issue 5): AP >= 0.90 / 0.85 / 0.60 (easy / medium / hard) on the synthetic
validation split after <= 30 min of CPU training; measure with `handgrad-eval`.
"""

import dataclasses


@dataclasses.dataclass
class FaceConfig:
    """Hyper-parameters of a face-detector run.

    Model (see `zoo.retinanet.FaceDetector`): backbone_depth, base_filters, fpn_filters,
        head_filters, num_cls_convs, num_box_convs, min/max_anchor_size, scales_per_level,
        aspect_ratios, variances, positive_iou, negative_iou, prior_probability,
        freeze_backbone_bn, bn_momentum, imagenet_weights (None, "imagenet" (downloads, needs
        internet) or a path to a keras.applications ResNet50 .h5 / .keras file).
    Loss (eq. 59-61): focal_alpha, focal_gamma, smooth_l1_delta, box_loss_weight,
        loss_normalization ("positives" as RetinaNet, or "per_level" as the seed's eq. 61).
    Post-processing: score_threshold, nms_iou_threshold, pre_nms_top_k, max_detections.
    Data: dataset ("synthetic" or "wider"), image_sizes (one drawn per batch), eval_size, flip,
        max_boxes, num_train / num_val / data_seed (synthetic set), val_limit (images used by
        `evaluate`, None = all).
    Training: batch_size, epochs x steps_per_epoch iterations, optimizer ("sgd": momentum 0.9,
        or "adam"), learning_rate, lr_boundaries (iterations) and lr_decay (factor at each),
        weight_decay, clipnorm, validate_every_epoch (loss on the val split), seed.
    """

    task: str = "face"
    # model
    backbone_depth: int = 50
    base_filters: int = 64
    fpn_filters: int = 256
    head_filters: int = 256
    num_cls_convs: int = 3
    num_box_convs: int = 2
    min_anchor_size: float = 14.0
    max_anchor_size: float = 220.0
    scales_per_level: int = 3
    aspect_ratios: tuple = (1.0,)
    variances: tuple = (0.1, 0.1, 0.2, 0.2)
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    prior_probability: float = 0.01
    freeze_backbone_bn: bool = False
    bn_momentum: float = 0.99
    imagenet_weights: str | None = None
    # loss
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_delta: float = 1.0
    box_loss_weight: float = 1.0
    loss_normalization: str = "positives"
    # post-processing
    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.4
    pre_nms_top_k: int = 1000
    max_detections: int = 750
    # data
    dataset: str = "synthetic"
    image_sizes: tuple = (512, 576, 640)
    eval_size: int = 640
    flip: bool = True
    max_boxes: int = 1000
    num_train: int = 1000
    num_val: int = 200
    data_seed: int = 0
    val_limit: int | None = None
    # training
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


def face_resnet50_wider():
    """The seed's recipe on WIDER FACE (350 000 iterations of batch 3; GPU-sized)."""
    return FaceConfig(
        dataset="wider", backbone_depth=50, imagenet_weights="imagenet", freeze_backbone_bn=True,
        batch_size=3, epochs=70, steps_per_epoch=5000, optimizer="sgd", learning_rate=0.005,
        lr_boundaries=(200_000,), image_sizes=(512, 576, 640), eval_size=640)


def face_small_synthetic():
    """Narrow ResNet18 from scratch on the synthetic WIDER-format set (CPU, <= 30 min)."""
    return FaceConfig(
        dataset="synthetic", backbone_depth=18, base_filters=32, fpn_filters=64,
        head_filters=64, imagenet_weights=None, freeze_backbone_bn=False,
        image_sizes=(256, 320, 384), eval_size=384, batch_size=8, epochs=12,
        steps_per_epoch=100, optimizer="adam", learning_rate=1e-3, lr_boundaries=(900,),
        weight_decay=0.0, clipnorm=10.0, bn_momentum=0.9, num_train=1000, num_val=200,
        max_boxes=100)
