"""Camera messages -> H x W x 3 uint8 RGB arrays.

Works on any object with the fields of sensor_msgs/Image or sensor_msgs/CompressedImage
(rclpy messages, rosbags messages), and on image files (the CLI). Anything that cannot
be decoded raises ImageError with the reason; callers drop the frame and keep running.

Compressed images and files are decoded strictly: a truncated or corrupt JPEG/PNG is an
error, not a partly grey picture (OpenCV only prints libjpeg's warning and returns it).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovseg_ros.preprocess import ImageError

MAX_PIXELS = 64_000_000  # refuse absurd sizes before allocating
ENCODED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "GIF")  # what files and CompressedImage may hold

# encoding -> (channels, bytes per channel, conversion to RGB or None)
_ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, 1, cv2.COLOR_BGR2RGB),  # OpenCV's convention
    "8UC4": (4, 1, cv2.COLOR_BGRA2RGB),
    "rgb16": (3, 2, None),
    "bgr16": (3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": (4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": (4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGB2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUYV),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def byte_view(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)  # bytes, bytearray, array.array('B'), memoryview
    except (TypeError, ValueError, BufferError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a plain list of ints


def image_fields(msg, error=ImageError, reason: str = "type") -> tuple[int, int, int, str, bool]:
    """(height, width, step, encoding, big-endian) of a sensor_msgs/Image, or `error`."""
    try:
        return int(msg.height), int(msg.width), int(msg.step), str(msg.encoding), bool(msg.is_bigendian)
    except (AttributeError, TypeError, ValueError) as exc:
        raise error(f"not an image message: {exc}", reason) from exc


def pixel_rows(data, height: int, row_bytes: int, step: int, error=ImageError, what: str = "image", reason: str = "truncated") -> np.ndarray:
    """A message's pixel bytes as [height, row_bytes] rows (a view; the padding at the end
    of each `step` skipped), or `error` when the data is too short for them."""
    data = byte_view(data)
    if step < row_bytes or data.size < step * (height - 1) + row_bytes:
        raise error(f"truncated {what}: {data.size} bytes for {height} rows of step {step}", reason)
    return np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))


def decode_image(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> RGB. 16-bit images keep their high byte."""
    height, width, step, encoding, big_endian = image_fields(msg)
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}", "encoding")
    if height <= 0 or width <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})", "empty")
    if height * width > max_pixels:
        raise ImageError(f"image of {width}x{height} exceeds {max_pixels} pixels", "size")
    channels, depth, conversion = _ENCODINGS[encoding]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageError(f"step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)", "step")
    rows = pixel_rows(msg.data, height, row_bytes, step)
    if depth == 2:
        pixels = rows.reshape(height, width * channels, 2)
        high = pixels[..., 0] if big_endian else pixels[..., 1]
        array = np.ascontiguousarray(high).reshape(height, width, channels)
    else:
        array = np.ascontiguousarray(rows).reshape(height, width, channels)
    if conversion is None:
        return array
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageError(f"{encoding} needs an even width, got {width}", "size")
    try:
        return cv2.cvtColor(array if channels > 1 else array[..., 0], conversion)
    except cv2.error as exc:
        raise ImageError(f"cannot convert {width}x{height} {encoding} to RGB: {exc.err}", "encoding") from exc


def decode_bytes(data, what: str = "compressed image", apply_orientation: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An encoded image (JPEG, PNG, ...) -> RGB, strictly: truncated or corrupt data raises
    ImageError. `apply_orientation` turns the picture as its EXIF tag says (files)."""
    buffer = byte_view(data)
    if buffer.size == 0:
        raise ImageError(f"{what} has no data", "empty")
    try:
        img = Image.open(io.BytesIO(buffer.tobytes()), formats=ENCODED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{what}: {buffer.size} bytes are not an image format that can be read", "corrupt") from exc
    except Exception as exc:  # noqa: BLE001 - PIL's format probes raise assorted errors on damaged headers
        raise ImageError(f"{what} is damaged ({buffer.size} bytes): {exc}", "corrupt") from exc
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(f"image of {width}x{height} exceeds {max_pixels} pixels", "size")
        try:
            img.load()  # decodes everything: a truncated or damaged file raises here
        except Exception as exc:  # noqa: BLE001 - PIL's decoders raise assorted errors on damaged data
            raise ImageError(f"{what} is damaged ({buffer.size} bytes): {exc}", "corrupt") from exc
        if apply_orientation:
            img = ImageOps.exif_transpose(img)
        return _pil_to_rgb(img)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):  # 16-bit grey (PNG): keep the high byte, as for 16-bit messages
        gray = (np.asarray(img).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def read_image_file(path) -> np.ndarray:
    """An image file -> RGB (EXIF orientation applied), or ImageError saying why not."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}", "io") from exc
    return decode_bytes(data, f"{path}", apply_orientation=True)


def decode_compressed(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, as image_transport writes them) -> RGB."""
    try:
        fmt = str(msg.format).lower()
        data = byte_view(msg.data)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(f"not a compressed image message: {exc}", "type") from exc
    if "compresseddepth" in fmt:
        raise ImageError("compressedDepth images are depth maps, not camera images", "encoding")
    return decode_bytes(data, f"compressed image (format {msg.format!r})", max_pixels=max_pixels)


def decode(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Either kind of camera message; larger than `max_pixels` is an error."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return decode_compressed(msg, max_pixels)
    return decode_image(msg, max_pixels)
