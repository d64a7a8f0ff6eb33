"""WIDER FACE AP of a face detector: detections on the validation split mapped back to original
pixels, scored with the official protocol (`wider_eval`), written as result files + PR curves.

`DataConfig.eval_mode`: "original" runs each image at its own size (padded to the largest
stride, batch 1), "resize" at the keep-aspect `eval_size`. At original size `eval_scales` and
`eval_flip` add test-time augmentation (as RetinaFace / SSH): the detections of every scale and
of the mirror images are mapped back to original pixels, pooled, and reduced by one NMS
(`TestTimeAugmentation`).
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from handgrad.pipelines import wider_format
from handgrad.zoo.face import data as face_data
from handgrad.zoo.face import wider_eval


def dataset_predictions(predict_fn, dataset):
    """Runs a detector over an evaluation dataset; yields `(image_path, boxes, scores)` per image.

    Args:
        predict_fn: `f(images (B, S, S, 3)) -> (boxes (B, K, 4), scores (B, K), num (B,))` with
            boxes `[ymin, xmin, ymax, xmax]` in model-input pixels (the output layout of
            `tf.image.combined_non_max_suppression` minus its classes), or a dict with keys
            "boxes", "scores" and "num_detections" / "valid_detections". A predict_fn with
            `takes_original_size = True` is called `f(images, original_size (B, 2))`.
        dataset: `pipelines.wider_face.make_dataset(..., training=False)`; its labels carry
            "image_path", "scale" and "original_size".

    Boxes come back in original pixels (`box / scale`), clipped to the original image, float64.
    """
    takes_size = getattr(predict_fn, "takes_original_size", False)
    for images, labels in dataset:
        out = (predict_fn(images, labels["original_size"]) if takes_size
               else predict_fn(images))
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
        wider_format.write_results(out_dir, path, box, score)
        written += 1
    return written


class TestTimeAugmentation:
    """`f(images (1, H', W', 3), original_size (1, 2)) -> (boxes, scores, num)` in original
    pixels: the image (its top-left H x W, without the padding) at each of `scales`, and
    mirrored with `flip`, each padded to the detector's `input_multiple` and detected; boxes
    mapped back (unflipped, divided by the scale of each axis), pooled, one NMS at the model's
    `nms_iou_threshold`, at most its `max_detections` kept. Scale 1 without flip is the plain
    original-resolution detection."""

    takes_original_size = True

    def __init__(self, model, scales=(1.0,), flip=False):
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive factors. Received: scales={scales}")
        self.model, self.scales, self.flip = model, tuple(float(s) for s in scales), bool(flip)
        self.detect = tf.function(model.detect, reduce_retracing=True)

    def _variant(self, image, scale, flip):
        """One scale / flip of image (H, W, 3): (boxes (k, 4), scores (k,)) in its pixels."""
        height, width = image.shape[0], image.shape[1]
        new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
        if (new_h, new_w) != (height, width):
            image = tf.clip_by_value(tf.image.resize(image, (new_h, new_w)), 0.0, 1.0)
        if flip:
            image = tf.image.flip_left_right(image)
        m = self.model.input_multiple
        padded = tf.image.pad_to_bounding_box(image, 0, 0, -(-new_h // m) * m, -(-new_w // m) * m)
        out = self.detect(padded[tf.newaxis])
        k = int(out["num_detections"][0])
        boxes = out["boxes"][0, :k].numpy().astype(np.float64)
        if flip:
            boxes[:, [1, 3]] = new_w - boxes[:, [3, 1]]
        boxes /= np.array([new_h / height, new_w / width] * 2)
        return boxes, out["scores"][0, :k].numpy().astype(np.float64)

    def __call__(self, images, original_size):
        if images.shape[0] != 1:
            raise ValueError(f"TestTimeAugmentation runs batch 1. Received: {images.shape[0]}")
        height, width = (int(v) for v in np.asarray(original_size)[0])
        image = images[0, :height, :width]
        parts = [self._variant(image, s, f) for s in self.scales
                 for f in ((False, True) if self.flip else (False,))]
        boxes = np.concatenate([b for b, _ in parts])
        scores = np.concatenate([s for _, s in parts])
        if len(parts) > 1:
            post = self.model.sections["postprocess"]
            keep = tf.image.non_max_suppression(boxes.astype(np.float32),
                                                scores.astype(np.float32),
                                                post.max_detections,
                                                iou_threshold=post.nms_iou_threshold).numpy()
            boxes, scores = boxes[keep], scores[keep]
        return boxes[None], scores[None], np.array([len(scores)])


def predictor(model, data):
    """The predict_fn of a `DataConfig`: test-time augmentation at original size, else the
    model's batched `detect`."""
    if data.eval_mode == "original":
        return TestTimeAugmentation(model, data.eval_scales, data.eval_flip)
    return tf.function(model.detect, reduce_retracing=True)


def predict_wider(model, config, data_dir):
    """Detections on the validation split: ({"event/name": (boxes (N, 4), scores (N,))}, the
    resolved data_dir), boxes `[ymin, xmin, ymax, xmax]` in original-image pixels."""
    ds = face_data.eval_dataset(config.data, config.training.batch_size, data_dir,
                                multiple=model.input_multiple)
    detect = predictor(model, config.data)
    predictions = {wider_format.image_key(path): (boxes, scores)
                   for path, boxes, scores in dataset_predictions(detect, ds)}
    return predictions, face_data.resolve(config.data, data_dir, generate=False)[0]


def evaluate(model, config, data_dir, model_dir):
    """WIDER FACE AP (easy / medium / hard) on the validation split (official protocol).

    Writes `model_dir/wider_results/` and `model_dir/pr_curves.png` when model_dir is given.
    Returns {"val_images", "ap_easy", "ap_medium", "ap_hard"}.
    """
    if config.data.dataset == "wider" and data_dir is None:
        raise ValueError("WIDER FACE AP needs the ground-truth .mat files: pass --data_dir "
                         "with the official layout (eval_tools/ground_truth).")
    predictions, data_dir = predict_wider(model, config, data_dir)
    images = wider_eval.load_ground_truth(str(wider_eval.find_ground_truth_dir(data_dir)))
    images = [entry for entry in images if entry[0] in predictions]
    aps, curves = wider_eval.evaluate_images(predictions, images, return_curves=True)
    print("AP " + " ".join(f"{s}={aps[s]:.4f}" for s in wider_eval.SETTINGS), flush=True)
    if model_dir is not None:
        for key, (boxes, scores) in predictions.items():
            wider_format.write_results(Path(model_dir) / "wider_results", key + ".jpg",
                                       boxes, scores)
        wider_eval.plot_pr_curves(curves, Path(model_dir) / "pr_curves.png")
    return {"val_images": len(images), **{f"ap_{s}": float(aps[s])
                                          for s in wider_eval.SETTINGS}}
