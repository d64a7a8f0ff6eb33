"""BlazeFace training targets: faces matched to anchors, encoded as MediaPipe's decoding inverts.

Encoding (the inverse of postprocess.decode_detections), per anchor a = [y_c, x_c, h, w]
(normalised, the fixed 1 x 1 anchors of anchors.py) and box_scale s (= S, the input side), for a
face of centre (y, x), size (h, w) and keypoints (y_k, x_k), all in input pixels:
    r0 = (x / S - a_xc) s / a_w      r1 = (y / S - a_yc) s / a_h
    r2 = w / S s / a_w               r3 = h / S s / a_h
    r[4 + 2k] = (x_k / S - a_xc) s / a_w      r[5 + 2k] = (y_k / S - a_yc) s / a_h
With MediaPipe's numbers (s = S, a_w = a_h = 1) these are pixel offsets from the anchor centre
and pixel sizes: the raw regressors are in input pixels.

Matching. MediaPipe's anchors are 1 x 1 (only the centres matter), so IoU matching has nothing to
work with; the nominal SSD sizes (the same anchors with fixed_anchor_size false: 19 and 29 px on
the short-range 16 x 16 grid, 45 .. 111 px on its 8 x 8 grid; 86 px for all full-range anchors)
choose which anchors of a cell answer for a face, and the centres choose the cells:
    candidate(a, f)  centre of a within the central part of face f: |a_yx - c_f| <= max(r hw_f,
                     stride_a / 2) per axis (r = center_radius), and a's nominal size within a
                     factor `scale_tolerance` of the nominal size best fitting sqrt(h_f w_f)
                     (in log scale)
    positive (1)     candidate for some face; the face is the one whose centre is nearest
                     (in units of its own size)
    ignored (-1)     not positive, centre inside some face box (a neighbouring cell or slot that
                     the pretrained network may well fire on: neither rewarded nor punished)
    negative (0)     otherwise
The half-stride floor gives every face at least the anchor nearest its centre on the grid of its
best-fitting size (unless a closer face takes it).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from handgrad.zoo.face.blazeface.anchors import _merged_layer_shapes, ssd_anchors
from handgrad.zoo.face.blazeface.variants import NUM_COORDS, NUM_KEYPOINTS, get_variant


def anchor_strides(options):
    """`(A,)` float32 stride (input pixels between cell centres) of every anchor of `options`,
    in ssd_anchors order."""
    strides = [int(s) for s in options.strides]
    out, first = [], 0
    while first < len(strides):
        last = first
        while last < len(strides) and strides[last] == strides[first]:
            last += 1
        per_cell = len(_merged_layer_shapes(options, first, last)[0])
        cells = (math.ceil(options.input_size_height / strides[first])
                 * math.ceil(options.input_size_width / strides[first]))
        out += [strides[first]] * cells * per_cell
        first = last
    return np.asarray(out, np.float32)


def nominal_sizes(options):
    """`(A,)` float32 nominal anchor side in input pixels: the SSD scale of each anchor (the
    anchors without fixed_anchor_size), times the input height."""
    free = dataclasses.replace(options, fixed_anchor_size=False)
    return (ssd_anchors(free)[:, 2] * options.input_size_height).astype(np.float32)


class BlazeFaceTargets:
    """Matches faces to a variant's anchors and encodes the regression targets (module docstring).

    Args: variant; center_radius r; scale_tolerance (>= 1).
    """

    def __init__(self, variant, center_radius=0.25, scale_tolerance=1.5):
        if center_radius <= 0 or scale_tolerance < 1:
            raise ValueError(f"Expected center_radius > 0 and scale_tolerance >= 1. Received: "
                             f"center_radius={center_radius}, scale_tolerance={scale_tolerance}")
        self.spec = get_variant(variant)
        options = self.spec.anchor_options
        self.anchors = ssd_anchors(options)  # (A, 4) normalised [y_c, x_c, h, w]
        self.strides = anchor_strides(options)  # (A,)
        self.sizes = nominal_sizes(options)  # (A,)
        self.center_radius = float(center_radius)
        self.log_tolerance = math.log(float(scale_tolerance))

    def match(self, boxes):
        """boxes `(M, 4)` px -> labels `(A,)` int32 (1 / 0 / -1), matched face `(A,)` int32."""
        size = float(self.spec.input_size)
        centres = tf.constant(self.anchors[:, :2] * size)  # (A, 2) px
        lo, hi = boxes[:, None, 0:2], boxes[:, None, 2:4]  # (M, 1, 2)
        centre, hw = (lo + hi) / 2.0, tf.maximum(hi - lo, 1e-3)  # (M, 1, 2)
        dist = tf.abs(centres[None] - centre)  # (M, A, 2)
        radius = tf.maximum(self.center_radius * hw, self.strides[None, :, None] / 2.0)
        central = tf.reduce_all(dist <= radius, axis=-1)  # (M, A)
        face_size = tf.sqrt(hw[..., 0] * hw[..., 1])  # (M, 1)
        log_ratio = tf.abs(tf.math.log(face_size / self.sizes[None]))  # (M, A)
        best = tf.reduce_min(log_ratio, axis=1, keepdims=True)  # (M, 1)
        candidate = central & (log_ratio <= best + self.log_tolerance + 1e-6)  # (M, A)
        cost = tf.where(candidate, tf.reduce_sum(tf.square(dist / hw), -1), np.inf)  # (M, A)
        positive = tf.reduce_any(candidate, axis=0)  # (A,)
        inside = tf.reduce_any(tf.reduce_all((centres[None] >= lo) & (centres[None] <= hi), -1),
                               axis=0)  # (A,)
        labels = tf.where(positive, 1, tf.where(inside, -1, 0))
        matched = tf.where(positive, tf.argmin(
            tf.concat([cost, tf.fill([1, len(self.anchors)], np.inf)], 0), axis=0,
            output_type=tf.int32), 0)  # (A,): the extra row keeps argmin defined with no faces
        return labels, matched

    def encode_points(self, points):
        """`(..., A, 2)` (y, x) input pixels -> raw `(..., A, 2)` (x, y) regressor values."""
        a_yx, a_hw = self.anchors[:, 0:2], self.anchors[:, 2:4]  # (A, 2)
        raw = (points / self.spec.input_size - a_yx) * self.spec.box_scale / a_hw
        return tf.reverse(raw, axis=[-1])

    def encode(self, image, boxes, num_boxes, keypoints=None):
        """Targets of one image (`target_fn` of the tf.data pipeline).

        Args: image `(S, S, 3)` (unused; S is the variant's); boxes `(M, 4)` `[ymin, xmin, ymax,
            xmax]` px, padded, `num_boxes` valid; keypoints `(M, 6, 2)` `(y, x)` px or None
            (unknown, as in WIDER: their loss is masked).
        Returns: "cls_targets" `(A,)` float32 1 / 0 / -1; "box_targets" `(A, 4)` raw
            `[x, y, w, h]` (zeros where not positive); "keypoint_targets" `(A, 12)`;
            "keypoint_weights" `(A,)` 1 where positive with known keypoints.
        """
        del image
        n = tf.cast(num_boxes, tf.int32)
        boxes = tf.convert_to_tensor(boxes, tf.float32)[:n]  # (M', 4)
        labels, matched = self.match(boxes)
        positive = labels == 1  # (A,)
        face = tf.gather(tf.concat([boxes, tf.zeros([1, 4])], 0), matched)  # (A, 4)
        centre = self.encode_points((face[:, 0:2] + face[:, 2:4]) / 2.0)  # (A, 2)
        extent = tf.reverse(face[:, 2:4] - face[:, 0:2], axis=[-1])  # (A, 2) (w, h)
        extent = extent / self.spec.input_size * self.spec.box_scale / self.anchors[:, 2:4][
            :, ::-1]
        box_targets = tf.where(positive[:, None], tf.concat([centre, extent], -1), 0.0)
        count = len(self.anchors)
        if keypoints is None:
            kp_targets = tf.zeros([count, NUM_COORDS - 4])
            kp_weights = tf.zeros([count])
        else:
            kps = tf.convert_to_tensor(keypoints, tf.float32)[:n]  # (M', 6, 2)
            kps = tf.gather(tf.concat([kps, tf.zeros([1, NUM_KEYPOINTS, 2])], 0), matched)
            raw = self.encode_points(tf.transpose(kps, [1, 0, 2]))  # (6, A, 2)
            kp_targets = tf.reshape(tf.transpose(raw, [1, 0, 2]), [count, -1])  # (A, 12)
            kp_targets = tf.where(positive[:, None], kp_targets, 0.0)
            kp_weights = tf.cast(positive, tf.float32)
        return {"cls_targets": tf.cast(labels, tf.float32), "box_targets": box_targets,
                "keypoint_targets": kp_targets, "keypoint_weights": kp_weights}
