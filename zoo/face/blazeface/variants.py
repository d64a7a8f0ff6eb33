"""The two MediaPipe BlazeFace variants: input size, anchors, decoding and thresholds.

Every number is MediaPipe's (mediapipe/modules/face_detection/face_detection.pbtxt and
face_detection_{short,full}_range.pbtxt, fetched from github:google-ai-edge/mediapipe):

| option                          | short_range         | full_range   |
|---------------------------------|---------------------|--------------|
| input (tensor_height x width)   | 128 x 128           | 192 x 192    |
| SSD strides (num_layers)        | 8, 16, 16, 16 (4)   | 4 (1)        |
| interpolated_scale_aspect_ratio | 1.0                 | 0.0          |
| anchors per cell, total         | 2 @ 16x16, 6 @ 8x8: 896 | 1 @ 48x48: 2304 |
| x/y/w/h_scale (raw is in input pixels) | 128          | 192          |
| min_score_thresh                | 0.5                 | 0.6          |

Shared: min_scale 0.1484375, max_scale 0.75, anchor offsets 0.5, aspect_ratios [1.0],
fixed_anchor_size true (so every anchor is 1 x 1 and only its centre matters); 16 coordinates per
anchor in XYWH order (`reverse_output_order: true`): box centre x, y, width, height, then 6
keypoints (x, y); sigmoid scores with the logit clipped to [-100, 100]; weighted NMS with IoU
threshold 0.3 (NonMaxSuppressionCalculator, algorithm WEIGHTED). The images go in as RGB in
[-1, 1] (ImageToTensorCalculator output_tensor_float_range), letterboxed into the square input
with zero (black) borders (keep_aspect_ratio, BORDER_ZERO).

The six keypoints, in order (MediaPipe FaceKeypoint): right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion (the subject's right/left).
"""

import dataclasses

from handgrad.zoo.face.blazeface.anchors import SsdAnchorOptions

NUM_COORDS = 16
NUM_KEYPOINTS = 6
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                  "left_ear_tragion")


@dataclasses.dataclass(frozen=True)
class BlazeFaceVariant:
    """One BlazeFace model: its .tflite file, input size, anchors and post-processing defaults."""

    name: str
    tflite_file: str
    input_size: int
    anchor_options: SsdAnchorOptions
    score_threshold: float
    iou_threshold: float = 0.3
    score_clipping: float = 100.0

    @property
    def box_scale(self):
        """x_scale = y_scale = w_scale = h_scale: the raw outputs are in input pixels."""
        return float(self.input_size)


VARIANTS = {
    "short_range": BlazeFaceVariant(
        name="short_range", tflite_file="face_detection_short_range.tflite", input_size=128,
        anchor_options=SsdAnchorOptions(128, 128, strides=(8, 16, 16, 16),
                                        interpolated_scale_aspect_ratio=1.0,
                                        fixed_anchor_size=True),
        score_threshold=0.5),
    "full_range": BlazeFaceVariant(
        name="full_range", tflite_file="face_detection_full_range.tflite", input_size=192,
        anchor_options=SsdAnchorOptions(192, 192, strides=(4,),
                                        interpolated_scale_aspect_ratio=0.0,
                                        fixed_anchor_size=True),
        score_threshold=0.6),
}


def get_variant(variant):
    """The BlazeFaceVariant named `variant` (or `variant` itself when it is one)."""
    if isinstance(variant, BlazeFaceVariant):
        return variant
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(VARIANTS)}. Received: "
                         f"variant={variant!r}")
    return VARIANTS[variant]
