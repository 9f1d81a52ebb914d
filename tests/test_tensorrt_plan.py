"""The TensorRT build decisions, per version, without TensorRT (tensorrt_plan.py)."""

from __future__ import annotations

import pytest

from ovseg_ros.backends.tensorrt_engine import cache_key
from ovseg_ros.backends.tensorrt_plan import (
    UnsupportedTensorRT,
    build_plan,
    check_text_rows,
    keep_layer_fp32,
    onnx_node_of,
    parse_version,
    timing_cache_name,
)


def test_versions_parse_and_old_ones_are_refused_with_the_way_out():
    assert parse_version("8.6.2.3") == (8, 6, 2)
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("11.1") == (11, 1, 0)
    with pytest.raises(UnsupportedTensorRT, match="JetPack 6"):
        build_plan(parse_version("8.5.2.2"), "fp16")
    with pytest.raises(ValueError, match="precision"):
        build_plan((10, 3, 0), "int8")


@pytest.mark.parametrize("version", [(8, 6, 2), (10, 3, 0), (10, 11, 0), (10, 12, 0), (10, 16, 1), (11, 1, 0)])
def test_fp32_builds_never_ask_for_fp16(version):
    plan = build_plan(version, "fp32")
    assert plan.precision == "fp32"
    assert not (plan.fp16_flag or plan.obey_precision_constraints or plan.mixed_precision_onnx)


def test_jetpack_6_0_tensorrt_8_6():
    plan = build_plan((8, 6, 2), "fp16")
    assert plan.explicit_batch_flag  # the 8.6 parser asserts an explicit-batch network
    assert not plan.strongly_typed  # STRONGLY_TYPED arrived in 9.0
    assert plan.fp16_flag and plan.obey_precision_constraints and not plan.mixed_precision_onnx
    assert plan.native_instancenorm  # else FC-CLIP's GroupNorm would need the InstanceNormalization plugin


def test_jetpack_6_1_tensorrt_10_3_weak_typing():
    plan = build_plan((10, 3, 0), "fp16")
    assert not plan.explicit_batch_flag and not plan.strongly_typed
    assert plan.fp16_flag and plan.obey_precision_constraints
    assert not plan.native_instancenorm


@pytest.mark.parametrize("version", [(10, 12, 0), (10, 16, 0)])
def test_from_10_12_strongly_typed_from_a_mixed_precision_file(version):
    plan = build_plan(version, "fp16")
    assert plan.strongly_typed_flag and plan.strongly_typed and plan.mixed_precision_onnx
    assert not plan.fp16_flag and not plan.obey_precision_constraints  # deprecated there


def test_tensorrt_11_is_always_strongly_typed_and_fp16_is_real():
    plan = build_plan((11, 1, 0), "fp16")
    assert plan.strongly_typed and not plan.strongly_typed_flag and not plan.explicit_batch_flag  # both gone or ignored
    assert plan.mixed_precision_onnx and plan.precision == "fp16"  # not an fp32 engine labelled fp16


FP32_SET = ["/model/decoder/mask_heads.1/f_atten/Add_1", "/model/pixel_decoder/Softmax"]


@pytest.mark.parametrize("layer_type,inputs,outputs,shape,expected", [
    ("ELEMENTWISE", ["FLOAT", "FLOAT"], ["FLOAT"], False, True),
    ("ELEMENTWISE", ["INT32", "INT32"], ["INT32"], False, False),  # shape arithmetic stays INT32
    ("ELEMENTWISE", ["FLOAT", "FLOAT"], ["BOOL"], False, False),  # a comparison
    ("ELEMENTWISE", ["FLOAT"], ["FLOAT"], True, False),  # produces a shape tensor
    ("CAST", ["FLOAT"], ["HALF"], False, False),
    ("CONSTANT", [], ["FLOAT"], False, False),
    ("SHAPE", ["FLOAT"], ["INT32"], False, False),
    ("SHUFFLE", ["FLOAT", "INT32"], ["FLOAT"], False, False),
    ("SOFTMAX", ["HALF"], ["HALF"], False, True),
])
def test_precision_constraints_only_on_float_layers_of_the_measured_set(layer_type, inputs, outputs, shape, expected):
    node = FP32_SET[0]
    assert keep_layer_fp32(layer_type, inputs, outputs, shape, node, FP32_SET) is expected
    assert keep_layer_fp32(layer_type, inputs, outputs, shape, "/model/other/Add", FP32_SET) is False
    assert keep_layer_fp32(layer_type, inputs, outputs, shape, None, FP32_SET) is False


def test_layers_map_back_to_their_onnx_node():
    known = FP32_SET
    assert onnx_node_of("x", "[ONNX Layer: /model/pixel_decoder/Softmax]", known) == "/model/pixel_decoder/Softmax"
    assert onnx_node_of("x", "[ONNX Layer: /model/pixel_decoder/Softmax|Local Function: f]", known) == "/model/pixel_decoder/Softmax"
    assert onnx_node_of(known[0], None, known) == known[0]  # a node's first layer carries its name
    assert onnx_node_of(known[0] + "_17", "", known) == known[0]  # later ones get a counter suffix
    assert onnx_node_of("ONNXTRT_castHelper_3", None, known) is None
    assert onnx_node_of("(Unnamed Layer* 12) [Normalization]", None, known) is None


def test_vocabulary_rows_against_the_engine_profile():
    check_text_rows(1, (1, 32, 512))
    check_text_rows(512, (1, 32, 512))
    with pytest.raises(ValueError, match=r"needs 600 text rows.*built for 1 to 512.*--max-rows"):
        check_text_rows(600, (1, 32, 512))


def test_caches_are_per_tensorrt_version_and_gpu():
    a = timing_cache_name("10.3.0", "Orin sm_87")
    assert a != timing_cache_name("8.6.2", "Orin sm_87") and a != timing_cache_name("10.3.0", "RTX 3090 sm_86")
    assert "/" not in a and " " not in a
    base = ("10.3.0", "Orin sm_87", [1, 3, 480, 640], "fp16", (1, 32, 512), "abc")
    assert cache_key(*base) != cache_key("8.6.2", *base[1:])
    assert cache_key(*base) != cache_key(base[0], "RTX 3090 sm_86", *base[2:])
    assert cache_key(*base) != cache_key(*base[:3], "fp32", *base[4:])
