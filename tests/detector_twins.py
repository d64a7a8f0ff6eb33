"""Shared by the detector twin tests: a handgrad detector and its stock-Keras twin (same weights)
run on the same batch; their outputs and the gradients of eq. 61 are compared by the caller."""

import numpy as np
import tensorflow as tf


def outputs_and_gradients(ours, twin, images, targets, image_hw):
    """([ours' outputs, twin's outputs], [ours' gradients, twin's gradients]), after checking
    that the outputs agree."""
    grads, outs = [], []
    for model in (ours, twin):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = model.compute_detection_loss(targets, out, image_hw)["loss"]
        grads.append(tape.gradient(loss, model.trainable_variables))
        outs.append(out)
    for key in ("cls_logits", "box_deltas"):
        np.testing.assert_allclose(outs[0][key].numpy(), outs[1][key].numpy(), atol=1e-4)
    return outs, grads
