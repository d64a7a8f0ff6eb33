"""Task-agnostic training: `train_and_evaluate(config, model_dir)` and the `handgrad-train` command.

    handgrad-train --config=mnist_cnn --model_dir=/tmp/mnist_cnn [--data_dir=DIR] [--epochs=N]
        [--strategy=default|mirrored|multi_worker|tpu] [--mixed_precision] [--seed=N]

What a run leaves in `model_dir`:
    config.json                  the config actually trained (overrides applied)
    backup/                      the latest training state (weights, optimizer, epoch), written
                                 atomically at the end of every epoch (`zoo/resilience.py`); a
                                 rerun of the same command resumes from it instead of starting
                                 over, also after the process was killed at any instant
    checkpoints/epoch_NNN.weights.h5   the weights after every epoch (also written atomically)
    logs/                        TensorBoard event files (train and validation curves)
    history.csv                  one line per epoch (loss, metrics, epoch_seconds); appended to
                                 on resume (an epoch interrupted after its line was written and
                                 before its checkpoint is redone and logged again)
    model.keras                  the final model (loads with keras.models.load_model after
                                 `import handgrad`)
and the task's metrics are printed last, one `name=value` per line (MNIST: `test_accuracy=...`).

The task (`zoo/configs.py: TASKS[config.task]`) provides `build_model(config)`,
`datasets(config, data_dir)` and `evaluate(model, config, data_dir, model_dir)`; configs are
dataclasses with at least `task` and `epochs` (and optionally `steps_per_epoch`,
`validate_every_epoch`).

Scale and resilience (see `zoo/distribute.py` and `zoo/resilience.py`):
    --strategy     the model, optimizer and metrics are built under the strategy's scope and
                   Keras' fit distributes the task's dataset (global batch = config.batch_size)
    --mixed_precision   the mixed_float16 policy; compile wraps the optimizer in Keras'
                   LossScaleOptimizer (dynamic loss scaling); models keep their output head in
                   float32
    --seed         seeds everything and enables TF op determinism: bit-identical CPU runs
A NaN or Inf loss stops training with `NonFiniteLossError` (exit status 1 from the command),
naming the step and the last finite loss; the last good checkpoint is kept. The command prints
bad-input errors (ValueError, FileNotFoundError: unknown config, bad field values, missing or
corrupt data files) as one `handgrad-train: error: ...` line and exits with status 1.
"""

import dataclasses
import json
import typing

import keras
import tensorflow as tf

import handgrad.losses  # noqa: F401  (registers the losses for loading model.keras)
from handgrad.zoo import configs, distribute, resilience
from handgrad.zoo.callbacks import EpochTimer


def _coerce(value, default, field_type, name):
    """Converts a command-line string to the type of a config field."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    if value.lower() == "none":
        return None
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--{name} expects true/false. Received: {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(default, tuple | list):
        return tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v)
                     for v in value.split(","))
    if isinstance(default, int) or "int" in str(field_type):
        return int(value)
    if isinstance(default, float) or "float" in str(field_type):
        return float(value)
    return value


def apply_overrides(config, **overrides):
    """A copy of `config` with the given fields replaced (None values are ignored).

    String values (from the command line) are converted to the field's type; an unknown field
    raises ValueError listing the known ones.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in fields:
            raise ValueError(f"zoo/train.py: config {type(config).__name__} has no field "
                             f"{name!r}. Known fields: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(type(config))
        changes[name] = _coerce(value, getattr(config, name), hints.get(name), name)
    return dataclasses.replace(config, **changes)


def resolve_config(config, **overrides):
    """A config object from a name or a config, with overrides applied."""
    if isinstance(config, str):
        config = configs.get_config(config)
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"zoo/train.py: config must be a config name or a dataclass. "
                        f"Received: {type(config).__name__}")
    return apply_overrides(config, **overrides)


def format_metrics(metrics):
    """`name=value` lines, in the task's order (the headline metric last)."""
    return "\n".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items())


