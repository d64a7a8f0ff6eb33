"""Losses with hand-derived gradients: cross-entropy, L2 (eq. 8, 56-57), focal, smooth L1 and the
detection loss (eq. 59-61)."""
