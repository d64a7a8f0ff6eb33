"""Copies `keras.applications.ResNet50` weights into the handgrad ResNet50 backbone.

The handgrad backbone (`resnet.resnet_backbone(50)`) uses Keras' layer names and weight order, so
the copy is by name: every layer of the backbone that has weights takes those of the Keras layer
of the same name (`conv1_conv`, `conv2_block1_0_bn`, ...). Nothing is downloaded unless the caller
asks for `source="imagenet"` (Keras then fetches its file, on a machine with internet).
"""

import os

import keras


def _keras_resnet50(source):
    if isinstance(source, keras.Model):
        return source
    if source == "imagenet":
        return keras.applications.ResNet50(include_top=False, weights="imagenet")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No ResNet50 weights file at {path!r}.")
        if path.endswith(".keras"):
            return keras.models.load_model(path, compile=False)
        # .h5 / .weights.h5 as distributed by keras.applications (with or without the top)
        model = keras.applications.ResNet50(include_top=False, weights=None)
        model.load_weights(path, skip_mismatch=True)
        return model
    raise TypeError("source must be 'imagenet', a path to a .h5/.keras file or a keras.Model. "
                    f"Received: {type(source).__name__}")


def _flat_layers(model):
    """The layers of `model`, nested models (the backbone inside a detector) expanded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def copy_resnet50_weights(backbone, source="imagenet"):
    """Copies ResNet50 weights from `source` into `backbone`, layer by layer, by name.

    Args:
        backbone: the model from `resnet.resnet_backbone(50, ...)`, or a model that contains
            it (the detector network: nested models are searched).
        source: "imagenet" (Keras downloads its weights: needs internet), a path to a
            `.keras` model or `.h5` weights file of `keras.applications.ResNet50`, or a built
            `keras.applications.ResNet50` model.
    Returns: the number of layers copied.
    Raises: ValueError if a backbone layer with weights has no counterpart in the source, or
        the shapes differ (e.g. a ResNet18 backbone or a `base_filters` other than 64).
    """
    reference = _keras_resnet50(source)
    by_name = {layer.name: layer for layer in reference.layers}
    copied = 0
    for layer in _flat_layers(backbone):
        if not layer.weights or not layer.name.startswith("conv"):
            continue  # FPN and head layers of a detector network
        if layer.name not in by_name:
            raise ValueError(f"Layer {layer.name!r} has no counterpart in the Keras ResNet50; "
                             "only depth=50 with base_filters=64 can take its weights.")
        source_weights = by_name[layer.name].get_weights()
        target_shapes = [tuple(w.shape) for w in layer.weights]
        if [w.shape for w in source_weights] != target_shapes:
            raise ValueError(
                f"Weight shapes of {layer.name!r} differ: expected {target_shapes}, received "
                f"{[w.shape for w in source_weights]} from the Keras ResNet50.")
        layer.set_weights(source_weights)
        copied += 1
    if copied == 0:
        raise ValueError("No layer of `backbone` matched a ResNet50 layer name.")
    return copied
