"""Configs of the MNIST digit readers (task "mnist"): nested sections, handed over whole.

    handgrad-train --config=mnist_cnn --model_dir=/tmp/mnist_cnn [--data_dir=.../mnist]
    handgrad-train --config=mlp --model_dir=/tmp/mlp --set=model.activation=tanh

Sections: model (-> `models.MODELS[model.name]`), loss, data (-> `pipelines.mnist`), training
(optimizer, schedule, `handgrad-train`'s loop).

`mnist_cnn` (the seed's fig. 10 model, tuned: Adam 3e-3 with warm-up + cosine, +-2 px shifts,
10 epochs of batch 128) trains in about 10 minutes on a 2-core CPU and reaches >= 99.4 % on the
10 000 MNIST test digits (the seed: 99.2 % after 4 hours; README has the measured figure).
`mlp` (784-512-512-10 ReLU, the seed's section 3.2 network) reaches about 98.5 %.

The rule of every field is `rules()` below (the forms of `zoo/run/config_rules.py`, which checks
them once a config is final; `tests/test_bad_input.py` checks that every field has one). The
named configs are `CONFIGS` at the end; `zoo/run/registry.py` finds this module by its `TASK`.
"""

import dataclasses

from handgrad.zoo import rules as shared_rules

TASK = "mnist"
TASK_CLASS = "handgrad.zoo.mnist.task:MnistTask"


@dataclasses.dataclass
class CnnModelConfig:
    """The fig. 10 CNN: filters of each conv block; kernel_size, strides of every convolution;
    bn_momentum of the running statistics (eq. 41-42; runs of a few hundred steps need ~0.9, or
    the initial running variance of 1 still dominates); stock_layers: the stock-Keras twin."""

    name: str = "mnist_cnn"
    filters: tuple = (32, 64, 128)
    kernel_size: int = 5
    strides: int = 2
    bn_momentum: float = 0.99
    stock_layers: bool = False


@dataclasses.dataclass
class MlpModelConfig:
    """The MLP: hidden widths and their activation (relu / sigmoid / tanh)."""

    name: str = "mlp"
    hidden: tuple = (512, 512)
    activation: str = "relu"


@dataclasses.dataclass
class LossConfig:
    """name: "crossentropy" (eq. 56-57) or "l2" (eq. 8 on the softmax output, seed section 3.2);
    label_smoothing of the cross-entropy (0 = the seed's plain loss)."""

    name: str = "crossentropy"
    label_smoothing: float = 0.0


@dataclasses.dataclass
class DataConfig:
    """augment_shift: random shift of each training digit by up to this many pixels (0 = off);
    shuffle: reshuffle every epoch (False: file order, for tests that compare two runs batch by
    batch); train_limit, test_limit: use only the first N digits (None = all)."""

    augment_shift: int = 0
    shuffle: bool = True
    train_limit: int | None = None
    test_limit: int | None = None


@dataclasses.dataclass
class TrainingConfig:
    """batch_size, epochs (passes over the 60 000 digits); steps_per_epoch: None for a full
    pass, or a number of batches; optimizer "adam", "adamw" or "sgd" (Nesterov momentum 0.9);
    learning_rate: peak, with linear warm-up over warmup_epochs, then cosine decay to
    learning_rate * final_lr_fraction; weight_decay (adamw); validate_every_epoch: evaluate on
    the test digits after each epoch (TensorBoard curves); seed: Keras' global seed;
    precise_bn_batches: batches over which `handgrad-train` recomputes the batch-norm statistics
    before the final evaluation and save (`zoo/run/precise_bn.py`; detectron2's PreciseBN hook
    uses 200), so that a short run's model is not judged on moving averages that lag behind its
    weights; 0 (or None): keep the moving averages."""

    batch_size: int = 50
    epochs: int = 4
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    validate_every_epoch: bool = True
    seed: int = 0
    precise_bn_batches: int | None = 200


@dataclasses.dataclass
class MnistConfig:
    """An MNIST run: model, loss, data and training sections."""

    task: str = "mnist"
    model: CnnModelConfig | MlpModelConfig = dataclasses.field(default_factory=CnnModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)


def from_flat(flat):
    """Nested section dicts from a handgrad 0.1 flat config dict (unknown keys, e.g. the old
    "model" builder string, are ignored)."""
    sections = {"model": (CnnModelConfig, MlpModelConfig), "loss": (LossConfig,),
                "data": (DataConfig,), "training": (TrainingConfig,)}
    nested = {"model": {}, "loss": {}, "data": {}, "training": {}}
    for key, value in flat.items():
        if key == "loss":
            nested["loss"]["name"] = value
            continue
        for section, classes in sections.items():
            if any(key in {f.name for f in dataclasses.fields(c)} for c in classes):
                nested[section][key] = value
    nested["model"].pop("name", None)
    return nested


def is_flat(saved):
    """Whether a saved config dict is a handgrad 0.1 flat one."""
    return "batch_size" in saved and "training" not in saved


def mnist_cnn():
    """The tuned fig. 10 config: `handgrad-train --config=mnist_cnn --model_dir=DIR`."""
    return MnistConfig(
        model=CnnModelConfig(),
        data=DataConfig(augment_shift=2),
        training=TrainingConfig(batch_size=128, epochs=10, optimizer="adam",
                                learning_rate=3e-3, warmup_epochs=0.5))


def mlp():
    """`handgrad-train --config=mlp --model_dir=DIR`."""
    return MnistConfig(
        model=MlpModelConfig(),
        training=TrainingConfig(batch_size=128, epochs=10, learning_rate=1e-3))


def rules():
    """The rule of every field of `MnistConfig` (forms: `zoo/run/config_rules.py`); rules of
    fields a model lacks (the MLP has no `model.filters`) are skipped."""
    from handgrad.zoo.mnist.models import MODELS

    return [
        ("model.name", ("one of", sorted(MODELS))), ("model.filters", "ints >= 1"),
        ("model.kernel_size", "int >= 1"), ("model.strides", "int >= 1"),
        ("model.bn_momentum", "number in [0, 1)"), ("model.stock_layers", "bool"),
        ("model.hidden", "ints >= 1"),
        ("model.activation", ("one of", ("relu", "sigmoid", "tanh"))),
        ("loss.name", ("one of", ("crossentropy", "l2"))),
        ("loss.label_smoothing", "number in [0, 1)"),
        ("data.augment_shift", "int in [0, 27]"), ("data.shuffle", "bool"),
        ("data.train_limit", "None or int >= 1"), ("data.test_limit", "None or int >= 1"),
        ("data.train_limit", (lambda v, c: v is None or v >= c.training.batch_size,
                              "None or at least one batch ({training.batch_size}): a smaller "
                              "limit trains 0 steps")),
        *shared_rules.training_rules(("adam", "adamw", "sgd")),
        ("training.warmup_epochs", "number >= 0"),
        ("training.final_lr_fraction", "number in [0, 1]"),
        ("training.precise_bn_batches", "None or int >= 0"),
    ]


CONFIGS = {config.__name__: config for config in (mnist_cnn, mlp)}
