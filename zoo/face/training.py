"""The gradient step the face detectors' `train_step`s share (RetinaNet and BlazeFace).

As in Keras' own `train_step`: the optimizer sums the replicas' gradients, so each replica's loss
is divided by their count; a LossScaleOptimizer (mixed precision) scales the loss up inside the
tape and the gradients back down in `apply_gradients`.
"""

import tensorflow as tf


def scaled_loss(model, total):
    """The loss to differentiate (call inside the tape): per replica, loss-scaled."""
    total = total / tf.distribute.get_strategy().num_replicas_in_sync
    return model.optimizer.scale_loss(total)


def apply_gradients(model, tape, total):
    """One optimizer step on `model`'s trainable variables from `scaled_loss`'s result."""
    variables = model.trainable_variables
    grads = tape.gradient(total, variables)
    model.optimizer.apply_gradients(zip(grads, variables, strict=True))
