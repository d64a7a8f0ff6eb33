"""WIDER FACE AP of a face detector: detections on the validation split mapped back to original
pixels, scored with the official protocol (`wider_eval`), written as result files + PR curves."""

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
        wider_format.write_results(out_dir, path, box, score)
        written += 1
    return written


def predict_wider(model, config, data_dir):
    """Detections on the validation split: ({"event/name": (boxes (N, 4), scores (N,))}, the
    resolved data_dir), boxes `[ymin, xmin, ymax, xmax]` in original-image pixels."""
    ds = face_data.eval_dataset(config.data, config.training.batch_size, data_dir)
    detect = tf.function(model.detect, reduce_retracing=True)
    predictions = {wider_format.image_key(path): (boxes, scores)
                   for path, boxes, scores in dataset_predictions(detect, ds)}
    return predictions, face_data.resolve(config.data, data_dir)[0]


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
