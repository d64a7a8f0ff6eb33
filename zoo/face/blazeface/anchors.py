"""MediaPipe's SSD anchors (SsdAnchorsCalculator) for BlazeFace, written from its formula.

Source of the options: mediapipe/modules/face_detection/face_detection.pbtxt (shared part:
min_scale 0.1484375, max_scale 0.75, anchor offsets 0.5, aspect_ratios [1.0],
fixed_anchor_size true) and face_detection_{short,full}_range.pbtxt (input size, num_layers,
strides, interpolated_scale_aspect_ratio). The generator is the non-multiscale branch of
mediapipe/calculators/tflite/ssd_anchors_calculator.cc:

    scale(i) = (min + max) / 2                            if there is one stride
             = min + (max - min) i / (num_strides - 1)    otherwise
    Consecutive layers with the same stride are merged into one feature map; each merged layer i
    contributes, per cell, one anchor per aspect ratio a (scale(i)), plus, when
    interpolated_scale_aspect_ratio > 0, one anchor of that ratio with scale
    sqrt(scale(i) scale(i + 1)) (scale(num_strides) := 1).
    h = scale / sqrt(a), w = scale sqrt(a); fixed_anchor_size replaces both by 1.
    Feature map of stride s: ceil(H / s) x ceil(W / s); anchors in (y, x, anchor) order, centres
    ((x + offset_x) / fm_w, (y + offset_y) / fm_h), normalised to [0, 1].

Anchors are returned as `(A, 4)` float32 columns `[y_center, x_center, h, w]`, normalised by
the input size: the form MediaPipe's decoder consumes (postprocess.decode_detections).
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class SsdAnchorOptions:
    """The fields of mediapipe.SsdAnchorsCalculatorOptions that BlazeFace uses."""

    input_size_height: int
    input_size_width: int
    strides: tuple
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = False

    def __post_init__(self):
        if not self.strides or any(int(s) <= 0 for s in self.strides):
            raise ValueError(f"`strides` must be a non-empty sequence of positive ints. "
                             f"Received: strides={self.strides}")
        if self.input_size_height <= 0 or self.input_size_width <= 0:
            raise ValueError(f"The input size must be positive. Received: "
                             f"{self.input_size_height} x {self.input_size_width}")


def _scale(min_scale, max_scale, index, num_strides):
    if num_strides == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (num_strides - 1.0)


def _merged_layer_shapes(options, first, last):
    """(heights, widths) of the anchors per cell for the merged layers [first, last)."""
    n = len(options.strides)
    scales, ratios = [], []
    for layer in range(first, last):
        scale = _scale(options.min_scale, options.max_scale, layer, n)
        if layer == 0 and options.reduce_boxes_in_lowest_layer:
            ratios += [1.0, 2.0, 0.5]
            scales += [0.1, scale, scale]
            continue
        ratios += list(options.aspect_ratios)
        scales += [scale] * len(options.aspect_ratios)
        if options.interpolated_scale_aspect_ratio > 0.0:
            nxt = 1.0 if layer == n - 1 else _scale(options.min_scale, options.max_scale,
                                                     layer + 1, n)
            scales.append(math.sqrt(scale * nxt))
            ratios.append(options.interpolated_scale_aspect_ratio)
    heights = [s / math.sqrt(r) for s, r in zip(scales, ratios)]
    widths = [s * math.sqrt(r) for s, r in zip(scales, ratios)]
    return heights, widths


def ssd_anchors(options):
    """MediaPipe SSD anchors for `options` (SsdAnchorOptions).

    Returns: float32 `(A, 4)` `[y_center, x_center, h, w]`, normalised to the input size.
    """
    strides = [int(s) for s in options.strides]
    anchors = []
    first = 0
    while first < len(strides):
        last = first
        while last < len(strides) and strides[last] == strides[first]:
            last += 1
        heights, widths = _merged_layer_shapes(options, first, last)
        if options.fixed_anchor_size:
            heights, widths = [1.0] * len(heights), [1.0] * len(widths)
        fm_h = math.ceil(options.input_size_height / strides[first])
        fm_w = math.ceil(options.input_size_width / strides[first])
        y = (np.arange(fm_h) + options.anchor_offset_y) / fm_h  # (fm_h,)
        x = (np.arange(fm_w) + options.anchor_offset_x) / fm_w  # (fm_w,)
        k = len(heights)
        yc = np.broadcast_to(y[:, None, None], (fm_h, fm_w, k))  # (fm_h, fm_w, k)
        xc = np.broadcast_to(x[None, :, None], (fm_h, fm_w, k))
        hh = np.broadcast_to(np.asarray(heights)[None, None, :], (fm_h, fm_w, k))
        ww = np.broadcast_to(np.asarray(widths)[None, None, :], (fm_h, fm_w, k))
        anchors.append(np.stack([yc, xc, hh, ww], axis=-1).reshape(-1, 4))  # (fm_h fm_w k, 4)
        first = last
    return np.concatenate(anchors, axis=0).astype(np.float32)
