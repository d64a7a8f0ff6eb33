"""Serving module of a BlazeFace model (MediaPipe's weights, or a fine-tuned `handgrad-train` run):
the same signatures as the trained detectors (serving.FaceServing), no handgrad code needed to run.

    serving_default(images: uint8 [batch, height, width, 3])   any size (one size per batch)
    image_bytes(image_bytes: string [batch])                     encoded JPEG / PNG / BMP / GIF /
                                                                 WebP, in the stored orientation
                                                                 (the EXIF tag is ignored)
    -> boxes: float32 [batch, D, 4] `[ymin, xmin, ymax, xmax]` in the ORIGINAL image's pixels
       (clipped to it), scores: float32 [batch, D], num_detections: int32 [batch], and
       keypoints: float32 [batch, D, 6, 2] `(y, x)` original pixels (right eye, left eye, nose
       tip, mouth centre, right ear tragion, left ear tragion: the subject's right / left),
       zero-padded past the count.
    forward(x: float32 [batch, S, S, 3] in [0, 1]) -> the network's raw "regressors",
       "classificators" (S = 128 short range, 192 full range).
The network's weights are graph constants in the SavedModel (`frozen_network`: faster on the CPU;
no variables, no gradients). To fine-tune, start from the Keras model (`model.keras`).

Each image is letterboxed as MediaPipe does (centred, zero borders, resized to S x S by area
averaging: blazeface.inference.letterbox), so the network sees a face at S / max(H, W) of its
size.
Thresholds are fixed at export (default MediaPipe's: score 0.5 short / 0.6 full range, weighted
NMS at IoU 0.3).

Face sizes (benchmarks/blazeface_face_range.py: three real faces cut out at 21 sizes relative to
the image, results in benchmarks/results/blazeface_face_range.jsonl): the full-range model found
each face down to 5-8 % of the image's longer side (a face 10-15 pixels tall in its 192 x 192
input; its anchors are 4 pixels apart, so that is 2.5-4 cells) and up to 40-80 % of it; the
short-range model (anchors 8 and 16 pixels apart in 128 x 128; MediaPipe: faces within 2 m,
selfies) down to 12.5-15 % (16-19 input pixels). A face smaller than ~1/12 of a photo's longer
side needs a crop or tiles.
"""

import tensorflow as tf

from handgrad.export import serving
from handgrad.export.serving import KeypointFaceServing, _track_variables, serves
from handgrad.zoo.face.blazeface.inference import detect_faces
from handgrad.zoo.face.blazeface.variants import NUM_KEYPOINTS, get_variant


def frozen_network(model, input_size):
    """The BlazeFace network with its weights as graph constants (`serving.frozen_network`):
    the SavedModel's p50 was 0.67-0.90 x that of the same export with variables
    (benchmarks/blazeface_latency_bench.py's `handgrad_savedmodel_variables` twin, 8 runs).
    Args: model: `(B, S, S, 3)` in [0, 1] -> {"regressors", "classificators"}; input_size S."""
    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="x")
    return serving.frozen_network(model, spec, name="BlazeFace network")


def _variables_module(model, input_size):
    """(the batch-1 network's concrete function, a tf.Module tracking its variables)."""
    module = tf.Module()
    _track_variables(module, model)
    module.network = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="x")])
    return module.network.get_concrete_function(), module


class BlazeFaceServing(KeypointFaceServing):
    """Wraps a BlazeFace network (`import_blazeface` / `build_blazeface` output).

    Args:
        model: the Keras network: `(B, S, S, 3)` in [0, 1] -> {"regressors", "classificators"}.
        variant: "short_range" | "full_range" (or a `BlazeFaceVariant`): input size, anchors and
            default thresholds.
        score_threshold, iou_threshold: None = MediaPipe's for the variant. max_detections: D.
        weighted: MediaPipe's weighted NMS (False: plain greedy NMS).
        freeze: serve the network with its weights as graph constants (`frozen_network`; the
            SavedModel then holds no variables). False keeps them as variables (the benchmark's
            twin; `forward` then stays differentiable, like the trained detectors' exports).
            Fine-tune the Keras model (`model.keras` beside the export).
    """

    def __init__(self, model, variant, score_threshold=None, iou_threshold=None,
                 max_detections=100, weighted=True, freeze=True):
        super().__init__(name="blazeface_serving")
        self.num_keypoints = NUM_KEYPOINTS
        self.spec = get_variant(variant)
        s = self.spec.input_size
        if freeze:
            self.network = frozen_network(model, s)
        else:  # as the trained detectors' exports: variables, differentiable `forward`
            self.network = model
            _track_variables(self, model)
        if int(max_detections) < 1:
            raise ValueError(f"max_detections must be >= 1. Received: {max_detections}")
        self._post = dict(
            score_threshold=float(self.spec.score_threshold if score_threshold is None
                                  else score_threshold),
            iou_threshold=float(self.spec.iou_threshold if iou_threshold is None
                                else iou_threshold),
            max_detections=int(max_detections), weighted=bool(weighted))
        self.forward = tf.function(
            lambda x: self.network(x, training=False),
            input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32, name="x")])
        # the raw network for tflite.convert (TFLite has no builtin for the batched NMS), from
        # the variables: the converter writes a signature only when it freezes them itself.
        # A plain closure, so the variables stay out of a frozen SavedModel.
        self.tflite_source = lambda: _variables_module(model, s)

    def _run(self, images):
        """uint8 (B, H, W, 3), B > 0 -> the four outputs, original pixels (the letterbox reads
        uint8 itself: the full-size photo is not converted to float first)."""
        out = detect_faces(self.network, images, self.spec, **self._post)
        return {"boxes": out["boxes"], "scores": out["scores"], "keypoints": out["keypoints"],
                "num_detections": tf.cast(out["num_detections"], tf.int32)}


@serves("blazeface")
def from_detector(detector, score_threshold=None, iou_threshold=None, max_detections=None,
                  input_size=None):
    """The serving module of a trained `BlazeFaceDetector` (task "blazeface"). A score threshold
    left None is MediaPipe's for the variant (the config's is the evaluation's, low for a full
    PR curve); the IoU threshold and max_detections come from its postprocess config.
    input_size is fixed by the variant (ignored)."""
    del input_size
    post = detector.sections["postprocess"]
    return BlazeFaceServing(
        detector.network, detector.variant, score_threshold,
        post.nms_iou_threshold if iou_threshold is None else iou_threshold,
        post.max_detections if max_detections is None else max_detections, post.weighted)
