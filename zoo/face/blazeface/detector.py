"""`BlazeFaceDetector`: a BlazeFace network with its training step and whole-image detection, the
model `handgrad-train` fits for task "blazeface" (as retinanet.FaceDetector for task "face").

    detector = BlazeFaceDetector(model={"variant": "full_range"})
    load_tflite_weights(detector.network, tflite_path("full_range"))   # MediaPipe's weights
    detector.compile(optimizer=...); detector.fit(dataset)      # (images, targets) batches
    detector.detect(images)      # any size, boxes in the pixels of `images`

Call: images `(B, S, S, 3)` in [0, 1] -> the network's {"regressors", "classificators"}.
Targets come from `target_fn` (targets.BlazeFaceTargets.encode); the loss is loss.blazeface_loss.
"""

import dataclasses

import keras
import tensorflow as tf

import handgrad.layers
from handgrad.zoo.face import training
from handgrad.zoo.face.blazeface import configs
from handgrad.zoo.face.blazeface.inference import detect_faces
from handgrad.zoo.face.blazeface.loss import blazeface_loss
from handgrad.zoo.face.blazeface.model import build_blazeface
from handgrad.zoo.face.blazeface.targets import BlazeFaceTargets
from handgrad.zoo.face.blazeface.variants import get_variant
from handgrad.zoo.face.configs import section

_LAYERS = {"handgrad": handgrad.layers, "keras": keras.layers}
_SECTIONS = {"model": configs.BlazeFaceModelConfig, "matching": configs.MatchingConfig,
             "loss": configs.BlazeFaceLossConfig,
             "postprocess": configs.BlazeFacePostprocessConfig}


@keras.saving.register_keras_serializable(package="handgrad")
class BlazeFaceDetector(keras.Model):
    """BlazeFace with a training step (see the module docstring).

    Args: model, matching, loss, postprocess: the `BlazeFaceConfig` sections (dataclasses,
        dicts of their fields, or None for the defaults). The weights start random.
    """

    def __init__(self, model=None, matching=None, loss=None, postprocess=None, **kwargs):
        super().__init__(**kwargs)
        given = {"model": model, "matching": matching, "loss": loss, "postprocess": postprocess}
        self.sections = {key: section(cls, given[key], key) for key, cls in _SECTIONS.items()}
        spec = self.sections["model"]
        if spec.layers not in _LAYERS:
            raise ValueError(f"model.layers must be one of {sorted(_LAYERS)}. "
                             f"Received: {spec.layers!r}")
        self.variant = get_variant(spec.variant)
        self.network = build_blazeface(self.variant, _LAYERS[spec.layers])
        self.built = True  # the functional network inside is complete
        matching = self.sections["matching"]
        self.targets = BlazeFaceTargets(self.variant, matching.center_radius,
                                        matching.scale_tolerance)
        self.trackers = [keras.metrics.Mean(name=n)
                         for n in ("loss", "cls_loss", "box_loss", "keypoint_loss")]

    @property
    def input_size(self):
        return self.variant.input_size

    @property
    def input_multiple(self):
        """`detect` letterboxes any size itself: no padding needed."""
        return 1

    def call(self, images, training=None):
        return self.network(images, training=training)

    def target_fn(self, image, boxes, num_boxes):
        """Per-example targets for tf.data (targets.BlazeFaceTargets.encode)."""
        return self.targets.encode(image, boxes, num_boxes)

    def compute_detection_loss(self, targets, outputs):
        """loss.blazeface_loss with this config: dict of scalars."""
        c = self.sections["loss"]
        return blazeface_loss(targets, outputs, c.focal_alpha, c.focal_gamma, c.smooth_l1_delta,
                              c.box_weight, c.keypoint_weight, c.center_variance,
                              c.size_variance)

    @property
    def metrics(self):
        return self.trackers

    def _update_trackers(self, losses):
        for tracker in self.trackers:
            tracker.update_state(losses[tracker.name])
        return {m.name: m.result() for m in self.trackers}

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_detection_loss(targets, self(images, training=True))
            total = training.scaled_loss(self, losses["loss"])
        training.apply_gradients(self, tape, total)
        return self._update_trackers(losses)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(
            self.compute_detection_loss(targets, self(images, training=False)))

    def detect(self, images, score_threshold=None, iou_threshold=None, max_detections=None):
        """Images `(B, H, W, 3)` in [0, 1], any one size -> {"boxes" `[ymin, xmin, ymax, xmax]`,
        "keypoints" `(y, x)`, both in the pixels of `images`, "scores", "num_detections"}.

        Each image is letterboxed to the network's input (inference.detect_faces); thresholds
        default to the postprocess config.
        """
        post = self.sections["postprocess"]
        out = detect_faces(
            self.network, tf.convert_to_tensor(images, tf.float32), self.variant,
            post.score_threshold if score_threshold is None else score_threshold,
            post.nms_iou_threshold if iou_threshold is None else iou_threshold,
            post.max_detections if max_detections is None else max_detections, post.weighted)
        return {**out, "num_detections": tf.cast(out["num_detections"], tf.int32)}

    def predict_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(images)

    def get_config(self):
        return {**super().get_config(),
                **{key: dataclasses.asdict(value) for key, value in self.sections.items()}}
