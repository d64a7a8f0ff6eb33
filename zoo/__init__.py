"""Models and their tasks, one room per reason to change.

- ``zoo.face``: the face detector: configs, anchors (+ target encoding), boxes, backbones,
  pyramid, heads, the RetinaNet model, post-processing, data, the task, WIDER evaluation.
- ``zoo.mnist``: the digit readers: models (fig. 10 CNN, MLP), configs, task.
- ``zoo.run``: running experiments: ``handgrad-train`` / ``handgrad-eval``, the config registry
  and dotted overrides, callbacks, crash safety, tf.distribute.

Imports run one way: ``zoo.run`` reads the registry's strings to reach ``zoo.face`` and
``zoo.mnist`` lazily; the models import ``handgrad.layers``, ``handgrad.losses`` and
``handgrad.pipelines``, never ``zoo.run``.
"""
