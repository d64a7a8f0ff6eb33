"""Task-agnostic training: `train_and_evaluate(config, model_dir)` and the `handgrad-train` command.

    handgrad-train --config=mnist_cnn --model_dir=/tmp/mnist_cnn [--data_dir=DIR] [--epochs=N]
        [--set=training.learning_rate=1e-3 ...] [--strategy=default|mirrored|multi_worker|tpu]
        [--mixed_precision] [--seed=N] [--verbose]

What a run leaves in `model_dir`:
    config.json                  the config actually trained (overrides applied; `model_dir.py`)
    backup/                      the latest training state (weights, optimizer, epoch), written
                                 atomically at the end of every epoch (`resilience.py`); a
                                 rerun of the same command resumes from it instead of starting
                                 over, also after the process was killed at any instant
    checkpoints/epoch_NNN.weights.h5   the weights after every epoch (also written atomically)
    logs/                        TensorBoard event files (train and validation curves)
    history.csv                  one line per epoch (loss, metrics, epoch_seconds); appended to
                                 on resume (an epoch interrupted after its line was written and
                                 before its checkpoint is redone and logged again)
    model.keras                  the final model (loads with keras.models.load_model after
                                 `import handgrad`); for a config with
                                 `training.precise_bn_batches` (MNIST), its batch-norm
                                 statistics are first recomputed over that many training
                                 batches (`precise_bn.py`), so that a short run is not
                                 evaluated with moving averages still near 0 and 1
and the task's metrics are printed last, one `name=value` per line (MNIST: `test_accuracy=...`),
before the task's artefacts (plots, result files) are moved into `model_dir` (`cli.py`: one that
cannot be written is a warning).

Nothing is written before the run is known to fit `model_dir` (`model_dir.check_can_train`): a
folder of other files, or a run of another config or of another model / optimizer, is refused
with a message naming both; config.json is (re)written only once the saved state has loaded.
A second command into a model_dir in use is refused in one line naming the first
(`locking.py`: an OS lock, released when its process ends, even by SIGKILL).

The task (`registry.get_task(config)`, declared by its family's configs module) provides
`build_model(config)`, `datasets(config, data_dir)` and
`evaluate(model, config, data_dir, model_dir)`; configs are dataclasses with a `task` and a
`training` section (batch_size, epochs, steps_per_epoch, validate_every_epoch, seed). A task
whose `datasets` leaves a `data_counts` (the face tasks: `zoo.face.data.DataCounts`, faces the
pipeline dropped) gets its `logs()` added to every epoch's logs, history.csv and TensorBoard
(`callbacks.LogCounts`).

Scale and resilience (see `distribute.py` and `resilience.py`):
    --strategy     the model, optimizer and metrics are built under the strategy's scope and
                   Keras' fit distributes the task's dataset (global batch =
                   config.training.batch_size)
    --mixed_precision   the mixed_float16 policy; compile wraps the optimizer in Keras'
                   LossScaleOptimizer (dynamic loss scaling); models keep their output head in
                   float32
    --seed         seeds everything and enables TF op determinism: bit-identical CPU runs
A NaN or Inf loss stops training with `NonFiniteLossError` (exit status 1 from the command),
naming the step and the last finite loss; the last good checkpoint is kept. The command prints
every error (unknown config, bad field values, missing or corrupt data files, a full disk) as one
`handgrad-train: error: ...` line and exits with status 1 (`--verbose`: the traceback); Ctrl-C
prints `handgrad-train: interrupted; rerun the same command to resume from epoch N` (status 130),
and the rerun logs `resuming from epoch N of M (<state file>)`.
"""

import logging
from pathlib import Path

import keras
import tensorflow as tf

import handgrad.losses  # noqa: F401  (registers the losses for loading model.keras)
from handgrad.zoo.run import cli, distribute, locking, precise_bn, registry, resilience
from handgrad.zoo.run import model_dir as model_dir_lib
from handgrad.zoo.run.callbacks import EpochTimer, LogCounts


