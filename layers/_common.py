"""Small helpers shared by the layer files: argument normalisation and dtype handling."""

import tensorflow as tf


def normalize_pair(value, name):
    """Returns `value` as a tuple of two positive ints (an int is used for both axes)."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints. Received: {name}={value}"
        )
    return value


def normalize_padding(padding):
    """Returns "VALID" or "SAME" (the names TF's kernels take)."""
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f'`padding` must be "valid" or "same". Received: padding={padding!r}')
    return padding.upper()


def conv_geometry(strides, padding, dilation_rate):
    """(strides, dilations, "VALID" | "SAME") of a convolution, checked: TF's CPU kernels do not
    combine strides > 1 with dilation > 1."""
    s = normalize_pair(strides, "strides")
    d = normalize_pair(dilation_rate, "dilation_rate")
    if s != (1, 1) and d != (1, 1):
        raise ValueError(f"strides > 1 with dilation_rate > 1 is not supported. "
                         f"Received: strides={s}, dilation_rate={d}")
    return s, d, normalize_padding(padding)


def require_channels_last(data_format, layer):
    if data_format not in (None, "channels_last"):
        raise ValueError(
            f"{layer} supports only data_format='channels_last' (NHWC, TensorFlow's layout on "
            f"CPU and GPU). Received: data_format={data_format!r}"
        )


def reduction_dtype(dtype):
    """float16/bfloat16 statistics overflow or lose precision: reduce in float32 instead."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
