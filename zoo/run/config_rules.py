"""What every config field accepts, checked once a config is final: by `registry.resolve_config`
(after all overrides, so rules across fields see the final values) and `registry.from_saved`
(a config read from config.json). A bad value raises ValueError naming the dotted field, what it
accepts and what was received, before anything is built or written:

    training.learning_rate must be a number > 0. Received: training.learning_rate=-0.001

A rule is read as written: "int >= 1", "number > 0", "number in [0, 1)", "int in [0, 27]",
"bool", "str", "ints >= 1" / "numbers > 0" (one or more), "4 numbers > 0", "None or <rule>"; a
bound may name another field ("number >= anchors.min_size"). ("one of", choices) lists the
accepted values; (predicate(value, config), "text") is any other rule, its text may quote fields
as {section.field}. A field may have several rules; rules of fields a config lacks (the MLP has
no `model.filters`) are skipped. Tasks without a table (`RULES`) are not checked.
"""

import functools
import re

_SPEC = re.compile(r"^(?:(?P<count>\d+) )?(?P<kind>ints?|numbers?)"
                   r"(?: (?P<op>>=|>) (?P<low>\S+)|"
                   r" in (?P<lb>[\[(])(?P<lo>[^,]+), (?P<hi>[^\])]+)(?P<rb>[\])]))?$")
_MISSING = object()


def _get(config, name):
    return functools.reduce(lambda obj, attr: getattr(obj, attr, _MISSING)
                            if obj is not _MISSING else obj, name.split("."), config)


