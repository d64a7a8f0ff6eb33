"""What every face detector family shares in its configs: the `data` and `training` sections,
the rules of their fields, and `section` (a section from a dataclass, a dict or None).

A family's configs module (`retinanet/configs.py`, `blazeface/configs.py`) builds its config
dataclass from these two sections and its own, declares its named configs (`CONFIGS`) and the
rule of every field (`rules()`, here `data_rules` + `training_rules` for the shared part), in the
forms that `zoo/run/config_rules.py` reads; `zoo/run/registry.py` finds them there.
"""

import dataclasses

from handgrad.zoo import rules as shared_rules


@dataclasses.dataclass
class DataConfig:
    """Input. dataset: "synthetic", "wider" or "wider_geometry"; image_sizes: one drawn per
    training batch; flip: random horizontal flips; max_boxes: faces kept per image;
    num_train / num_val / data_seed: the synthetic set (data_seed also seeds WIDER-geometry);
    val_limit: images used by evaluation.

    augment: the training policy, "seed" (keep-aspect resize to image_sizes + flip,
    `augment.ResizeFlipPolicy`) or "crop_photometric" (random square crops of crop_min ..
    crop_max of the short side, photometric distortion, resize to image_sizes, flip).
    eval_mode: "original" (each image at its own size, padded to a multiple of the largest
    stride, never resized; batch 1) or "resize" (keep-aspect resize to eval_size, padded square);
    eval_scales: test-time scale factors of the original image (detections of all scales, and of
    their mirror images with eval_flip, merged by NMS); ignored by "resize".
    geometry_source: the folder of the real `wider_face_val.mat` + `wider_*_val.mat` that
    "wider_geometry" takes its layouts from; train_renders / max_layouts: renders per train
    layout and layouts per split (None: all) of that set (`pipelines.wider_geometry`)."""

    dataset: str = "synthetic"
    image_sizes: tuple = (512, 576, 640)
    eval_size: int = 640
    flip: bool = True
    max_boxes: int = 1000
    num_train: int = 1000
    num_val: int = 200
    data_seed: int = 0
    val_limit: int | None = None
    augment: str = "seed"
    crop_min: float = 0.3
    crop_max: float = 1.0
    eval_mode: str = "original"
    eval_scales: tuple = (1.0,)
    eval_flip: bool = False
    geometry_source: str | None = None
    train_renders: int = 2
    max_layouts: int | None = None


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation. batch_size; epochs x steps_per_epoch iterations; optimizer "sgd" (momentum
    0.9) or "adam"; learning_rate, multiplied by lr_decay at each of lr_boundaries (iterations);
    weight_decay; clipnorm (global); validate_every_epoch: loss on the val split; seed."""

    batch_size: int = 3
    epochs: int = 70
    steps_per_epoch: int | None = 5000
    optimizer: str = "sgd"
    learning_rate: float = 0.005
    lr_boundaries: tuple = (200_000,)
    lr_decay: float = 0.1
    weight_decay: float = 1e-4
    clipnorm: float | None = None
    validate_every_epoch: bool = False
    seed: int = 0


def section(cls, value, name):
    """A config section from a dataclass, a dict of its fields (lists become tuples, as JSON
    turns them into lists) or None (the defaults); `name` is the argument, for errors."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {unknown}. Known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"{name} must be a {cls.__name__} or a dict. Received: {type(value).__name__}")


def data_rules(sides, side):
    """Rules of `DataConfig`'s fields; `sides` / `side`: the family's rules of
    `data.image_sizes` / `data.eval_size` (what its network can take)."""
    from handgrad.zoo.face import data as face_data

    return [
        ("data.dataset", ("one of", face_data.DATASETS)),
        ("data.image_sizes", sides), ("data.eval_size", side),
        ("data.flip", "bool"), ("data.max_boxes", "int >= 1"), ("data.num_train", "int >= 1"),
        ("data.num_val", "int >= 1"), ("data.data_seed", "int >= 0"),
        ("data.val_limit", "None or int >= 1"), ("data.augment", ("one of", face_data.AUGMENTS)),
        ("data.crop_min", "number in (0, 1]"), ("data.crop_max", "number in [data.crop_min, 1]"),
        ("data.eval_mode", ("one of", face_data.EVAL_MODES)),
        ("data.eval_scales", "numbers > 0"), ("data.eval_flip", "bool"),
        ("data.geometry_source", "None or str"), ("data.train_renders", "int >= 1"),
        ("data.max_layouts", "None or int >= 1"),
    ]


def training_rules(min_epochs=1):
    """Rules of `TrainingConfig`'s fields; `min_epochs`: 0 where a run of no epochs means
    something (evaluating imported weights)."""
    return [
        *shared_rules.training_rules(("sgd", "adam"), min_epochs=min_epochs),
        ("training.lr_boundaries", (lambda b, c: list(b) == sorted(set(b)) and all(
            isinstance(v, int) and v >= 1 for v in b), "increasing step numbers >= 1 (or none)")),
        ("training.lr_decay", "number > 0"), ("training.clipnorm", "None or number > 0"),
    ]
