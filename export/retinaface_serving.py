"""RetinaFace's serving module (`handgrad-export --pretrained=retinaface_*`): the face
signatures of `serving.py` at each photo's ORIGINAL resolution, plus keypoints, and the
test-time recipe (`--tta`) of `zoo/face/retinanet/tta.py`."""

import tensorflow as tf

from handgrad.export.serving import (
    KeypointFaceServing,
    _track_variables,
    check_thresholds,
    frozen_network,
)
from handgrad.zoo.face.retinanet import tta
from handgrad.zoo.face.retinanet.postprocess import postprocess


class OriginalSizeFaceServing(KeypointFaceServing):
    """Serves a RetinaFace `FaceDetector` at each photo's ORIGINAL resolution (no resize), as its
    authors test on WIDER FACE; the same signatures as `FaceServing` plus keypoints:

        serving_default(images: uint8 [batch, height, width, 3])   any size
        image_bytes(image_bytes: string [batch])                     encoded, sizes may differ
        -> boxes: float32 [batch, D, 4] `[ymin, xmin, ymax, xmax]` original pixels (clipped to
           the photo), scores: float32 [batch, D], num_detections: int32 [batch],
           keypoints: float32 [batch, D, 5, 2] `(y, x)` original pixels (left eye, right eye,
           nose, left and right mouth corner, left / right in the image; not clipped),
           zero-padded past the count
        forward(x: float32 [batch, h, w, 3] in [0, 1]) -> the network's raw outputs

    A uint8 batch (one size) runs as one network call, zero-padded bottom / right to a multiple
    of `pad_multiple` (1: none, biubug6's MobileNet0.25 test; 32: peteryuX's MobileNetV2 test),
    with the anchors of the padded size (as the authors), then the detector's post-processing
    (its "+1" NMS, `FaceDetector.detect`'s arithmetic). Encoded images run one at a time
    (`tf.map_fn`), each at its own size: a batch of photos of different sizes gives each photo's
    own detections, never those of a photo padded to its neighbour's size. With `tta`, every
    image runs the test-time recipe of `zoo/face/retinanet/tta.py` (two passes, box voting; one
    image at a time).

    Args:
        detector: a `FaceDetector` with landmarks (RetinaFace: `retinaface_import`).
        pad_multiple: see above. score_threshold, iou_threshold, max_detections (D): fixed at
            export (the TTA's vote uses its own IoU 0.4; the export's score threshold filters
            its faces). tta: serve the test-time recipe.
        freeze: serve the network with its weights as graph constants (`frozen_network`; no
            variables, no gradients: fine-tune `model.keras`). False keeps them as variables.
    """

    def __init__(self, detector, pad_multiple=1, score_threshold=0.5, iou_threshold=0.4,
                 max_detections=1000, tta=False, freeze=True):
        super().__init__(name="retinaface_serving")
        if not detector.num_landmarks:
            raise ValueError("OriginalSizeFaceServing serves detectors with landmarks "
                             "(RetinaFace); use FaceServing for this one.")
        if int(max_detections) < 1:
            raise ValueError(f"max_detections must be >= 1. Received: {max_detections}")
        check_thresholds(score_threshold, iou_threshold)
        self.anchor_set = detector.anchor_set
        self.num_keypoints = self.num_landmarks = int(detector.num_landmarks)
        self.pad_multiple, self.tta = int(pad_multiple), bool(tta)
        post = detector.sections["postprocess"]
        self._post = dict(pre_nms_top_k=int(post.pre_nms_top_k),
                          score_threshold=float(score_threshold),
                          iou_threshold=float(iou_threshold), max_detections=int(max_detections),
                          nms_plus_one=bool(post.nms_plus_one))
        spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="x")
        if freeze:
            self.network = frozen_network(detector.network, spec, name="RetinaFace network")
        else:
            self.network = detector.network
            _track_variables(self, detector)
        self.forward = tf.function(lambda x: self.network(x, training=False),
                                   input_signature=[spec])

    def _one_size(self, x):
        """(B, H, W, 3) float [0, 1], one size -> the detector's post-processed outputs."""
        hw = tf.shape(x)[1:3]
        padded = -(-hw // self.pad_multiple) * self.pad_multiple
        x = tf.pad(x, [[0, 0], [0, padded[0] - hw[0]], [0, padded[1] - hw[1]], [0, 0]])
        out = self.network(x, training=False)
        p = self._post
        return postprocess(
            out["cls_logits"], out["box_deltas"], self.anchor_set.generate(padded),
            self.anchor_set.counts(padded), (padded[0], padded[1]), self.anchor_set.variances,
            p["pre_nms_top_k"], p["score_threshold"], p["iou_threshold"], p["max_detections"],
            landmark_deltas=out["landmark_deltas"], nms_plus_one=p["nms_plus_one"], clip=False)

    def _tta(self, x):
        """(B, H, W, 3) float [0, 1] -> the test-time recipe's outputs, one image at a time."""
        d, n = self._post["max_detections"], self.num_landmarks
        return tf.map_fn(
            lambda image: tta.detect_tta(self.network, image, self.anchor_set, n, d,
                                         self._post["score_threshold"],
                                         pad_multiple=self.pad_multiple),
            x, fn_output_signature={"boxes": tf.TensorSpec([d, 4], tf.float32),
                                    "scores": tf.TensorSpec([d], tf.float32),
                                    "keypoints": tf.TensorSpec([d, n, 2], tf.float32),
                                    "num_detections": tf.TensorSpec([], tf.int32)})

    def _run(self, images):
        """uint8 (B, H, W, 3), B > 0 -> the four outputs in original pixels."""
        x = tf.cast(images, tf.float32) / 255.0
        out = self._tta(x) if self.tta else self._one_size(x)
        hw = tf.cast(tf.shape(images)[1:3], tf.float32)
        return {"boxes": tf.clip_by_value(out["boxes"], 0.0, tf.tile(hw, [2])),
                "scores": tf.cast(out["scores"], tf.float32),
                "keypoints": tf.cast(out["keypoints"], tf.float32),
                "num_detections": tf.cast(out["num_detections"], tf.int32)}
