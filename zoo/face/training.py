"""What the face detector families share in training: the optimizer of a `TrainingConfig`, and
the gradient step of their `train_step`s (RetinaNet and BlazeFace).

As in Keras' own `train_step`: the optimizer sums the replicas' gradients, so each replica's loss
is divided by their count; a LossScaleOptimizer (mixed precision) scales the loss up inside the
tape and the gradients back down in `apply_gradients`.
"""

import keras
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


def make_optimizer(training):
    """SGD (momentum 0.9) or Adam(W) for a `TrainingConfig`, piecewise-constant learning rate
    (x lr_decay at each of lr_boundaries)."""
    values = [training.learning_rate * training.lr_decay**i
              for i in range(len(training.lr_boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b) for b in training.lr_boundaries], values) if training.lr_boundaries else values[0]
    common = {"learning_rate": schedule, "global_clipnorm": training.clipnorm}
    name = training.optimizer.lower()
    if name == "sgd":
        return keras.optimizers.SGD(momentum=0.9, weight_decay=training.weight_decay or None,
                                    **common)
    if name == "adam":
        if training.weight_decay:
            return keras.optimizers.AdamW(weight_decay=training.weight_decay, **common)
        return keras.optimizers.Adam(**common)
    raise ValueError(f"training.optimizer must be 'sgd' or 'adam'. "
                     f"Received: {training.optimizer!r}")
