"""The face detector: a RetinaNet-style Keras model (seed section 3.5.2) with its training step and
in-graph post-processing, built from whole config sections.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input (TF Model Garden convention).

`FaceDetector(model=..., anchors=..., loss=..., postprocess=...)` takes the sections of a
`FaceConfig` (dataclasses or dicts). Its parts, as torchvision's `RetinaNet(backbone,
anchor_generator, head)`: `backbones.build_backbone` -> `pyramid.feature_pyramid` over the levels
that `Anchors` derives from its strides -> `heads.detection_heads`. The call returns the raw head
outputs {"cls_logits" `(B, A, 1)`, "box_deltas" `(B, A, 4)`}. `train_step` / `test_step` compute
the detection loss of eq. 61 (losses/detection.py) from targets {"cls_targets" `(B, A)`,
"box_targets" `(B, A, 4)`} made by `model.anchor_set.encode` (the pipeline's `target_fn`), so
`model.fit` works on `(images, targets)` batches. `detect(images)` (and `predict`) runs
`postprocess.postprocess` in the graph and returns {"boxes" `(B, D, 4)` px, "scores" `(B, D)`,
"num_detections" `(B,)`}, zero-padded to D = `max_detections`. A model with landmarks
(RetinaFace: `named_configs.retinaface_model`) also outputs "landmark_deltas" `(B, A, 2 L)`, and
`detect` also returns "keypoints" `(B, D, L, 2)` (y, x) px.
"""

import dataclasses

import keras
import tensorflow as tf

import handgrad.layers
from handgrad.losses.detection import detection_loss
from handgrad.zoo.face import backbones, training
from handgrad.zoo.face.configs import section
from handgrad.zoo.face.retinanet import configs
from handgrad.zoo.face.retinanet.anchors import Anchors
from handgrad.zoo.face.retinanet.context import context_modules
from handgrad.zoo.face.retinanet.heads import detection_heads, retinaface_heads
from handgrad.zoo.face.retinanet.postprocess import postprocess
from handgrad.zoo.face.retinanet.pyramid import backbone_levels, feature_pyramid, retinaface_pyramid

_LAYERS = {"handgrad": handgrad.layers, "keras": keras.layers}
_SECTIONS = {"model": configs.ModelConfig, "anchors": configs.AnchorConfig,
             "loss": configs.LossConfig, "postprocess": configs.PostprocessConfig}


def detector_network(model, anchors, input_size=None, layers=handgrad.layers,
                     name="face_retinanet"):
    """Images in [0, 1] -> {"cls_logits": (B, A_total, 1), "box_deltas": (B, A_total, 4)}
    (+ "landmark_deltas": (B, A_total, 2 L) with model.num_landmarks = L > 0).

    Args:
        model: a `ModelConfig`. anchors: the `Anchors` (levels and anchors per cell).
        input_size: static side of the (square) input, or None for any size.
        layers: `handgrad.layers`, or `keras.layers` for the stock twin.
    """
    input_shape = (input_size, input_size, 3)
    images = keras.Input(shape=input_shape, name="images")
    options = {}
    if model.backbone in backbones.WITH_OPTIONS:
        options = dict(activation=model.activation, batch_norm=model.batch_norm,
                       padding=model.padding)
    preprocess, backbone = backbones.build_backbone(
        model.backbone, backbone_levels(anchors.levels), model.backbone_width, input_shape,
        model.bn_momentum, model.freeze_backbone_bn, layers, model.input_convention, **options)
    features = backbone(preprocess(images))
    features = features if isinstance(features, list) else [features]
    unit = dict(layers=layers, activation=model.activation, batch_norm=model.batch_norm,
                bn_momentum=model.bn_momentum)
    if model.pyramid == "retinaface":
        features = retinaface_pyramid(features, model.fpn_filters, **unit)
    else:
        features = feature_pyramid(features, anchors.levels, model.fpn_filters, layers=layers,
                                   separable=model.separable_convs)
    if model.context == "ssh":
        features = context_modules(features, anchors.levels, **unit)
    if model.heads == "retinaface":
        cls_logits, box_deltas, landmark_deltas = retinaface_heads(
            features, anchors.levels, anchors.num_per_cell, model.num_landmarks,
            model.prior_probability, layers)
    else:
        cls_logits, box_deltas = detection_heads(
            features, anchors.levels, anchors.num_per_cell, model.head_filters,
            model.num_cls_convs, model.num_box_convs, model.prior_probability, layers=layers,
            separable=model.separable_convs)
        landmark_deltas = None
    outputs = {"cls_logits": cls_logits, "box_deltas": box_deltas}
    if landmark_deltas is not None:
        outputs["landmark_deltas"] = landmark_deltas
    network = keras.Model(images, outputs, name=name)
    if model.freeze_backbone_bn and model.pyramid == "retinaface":
        # the pyramid's and context modules' batch norms see the same small batches
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return network


