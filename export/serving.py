"""Serving modules: the graphs a SavedModel exposes to TF Serving, with no handgrad code needed
to run them.

Face detector (`FaceServing`):
    serving_default(images: uint8 [batch, height, width, 3])   any size; resized in the graph
    image_bytes(image_bytes: string [batch])                     encoded JPEG / PNG / BMP / GIF
    -> boxes: float32 [batch, D, 4] `[ymin, xmin, ymax, xmax]` in the ORIGINAL image's pixels,
       scores: float32 [batch, D], num_detections: int32 [batch]   (zero-padded past the count)
    Each image is resized keeping its aspect ratio until its longer side is `input_size` (the
    training pipeline's `resize_and_pad`), so a box maps back to the original by dividing by the
    per-axis scale factors [sy, sx]. The batch is padded at the bottom/right only to the smallest
    multiple of the detector's largest stride that holds every resized image, not to the full
    square: a 640 x 480 photo runs at 640 x 512 instead of 640 x 640, a fifth of the network's
    work saved. The boxes are those of the square input except within a few pixels of the
    padding edge, where the network's own zero padding replaces the padded image's features.
RetinaFace (`retinaface_serving.OriginalSizeFaceServing`, `handgrad-export
    --pretrained=retinaface_*`): the same signatures at each photo's ORIGINAL resolution (no
    resize), plus keypoints [batch, D, 5, 2] (y, x) original pixels; `--tta`: the test-time
    recipe of zoo/face/retinanet/tta.py.
MNIST (`MnistServing`):
    serving_default(images: uint8 [batch, 28, 28] or [batch, 28, 28, 1])
    -> probabilities: float32 [batch, 10], classes: int64 [batch]
Both also keep `forward(x: float32)`, the differentiable model function, and `trainable_weights`,
so a reloaded SavedModel can be fine-tuned through the saved hand-derived gradients
(SaveOptions(experimental_custom_gradients=True)).
Wrong dtypes are refused by the signature itself; wrong shapes and undecodable bytes fail with an
InvalidArgumentError that says what was expected. A batch of 0 images returns empty outputs
(`[0, 10]`, `[0]`; `[0, D, 4]`, `[0, D]`, `[0]`) without running the network: TF's Conv2D returns
an empty batch unchanged (its input shape, TF 2.21, stock layers too), which the next layer
refuses.
"""

import inspect

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from handgrad.pipelines.augment import resize_and_pad

NO_BOXES = tf.zeros([0, 4], tf.float32)


def _track_variables(module, model):
    """Lists the Keras model's variables on the module as plain tf.Variables: the TF1-style
    loaders (TF Serving, saved_model_cli run) restore only variables tracked this way (the running
    BN statistics were missing otherwise), and a reloaded model exposes them for fine-tuning."""
    module.trainable_weights = [v.value for v in model.trainable_weights]
    module.non_trainable_weights = [v.value for v in model.non_trainable_weights]


class _TfliteFromVariables(tf.Module):
    """A serving module whose `tflite_fn` (the batch-1 raw network, a tf.function) converts
    with the variables the module tracks."""

    def tflite_source(self):
        """(the network's concrete function, the owner of its variables): tflite.convert's
        input, which every serving module provides."""
        return self.tflite_fn.get_concrete_function(), self