def train_and_evaluate(config, model_dir, data_dir=None, *, overrides=None, verbose="auto",
                       strategy="default", mixed_precision=False, seed=None,
                       sync_batch_norm=False):
    """Trains `config` into `model_dir` (resuming if a backup is there), then evaluates it.

    Args:
        config: a config name (`registry.configs()`) or a config dataclass.
        model_dir: output folder (created); see the module docstring for its contents. Under a
            multi-worker strategy, workers other than the chief write `model_dir/worker_<i>`.
        data_dir: passed to the task's `datasets` / `evaluate` (None: the task's default source).
        verbose: Keras' fit verbosity ("auto": a progress bar).
        overrides: dotted config fields to replace, e.g. {"training.epochs": 2}.
        strategy: a name from `distribute.STRATEGIES` or a `tf.distribute.Strategy`.
        mixed_precision: train under the mixed_float16 policy (restored afterwards).
        seed: if not None, replaces `config.training.seed` and turns on op determinism.
        sync_batch_norm: BatchNormalization statistics over all replicas (`synchronized=True`)
            instead of each replica's own batch.
    Returns: the task's metrics dict (also printed, one `name=value` per line, last lines).
    Raises: `resilience.NonFiniteLossError` when the loss becomes NaN or Inf.
    """
    name = config if isinstance(config, str) else None
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["training.seed"] = seed
    config = registry.resolve_config(config, overrides)
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    if seed is not None:
        resilience.enable_determinism(seed)
    model_dir = distribute.worker_model_dir(strategy, model_dir)
    record = model_dir_lib.config_record(
        name, config, strategy=type(strategy).__name__, replicas=strategy.num_replicas_in_sync,
        mixed_precision=bool(mixed_precision), sync_batch_norm=bool(sync_batch_norm))
    with locking.hold(model_dir, "handgrad-train", flag="--model_dir"):  # one run per folder
        return _train_in(model_dir, record, config, data_dir, verbose, strategy,
                         mixed_precision, sync_batch_norm)


def _train_in(model_dir, record, config, data_dir, verbose, strategy, mixed_precision,
              sync_batch_norm):
    model_dir_lib.check_can_train(model_dir, record, config)  # before anything is written
    task = registry.get_task(config)
    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():  # variables, optimizer slots and metrics become mirrored
            model = task.build_model(config)
            if mixed_precision and not isinstance(model.optimizer,
                                                  keras.optimizers.LossScaleOptimizer):
                # compile wraps it when the model's policy is mixed; a task whose model keeps
                # a float32 policy still gets dynamic loss scaling for its float16 layers.
                model.optimizer = keras.optimizers.LossScaleOptimizer(model.optimizer)
        if sync_batch_norm:
            distribute.synchronize_batch_norm(model)
        record["run"]["optimizer"] = type(model.optimizer).__name__
        return _fit_and_evaluate(task, model, config, model_dir, data_dir, verbose, strategy,
                                 record)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _fit_and_evaluate(task, model, config, model_dir, data_dir, verbose, strategy, record):
    train_ds, eval_ds = task.datasets(config, data_dir)
    bn_batches = train_ds  # one pass at most: a limited set is averaged whole
    if config.training.steps_per_epoch:
        # Keras keeps one iterator across epochs when steps_per_epoch is given: a finite dataset
        # runs out and fit stops early with only a warning, so epochs are batches, not passes.
        train_ds = train_ds.repeat()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.prepare_multi_worker_fit(model, strategy, train_ds)
    model_dir.mkdir(parents=True, exist_ok=True)
    guard = resilience.NonFiniteGuard()
    # First: restore the newest intact state; config.json is written only once it has loaded.
    callbacks = [
        resilience.Resume(model_dir / "backup", model_dir / "checkpoints",
                          then=lambda: model_dir_lib.write_config(model_dir, record)),
        guard,
        EpochTimer(),
        *([LogCounts(task.data_counts.logs)] if hasattr(task, "data_counts") else []),
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(model_dir / "logs")),
    ]
    # Last: the latest state (weights + optimizer + epoch) for resuming, written atomically
    # after the epoch's logs, so a logged epoch may be redone (history.csv then repeats it) but
    # a checkpointed epoch is never missing from the logs. Kept after the run so that a rerun
    # with more epochs continues rather than restarting.
    callbacks.append(resilience.AtomicBackup(model_dir / "backup", model_dir / "checkpoints",
                                             guard=guard))
    training = config.training
    with strategy.scope():
        model.fit(train_ds, epochs=training.epochs, steps_per_epoch=training.steps_per_epoch,
                  validation_data=eval_ds if training.validate_every_epoch else None,
                  callbacks=callbacks,
                  verbose=verbose, shuffle=False)  # the task's dataset shuffles itself
    if guard.tripped:
        raise guard.error(model_dir / "backup")
    bn_batch_count = getattr(training, "precise_bn_batches", None)
    if bn_batch_count:
        count = precise_bn.update_bn_stats(model, bn_batches, bn_batch_count)
        logging.info("batch-norm statistics recomputed over %d training images (precise BN)",
                     count)
    resilience.save_model_atomically(model, model_dir / "model.keras")
    return cli.evaluate_and_report(task, model, config, data_dir, model_dir)


