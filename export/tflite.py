"""TFLite conversion of an exported model: float32 and dynamic-range int8 (weights in int8,
activations in float).

The TFLite graph takes the model's square float input (MNIST: `(1, 28, 28, 1)`; the detector:
`(1, S, S, 3)`, both in [0, 1]); resizing and decoding stay with the caller. MNIST returns its
probabilities. The detector returns the network's raw outputs (`cls_logits`, `box_deltas` per
anchor): TFLite has no builtin for the batched NMS of the SavedModel's post-processing (it would
need the Flex delegate, which the LiteRT interpreter does not link), so a TFLite runtime applies
sigmoid, decoding (`handgrad.zoo.face.box_coder.decode_boxes`) and its own NMS.

`run` uses LiteRT (`ai_edge_litert.interpreter`), the maintained successor of the deprecated
`tf.lite.Interpreter`; the conversion itself stays with TensorFlow's `TFLiteConverter`.
"""

import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

MODES = ("float32", "int8")


def convert(module, mode="float32"):
    """Returns the `.tflite` bytes of a serving module's raw network: the (concrete function with
    a fixed signature, owner of its variables) that `module.tflite_source()` returns."""
    if mode not in MODES:
        raise ValueError(f"TFLite mode must be one of {MODES}. Received: mode={mode!r}")
    concrete, owner = module.tflite_source()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], owner)
    if mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range quantisation
    return converter.convert()


def run(tflite_bytes, x):
    """Runs a converted model on one input array; returns its outputs by name."""
    interpreter = Interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    return runner(**{name: x})
