"""Camera message decoding, on real sensor_msgs definitions (rosbags)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support import make_header
from hypothesis import given, settings
from hypothesis import strategies as st

from ovseg_ros.decode import SUPPORTED_ENCODINGS, decode, decode_bytes, decode_image, read_image_file
from ovseg_ros.preprocess import ImageError

RGB = np.random.default_rng(0).integers(0, 255, size=(6, 10, 3), dtype=np.uint8)


def image_msg(typestore, pixels: np.ndarray, encoding: str, step: int | None = None, big_endian: bool = False):
    data = np.ascontiguousarray(pixels)
    if data.dtype == np.uint16:
        data = data.astype(">u2" if big_endian else "<u2")
    raw = data.reshape(pixels.shape[0], -1).view(np.uint8)
    if step is not None and step > raw.shape[1]:
        raw = np.pad(raw, ((0, 0), (0, step - raw.shape[1])))
    return typestore.types["sensor_msgs/msg/Image"](
        header=make_header(typestore), height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
        is_bigendian=int(big_endian), step=raw.shape[1], data=raw.reshape(-1).copy(),
    )


@pytest.mark.parametrize(
    "encoding, pixels",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
        ("bgra8", np.dstack([RGB[..., ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
        ("8UC3", RGB[..., ::-1]),
    ],
)
def test_color_encodings(typestore, encoding, pixels):
    np.testing.assert_array_equal(decode_image(image_msg(typestore, pixels, encoding)), RGB)


def test_mono_and_16_bit(typestore):
    gray = RGB[..., 0]
    out = decode_image(image_msg(typestore, gray, "mono8"))
    assert out.shape == (6, 10, 3) and (out[..., 1] == gray).all()
    wide = gray.astype(np.uint16) * 256 + 17
    for big in (False, True):
        out = decode_image(image_msg(typestore, wide, "mono16", big_endian=big))
        assert (out[..., 0] == gray).all()
    out = decode_image(image_msg(typestore, RGB.astype(np.uint16) * 256, "rgb16"))
    np.testing.assert_array_equal(out, RGB)


def test_row_padding_is_respected(typestore):
    np.testing.assert_array_equal(decode_image(image_msg(typestore, RGB, "rgb8", step=40)), RGB)


def test_bayer_and_yuv_decode(typestore):
    assert decode_image(image_msg(typestore, RGB[..., 0], "bayer_rggb8")).shape == (6, 10, 3)
    uyvy = np.random.default_rng(1).integers(0, 255, size=(6, 10, 2), dtype=np.uint8)
    assert decode_image(image_msg(typestore, uyvy, "yuv422")).shape == (6, 10, 3)


def test_compressed(typestore):
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    msg = typestore.types["sensor_msgs/msg/CompressedImage"](
        header=make_header(typestore), format="rgb8; png compressed bgr8", data=png.reshape(-1)
    )
    np.testing.assert_array_equal(decode(msg), RGB)


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(encoding="32FC1"), "unsupported encoding"),
        (dict(height=0), "no pixels"),
        (dict(step=3), "shorter than a row"),
        (dict(data=np.zeros(10, np.uint8)), "truncated"),
        (dict(height=100000, width=100000), "exceeds"),
    ],
)
def test_bad_images(typestore, change, reason):
    msg = image_msg(typestore, RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageError, match=reason):
        decode(msg)


def test_corrupt_compressed(typestore):
    Compressed = typestore.types["sensor_msgs/msg/CompressedImage"]
    with pytest.raises(ImageError, match="not an image format") as garbage:
        decode(Compressed(header=make_header(typestore), format="jpeg", data=np.frombuffer(b"\xff\xd8garbage", np.uint8)))
    with pytest.raises(ImageError, match="no data") as empty:
        decode(Compressed(header=make_header(typestore), format="jpeg", data=np.zeros(0, np.uint8)))
    assert (garbage.value.reason, empty.value.reason) == ("corrupt", "empty")


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_truncated_files_are_refused_not_half_decoded(typestore, extension, tmp_path):
    """libjpeg only warns ("Premature end of JPEG file") and OpenCV returns a partly grey
    picture; a truncated file or message must be an error instead."""
    ok, encoded = cv2.imencode(extension, np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    np.testing.assert_array_equal(decode_bytes(encoded).shape, (64, 80, 3))
    Compressed = typestore.types["sensor_msgs/msg/CompressedImage"]
    cut = encoded[: len(encoded) - 40]
    with pytest.raises(ImageError, match="damaged|truncated"):
        decode(Compressed(header=make_header(typestore), format=extension[1:], data=cut))
    path = tmp_path / f"cut{extension}"
    path.write_bytes(cut.tobytes())
    with pytest.raises(ImageError, match=str(path.name)):
        read_image_file(path)


def test_plain_python_data_buffers():
    class Msg:  # what rclpy hands over: array.array or bytes
        height, width, step, encoding, is_bigendian = 6, 10, 30, "rgb8", 0
        data = RGB.tobytes()

    np.testing.assert_array_equal(decode(Msg()), RGB)


class FuzzImage:
    def __init__(self, **fields):
        self.__dict__.update(fields)


@settings(max_examples=3000, deadline=None)
@given(
    height=st.integers(-2, 40), width=st.integers(-2, 40), step=st.integers(-5, 200),
    encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=8)),
    big=st.integers(0, 1), data=st.binary(max_size=2000),
)
def test_fuzz_raw_images_never_crash(height, width, step, encoding, big, data):
    msg = FuzzImage(height=height, width=width, step=step, encoding=encoding, is_bigendian=big, data=data)
    try:
        out = decode(msg)
    except ImageError as exc:
        assert str(exc)
    else:
        assert out.dtype == np.uint8 and out.shape == (height, width, 3)


@settings(max_examples=1000, deadline=None)
@given(fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", ""]), data=st.binary(max_size=500))
def test_fuzz_compressed_never_crash(fmt, data):
    try:
        out = decode(FuzzImage(format=fmt, data=data))
    except ImageError as exc:
        assert str(exc)
    else:
        assert out.ndim == 3 and out.shape[2] == 3
