"""The face detector: a RetinaNet-style Keras model (seed section 3.5.2) with its training step and
in-graph post-processing.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input (TF Model Garden convention).

`FaceDetector(images)` returns the raw head outputs {"cls_logits" `(B, A, 1)`, "box_deltas"
`(B, A, 4)`} (see retinanet_heads.py). `train_step` / `test_step` compute the detection loss of
eq. 61 (losses/detection.py) from encoded targets {"cls_targets" `(B, A)`, "box_targets"
`(B, A, 4)`} made by `FaceDetector.target_fn` (pass it to the WIDER pipeline), so `model.fit`
works on `(images, targets)` batches. `detect(images)` (and `predict`) post-processes in the graph:
    p = sigmoid(logit)                          per anchor
    top `pre_nms_top_k` anchors per level       (RetinaNet: 1000)
    decode (box_ops.decode_boxes), clip to the image
    batched NMS: tf.image.combined_non_max_suppression(iou_threshold, score_threshold,
                 max_detections)
and returns {"boxes" `(B, D, 4)` px, "scores" `(B, D)`, "num_detections" `(B,)`}, D =
`max_detections` (default 750: WIDER FACE images hold up to ~500 faces), zero-padded.
"""

import keras
import tensorflow as tf

import handgrad.layers
from handgrad.losses.detection import detection_loss
from handgrad.zoo import anchors as anchor_lib
from handgrad.zoo import box_ops
from handgrad.zoo.retinanet_heads import detector_network

_LAYERS = {"handgrad": handgrad.layers, "keras": keras.layers}


def postprocess(cls_logits, box_deltas, anchors, level_counts, image_hw, variances,
                pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.4, max_detections=750):
    """Sigmoid, top-k per level, decode, clip, batched NMS (see the module docstring).

    Args:
        cls_logits: `(B, A, 1)`. box_deltas: `(B, A, 4)`. anchors: `(A, 4)` px.
        level_counts: anchors per level (ints or scalar tensors), summing to A.
        image_hw: (height, width) of the model input, for clipping.
    Returns: dict "boxes" `(B, D, 4)` px, "scores" `(B, D)`, "num_detections" `(B,)` int32.
    """
    scores = tf.sigmoid(tf.cast(cls_logits[..., 0], tf.float32))  # (B, A)
    box_deltas = tf.cast(box_deltas, tf.float32)
    boxes, top_scores = [], []
    start = 0
    for count in level_counts:
        k = tf.minimum(pre_nms_top_k, count)
        level_scores, idx = tf.math.top_k(scores[:, start:start + count], k)  # (B, k)
        deltas = tf.gather(box_deltas[:, start:start + count], idx, batch_dims=1)  # (B, k, 4)
        level_anchors = tf.gather(anchors[start:start + count], idx)  # (B, k, 4)
        boxes.append(box_ops.decode_boxes(deltas, level_anchors, variances))
        top_scores.append(level_scores)
        start = start + count
    boxes = box_ops.clip_boxes(tf.concat(boxes, axis=1), *image_hw)  # (B, K, 4)
    top_scores = tf.concat(top_scores, axis=1)  # (B, K)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], top_scores[:, :, None],  # (B, K, 1, 4), (B, K, 1): one class
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores,
            "num_detections": nms.valid_detections}


