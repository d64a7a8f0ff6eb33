"""handgrad: CNN layers with hand-derived backward passes, and two applications built on them.

Sub-packages (each a top-level folder of the repository, installed under this one import name):

- ``handgrad.layers``: Keras 3 layers whose gradients are written out by hand with
  ``tf.custom_gradient`` (SEED_NOTES eq. 3-55), plus their functional forms in
  ``handgrad.layers.ops``.
- ``handgrad.losses``: cross-entropy, L2, focal, smooth L1 and the detection loss.
- ``handgrad.pipelines``: tf.data input for MNIST and WIDER FACE, and a synthetic WIDER-format set.
- ``handgrad.zoo``: the models in rooms: ``zoo.face`` (detector), ``zoo.mnist`` (digit readers),
  ``zoo.run`` (training / evaluation command lines, config registry, resilience, distribution).
- ``handgrad.export``: SavedModel / ``.keras`` / TFLite export and the detect command.

Importing ``handgrad`` registers every layer, loss and model with Keras' serialization, so
``keras.models.load_model("model.keras")`` works after ``import handgrad``.
"""

from handgrad import layers, losses
from handgrad.zoo.face.blazeface import model as _blazeface  # noqa: F401  (registers its layers)
from handgrad.zoo.face.retinanet import model as _retinanet  # noqa: F401  (registers FaceDetector)

__all__ = ["layers", "losses"]
__version__ = "0.1.0"
