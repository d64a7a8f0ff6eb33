"""The face-detection task: model, data and WIDER FACE evaluation for configs with task "face".

`zoo/train.py` is task-agnostic and asks a task object for
    build_model(config) -> compiled keras.Model          (`zoo.retinanet.FaceDetector`)
    datasets(config, data_dir) -> (train_ds, eval_ds)    (`pipelines.wider_face.make_dataset`
                                                          with the anchor targets as target_fn)
    evaluate(model, config, data_dir, model_dir) -> {"ap_easy", "ap_medium", "ap_hard"}
`evaluate` runs the in-graph post-processing on the validation split, maps the boxes back to
original-image pixels, scores them with the official protocol (`zoo.wider_eval`), writes the
WIDER result files to `model_dir/wider_results/` and the PR curves to `model_dir/pr_curves.png`.

Data: `dataset="synthetic"` generates the synthetic WIDER-format set (`pipelines.synthetic_faces`)
into `data_dir` (default: `<tmp>/handgrad_synthetic_faces_<seed>_<train>_<val>`) when it is not
there yet, so a fresh machine trains with no download. `dataset="wider"` reads the official
layout under `data_dir`, or TFDS' prepared `wider_face` when `data_dir` is None.
"""

import dataclasses
import logging
import math
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from handgrad.pipelines import synthetic_faces, wider_face
from handgrad.pipelines import wider_format as wider_results
from handgrad.zoo import imagenet_weights
from handgrad.zoo.face import wider_eval
from handgrad.zoo.retinanet import FaceDetector, make_target_fn

_MODEL_FIELDS = (
    "backbone_depth", "base_filters", "fpn_filters", "head_filters", "num_cls_convs",
    "num_box_convs", "min_anchor_size", "max_anchor_size", "scales_per_level", "aspect_ratios",
    "variances", "positive_iou", "negative_iou", "focal_alpha", "focal_gamma", "smooth_l1_delta",
    "box_loss_weight", "loss_normalization", "prior_probability", "score_threshold",
    "nms_iou_threshold", "pre_nms_top_k", "max_detections", "freeze_backbone_bn", "bn_momentum")


def model_kwargs(config):
    """The `FaceDetector` arguments held by a `FaceConfig`."""
    kwargs = {name: getattr(config, name) for name in _MODEL_FIELDS}
    kwargs["aspect_ratios"] = tuple(kwargs["aspect_ratios"])
    kwargs["variances"] = tuple(kwargs["variances"])
    return kwargs


def make_optimizer(config):
    """SGD (momentum 0.9) or Adam(W), piecewise-constant learning rate (x lr_decay per boundary)."""
    values = [config.learning_rate * config.lr_decay**i
              for i in range(len(config.lr_boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b) for b in config.lr_boundaries], values) if config.lr_boundaries else values[0]
    common = {"learning_rate": schedule, "global_clipnorm": config.clipnorm}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=0.9, weight_decay=config.weight_decay or None,
                                    **common)
    if config.optimizer == "adam":
        if config.weight_decay:
            return keras.optimizers.AdamW(weight_decay=config.weight_decay, **common)
        return keras.optimizers.Adam(**common)
    raise ValueError(f"optimizer must be 'sgd' or 'adam'. Received: {config.optimizer!r}")


def resolve_data(config, data_dir):
    """(data_dir, source) for the pipeline; generates the synthetic set when it is absent."""
    if config.dataset == "wider":
        return (None, "tfds") if data_dir is None else (Path(data_dir), "files")
    if config.dataset != "synthetic":
        raise ValueError(f"dataset must be 'synthetic' or 'wider'. Received: {config.dataset!r}")
    if data_dir is None:
        data_dir = Path(tempfile.gettempdir()) / (
            f"handgrad_synthetic_faces_{config.data_seed}_{config.num_train}_{config.num_val}")
    data_dir = Path(data_dir)
    marker = data_dir / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    if not marker.is_file():
        logging.info("Generating the synthetic face set into %s", data_dir)
        synthetic_faces.generate(data_dir, num_train=config.num_train, num_val=config.num_val,
                                 seed=config.data_seed)
    return data_dir, "files"


