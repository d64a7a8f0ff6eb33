"""The face-detection task: what `handgrad-train` / `handgrad-eval` ask of configs with task "face".

    build_model(config) -> compiled `retinanet.FaceDetector` (sections handed over whole)
    datasets(config, data_dir) -> (train_ds, eval_ds)       (`data.datasets`, targets from
                                                             the model's `Anchors.encode`; the
                                                             training pipeline counts what it
                                                             drops into `self.data_counts`)
    evaluate(model, config, data_dir, model_dir) -> {"ap_easy", "ap_medium", "ap_hard"}
                                                            (`evaluation.evaluate`)
"""

import keras

from handgrad.zoo.face import data as face_data
from handgrad.zoo.face import evaluation
from handgrad.zoo.face.anchors import Anchors
from handgrad.zoo.face.backbones import imagenet_weights
from handgrad.zoo.face.configs import FaceConfig
from handgrad.zoo.face.retinanet import FaceDetector


def make_optimizer(training):
    """SGD (momentum 0.9) or Adam(W) for a `TrainingConfig`, piecewise-constant learning rate
    (x lr_decay at each of lr_boundaries)."""
    values = [training.learning_rate * training.lr_decay**i
              for i in range(len(training.lr_boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b) for b in training.lr_boundaries], values) if training.lr_boundaries else values[0]
    common = {"learning_rate": schedule, "global_clipnorm": training.clipnorm}
    name = training.optimizer.lower()
    if name == "sgd":
        return keras.optimizers.SGD(momentum=0.9, weight_decay=training.weight_decay or None,
                                    **common)
    if name == "adam":
        if training.weight_decay:
            return keras.optimizers.AdamW(weight_decay=training.weight_decay, **common)
        return keras.optimizers.Adam(**common)
    raise ValueError(f"training.optimizer must be 'sgd' or 'adam'. "
                     f"Received: {training.optimizer!r}")


class FaceTask:
    """Builds, feeds and evaluates the face detector (see the module docstring)."""

    config_class = FaceConfig

    def build_model(self, config):
        keras.utils.set_random_seed(config.training.seed)
        model = FaceDetector(model=config.model, anchors=config.anchors, loss=config.loss,
                             postprocess=config.postprocess)
        if config.model.imagenet_weights:
            imagenet_weights.copy_resnet50_weights(model.network, config.model.imagenet_weights)
        model.compile(optimizer=make_optimizer(config.training))
        return model

    def datasets(self, config, data_dir):
        self.data_counts = face_data.DataCounts()  # logged each epoch by train.py
        anchors = Anchors(**vars(config.anchors))
        return face_data.datasets(config, data_dir, anchors.encode,
                                  self.data_counts)

    def evaluate(self, model, config, data_dir, model_dir):
        return evaluation.evaluate(model, config, data_dir, model_dir)