def _define_flags():
    from absl import flags

    flags.DEFINE_string("config", None, f"Config name: {', '.join(sorted(registry.configs()))}.")
    flags.DEFINE_string("model_dir", None, "Output folder (checkpoints, logs, model.keras).")
    flags.DEFINE_string("data_dir", None, "Dataset folder (MNIST: the IDX files); default: TFDS.")
    flags.DEFINE_integer("epochs", None, "Override config.training.epochs.")
    flags.DEFINE_integer("batch_size", None, "Override config.training.batch_size.")
    flags.DEFINE_integer("steps", None, "Override config.training.steps_per_epoch (batches per "
                         "epoch).")
    flags.DEFINE_float("learning_rate", None, "Override config.training.learning_rate.")
    flags.DEFINE_multi_string("set", [], "Override any config field by its dotted name: "
                              "--set=anchors.min_size=10.")
    flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                      "tf.distribute strategy (multi_worker reads TF_CONFIG).")
    flags.DEFINE_boolean("mixed_precision", False, "Train under the mixed_float16 policy.")
    flags.DEFINE_boolean("sync_batch_norm", False, "BatchNormalization statistics over all "
                         "replicas (synchronized=True) instead of per replica.")
    flags.DEFINE_integer("seed", None, "Override config.training.seed and enable TF op determinism "
                         "(bit-identical CPU runs).")
    cli.define_verbose()
    flags.mark_flags_as_required(["config", "model_dir"])
    return flags.FLAGS


def main(argv):
    from absl import flags

    f = flags.FLAGS
    # A diverged run is reported like bad input: one line naming the step, exit status 1.
    backup = Path(f.model_dir) / "backup"
    with cli.one_line_errors("handgrad-train", f.verbose,
                             (resilience.NonFiniteLossError, ValueError, OSError),
                             interrupted=lambda: resilience.resume_hint(backup),
                             memory_setting="--batch_size (training.batch_size)"):
        cli.no_extra_arguments(argv)
        overrides = {"training.epochs": f.epochs, "training.batch_size": f.batch_size,
                     "training.steps_per_epoch": f.steps,
                     "training.learning_rate": f.learning_rate, **cli.parse_sets(f.set)}
        train_and_evaluate(f.config, f.model_dir, f.data_dir, overrides=overrides, verbose=1,
                           strategy=f.strategy, mixed_precision=f.mixed_precision, seed=f.seed,
                           sync_batch_norm=f.sync_batch_norm)


def run():
    """Console entry point `handgrad-train`."""
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
