"""Shared by the twin tests of deep networks: a float64 scope to build and run both twins in, and
a handgrad detector and its stock-Keras twin (same weights) run on the same batch, their outputs
and the gradients of eq. 61 compared by the caller.

Why float64: the two twins compute the same sums in different orders (hand-derived backward vs TF
autodiff, oneDNN vs Eigen kernels, chosen per CPU), and a deep network amplifies the rounding
difference. In float32 a batch-norm gamma near the input of the MobileNet detector was measured
2.2e-4 of its gradient's scale apart on a Xeon with AMX (issue 21), and 2.0e-4 on an AMD EPYC
with other random images than the test's (its own stay under 1e-4 there), so no float32
bound both holds on every x86-64 CPU and catches a wrong backward. In float64 the same
differences are ~1e-13, so a bound of 1e-9 holds with a margin of ~10^4 and still fails on any
real error of a derivation (those are >= 1e-3 of the scale).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

FLOAT64_BOUND = 1e-9  # of a gradient's (or output's) largest magnitude, see the docstring


@contextlib.contextmanager
def float64_policy():
    """Layers built inside create float64 weights and compute in float64; the previous global
    dtype policy comes back on exit, also after a failure."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def outputs_and_gradients(ours, twin, images, targets, image_hw):
    """([ours' outputs, twin's outputs], [ours' gradients, twin's gradients]), after checking
    that the outputs agree to FLOAT64_BOUND of their largest magnitude (build both twins and the
    images in float64_policy)."""
    grads, outs = [], []
    for model in (ours, twin):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = model.compute_detection_loss(targets, out, image_hw)["loss"]
        grads.append(tape.gradient(loss, model.trainable_variables))
        outs.append(out)
    for key in ("cls_logits", "box_deltas"):
        assert outs[0][key].dtype == tf.float64, f"{key}: {outs[0][key].dtype}, build in float64"
        want = outs[1][key].numpy()
        np.testing.assert_allclose(outs[0][key].numpy(), want, rtol=0,
                                   atol=FLOAT64_BOUND * np.abs(want).max(), err_msg=key)
    return outs, grads
