"""TFLite conversion of an exported model: float32 and dynamic-range int8 (weights in int8,
activations in float).

The TFLite graph takes the model's square float input (MNIST: `(1, 28, 28, 1)`; the detector:
`(1, S, S, 3)`, both in [0, 1]); resizing and decoding stay with the caller. The detector's batched
NMS has no TFLite builtin, so it runs as a TensorFlow select op (the `tensorflow` pip package's
interpreter includes them; a mobile build needs the Flex delegate).
"""

import tensorflow as tf

MODES = ("float32", "int8")


def convert(module, mode="float32"):
    """Returns the `.tflite` bytes of `module.tflite_fn` (a tf.function with a fixed signature)."""
    if mode not in MODES:
        raise ValueError(f"TFLite mode must be one of {MODES}. Received: mode={mode!r}")
    concrete = module.tflite_fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    if mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range quantisation
    return converter.convert()


def run(tflite_bytes, x):
    """Runs a converted model on one input array; returns its outputs by name."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    return runner(**{name: x})