def make_target_fn(min_anchor_size=14.0, max_anchor_size=220.0, scales_per_level=3,
                   aspect_ratios=(1.0,), variances=box_ops.DEFAULT_VARIANCES, positive_iou=0.5,
                   negative_iou=0.4, strides=anchor_lib.DEFAULT_STRIDES):
    """Per-example target encoder for tf.data (the WIDER pipeline's `target_fn`).

    Returns `fn(image (H, W, 3), boxes (M, 4) px padded, num_boxes ()) -> {"cls_targets" (A,)
    1 face / 0 background / -1 ignored, "box_targets" (A, 4)}` (box_ops.encode_targets), with
    the anchors of the image's own size. Pure TensorFlow: safe in a parallel `map`.
    """
    sizes = anchor_lib.anchor_sizes(min_anchor_size, max_anchor_size, len(strides),
                                    scales_per_level)
    aspect_ratios, variances = tuple(aspect_ratios), tuple(variances)

    def target_fn(image, boxes, num_boxes):
        anchors = anchor_lib.generate_anchors(tf.shape(image)[0:2], sizes, aspect_ratios, strides)
        return box_ops.encode_targets(boxes, num_boxes, anchors, variances, positive_iou,
                                      negative_iou)

    return target_fn


@keras.saving.register_keras_serializable(package="handgrad")
class FaceDetector(keras.Model):
    """RetinaNet-style face detector: ResNet + FPN P3-P6 + shared heads, one class.

    Args:
        backbone_depth: 18, 34 or 50 (ResNet). base_filters: first-stage width (64).
        fpn_filters, head_filters: channels of the pyramid and of the hidden head convolutions.
        num_cls_convs, num_box_convs: hidden convolutions of the heads (seed: 3 and 2).
        min_anchor_size, max_anchor_size, scales_per_level, aspect_ratios: anchors (anchors.py;
            seed: 14 .. 220 px; aspect ratio = height / width).
        variances: box-encoding variances (box_ops.py).
        positive_iou, negative_iou: matching thresholds (0.5, 0.4).
        focal_alpha, focal_gamma, smooth_l1_delta, box_loss_weight, loss_normalization: the
            detection loss (losses/detection.py; normalization "positives" or "per_level").
        prior_probability: pi of the class-output bias (0.01).
        score_threshold, nms_iou_threshold, pre_nms_top_k, max_detections: post-processing.
        freeze_backbone_bn: run the backbone's batch norms on running statistics.
        bn_momentum: momentum of the backbone's running statistics (0.99).
        input_size: static side of the (square) input, or None for any size (multi-scale).
        layers: "handgrad" (hand-derived gradients) or "keras" (the stock twin).
    Call: images `(B, H, W, 3)` float in [0, 1], sides multiples of 64 (P6 = H / 64) ->
        {"cls_logits": `(B, A, 1)`, "box_deltas": `(B, A, 4)`}.
    """

    def __init__(self, backbone_depth=50, base_filters=64, fpn_filters=256, head_filters=256,
                 num_cls_convs=3, num_box_convs=2, min_anchor_size=14.0, max_anchor_size=220.0,
                 scales_per_level=3, aspect_ratios=(1.0,),
                 variances=box_ops.DEFAULT_VARIANCES, positive_iou=0.5, negative_iou=0.4,
                 focal_alpha=0.25, focal_gamma=2.0, smooth_l1_delta=1.0, box_loss_weight=1.0,
                 loss_normalization="positives", prior_probability=0.01, score_threshold=0.05,
                 nms_iou_threshold=0.4, pre_nms_top_k=1000, max_detections=750,
                 freeze_backbone_bn=False, bn_momentum=0.99, input_size=None, layers="handgrad",
                 **kwargs):
        super().__init__(**kwargs)
        if layers not in _LAYERS:
            raise ValueError(f"layers must be one of {sorted(_LAYERS)}. Received: {layers!r}")
        if max_detections < 1 or pre_nms_top_k < 1:
            raise ValueError(f"max_detections and pre_nms_top_k must be >= 1. Received: "
                             f"{max_detections}, {pre_nms_top_k}")
        self._config = {k: v for k, v in locals().items()
                        if k not in ("self", "kwargs", "__class__")}
        self._config["aspect_ratios"] = tuple(aspect_ratios)
        self._config["variances"] = tuple(variances)
        self.strides = anchor_lib.DEFAULT_STRIDES
        self.sizes_per_level = anchor_lib.anchor_sizes(min_anchor_size, max_anchor_size,
                                                       len(self.strides), scales_per_level)
        self.aspect_ratios = tuple(aspect_ratios)
        self.variances = tuple(variances)
        self.network = detector_network(
            backbone_depth, base_filters, fpn_filters, head_filters, num_cls_convs,
            num_box_convs, scales_per_level * len(self.aspect_ratios), prior_probability,
            input_shape=(input_size, input_size, 3), freeze_backbone_bn=freeze_backbone_bn,
            bn_momentum=bn_momentum, layers=_LAYERS[layers])
        self.built = True  # the functional network inside is complete
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")

    def call(self, images, training=None):
        return self.network(images, training=training)

    # --- anchors and targets -------------------------------------------------------------
    def anchors(self, image_hw):
        """`(A, 4)` anchors px for an input of (height, width) (ints or int tensors)."""
        return anchor_lib.generate_anchors(image_hw, self.sizes_per_level, self.aspect_ratios,
                                           self.strides)

    def target_fn(self, image, boxes, num_boxes):
        """Per-example targets for tf.data (the WIDER pipeline's `target_fn`).

        Args: image `(H, W, 3)`; boxes `(M, 4)` px, padded; num_boxes scalar.
        Returns: {"cls_targets": `(A,)` 1/0/-1, "box_targets": `(A, 4)`} (box_ops.encode_targets).
        """
        c = self._config
        return make_target_fn(c["min_anchor_size"], c["max_anchor_size"],
                              c["scales_per_level"], self.aspect_ratios, self.variances,
                              c["positive_iou"], c["negative_iou"], self.strides)(
            image, boxes, num_boxes)

    # --- loss and training ---------------------------------------------------------------
    def compute_detection_loss(self, targets, outputs, image_hw):
        """Eq. 61 on a batch: dict of scalars "loss", "cls_loss", "box_loss"."""
        c = self._config
        level_ids = anchor_lib.level_ids(image_hw, self.sizes_per_level, self.aspect_ratios,
                                         self.strides)
        return detection_loss(
            targets["cls_targets"], targets["box_targets"], outputs["cls_logits"],
            outputs["box_deltas"], level_ids, len(self.strides), c["loss_normalization"],
            c["focal_alpha"], c["focal_gamma"], c["smooth_l1_delta"], c["box_loss_weight"])

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
            # As in Keras' own train_step: the optimizer sums the replicas' gradients, so each
            # replica's loss is divided by their count; a LossScaleOptimizer (mixed precision)
            # scales the loss up here and the gradients back down in apply_gradients.
            total = total / tf.distribute.get_strategy().num_replicas_in_sync
            total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._update_trackers(losses)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(images, training=False)
        return self._update_trackers(
            self.compute_detection_loss(targets, outputs, tf.shape(images)[1:3]))

    # --- inference ------------------------------------------------------------------------
    def detect(self, images, score_threshold=None, iou_threshold=None, max_detections=None):
        """Images `(B, H, W, 3)` in [0, 1] -> {"boxes", "scores", "num_detections"} (px).

        The thresholds default to the model's config; the export fixes its own.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        outputs = self(images, training=False)
        image_hw = tf.shape(images)[1:3]
        counts = anchor_lib.anchors_per_level(image_hw, self.sizes_per_level,
                                              self.aspect_ratios, self.strides)
        c = self._config
        return postprocess(
            outputs["cls_logits"], outputs["box_deltas"], self.anchors(image_hw), counts,
            (image_hw[0], image_hw[1]), self.variances, c["pre_nms_top_k"],
            c["score_threshold"] if score_threshold is None else score_threshold,
            c["nms_iou_threshold"] if iou_threshold is None else iou_threshold,
            c["max_detections"] if max_detections is None else max_detections)

    def predict_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(images)

    def get_config(self):
        return {**super().get_config(), **self._config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("aspect_ratios", "variances"):
            config[key] = tuple(config[key])
        return cls(**config)
