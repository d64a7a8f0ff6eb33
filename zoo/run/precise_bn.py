"""Precise batch norm: the moving statistics recomputed as true averages over training batches.

A BatchNormalization layer's moving mean and variance are exponential averages (eq. 41-42) with
momentum 0.99: they forget a batch after ~100 steps but need ~460 steps to forget their initial
values (0 and 1) to 1 %. A run of 180 steps therefore ends with training accuracy 0.96 and test
accuracy 0.08 (chance): the model is evaluated with statistics that are mostly their initial
values. `update_bn_stats` replaces them, before the final evaluation and saving, with the mean and
variance of each layer's input over a number of training batches, as detectron2's PreciseBN hook
and fvcore's `update_bn_stats` do (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

How: the model runs forward in training mode (each layer sees its input normalised by the batch
statistics of the layers before it, as during training) with every BatchNormalization layer's
momentum set to 0, so that after each batch its moving statistics are that batch's mean and
(biased) variance; these are accumulated per layer, weighted by the batch's number of examples,
and the population statistics of all the batches together are assigned at the end:
    mean = sum_b n_b mean_b / N,    variance = sum_b n_b (var_b + mean_b^2) / N - mean^2
Trainable weights are not touched (no gradient is taken); layers that are not trainable (frozen
batch norm of a pretrained backbone) keep their statistics; momenta are restored afterwards.
The batches are the first `num_batches` of `dataset`, so the result is as deterministic as the
dataset's order.
"""

import itertools

import keras
import numpy as np
import tensorflow as tf


def batch_norm_layers(model):
    """Every trainable BatchNormalization layer of `model`, nested models included, in order."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def update_bn_stats(model, dataset, num_batches=200):
    """Sets every trainable BatchNormalization layer's moving mean / variance to the statistics
    of its input over the first `num_batches` batches of `dataset` (see the module docstring).

    Args:
        model: a Keras model (functional, sequential or subclassed).
        dataset: an iterable of batches: `x` or `(x, ...)`; a finite one shorter than
            `num_batches` is used whole.
        num_batches: the most batches to average over (> 0).
    Returns: the number of examples the statistics were computed over (0 when the model has no
        trainable BatchNormalization layer: nothing is run).
    """
    if not isinstance(num_batches, int) or num_batches <= 0:
        raise ValueError(f"num_batches must be a positive int. Received: {num_batches!r}")
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64) for _ in range(2)] for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when traced below: moving statistics := batch statistics
        forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        for batch in itertools.islice(iter(dataset), num_batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n = int(tf.nest.flatten(x)[0].shape[0])
            forward(x)
            for layer, (sum_mean, sum_square) in zip(layers, sums, strict=True):
                mean = np.asarray(layer.moving_mean, np.float64)  # (C,) this batch's mean
                sum_mean += n * mean
                sum_square += n * (np.asarray(layer.moving_variance, np.float64) + mean ** 2)
            count += n
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    if count == 0:
        raise ValueError("update_bn_stats: the dataset gave no batch.")
    for layer, (sum_mean, sum_square) in zip(layers, sums, strict=True):
        mean = sum_mean / count
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(
            np.maximum(sum_square / count - mean ** 2, 0.0).astype(layer.moving_variance.dtype))
    return count