@keras.saving.register_keras_serializable(package="handgrad")
class FaceDetector(keras.Model):
    """RetinaNet-style face detector: backbone + FPN + shared heads, one class; or RetinaFace
    (RetinaFace pyramid + SSH context + per-level heads with landmarks, `ModelConfig`).

    The loss (eq. 61) covers the face logits and boxes only: a landmark head, where there is
    one, gets no gradient (WIDER FACE's official ground truth has no landmarks), so fine-tuning
    keeps its imported weights while the shared layers below it move.

    Args:
        model, anchors, loss, postprocess: the `FaceConfig` sections (`ModelConfig`,
            `AnchorConfig`, `LossConfig`, `PostprocessConfig`, or dicts of their fields;
            None: the defaults, i.e. the seed's ResNet50 with anchors 14 .. 220 px on P3-P6).
        input_size: static side of the (square) input, or None for any size (multi-scale).
        layers: "handgrad" (hand-derived gradients) or "keras" (the stock twin).
    Call: images `(B, H, W, 3)` float in [0, 1], sides multiples of the largest stride ->
        {"cls_logits": `(B, A, 1)`, "box_deltas": `(B, A, 4)`}.
    """

    def __init__(self, model=None, anchors=None, loss=None, postprocess=None, input_size=None,
                 layers="handgrad", **kwargs):
        super().__init__(**kwargs)
        if layers not in _LAYERS:
            raise ValueError(f"layers must be one of {sorted(_LAYERS)}. Received: {layers!r}")
        sections = {"model": model, "anchors": anchors, "loss": loss, "postprocess": postprocess}
        self.sections = {key: section(cls, sections[key], key) for key, cls in _SECTIONS.items()}
        post = self.sections["postprocess"]
        if post.max_detections < 1 or post.pre_nms_top_k < 1:
            raise ValueError(f"postprocess.max_detections and postprocess.pre_nms_top_k must be "
                             f">= 1. Received: {post.max_detections}, {post.pre_nms_top_k}")
        self.input_size, self.layers_name = input_size, layers
        self.anchor_set = Anchors(**dataclasses.asdict(self.sections["anchors"]))
        self.network = detector_network(self.sections["model"], self.anchor_set, input_size,
                                        _LAYERS[layers])
        self.built = True  # the functional network inside is complete
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")

    @property
    def input_multiple(self):
        """Input sides are padded to multiples of this: the largest pyramid stride (FPN); 1 for
        RetinaFace's pyramid (it resizes to each level's size: any side works), except with
        MobileNetV2, whose "same"-padded stride-2 convolutions equal peteryuX's graph (and its
        published AP) only on sides that are multiples of 32, the domain its authors test on."""
        model = self.sections["model"]
        if model.pyramid == "retinaface" and model.backbone != "mobilenet_v2_retinaface":
            return 1
        return max(self.anchor_set.strides)

    @property
    def num_landmarks(self):
        """Landmark points per face (0: none)."""
        return self.sections["model"].num_landmarks

    def call(self, images, training=None):
        return self.network(images, training=training)

    # --- targets ------------------------------------------------------------------------
    def target_fn(self, image, boxes, num_boxes):
        """Per-example targets for tf.data (`Anchors.encode`)."""
        return self.anchor_set.encode(image, boxes, num_boxes)

    # --- loss and training ---------------------------------------------------------------
    def compute_detection_loss(self, targets, outputs, image_hw):
        """Eq. 61 on a batch: dict of scalars "loss", "cls_loss", "box_loss"."""
        loss = self.sections["loss"]
        return detection_loss(
            targets["cls_targets"], targets["box_targets"], outputs["cls_logits"],
            outputs["box_deltas"], self.anchor_set.level_ids(image_hw),
            len(self.anchor_set.strides), loss.normalization, loss.focal_alpha,
            loss.focal_gamma, loss.smooth_l1_delta, loss.box_weight)

    def _update_trackers(self, losses):
        self.loss_tracker.update_state(losses["loss"])
        self.cls_loss_tracker.update_state(losses["cls_loss"])
        self.box_loss_tracker.update_state(losses["box_loss"])
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.cls_loss_tracker, self.box_loss_tracker]

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            losses = self.compute_detection_loss(targets, outputs, tf.shape(images)[1:3])
            total = losses["loss"]
            if self.losses:  # weight decay from kernel regularizers, if any
                total = total + tf.add_n(self.losses)
            total = training.scaled_loss(self, total)
        training.apply_gradients(self, tape, total)
        return self._update_trackers(losses)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(images, training=False)
        return self._update_trackers(
            self.compute_detection_loss(targets, outputs, tf.shape(images)[1:3]))

    # --- inference ------------------------------------------------------------------------
    def detect(self, images, score_threshold=None, iou_threshold=None, max_detections=None):
        """Images `(B, H, W, 3)` in [0, 1] -> {"boxes" `(B, D, 4)`, "scores" `(B, D)`,
        "num_detections" `(B,)`} (px of the input), and with landmarks "keypoints"
        `(B, D, L, 2)` (y, x) px (RetinaFace: eyes, nose, mouth corners as the authors order
        them: left eye, right eye, nose, left and right mouth corner, left/right in the image).

        The thresholds default to the model's config; the export fixes its own.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        outputs = self(images, training=False)
        image_hw = tf.shape(images)[1:3]
        post = self.sections["postprocess"]
        return postprocess(
            outputs["cls_logits"], outputs["box_deltas"], self.anchor_set.generate(image_hw),
            self.anchor_set.counts(image_hw), (image_hw[0], image_hw[1]),
            self.anchor_set.variances, post.pre_nms_top_k,
            post.score_threshold if score_threshold is None else score_threshold,
            post.nms_iou_threshold if iou_threshold is None else iou_threshold,
            post.max_detections if max_detections is None else max_detections,
            landmark_deltas=outputs.get("landmark_deltas"), nms_plus_one=post.nms_plus_one,
            clip=post.clip_boxes)

    def predict_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(images)

    def get_config(self):
        return {**super().get_config(), "input_size": self.input_size,
                "layers": self.layers_name,
                **{key: dataclasses.asdict(value) for key, value in self.sections.items()}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if configs.is_flat(config):  # a model saved by handgrad 0.1 (flat keyword arguments)
            nested = configs.from_flat(config)
            config = {key: value for key, value in config.items()
                      if key in ("name", "trainable", "dtype", "input_size", "layers")}
            config.update({key: nested[key] for key in _SECTIONS})
        return cls(**config)