def _literal(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bound(text, config):
    """A rule's bound: a number, or the value of the field it names."""
    return float(text) if _literal(text) else _get(config, text)


def _scalar(value, match, config):
    kind = int if match["kind"].startswith("int") else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value:  # NaN
        return False
    if match["op"]:
        low = _bound(match["low"], config)
        return value > low if match["op"] == ">" else value >= low
    if match["lb"]:
        low, high = _bound(match["lo"], config), _bound(match["hi"], config)
        return ((value > low if match["lb"] == "(" else value >= low) and
                (value < high if match["rb"] == ")" else value <= high))
    return True


def accepts(value, rule, config):
    """Whether `value` satisfies `rule` (module docstring) in `config`."""
    if isinstance(rule, tuple):
        return value in rule[1] if rule[0] == "one of" else bool(rule[0](value, config))
    if rule.startswith("None or "):
        return value is None or accepts(value, rule[len("None or "):], config)
    if rule in ("bool", "str"):
        return isinstance(value, bool if rule == "bool" else str)
    match = _SPEC.match(rule)
    if match is None:
        raise ValueError(f"config rule {rule!r} is not one of the forms in config_rules.py")
    if not match["kind"].endswith("s"):
        return _scalar(value, match, config)
    count = int(match["count"]) if match["count"] else None
    return (isinstance(value, tuple | list) and len(value) >= 1 and
            count in (None, len(value)) and all(_scalar(v, match, config) for v in value))


def describe(rule, config):
    """What `rule` accepts, in words, with the values of the fields it names."""
    if isinstance(rule, tuple):
        text = f"one of {list(rule[1])}" if rule[0] == "one of" else rule[1]
        return re.sub(r"\{([\w.]+)\}", lambda m: f"{m[1]}={_get(config, m[1])!r}", text)
    if rule.startswith("None or "):
        return "None or " + describe(rule[len("None or "):], config)
    if rule in ("bool", "str"):
        return "true or false" if rule == "bool" else "a string"
    match = _SPEC.match(rule)
    kind, count = match["kind"], match["count"]
    if count:
        words = f"{count} {kind}"  # "4 numbers"
    elif kind.endswith("s"):
        words = f"one or more {kind}"
    else:
        words = f"{'an' if kind == 'int' else 'a'} {kind}"
    named = [n for n in (match["low"], match["lo"], match["hi"]) if n and not _literal(n)]
    return words + rule[match.end("kind"):] + "".join(f" ({n}={_get(config, n)!r})"
                                                       for n in named)


def check(config, rules):
    """Raises ValueError for the first field of `config` that breaks one of `rules`
    ([(dotted name, rule)]); returns `config`."""
    for name, rule in rules:
        value = _get(config, name)
        if value is _MISSING:
            continue
        try:
            ok = accepts(value, rule, config)
        except (TypeError, AttributeError):  # compared with a bound of another type
            ok = False
        if not ok:
            raise ValueError(f"{name} must be {describe(rule, config)}. Received: "
                             f"{name}={value!r}")
    return config


def _pyramid_strides(strides, config):
    """Consecutive powers of two from 4 (P2) up: the levels the pyramid can build."""
    return (isinstance(strides, tuple | list) and len(strides) >= 1 and
            all(isinstance(s, int) and s >= 4 and s & (s - 1) == 0 for s in strides) and
            all(b == 2 * a for a, b in zip(strides, strides[1:])))


def _sides(sizes, config):
    """Image sides the detector can take: ints >= 1, multiples of the largest stride."""
    sizes = sizes if isinstance(sizes, tuple | list) else (sizes,)
    largest = max(config.anchors.strides)
    return len(sizes) >= 1 and all(isinstance(s, int) and s >= 1 and s % largest == 0
                                   for s in sizes)


def face_rules():
    """Rules of `zoo.face.configs.FaceConfig` (module docstring)."""
    from handgrad.losses.detection import NORMALIZATIONS
    from handgrad.zoo.face import backbones
    from handgrad.zoo.face import data as face_data

    sides = "multiples of the largest of {anchors.strides}"
    return [
        ("model.backbone", ("one of", sorted(backbones.BACKBONES))),
        ("model.backbone_width", "int >= 1"), ("model.fpn_filters", "int >= 1"),
        ("model.head_filters", "int >= 1"), ("model.num_cls_convs", "int >= 0"),
        ("model.num_box_convs", "int >= 0"), ("model.separable_convs", "bool"),
        ("model.prior_probability", "number in (0, 1)"), ("model.freeze_backbone_bn", "bool"),
        ("model.bn_momentum", "number in [0, 1)"), ("model.imagenet_weights", (
            lambda v, c: v is None or (isinstance(v, str) and c.model.backbone == "resnet50"),
            "None, or a str with model.backbone=resnet50 (the only backbone with ImageNet "
            "weights here)")),
        ("anchors.min_size", "number > 0"), ("anchors.max_size", "number >= anchors.min_size"),
        ("anchors.scales_per_level", "int >= 1"), ("anchors.aspect_ratios", "numbers > 0"),
        ("anchors.strides", (_pyramid_strides, "consecutive powers of two from 4 up, e.g. "
                                               "8,16,32,64")),
        ("anchors.variances", "4 numbers > 0"), ("anchors.positive_iou", "number in (0, 1]"),
        ("anchors.negative_iou", "number in [0, anchors.positive_iou]"),
        ("loss.focal_alpha", "number in [0, 1]"), ("loss.focal_gamma", "number >= 0"),
        ("loss.smooth_l1_delta", "number > 0"), ("loss.box_weight", "number >= 0"),
        ("loss.normalization", ("one of", NORMALIZATIONS)),
        ("postprocess.score_threshold", "number in [0, 1]"),
        ("postprocess.nms_iou_threshold", "number in (0, 1]"),
        ("postprocess.pre_nms_top_k", "int >= 1"), ("postprocess.max_detections", "int >= 1"),
        ("data.dataset", ("one of", face_data.DATASETS)),
        ("data.image_sizes", (_sides, f"one or more sides, {sides}")),
        ("data.eval_size", (_sides, f"a side, {sides}")),
        ("data.flip", "bool"), ("data.max_boxes", "int >= 1"), ("data.num_train", "int >= 1"),
        ("data.num_val", "int >= 1"), ("data.data_seed", "int >= 0"),
        ("data.val_limit", "None or int >= 1"), ("data.augment", ("one of", face_data.AUGMENTS)),
        ("data.crop_min", "number in (0, 1]"), ("data.crop_max", "number in [data.crop_min, 1]"),
        ("data.eval_mode", ("one of", face_data.EVAL_MODES)),
        ("data.eval_scales", "numbers > 0"), ("data.eval_flip", "bool"),
        ("data.geometry_source", "None or str"), ("data.train_renders", "int >= 1"),
        ("data.max_layouts", "None or int >= 1"),
        *_training_rules(("sgd", "adam")),
        ("training.lr_boundaries", (lambda b, c: list(b) == sorted(set(b)) and all(
            isinstance(v, int) and v >= 1 for v in b), "increasing step numbers >= 1 (or none)")),
        ("training.lr_decay", "number > 0"), ("training.clipnorm", "None or number > 0"),
    ]


def _training_rules(optimizers):
    return [
        ("training.batch_size", "int >= 1"), ("training.epochs", "int >= 1"),
        ("training.steps_per_epoch", "None or int >= 1"),
        ("training.optimizer", (lambda v, c: isinstance(v, str) and v.lower() in optimizers,
                                _alternatives(optimizers))),
        ("training.learning_rate", "number > 0"), ("training.weight_decay", "number >= 0"),
        ("training.validate_every_epoch", "bool"), ("training.seed", "int >= 0"),
    ]


def _alternatives(names):
    """('a', 'b', 'c') -> "'a', 'b' or 'c'"."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def mnist_rules():
    """Rules of `zoo.mnist.configs.MnistConfig` (module docstring)."""
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
        *_training_rules(("adam", "adamw", "sgd")),
        ("training.warmup_epochs", "number >= 0"),
        ("training.final_lr_fraction", "number in [0, 1]"),
    ]


RULES = {"face": face_rules, "mnist": mnist_rules}


def validate(config):
    """Checks `config` against the rules of its task (none for a task without a table)."""
    rules = RULES.get(config.task)
    return check(config, rules()) if rules else config
