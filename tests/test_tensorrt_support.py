"""Every exported graph against TensorRT's documented ONNX parser support for 8.6
(JetPack 6.0), 10.0, 10.3 (JetPack 6.1/6.2) and 11.x: op types, attributes, input types,
opset forms (tables and sources in ovseg_ros/backends/tensorrt_support.py). A graph with DeformConv
or with opset-18 reductions is refused for 8.6, as the parser would refuse or mis-read it."""

from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from ovseg_ros.config import model_config
from ovseg_ros.modeling import build_network
from ovseg_ros.onnx_export import export_onnx
from ovseg_ros.backends.tensorrt_support import PARSERS, check_graph, dynamic_shape_arithmetic, plugin_ops

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")

# one export size per model: small, a multiple of 32, large enough for every stride
# SED's input is its fixed 768 x 768; "B+keep8": with its early rejection in static form
EXPORTS = [("eov_seg", "S", 64, 96), ("fc_clip", "R50", 64, 96), ("san", "B", 64, 96)]
SLOW_EXPORTS = [("eov_seg", "M", 64, 64), ("eov_seg", "L", 64, 64), ("fc_clip", "L", 64, 64), ("san", "L", 64, 96),
                ("sed", "B+keep8", 768, 768), ("sed", "B", 768, 768), ("sed", "L", 768, 768)]


def _export(family, variant, height, width, tmp_path):
    torch.manual_seed(0)
    variant, _, keep = variant.partition("+keep")
    network = build_network(model_config(family, variant))  # the graph does not depend on the weights' values
    path = export_onnx(network, tmp_path / f"{family}_{variant}.onnx", height, width, early_rejection_keep=int(keep or 0))
    return onnx.load(str(path))


def _check_all_versions(model, family):
    for name, parser in PARSERS.items():
        problems = check_graph(model, parser)
        assert not problems, f"TensorRT {name}: " + "; ".join(map(str, problems[:5]))
    assert plugin_ops(model, PARSERS["8.6"]) == []
    # SED's class axis is a batch axis of its decoder: its shapes follow the vocabulary size
    # at run time (Shape layers, which every parser imports); the others fold to constants
    assert (dynamic_shape_arithmetic(model) == []) == (family != "sed")


@pytest.mark.parametrize("family,variant,height,width", EXPORTS, ids=[f"{f}_{v}" for f, v, *_ in EXPORTS])
def test_export_imports_on_every_tensorrt(family, variant, height, width, tmp_path):
    _check_all_versions(_export(family, variant, height, width, tmp_path), family)


@pytest.mark.slow
@pytest.mark.parametrize("family,variant,height,width", SLOW_EXPORTS, ids=[f"{f}_{v}" for f, v, *_ in SLOW_EXPORTS])
def test_larger_variants_import_on_every_tensorrt(family, variant, height, width, tmp_path):
    _check_all_versions(_export(family, variant, height, width, tmp_path), family)


def _graph(nodes, opset, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _deform_conv_graph():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    offset = helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 18, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 3, 3], [0.0] * 144)
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return _graph([node], 19, [x, offset], [y], [weight])


def test_deform_conv_is_refused_where_it_has_no_importer():
    model = _deform_conv_graph()
    for name in ("8.6", "10.0"):
        problems = check_graph(model, PARSERS[name])
        assert any(p.op_type == "DeformConv" and "no importer" in p.reason for p in problems), name
    assert "opset" in str(check_graph(model, PARSERS["8.6"])[0])  # opset 19 > 17 as well
    assert not [p for p in check_graph(model, PARSERS["10.3"]) if p.op_type == "DeformConv"]  # a plugin from 10.1
    assert plugin_ops(model, PARSERS["10.3"]) == ["DeformConv"]


def test_opset_18_reduction_axes_input_is_refused_for_8_6():
    """8.6 drops a ReduceMean's axes input and reduces every axis, silently."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    model = _graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=1)], 18, [x], [y], [axes])
    problems = check_graph(model, PARSERS["8.6"])
    assert any("reduces every axis" in p.reason for p in problems)
    assert not check_graph(model, PARSERS["10.3"])  # 10.x reads an initializer axes input


def test_integer_reductions_and_opset_20_grid_sample_are_refused():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    model = _graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="count", keepdims=0)], 17, [x], [y], [axes])
    assert any("input type" in p.reason for p in check_graph(model, PARSERS["8.6"]))  # FP32/FP16 only there
    assert not check_graph(model, PARSERS["10.3"])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 3, 3, 2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 3, 3])
    sample = helper.make_node("GridSample", ["image", "grid"], ["out"], name="sample", mode="linear")
    problems = check_graph(_graph([sample], 20, [image, grid], [out]), PARSERS["10.3"])
    assert any("falls back to nearest" in p.reason for p in problems)


def test_einsum_broadcasting_is_refused_before_10_12():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 5, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3, 4])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 5, 4])
    model = _graph([helper.make_node("Einsum", ["a", "b"], ["c"], name="e", equation="bnc,bck->bnk")], 17, [a, b], [c])
    assert any("broadcasts" in p.reason for p in check_graph(model, PARSERS["8.6"]))
    assert not check_graph(model, PARSERS["11"])
