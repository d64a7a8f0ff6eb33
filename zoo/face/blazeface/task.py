"""The BlazeFace task: what `handgrad-train` / `handgrad-eval` ask of configs with task "blazeface".

    build_model(config) -> compiled `BlazeFaceDetector`, MediaPipe's weights when
                           config.model.pretrained
    datasets(config, data_dir) -> (train_ds, eval_ds)   the face data (`zoo.face.data`) at the
                                                        network's input size, targets from
                                                        targets.BlazeFaceTargets
    evaluate(model, config, data_dir, model_dir) -> {"ap_easy", "ap_medium", "ap_hard", ...}
                                                    (`zoo.face.evaluation`, WIDER protocol)
A task of its own rather than a model switch inside the RetinaNet family: the config sections
differ (no backbone / anchor sizes / FPN; a variant, matching rules, a keypoint loss); the data,
evaluation and optimizer code is the floor's (`zoo.face.data`, `evaluation`, `training`).
"""

import keras

from handgrad.zoo.face import data as face_data
from handgrad.zoo.face import evaluation
from handgrad.zoo.face.blazeface.configs import BlazeFaceConfig
from handgrad.zoo.face.blazeface.detector import BlazeFaceDetector
from handgrad.zoo.face.blazeface.targets import BlazeFaceTargets
from handgrad.zoo.face.blazeface.tflite_import import load_tflite_weights, tflite_path
from handgrad.zoo.face.training import make_optimizer


class BlazeFaceTask:
    """Builds, feeds and evaluates BlazeFace (see the module docstring)."""

    config_class = BlazeFaceConfig

    def build_model(self, config):
        keras.utils.set_random_seed(config.training.seed)
        model = BlazeFaceDetector(model=config.model, matching=config.matching,
                                  loss=config.loss, postprocess=config.postprocess)
        if config.model.pretrained:
            load_tflite_weights(model.network, tflite_path(model.variant))
        model.compile(optimizer=make_optimizer(config.training))
        return model

    def datasets(self, config, data_dir):
        self.data_counts = face_data.DataCounts()  # logged each epoch by train.py
        m = config.matching
        targets = BlazeFaceTargets(config.model.variant, m.center_radius, m.scale_tolerance)
        return face_data.datasets(config, data_dir, targets.encode,
                                  self.data_counts)

    def evaluate(self, model, config, data_dir, model_dir):
        return evaluation.evaluate(model, config, data_dir, model_dir)
