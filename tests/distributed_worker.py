"""Subprocess side of tests/test_distribute.py (logical CPU devices must exist before TF starts).

    python tests/distributed_worker.py mirrored OUT_DIR MNIST_DIR
        splits the CPU into 2 logical devices, then
        - BN: handgrad BatchNormalization(synchronized=True) on 2 replicas vs the plain layer on
          the global batch: forward, dX, dgamma, dbeta -> OUT_DIR/bn.npz
        - MNIST: train_and_evaluate of a small fig. 10 model, MirroredStrategy over the 2 CPUs
          (synchronized BN) -> OUT_DIR/mirrored, and the default strategy -> OUT_DIR/single
    python tests/distributed_worker.py multi_worker OUT_DIR MNIST_DIR
        one worker of a MultiWorkerMirroredStrategy run (TF_CONFIG set by the test) ->
        OUT_DIR/run (chief) or OUT_DIR/run/worker_<i>
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from handgrad.zoo.run import distribute  # noqa: E402

# A small fig. 10 model; batch 32 = 2 replicas x 16; 4 one-step "epochs" so that history.csv
# holds the loss of every step.
MNIST = {"model.filters": (4, 8, 8), "model.bn_momentum": 0.9, "training.batch_size": 32,
         "training.epochs": 4, "training.steps_per_epoch": 1, "data.train_limit": 320,
         "data.test_limit": 200, "training.validate_every_epoch": False, "data.augment_shift": 0,
         "training.warmup_epochs": 0.0, "training.learning_rate": 1e-2, "data.shuffle": False}


def batch_norm_case(out_dir, strategy):
    from handgrad.layers import BatchNormalization

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (8, 3, 3, 5)).astype(np.float32)  # global batch of 8
    dout = rng.normal(size=x.shape).astype(np.float32)
    gamma, beta = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)

    def grads(layer, x, dout):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * dout)
        dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
        return y, dx, dgamma, dbeta

    single = BatchNormalization()
    single.build(x.shape)
    single.gamma.assign(gamma)
    single.beta.assign(beta)
    reference = [t.numpy() for t in grads(single, x, dout)]

    with strategy.scope():
        synced = BatchNormalization(synchronized=True)
        synced.build((4, 3, 3, 5))
        synced.gamma.assign(gamma)
        synced.beta.assign(beta)

    def replica_fn():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        xs = tf.gather(tf.constant(x), tf.range(4) + 4 * i)  # replica i: examples 4i..4i+3
        ds = tf.gather(tf.constant(dout), tf.range(4) + 4 * i)
        return grads(synced, xs, ds)

    per_replica = strategy.run(tf.function(replica_fn))
    with strategy.scope():  # the default: each replica normalises with its own 4 examples
        local = BatchNormalization()
        local.build((4, 3, 3, 5))
    y_local = strategy.run(tf.function(lambda: local(tf.gather(
        tf.constant(x), tf.range(4) + 4 * tf.distribute.get_replica_context()
        .replica_id_in_sync_group), training=True)))
    halves = BatchNormalization()
    y_halves = np.concatenate([halves(x[:4], training=True), halves(x[4:], training=True)])
    parts = [strategy.experimental_local_results(t) for t in per_replica]
    y, dx = (np.concatenate([p.numpy() for p in parts[k]]) for k in (0, 1))
    dgamma, dbeta = (sum(p.numpy() for p in parts[k]) for k in (2, 3))  # the optimizer's sum
    np.savez(os.path.join(out_dir, "bn.npz"), y=y, dx=dx, dgamma=dgamma, dbeta=dbeta,
             y_ref=reference[0], dx_ref=reference[1], dgamma_ref=reference[2],
             dbeta_ref=reference[3],
             y_local=np.concatenate([t.numpy() for t in strategy.experimental_local_results(
                 y_local)]), y_local_ref=y_halves, moving_mean=synced.moving_mean.numpy(),
             moving_mean_ref=single.moving_mean.numpy())


def mirrored(out_dir, mnist_dir):
    distribute.configure_cpu_devices(2)
    # One strategy object for the whole process: two strategies over the same devices would
    # reuse the same collective instance keys (TF caches them per key), and clash.
    strategy = distribute.make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    batch_norm_case(out_dir, strategy)
    from handgrad.zoo.run.train import train_and_evaluate

    train_and_evaluate("mnist_cnn", os.path.join(out_dir, "mirrored"), mnist_dir, verbose=0,
                       strategy=strategy, sync_batch_norm=True, overrides=MNIST)
    train_and_evaluate("mnist_cnn", os.path.join(out_dir, "single"), mnist_dir, verbose=0,
                       overrides=MNIST)


def multi_worker(out_dir, mnist_dir):
    from handgrad.zoo.run.train import train_and_evaluate

    train_and_evaluate("mnist_cnn", os.path.join(out_dir, "run"), mnist_dir, verbose=0,
                       strategy="multi_worker", sync_batch_norm=True, overrides=MNIST)


if __name__ == "__main__":
    mode, out, data = sys.argv[1:4]
    {"mirrored": mirrored, "multi_worker": multi_worker}[mode](out, data)
