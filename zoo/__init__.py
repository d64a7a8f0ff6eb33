"""Models and their tasks, one room per reason to change.

- ``zoo.face``: the floor every face detector shares (data, WIDER evaluation, box coding, the
  training step, backbones, shared config sections) and one sub-package per detector family:
  ``zoo.face.retinanet`` (the seed's RetinaNet), ``zoo.face.blazeface`` (MediaPipe BlazeFace).
- ``zoo.mnist``: the digit readers: models (fig. 10 CNN, MLP), configs, task.
- ``zoo.run``: running experiments: ``handgrad-train`` / ``handgrad-eval``, the registry (which
  finds every family's ``configs.py``), the one config checker, callbacks, crash safety,
  tf.distribute.
- ``zoo.rules``: config rules that several families share.

Imports run one way: ``zoo.run`` finds the families by their ``configs.py`` and imports their
tasks lazily; the models import ``handgrad.layers``, ``handgrad.losses`` and
``handgrad.pipelines``, never ``zoo.run``; face families never import each other.
"""
