"""The MNIST task: model compilation, data and evaluation for the configs whose `task` is "mnist".

`handgrad-train` (`zoo/run/train.py`) is task-agnostic; it asks a task object for three things:
    build_model(config) -> compiled keras.Model
    datasets(config, data_dir) -> (train_ds, eval_ds)
    evaluate(model, config, data_dir, model_dir) -> {name: value}, headline metric last
Here the headline metric is `test_accuracy` on the official 10 000 test digits, and `evaluate`
also writes `model_dir/confusion_matrix.png`.

The loss is the seed's cross-entropy (eq. 56-57) on the softmax output (eq. 54), both with
hand-derived gradients; `loss="l2"` trains the seed's MLP with eq. 8 instead.
"""

from pathlib import Path

import keras
import numpy as np

from handgrad.losses import SparseCategoricalCrossentropy, SparseL2
from handgrad.pipelines import mnist as mnist_data
from handgrad.zoo.mnist.configs import MnistConfig
from handgrad.zoo.mnist.models import MODELS, NUM_CLASSES


def _steps_per_epoch(config):
    if config.training.steps_per_epoch:
        return int(config.training.steps_per_epoch)
    n = config.data.train_limit or mnist_data.NUM_EXAMPLES["train"]
    return max(1, n // config.training.batch_size)


def make_optimizer(config):
    """The optimizer with a warm-up + cosine learning-rate schedule over the whole run."""
    training = config.training
    steps = _steps_per_epoch(config) * training.epochs
    warmup = int(round(training.warmup_epochs * _steps_per_epoch(config)))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=training.learning_rate if warmup == 0 else 0.0,
        decay_steps=max(1, steps - warmup), alpha=training.final_lr_fraction,
        warmup_target=training.learning_rate if warmup else None, warmup_steps=warmup)
    name = training.optimizer.lower()
    if name == "adam":
        return keras.optimizers.Adam(schedule)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=training.weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    raise ValueError(f"training.optimizer must be 'adam', 'adamw' or 'sgd'. "
                     f"Received: {training.optimizer!r}")


def make_loss(loss):
    """The loss of a `LossConfig`."""
    if loss.name == "crossentropy":
        return SparseCategoricalCrossentropy(label_smoothing=loss.label_smoothing)
    if loss.name == "l2":
        return SparseL2()
    raise ValueError(f"loss.name must be 'crossentropy' or 'l2'. Received: {loss.name!r}")


def build_uncompiled(model_config):
    """The model of a model section; under a mixed policy its output head is rebuilt in float32."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in vars(model_config).items() if k not in ("name", "stock_layers")}
    if getattr(model_config, "stock_layers", False):
        kwargs.update(layers=keras.layers, name=f"{model_config.name}_stock")
    if model_config.name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}. "
                         f"Received: {model_config.name!r}")
    model = MODELS[model_config.name](**kwargs)
    if keras.config.dtype_policy().name.startswith("mixed"):
        model = float32_head(model)
    return model


def float32_head(model, names=("logits", "probabilities")):
    """A copy of a functional model whose layers `names` compute in float32.

    Under mixed_float16 a float16 softmax rounds small probabilities to 0, and the
    cross-entropy's log(0) is Inf; Keras' mixed-precision guide keeps the output layer in
    float32 for that reason. The logits Dense is float32 too (its inputs are cast up), so the
    last matmul's sum does not round in float16 either. The weights are copied (variables are
    float32 under a mixed policy), so the model starts where its float32 twin starts.
    """
    def clone(layer):
        config = layer.get_config()
        if layer.name in names:
            config["dtype"] = "float32"
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def confusion_matrix(labels, predictions, num_classes=NUM_CLASSES):
    """`cm[true, predicted]` counts, `(num_classes, num_classes)` int64."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def plot_confusion_matrix(cm, path, title):
    """Writes the confusion matrix as a PNG (counts in each cell, log colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(cm + 1, cmap="Blues", norm=matplotlib.colors.LogNorm())
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if i == j else "black")
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="count + 1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class MnistTask:
    """Builds, feeds and evaluates the MNIST digit readers (see the module docstring)."""

    config_class = MnistConfig

    def build_model(self, config):
        keras.utils.set_random_seed(config.training.seed)
        model = build_uncompiled(config.model)
        model.compile(optimizer=make_optimizer(config), loss=make_loss(config.loss),
                      metrics=["sparse_categorical_accuracy"])
        return model

    def datasets(self, config, data_dir):
        data = config.data
        train, test = mnist_data.make_datasets(
            data_dir, batch_size=config.training.batch_size, augment_shift=data.augment_shift,
            shuffle_seed=config.training.seed, shuffle=data.shuffle,
            train_limit=data.train_limit, test_limit=data.test_limit)
        return train, test

    def evaluate(self, model, config, data_dir, model_dir):
        """Accuracy on the test digits; writes `model_dir/confusion_matrix.png`."""
        arrays = mnist_data.load_arrays(data_dir)
        images, labels = arrays["test"]
        limit = config.data.test_limit
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = images[..., None].astype(np.float32) / 255.0  # (N, 28, 28, 1)
        probs = model.predict(x, batch_size=500, verbose=0)  # (N, 10)
        predicted = np.argmax(probs, axis=-1)
        cm = confusion_matrix(labels.astype(np.int64), predicted)
        correct = int(np.trace(cm))
        accuracy = correct / len(labels)
        if model_dir is not None:
            plot_confusion_matrix(cm, Path(model_dir) / "confusion_matrix.png",
                                  f"MNIST test: {correct} / {len(labels)} correct "
                                  f"({100 * accuracy:.2f} %)")
        return {"test_errors": len(labels) - correct, "test_accuracy": accuracy}
