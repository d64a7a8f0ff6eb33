"""Reading one photo as an image viewer shows it, with a reason when it cannot be read.

`read_image_upright(path)` decodes any format Pillow reads (JPEG, PNG, GIF, BMP, TIFF, WebP, ICO,
PPM, ...) in Python and applies the EXIF Orientation tag (`PIL.ImageOps.exif_transpose`), so a
phone photo stored sideways with `Orientation=6` comes back upright, as viewers and browsers show
it; boxes found on it are in those upright pixels. TensorFlow's decoders (`tf.io.decode_image`,
the `image_bytes` serving signature) ignore the tag and return the stored orientation.

Pixel formats: grey, palette, CMYK and alpha images become RGB (alpha dropped, as TF's decoders
do); 16-bit images are scaled to 8 bits (value / 257); 32-bit float images are refused. An
animated image (GIF, PNG, WebP) gives its first frame, with a warning naming the file.

A file that cannot be read raises `UnreadableImageError` (a ValueError) whose message names the
file and says why: empty file, unknown image format, permission denied, truncated, a folder, a
broken symbolic link, ...

`decode_image(contents)` is the same for the tf.data pipelines: TF decodes the bytes in the graph
and the EXIF transpose (the tag read by Pillow from the header only) is applied after it.
"""

import io
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import EpsImagePlugin, Image, ImageFile, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ORIENTATION = 0x0112  # the EXIF tag


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; `reason` says why in a few words."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _decodes_pixels(fmt):
    """Whether Pillow decodes the pixels of `fmt` here: not a stub (HDF5, GRIB, BUFR, WMF: no
    handler installed), not video (MPEG: a header only), EPS only with Ghostscript."""
    if fmt == "MPEG" or (fmt == "EPS" and not EpsImagePlugin.has_ghostscript()):
        return False
    factory = Image.OPEN.get(fmt, (None,))[0]  # a class, or a function (JPEG's)
    return factory is not None and not (isinstance(factory, type)
                                        and issubclass(factory, ImageFile.StubImageFile))


def readable_extensions():
    """The file extensions (lower case, with the dot) of the image formats Pillow decodes here:
    `.jpg`, `.png`, `.gif`, `.bmp`, `.tif`, `.webp`, `.ico`, `.ppm`, ..."""
    return {ext for ext, fmt in Image.registered_extensions().items() if _decodes_pixels(fmt)}


def _read_bytes(path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if path.is_symlink():
            raise UnreadableImageError(path, "broken symbolic link (its target is missing)") \
                from None
        raise UnreadableImageError(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(path, "a folder, not an image file") from None
    except PermissionError:
        raise UnreadableImageError(path, "permission denied") from None
    except OSError as e:
        raise UnreadableImageError(path, f"cannot be read ({e.strerror or e})") from None
    if not data:
        raise UnreadableImageError(path, "empty file")
    return data


def _to_rgb(image, path):
    """A decoded Pillow image -> (H, W, 3) uint8."""
    if image.mode in SIXTEEN_BIT_MODES:  # 16-bit grey (TIFF, PNG): scaled, not clipped at 255
        grey = np.clip(np.asarray(image, np.float64), 0, 65535) / 257.0
        return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode == "F":
        raise UnreadableImageError(path, "32-bit float pixels (Pillow mode F): not a photo")
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as e:
        raise UnreadableImageError(path, f"pixel format {image.mode} cannot become RGB ({e})") \
            from None


def read_image_upright(path):
    """The image file at `path` as (H, W, 3) uint8 RGB, turned as its EXIF Orientation says.

    Args:
        path: an image file of any format Pillow reads.
    Returns:
        np.ndarray (H, W, 3) uint8, the pixels a viewer shows (H, W after the EXIF turn).
    Raises:
        UnreadableImageError naming the file and the reason.
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1)
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise UnreadableImageError(path, "unknown image format (none that Pillow reads)") \
            from None
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(path, f"too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # Pillow's decoders' errors
        text = " ".join(str(e).split()) or type(e).__name__
        reason = "truncated" if "truncat" in text.lower() or isinstance(e, EOFError) else "damaged"
        raise UnreadableImageError(path, f"{reason} ({text})") from None
    if frames > 1:
        logging.warning("%s is animated (%d frames): only its first frame is used", path, frames)
    return _to_rgb(image, path)


def exif_orientation(contents):
    """The EXIF Orientation tag (1..8) of encoded image bytes; 1 when there is none.

    Read with PIL from the header only (`Image.open` parses the JPEG APP1 / PNG eXIf segment and
    decodes no pixel), so it costs tens of microseconds beside the milliseconds of the decode.
    Unreadable bytes give 1: the decode that follows reports them.
    """
    try:
        with Image.open(io.BytesIO(contents)) as image:
            value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # PIL raises many kinds on bad bytes; the TF decode names the problem
        return np.int32(1)
    return np.int32(value if isinstance(value, int) and 1 <= value <= 8 else 1)


def _transpose_by_orientation(image, orientation):
    """`image` (H, W, C) as a viewer shows it, i.e. PIL's `ImageOps.exif_transpose`."""
    def t(x):
        return tf.transpose(x, [1, 0, 2])  # (W, H, C)

    branches = [
        lambda: image,                                  # 1: upright
        lambda: tf.reverse(image, [1]),                 # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),              # 3: rotated 180
        lambda: tf.reverse(image, [0]),                 # 4: mirrored top-bottom
        lambda: t(image),                               # 5: transposed
        lambda: tf.reverse(t(image), [1]),              # 6: rotate 90 clockwise
        lambda: tf.reverse(t(image), [0, 1]),           # 7: transverse
        lambda: tf.reverse(t(image), [0]),              # 8: rotate 90 counter-clockwise
    ]
    return tf.switch_case(orientation - 1, branches)


def decode_image(contents):
    """Decodes JPEG / PNG / BMP / GIF bytes to (H, W, 3) uint8 (grey and CMYK become RGB), as a
    viewer shows it: the EXIF Orientation of a phone photo is applied (TF's decoders ignore
    it), so annotations made on the displayed photo fall on the right pixels."""
    image = tf.image.decode_image(contents, channels=3, expand_animations=False)
    orientation = tf.numpy_function(exif_orientation, [contents], tf.int32, stateful=False)
    image = _transpose_by_orientation(image, tf.reshape(orientation, []))
    image.set_shape([None, None, 3])
    return image


__all__ = ["UnreadableImageError", "decode_image", "exif_orientation", "read_image_upright",
           "readable_extensions"]