def train_and_evaluate(config, model_dir, data_dir=None, *, verbose="auto", strategy="default",
                       mixed_precision=False, seed=None, sync_batch_norm=False, **overrides):
    """Trains `config` into `model_dir` (resuming if a backup is there), then evaluates it.

    Args:
        config: a config name from `zoo/configs.py` or a config dataclass.
        model_dir: output folder (created); see the module docstring for its contents. Under a
            multi-worker strategy, workers other than the chief write `model_dir/worker_<i>`.
        data_dir: passed to the task's `datasets` / `evaluate` (None: the task's default source).
        verbose: Keras' fit verbosity ("auto": a progress bar).
        strategy: a name from `zoo.distribute.STRATEGIES` or a `tf.distribute.Strategy`.
        mixed_precision: train under the mixed_float16 policy (restored afterwards).
        seed: if not None, replaces `config.seed` and turns on op determinism.
        sync_batch_norm: BatchNormalization statistics over all replicas (`synchronized=True`)
            instead of each replica's own batch.
        **overrides: config fields to replace, e.g. `epochs=2`, `batch_size=64`.
    Returns: the task's metrics dict (also printed, one `name=value` per line, last lines).
    Raises: `zoo.resilience.NonFiniteLossError` when the loss becomes NaN or Inf.
    """
    name = config if isinstance(config, str) else None
    if seed is not None:
        overrides["seed"] = seed
    config = resolve_config(config, **overrides)
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    if seed is not None:
        resilience.enable_determinism(seed)
    model_dir = distribute.worker_model_dir(strategy, model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(
        {"config_name": name, "class": type(config).__name__, **dataclasses.asdict(config),
         "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
         "mixed_precision": bool(mixed_precision), "sync_batch_norm": bool(sync_batch_norm)},
        indent=2, default=str))
    task = configs.get_task(config)
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
        _record(model_dir, optimizer=type(model.optimizer).__name__)
        return _fit_and_evaluate(task, model, config, model_dir, data_dir, verbose, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _record(model_dir, **values):
    """Adds `values` to `model_dir/config.json` (what the run actually used)."""
    path = model_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2,
                               default=str))


def _fit_and_evaluate(task, model, config, model_dir, data_dir, verbose, strategy):
    train_ds, eval_ds = task.datasets(config, data_dir)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.prepare_multi_worker_fit(model, strategy, train_ds)
    guard = resilience.NonFiniteGuard()
    callbacks = [
        guard,
        EpochTimer(),
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(model_dir / "logs")),
    ]
    # Last: the latest state (weights + optimizer + epoch) for resuming, written atomically
    # after the epoch's logs, so a logged epoch may be redone (history.csv then repeats it) but
    # a checkpointed epoch is never missing from the logs. Kept after the run so that a rerun
    # with more epochs continues rather than restarting.
    callbacks.append(resilience.AtomicBackup(model_dir / "backup", model_dir / "checkpoints",
                                             guard=guard))
    validate = getattr(config, "validate_every_epoch", True)
    with strategy.scope():
        model.fit(train_ds, epochs=config.epochs,
                  steps_per_epoch=getattr(config, "steps_per_epoch", None),
                  validation_data=eval_ds if validate else None, callbacks=callbacks,
                  verbose=verbose, shuffle=False)  # the task's dataset shuffles itself
    if guard.tripped:
        raise guard.error(model_dir / "backup")
    model.save(model_dir / "model.keras")
    metrics = task.evaluate(model, config, data_dir, model_dir)
    print(format_metrics(metrics), flush=True)
    return metrics


def _define_flags():
    from absl import flags

    flags.DEFINE_string("config", None, f"Config name: {', '.join(sorted(configs.CONFIGS))}.")
    flags.DEFINE_string("model_dir", None, "Output folder (checkpoints, logs, model.keras).")
    flags.DEFINE_string("data_dir", None, "Dataset folder (MNIST: the IDX files); default: TFDS.")
    flags.DEFINE_integer("epochs", None, "Override config.epochs.")
    flags.DEFINE_integer("batch_size", None, "Override config.batch_size.")
    flags.DEFINE_integer("steps", None, "Override config.steps_per_epoch (batches per epoch).")
    flags.DEFINE_float("learning_rate", None, "Override config.learning_rate.")
    flags.DEFINE_multi_string("set", [], "Override any config field: --set=field=value.")
    flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                      "tf.distribute strategy (multi_worker reads TF_CONFIG).")
    flags.DEFINE_boolean("mixed_precision", False, "Train under the mixed_float16 policy.")
    flags.DEFINE_boolean("sync_batch_norm", False, "BatchNormalization statistics over all "
                         "replicas (synchronized=True) instead of per replica.")
    flags.DEFINE_integer("seed", None, "Override config.seed and enable TF op determinism "
                         "(bit-identical CPU runs).")
    flags.mark_flags_as_required(["config", "model_dir"])
    return flags.FLAGS


def parse_sets(items):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects field=value. Received: --set={item!r}")
        out[name.strip()] = value
    return out


def main(argv):
    from absl import flags

    f = flags.FLAGS
    try:
        if len(argv) > 1:
            raise ValueError(f"Unexpected arguments: {argv[1:]}")
        overrides = {"epochs": f.epochs, "batch_size": f.batch_size, "steps_per_epoch": f.steps,
                     "learning_rate": f.learning_rate, **parse_sets(f.set)}
        train_and_evaluate(f.config, f.model_dir, f.data_dir, verbose=1, strategy=f.strategy,
                           mixed_precision=f.mixed_precision, seed=f.seed,
                           sync_batch_norm=f.sync_batch_norm, **overrides)
    except (resilience.NonFiniteLossError, ValueError, FileNotFoundError) as e:
        # Bad input (config name, field values, data files) and a diverged run: one line naming
        # the problem and exit status 1, no traceback.
        raise SystemExit(f"handgrad-train: error: {type(e).__name__}: {e}") from None


def run():
    """Console entry point `handgrad-train`."""
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
