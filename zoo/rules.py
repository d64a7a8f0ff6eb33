"""Rules every family's configs share, in the forms `zoo/run/config_rules.py` reads: the fields
of a training section that the MNIST and face families both have."""


def alternatives(names):
    """('a', 'b', 'c') -> "'a', 'b' or 'c'"."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def training_rules(optimizers, min_epochs=1):
    """The rules of batch_size, epochs (>= `min_epochs`), steps_per_epoch, optimizer (one of
    `optimizers`), learning_rate, weight_decay, validate_every_epoch and seed."""
    return [
        ("training.batch_size", "int >= 1"), ("training.epochs", f"int >= {min_epochs}"),
        ("training.steps_per_epoch", "None or int >= 1"),
        ("training.optimizer", (lambda v, c: isinstance(v, str) and v.lower() in optimizers,
                                alternatives(optimizers))),
        ("training.learning_rate", "number > 0"), ("training.weight_decay", "number >= 0"),
        ("training.validate_every_epoch", "bool"), ("training.seed", "int >= 0"),
    ]