class MnistServing(_TfliteFromVariables):
    """Wraps a Keras MNIST classifier `(B, 28, 28, 1)` float [0, 1] -> `(B, 10)` probabilities."""

    def __init__(self, model):
        super().__init__(name="mnist_serving")
        self.model = model
        self.num_classes = int(model.output_shape[-1])
        _track_variables(self, model)
        self.forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="x")])

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve(self, images):
        shape = tf.concat([tf.shape(images), [1, 1, 1, 1]], axis=0)  # safe to index past the rank
        rank = tf.rank(images)
        ok = tf.logical_and(
            tf.logical_and(tf.equal(shape[1], 28), tf.equal(shape[2], 28)),
            tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4),
                                                             tf.equal(shape[3], 1))))
        check = tf.debugging.Assert(ok, [
            "images: expected uint8 [batch, 28, 28] or [batch, 28, 28, 1]; received shape",
            tf.shape(images)])
        with tf.control_dependencies([check]):
            x = tf.reshape(tf.cast(images, tf.float32) / 255.0, [-1, 28, 28, 1])  # (B, 28, 28, 1)
        probabilities = tf.cond(tf.shape(x)[0] > 0, lambda: self.forward(x),
                                lambda: tf.zeros([0, self.num_classes]))  # (B, 10)
        return {"probabilities": probabilities,
                "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32, name="x")])
    def tflite_fn(self, x):
        return {"probabilities": self.model(x, training=False)}

    def signatures(self):
        return {"serving_default": self.serve}


def frozen_network(model, input_spec, name="network"):
    """The network as a function of its input alone, its weights folded in as graph constants.

    Served this way, a call skips the variable reads and TF's optimiser sees constant filters
    (and folds inference batch norms into them): BlazeFace's SavedModel p50 was 0.67-0.90 x that
    of the same export with variables (benchmarks/blazeface_latency_bench.py), RetinaFace's is in
    benchmarks/README.md. `convert_variables_to_constants_v2` is the freezing step of TF's own
    TFLite converter.
    Args: model: a Keras model called as `model(x, training=False)`; input_spec: the
        `tf.TensorSpec` of x (None dimensions stay free: any batch, any image size); name: for
        the error a training call gets.
    Returns: `network(x, training=False)` with the model's outputs (same structure); not
        differentiable (an inference graph: `training` must stay False).
    """
    concrete = tf.function(lambda x: model(x, training=False), input_signature=[input_spec],
                           autograph=False).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    # the layers' custom-gradient markers (IdentityN ops): an inference graph has no gradient
    # functions to save, and a SavedModel keeping the markers warns at every load
    for node in graph_def.node:
        node.attr.pop("_gradient_op_type", None)
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    tensor = wrapped.graph.get_tensor_by_name
    inference = wrapped.prune(tensor(frozen.inputs[0].name),
                              [tensor(t.name) for t in frozen.outputs])

    @tf.autograph.experimental.do_not_convert  # plain Python: no loop or branch on tensors
    def network(x, training=False):
        if training:
            raise ValueError(f"A frozen {name} is for inference only: fine-tune the Keras model "
                             "instead.")
        return tf.nest.pack_sequence_as(concrete.structured_outputs, inference(x))

    return network


def checked_face_images(images):
    """The `images` of a face signature once their shape is checked in the graph, so that a
    client (TF Serving, saved_model_cli) reads what was expected instead of a failing kernel's
    words: uint8 `[batch, height, width, 3]`, height and width >= 1, batch >= 0. The signature's
    spec says so too, but a reloaded SavedModel feeds any shape through it, and TF's graph
    optimiser folds `tf.rank` to the spec's 4: the rank is counted from the shape's values."""
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)  # safe to index past the rank
    rank = tf.math.count_nonzero(shape >= 0, dtype=tf.int32)  # not folded to the spec's 4
    ok = tf.reduce_all(tf.stack([
        tf.equal(rank, 4), tf.equal(padded[3], 3), padded[1] >= 1, padded[2] >= 1]))
    check = tf.debugging.Assert(ok, [
        "images: expected uint8 [batch, height, width, 3] with height and width >= 1; received "
        "shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(images)


class FaceServing(_TfliteFromVariables):
    """Wraps a `FaceDetector` with fixed post-processing thresholds and any-size image input.

    Args:
        detector: a `handgrad.zoo.face.retinanet.model.FaceDetector`, or any model with its
            `call`, `detect(images, score_threshold, iou_threshold, max_detections)` and
            `input_multiple` (input sides must be multiples of it).
        input_size: side of the square the detector sees (a multiple of its largest stride).
        score_threshold, iou_threshold, max_detections: post-processing, fixed at export time.
    """

    def __init__(self, detector, input_size=640, score_threshold=0.5, iou_threshold=0.4,
                 max_detections=750):
        super().__init__(name="face_serving")
        stride = detector.input_multiple
        if input_size % stride:
            raise ValueError(f"input_size must be a multiple of {stride} (the detector's largest "
                             f"stride). Received: input_size={input_size}")
        self.detector = detector
        _track_variables(self, detector)
        self.input_size = int(input_size)
        self._thresholds = dict(score_threshold=float(score_threshold),
                                iou_threshold=float(iou_threshold),
                                max_detections=int(max_detections))
        s = self.input_size
        self.forward = tf.function(
            lambda x: self.detector(x, training=False),
            input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32, name="x")])
        self.tflite_fn = tf.function(
            self.tflite_fn, input_signature=[tf.TensorSpec([1, s, s, 3], tf.float32, name="x")])

    def _prepare(self, image):
        """uint8 (H, W, 3) -> float (S, S, 3) in [0, 1], scale [sy, sx], (H, W)."""
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        x, _, scale = resize_and_pad(image, NO_BOXES, self.input_size)  # uint8 -> [0, 1]
        return x, scale, hw

    def _crop_padding(self, images, scales, sizes):
        """images (B, S, S, 3) -> (B, h, w, 3): h, w the smallest multiples of the largest
        stride holding every resized image of the batch (sizes * scales, rounded)."""
        multiple = self.detector.input_multiple
        content = tf.cast(tf.round(tf.reduce_max(sizes * scales, axis=0)), tf.int32)  # (2,)
        canvas = tf.minimum(-(-content // multiple) * multiple, self.input_size)  # ceil, (2,)
        canvas = tf.maximum(canvas, multiple)  # an empty batch's max is -inf
        return images[:, :canvas[0], :canvas[1], :]

    def _detect(self, images, scales, sizes):
        """images (B, S, S, 3); scales, sizes (B, 2) -> boxes in original pixels; an empty
        batch gets empty outputs without running the network (module docstring)."""
        images = self._crop_padding(images, scales, sizes)

        def run():
            out = self.detector.detect(images, **self._thresholds)
            per_coord = tf.tile(scales, [1, 2])[:, None, :]  # (B, 1, 4): [sy, sx, sy, sx]
            limits = tf.tile(sizes, [1, 2])[:, None, :]  # (B, 1, 4): [h, w, h, w]
            boxes = tf.clip_by_value(out["boxes"] / per_coord, 0.0, limits)  # (B, D, 4)
            return {"boxes": boxes, "scores": tf.cast(out["scores"], tf.float32),
                    "num_detections": tf.cast(out["num_detections"], tf.int32)}

        def empty():
            d = self._thresholds["max_detections"]
            return {"boxes": tf.zeros([0, d, 4]), "scores": tf.zeros([0, d]),
                    "num_detections": tf.zeros([0], tf.int32)}

        return tf.cond(tf.shape(images)[0] > 0, run, empty)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        x, scales, sizes = tf.map_fn(
            self._prepare, checked_face_images(images),
            fn_output_signature=(tf.float32, tf.TensorSpec([2], tf.float32),
                                 tf.TensorSpec([2], tf.float32)))
        return self._detect(x, scales, sizes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        def decode(data):
            # decode_image fails with "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF,
            # BMP, WebP required." on bytes that are no image: the expected formats, named. It
            # ignores the EXIF Orientation tag (stored pixels; export/README.md says so).
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return self._prepare(image)

        x, scales, sizes = tf.map_fn(
            decode, image_bytes,
            fn_output_signature=(tf.TensorSpec([self.input_size, self.input_size, 3], tf.float32),
                                 tf.TensorSpec([2], tf.float32), tf.TensorSpec([2], tf.float32)))
        return self._detect(x, scales, sizes)

    def tflite_fn(self, x):
        """`(1, S, S, 3)` float [0, 1] -> the network's `cls_logits` `(1, A, 1)` and
        `box_deltas` `(1, A, 4)` (see tflite.py: TFLite has no builtin batched NMS)."""
        return self.detector(x, training=False)

    def signatures(self):
        return {"serving_default": self.serve_images, "image_bytes": self.serve_bytes}


class KeypointFaceServing(tf.Module):
    """The face signatures of the detectors that also return keypoints (BlazeFace, RetinaFace):
    `serving_default` (uint8 `[batch, height, width, 3]`, checked in the graph) and `image_bytes`
    (decoded and run one image at a time, so a batch of different sizes gives each image's own
    detections) -> boxes `[batch, D, 4]`, scores `[batch, D]`, keypoints `[batch, D, K, 2]`,
    num_detections `[batch]`, in original pixels. A batch of 0 gets empty outputs without running
    the network (a convolution refuses an empty batch). A subclass sets `self._post` (with
    "max_detections", D) and `self.num_keypoints` (K) and defines `_run(images)`: a non-empty
    uint8 batch -> the four outputs."""

    @property
    def thresholds(self):
        """The post-processing fixed in this export (a copy)."""
        return dict(self._post)

    def _detect(self, images):
        def empty():
            d = self._post["max_detections"]
            return {"boxes": tf.zeros([0, d, 4]), "scores": tf.zeros([0, d]),
                    "keypoints": tf.zeros([0, d, self.num_keypoints, 2]),
                    "num_detections": tf.zeros([0], tf.int32)}

        return tf.cond(tf.shape(images)[0] > 0, lambda: self._run(images), empty)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        return self._detect(checked_face_images(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        d = self._post["max_detections"]

        def one(data):
            # decode_image fails with "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF,
            # BMP, WebP required." on bytes that are no image: the expected formats, named. It
            # ignores the EXIF Orientation tag (stored pixels; export/README.md says so).
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return {k: v[0] for k, v in self._detect(image[None]).items()}

        return tf.map_fn(one, image_bytes, fn_output_signature={
            "boxes": tf.TensorSpec([d, 4], tf.float32),
            "scores": tf.TensorSpec([d], tf.float32),
            "keypoints": tf.TensorSpec([d, self.num_keypoints, 2], tf.float32),
            "num_detections": tf.TensorSpec([], tf.int32)})

    def signatures(self):
        return {"serving_default": self.serve_images, "image_bytes": self.serve_bytes}


SERVING = {}  # task name -> f(model, **detector arguments) -> serving module


def serves(task):
    """Registers the decorated `f(model, **detector arguments)` as the serving-module builder of
    models of `task` (where the serving module is defined)."""
    def register(build):
        SERVING[task] = build
        return build
    return register


def check_thresholds(score_threshold=None, iou_threshold=None):
    """Refuses post-processing thresholds that export a model finding nothing (ValueError):
    scores are sigmoid probabilities below 1, so a score threshold of 1 keeps no box; an IoU
    threshold of 0 drops every box that touches a kept one. None: the model's default."""
    if score_threshold is not None and not 0.0 <= score_threshold < 1.0:
        raise ValueError("--score_threshold must be in [0, 1): scores are probabilities below 1, "
                         "so this threshold would keep no box. Received: "
                         f"score_threshold={score_threshold}")
    if iou_threshold is not None and not 0.0 < iou_threshold <= 1.0:
        raise ValueError("--iou_threshold must be in (0, 1]: at 0 the NMS drops every box that "
                         f"touches a kept one. Received: iou_threshold={iou_threshold}")


def build_module(model, task, **serving_args):
    """The serving module for a model of `task`; `serving_args` (input_size, score_threshold,
    iou_threshold, max_detections) go to detectors, each keeping its own defaults for the ones
    not given. An argument the task's module does not take (a classifier has no thresholds) or
    a threshold that keeps no box is refused (ValueError)."""
    if task not in SERVING:
        raise ValueError(f"No serving signature for task {task!r}; known: "
                         f"{', '.join(sorted(SERVING))}")
    check_thresholds(serving_args.get("score_threshold"), serving_args.get("iou_threshold"))
    accepted = inspect.signature(SERVING[task]).parameters
    ignored = sorted(set(serving_args) - set(accepted))
    if ignored:
        raise ValueError(f"{', '.join('--' + n for n in ignored)} cannot be honoured: a {task} "
                         "model has no such setting (only face detectors do). Leave it out.")
    return SERVING[task](model, **serving_args)


@serves("mnist")
def _mnist_module(model):
    return MnistServing(model)


@serves("face")
def _face_module(model, input_size=640, score_threshold=0.5, iou_threshold=0.4,
                 max_detections=750):
    return FaceServing(model, input_size, score_threshold, iou_threshold, max_detections)


def save(module, export_dir):
    """Writes `module` as a SavedModel with its signatures and the custom gradients."""
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=True)
    tf.saved_model.save(module, str(export_dir), signatures=module.signatures(), options=options)