class FaceTask:
    """Builds, feeds and evaluates the face detector (see the module docstring)."""

    def build_model(self, config):
        keras.utils.set_random_seed(config.seed)
        model = FaceDetector(**model_kwargs(config))
        if config.imagenet_weights:
            imagenet_weights.copy_resnet50_weights(model.network, config.imagenet_weights)
        model.compile(optimizer=make_optimizer(config))
        return model

    def target_fn(self, config):
        return make_target_fn(config.min_anchor_size, config.max_anchor_size,
                              config.scales_per_level, config.aspect_ratios, config.variances,
                              config.positive_iou, config.negative_iou)

    def datasets(self, config, data_dir):
        data_dir, source = resolve_data(config, data_dir)
        common = dict(batch_size=config.batch_size, image_sizes=tuple(config.image_sizes),
                      target_fn=self.target_fn(config), max_boxes=config.max_boxes,
                      source=source)
        train = wider_face.make_dataset(data_dir, "train", flip=config.flip, training=True,
                                        seed=config.seed, **common)
        if config.steps_per_epoch:
            train = train.repeat()  # epochs are steps_per_epoch batches, not passes
        val = wider_face.make_dataset(data_dir, "val", flip=False, training=False,
                                      eval_size=config.eval_size, **common)
        # the evaluation labels carry strings (image paths) that the loss does not use
        val = val.map(lambda x, y: (x, {k: y[k] for k in ("cls_targets", "box_targets")}))
        if config.val_limit:
            val = val.take(math.ceil(config.val_limit / config.batch_size))
        return train, val

    def predict_wider(self, model, config, data_dir):
        """Detections on the validation split: {"event/name": (boxes (N, 4), scores (N,))},
        boxes `[ymin, xmin, ymax, xmax]` in original-image pixels."""
        data_dir, source = resolve_data(config, data_dir)
        ds = wider_face.make_dataset(data_dir, "val", batch_size=config.batch_size,
                                     image_sizes=tuple(config.image_sizes), flip=False,
                                     training=False, eval_size=config.eval_size,
                                     max_boxes=config.max_boxes, source=source)
        if config.val_limit:
            ds = ds.take(math.ceil(config.val_limit / config.batch_size))
        detect = tf.function(model.detect, reduce_retracing=True)
        predictions = {wider_results.image_key(path): (boxes, scores) for path, boxes, scores
                       in dataset_predictions(detect, ds)}
        return predictions, data_dir

    def evaluate(self, model, config, data_dir, model_dir):
        """WIDER FACE AP (easy / medium / hard) on the validation split (official protocol)."""
        if config.dataset == "wider" and data_dir is None:
            raise ValueError("WIDER FACE AP needs the ground-truth .mat files: pass --data_dir "
                             "with the official layout (eval_tools/ground_truth).")
        predictions, data_dir = self.predict_wider(model, config, data_dir)
        images = wider_eval.load_ground_truth(str(wider_eval.find_ground_truth_dir(data_dir)))
        images = [entry for entry in images if entry[0] in predictions]
        aps, curves = wider_eval.evaluate_images(predictions, images, return_curves=True)
        if model_dir is not None:
            for key, (boxes, scores) in predictions.items():
                wider_results.write_results(Path(model_dir) / "wider_results", key + ".jpg",
                                            boxes, scores)
            wider_eval.plot_pr_curves(curves, Path(model_dir) / "pr_curves.png")
        print("AP " + " ".join(f"{s}={aps[s]:.4f}" for s in wider_eval.SETTINGS), flush=True)
        return {"val_images": len(images), **{f"ap_{s}": float(aps[s])
                                              for s in wider_eval.SETTINGS}}


def small_test_config(**changes):
    """A tiny config for tests and smoke runs (ResNet18 of width 8, 128 px, a few steps)."""
    from handgrad.zoo.face_configs import face_small_synthetic

    return dataclasses.replace(face_small_synthetic(), base_filters=8, fpn_filters=16,
                               head_filters=16, image_sizes=(128,), eval_size=128, batch_size=2,
                               epochs=1, steps_per_epoch=2, num_train=4, num_val=2, **changes)
def dataset_predictions(predict_fn, dataset):
    """Runs a detector over an evaluation dataset; yields `(image_path, boxes, scores)` per image.

    Args:
        predict_fn: `f(images (B, S, S, 3)) -> (boxes (B, K, 4), scores (B, K), num (B,))` with
            boxes `[ymin, xmin, ymax, xmax]` in model-input pixels (the output layout of
            `tf.image.combined_non_max_suppression` minus its classes), or a dict with keys
            "boxes", "scores" and "num_detections" / "valid_detections".
        dataset: `pipelines.wider_face.make_dataset(..., training=False)`; its labels carry
            "image_path", "scale" and "original_size".

    Boxes come back in original pixels (`box / scale`), clipped to the original image, float64.
    """
    for images, labels in dataset:
        out = predict_fn(images)
        if isinstance(out, dict):
            num = out.get("num_detections", out.get("valid_detections"))
            out = (out["boxes"], out["scores"], num)
        boxes, scores, num = (np.asarray(v) for v in out[:3])
        scale = np.asarray(labels["scale"], np.float64)  # (B, 2) [sy, sx]
        size = np.asarray(labels["original_size"], np.float64)  # (B, 2) [H, W]
        for b, path in enumerate(np.asarray(labels["image_path"])):
            k = int(num[b])
            box = boxes[b, :k].astype(np.float64) / np.tile(scale[b], 2)  # (k, 4) original px
            box = np.clip(box, 0.0, np.tile(size[b], 2))
            yield (path.decode() if isinstance(path, bytes) else path, box,
                   scores[b, :k].astype(np.float64))


def write_dataset_predictions(predict_fn, dataset, out_dir, *, min_score=None):
    """Writes one result file per image of `dataset_predictions(predict_fn, dataset)`.

    Args: as `dataset_predictions`; out_dir: the prediction folder; min_score: optional, drop
        detections scoring below it.
    Returns: the number of images written.
    """
    written = 0
    for path, box, score in dataset_predictions(predict_fn, dataset):
        if min_score is not None:
            box, score = box[score >= min_score], score[score >= min_score]
        write_results(out_dir, path, box, score)
        written += 1
    return written
