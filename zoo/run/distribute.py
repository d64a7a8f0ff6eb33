"""tf.distribute strategies for `handgrad-train --strategy=default|mirrored|multi_worker|tpu`.

How training uses them (`train.py`): the task builds and compiles its model inside
`strategy.scope()`, so the variables, the optimizer slots and the metrics are created as
distributed (mirrored) variables. Keras 3's `model.fit` (TensorFlow backend) then records the
strategy of the scope the model was built in and itself calls
`strategy.experimental_distribute_dataset(train_ds)` on the task's batched tf.data pipeline: each
global batch is split into `num_replicas_in_sync` per-replica batches, each replica runs the
train step on its part, and the gradients are all-reduced (summed) before one optimizer update
on every replica. The loss of each replica is divided by the number of replicas
(`keras.losses.loss.scale_loss_for_distribution`), so the summed gradient equals the gradient of
the mean loss over the global batch: the batch size in the configs is the global batch size.

BatchNormalization under a strategy: by default (`synchronized=False`, as Keras) each replica
normalises with the statistics of its own per-replica batch, and the moving averages are
updated with those per-replica statistics (mirrored variables: the update of the first replica
is kept, Keras' ON_READ/ONLY_FIRST_REPLICA semantics). `synchronized=True` all-reduces the
moments across replicas (see `layers/batch_norm.py`), which makes N replicas of batch B compute
exactly what one device computes on the global batch N B.

Multi-worker: `multi_worker` reads the cluster from the TF_CONFIG environment variable, e.g. for
worker 0 of two on one machine
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]},
                "task": {"type": "worker", "index": 0}}'
Every worker runs the same command; worker 0 (the chief) writes `model_dir`, the others write
`model_dir/worker_<i>/` (see `worker_model_dir`) so that two processes never write one file.
The dataset is auto-sharded by tf.data (each worker reads its share of every global batch).
The weights are identical on all workers, and so are the logged loss and metrics (averaged over
all replicas; see `prepare_multi_worker_fit` for the two Keras 3.15 bugs worked around).
"""

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name="default", tpu=None, devices=None):
    """Returns the `tf.distribute.Strategy` named by `--strategy`.

    Args:
        name: "default" (no distribution: `tf.distribute.get_strategy()`), "mirrored" (all local
            GPUs, or the CPU when there is none; synchronous all-reduce), "multi_worker"
            (`MultiWorkerMirroredStrategy`, cluster from TF_CONFIG) or "tpu" (`TPUStrategy`).
        tpu: for "tpu", the TPU name or grpc address ("" or None: the local TPU VM).
        devices: for "mirrored", the device names to mirror on (None: all local GPUs, else
            the CPU), e.g. `["/cpu:0", "/cpu:1"]` after `configure_cpu_devices(2)`.
    Raises: ValueError for an unknown name or a multi_worker run without a valid TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}. "
                         f"Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("--strategy=multi_worker needs the TF_CONFIG "
                         "environment variable (cluster and task, see the module docstring). "
                         "Received: TF_CONFIG unset")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError("TF_CONFIG must be JSON with cluster.worker (a list "
                         f"of host:port) and task.index. Received: TF_CONFIG={raw!r}") from e
    if not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task.index must be in "
                         f"[0, {len(workers)}). Received: index={index}")


def worker_index(strategy):
    """This process's worker index: 0 unless a multi-worker strategy says otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 0
    return int(resolver.task_id or 0)


def worker_model_dir(strategy, model_dir):
    """`model_dir` for the chief (worker 0), `model_dir/worker_<i>` for the other workers."""
    index = worker_index(strategy)
    return Path(model_dir) if index == 0 else Path(model_dir) / f"worker_{index}"


def synchronize_batch_norm(model):
    """Sets `synchronized=True` on every BatchNormalization layer of `model` (handgrad or Keras).

    Call it before the first training step: the layers read the flag when `fit` traces the
    train step. Returns the number of layers changed.
    """
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


def prepare_multi_worker_fit(model, strategy, train_ds):
    """Works around two Keras 3.15 bugs of `fit` under MultiWorkerMirroredStrategy.

    1. Before the first step, Keras' TF trainer (`_maybe_symbolic_build`) takes one distributed
    batch and calls `strategy.reduce("MEAN", (x, y))` on it only to learn the input shapes;
    MultiWorkerMirroredStrategy's collective reduce accepts no nested structure, so `fit` fails
    with "Attempt to convert a value (PerReplica:...) to a Tensor". Here the model, loss,
    metrics and optimizer are built from the (non-distributed) dataset's element spec instead,
    and the model forgets the strategy it recorded at construction so that `fit` skips that
    step; `fit` must then run inside `strategy.scope()`, where Keras finds the strategy again
    (`tf.distribute.get_strategy()`) and distributes the dataset as usual.
    2. The train step's logs cannot be reduced: see `_multi_worker_train_function`.
    """
    x_spec, y_spec = train_ds.element_spec[:2]
    as_input = lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name)  # noqa: E731
    with strategy.scope():
        model._symbolic_build(data_batch=(tf.nest.map_structure(as_input, x_spec),
                                          tf.nest.map_structure(as_input, y_spec)))
    model._distribute_strategy = None
    model.train_function = _multi_worker_train_function(model, strategy)


def _multi_worker_train_function(model, strategy):
    """`model.train_function` for MultiWorkerMirroredStrategy.

    Keras 3.15 reduces the step's logs with `strategy.reduce("MEAN", scalar, axis=0)`, which
    fails on scalars under this strategy (tensorflow/tensorflow#72388: "Invalid reduction
    dimension 0 for input with 0 dimensions"). This runs the same `model.train_step` on every
    replica and averages each log over all replicas of all workers (`axis=None`): with equal
    shards, the mean of the per-replica means is the global-batch mean.
    """

    @tf.function(reduce_retracing=True)
    def one_step(iterator):
        outputs = strategy.run(model.train_step, args=(iterator.get_next(),))
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), outputs)

    def function(iterator):
        try:
            return one_step(iterator)
        except tf.errors.OutOfRangeError:
            raise StopIteration from None  # the end of an epoch without steps_per_epoch

    return function


def configure_cpu_devices(count):
    """Splits the first CPU into `count` logical devices (tests of multi-replica code on a CPU).

    Must run before TensorFlow initialises its devices (before the first op); raises
    RuntimeError otherwise, naming that constraint.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:
        raise RuntimeError("logical CPU devices must be configured before "
                           f"TensorFlow runs its first op ({e}).") from e
    return [d.name for d in tf.config.list_logical_devices("CPU")]
