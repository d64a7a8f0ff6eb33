"""Losses with hand-derived gradients: cross-entropy, L2 (eq. 8, 56-57), focal, smooth L1 and the
detection loss (eq. 59-61)."""

from handgrad.losses.classification import (  # noqa: F401
    L2,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    SparseL2,
    categorical_crossentropy_from_logits,
    categorical_crossentropy_from_probs,
    l2,
)
from handgrad.losses.detection import (  # noqa: F401
    SigmoidFocalLoss,
    SmoothL1Loss,
    detection_loss,
    sigmoid_focal_loss,
    smooth_l1,
)
