"""The fp32 layer set of fp16 engines, measured on the CPU (fp16 emulated in
onnxruntime), and the mixed-precision file strongly typed TensorRT builds from."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ovseg_ros.fp16_calibration import calibrate_export
from ovseg_ros.mixed_precision import (
    FP32_NODES_KEY,
    Agreement,
    Fp32Set,
    compare,
    compute_nodes,
    mixed_precision_model,
    output_ranges,
    overflow_nodes,
    rounded_model,
    scope_parts,
    search_fp32_set,
)
from ovseg_ros.onnx_export import export_onnx, read_metadata

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")


def _run(model, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _small_graph():
    """y = (x * big) + x, then a reshape and a comparison: float compute, data movement, bool."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [3, 2])
    inits = [numpy_helper.from_array(np.array(2e4, np.float32), "big"), numpy_helper.from_array(np.array([3, 2], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["scaled"], name="/m/scale/Mul"),
        helper.make_node("Add", ["scaled", "x"], ["sum"], name="/m/sum/Add"),
        helper.make_node("Reshape", ["sum", "shape"], ["y"], name="/m/Reshape"),
        helper.make_node("Greater", ["y", "zero"], ["flag"], name="/m/Greater"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, flag], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compute_nodes_are_float_computations_only():
    assert compute_nodes(_small_graph()) == ["/m/scale/Mul", "/m/sum/Add"]  # not the reshape, not the comparison


def test_rounding_emulates_half_precision_storage():
    model = _small_graph()
    feeds = {"x": np.array([[1.0001, 2, 3], [4, 5, 6]], np.float32) * 1e-4}
    exact = _run(model, feeds)[0]
    rounded = _run(rounded_model(model), feeds)[0]
    expected = (feeds["x"].astype(np.float16).astype(np.float32) * 2e4).astype(np.float16).astype(np.float32)
    assert not np.array_equal(exact, rounded)
    np.testing.assert_allclose(rounded.reshape(2, 3), (expected + feeds["x"].astype(np.float16)).astype(np.float16), rtol=1e-3)
    kept = _run(rounded_model(model, compute_nodes(model)), {"x": feeds["x"].astype(np.float16).astype(np.float32)})[0]
    np.testing.assert_allclose(kept, _run(model, {"x": feeds["x"].astype(np.float16).astype(np.float32)})[0])


def test_overflowing_nodes_are_found_from_ranges():
    model = _small_graph()
    ranges = output_ranges(model, [{"x": np.full((2, 3), 1.0, np.float32)}])
    assert ranges["/m/scale/Mul"] == pytest.approx(2e4)
    assert overflow_nodes(ranges) == ["/m/scale/Mul", "/m/sum/Add"]  # within 4x of 65504
    assert overflow_nodes(output_ranges(model, [{"x": np.full((2, 3), 0.1, np.float32)}])) == []
    feeds = {"x": np.full((2, 3), 4.0, np.float32)}
    assert np.isinf(_run(rounded_model(model), feeds)[0]).all()  # 8e4 is past fp16's range, as in an fp16 engine
    assert np.isfinite(_run(rounded_model(model, overflow_nodes(ranges)), feeds)[0]).all()


def test_agreement_matches_segments_not_ids():
    panoptic = np.array([[1, 1, 2, 2], [0, 0, 2, 2]])
    renumbered = np.array([[5, 5, 3, 3], [0, 0, 3, 3]])
    masks = np.zeros((2, 2, 4), bool)
    masks[0, :, :2] = True
    reference = {"panoptic": panoptic, "semantic": panoptic, "query_classes": np.array([1, 2]), "masks": masks}
    same = compare(reference, {**reference, "panoptic": renumbered})
    assert same.panoptic_pixels == 1.0 and same.mask_iou == 1.0 and same.query_classes == 1.0
    other = masks.copy()
    other[0, 0, 0] = False
    changed = compare(reference, {**reference, "query_classes": np.array([1, 0]), "masks": other})
    assert changed.query_classes == 0.5 and changed.mask_iou_min == pytest.approx(3 / 4)


def _network_names() -> list[str]:
    """Node names shaped like a torch export's: 4 blocks of 5 layers of 10 nodes, a few own nodes."""
    names = [f"/model/block{b}/layer{i}/Conv_{j}" for b in range(4) for i in range(5) for j in range(10)]
    return names + ["/model/block2/Add", "/model/block2/Mul", "/model/Softmax"]


def _agreement(mask_iou: float) -> Agreement:
    return Agreement(1.0, 1.0, 1.0, mask_iou, mask_iou)


def test_scope_parts_follow_the_name_tree():
    names = _network_names()
    assert [p for p, _ in scope_parts("", names)] == ["/model"]
    assert [p for p, _ in scope_parts("/model", names)] == [f"/model/block{b}" for b in range(4)] + ["/model/Softmax"]
    parts = dict(scope_parts("/model/block2", [n for n in names if n.startswith("/model/block2/")]))
    assert len(parts["/model/block2/layer0"]) == 10 and parts["/model/block2"] == ["/model/block2/Add", "/model/block2/Mul"]


def test_search_finds_the_sensitive_nodes_in_a_few_dozen_runs():
    """Two nodes change the result most, the rest a little each: the bisection finds those
    two, in fewer runs than there are modules (21) or nodes (203)."""
    names = _network_names()
    harm = {n: 1e-4 for n in names} | {"/model/block1/layer3/Conv_7": 0.02, "/model/block3/layer0/Conv_2": 0.02}
    calls = []

    def evaluate(fp32_nodes):
        calls.append(fp32_nodes)
        kept = set(fp32_nodes)
        return _agreement(1.0 - sum(h for n, h in harm.items() if n not in kept))

    found = search_fp32_set(names, [], evaluate)
    assert found.agreement.meets(found.targets) and not found.agreement_all_fp16.meets(found.targets)
    assert found.nodes == ["/model/block1/layer3/Conv_7", "/model/block3/layer0/Conv_2"]
    assert found.modules == ["/model/block3/layer0", "/model/block1/layer3"] or found.modules == found.modules[::-1]
    assert found.evaluations == len(calls) < 40


def test_search_keeps_a_scope_whose_parts_only_harm_together():
    names = _network_names()
    pair = {"/model/block2/Add", "/model/block2/layer4/Conv_0"}

    def evaluate(fp32_nodes):
        return _agreement(0.9 if pair.isdisjoint(fp32_nodes) else 1.0)  # both rounded: changed; either kept: not

    found = search_fp32_set(names, [], evaluate)
    assert found.agreement.meets(found.targets)  # kept: the smallest part holding both (layer4 and block2's own nodes)
    assert set(found.nodes) == {f"/model/block2/layer4/Conv_{j}" for j in range(10)} | {"/model/block2/Add", "/model/block2/Mul"}


def test_search_stops_at_overflow_when_that_suffices():
    names = _network_names()
    found = search_fp32_set(names, ["/model/Softmax"], lambda keep: _agreement(1.0 if "/model/Softmax" in keep else 0.5))
    assert found.nodes == ["/model/Softmax"] and found.evaluations == 2 and found.modules == []


def test_export_measures_its_fp32_set_and_keeps_it(tiny_model, tmp_path):
    path = export_onnx(tiny_model, tmp_path / "tiny.onnx", 64, 96)
    found = calibrate_export(path, tiny_model)
    assert found.agreement.meets(found.targets), found.agreement
    assert set(found.overflow) <= set(found.nodes) <= set(compute_nodes(onnx.load(str(path))))
    stored = Fp32Set.from_json(read_metadata(path)[FP32_NODES_KEY])
    assert stored.nodes == found.nodes and isinstance(stored.agreement, Agreement)
    assert read_metadata(path)["weights_sha256"]  # the rest of the metadata is kept


def test_mixed_precision_file_is_fp16_outside_the_fp32_set(tiny_model, tmp_path):
    path = export_onnx(tiny_model, tmp_path / "tiny.onnx", 64, 96)
    model = onnx.load(str(path))
    keep = compute_nodes(model)[:5]
    mixed = mixed_precision_model(model, keep)
    onnx.checker.check_model(mixed)
    assert [i.type.tensor_type.elem_type for i in mixed.graph.input] == [TensorProto.FLOAT] * len(mixed.graph.input)
    assert {o.name: o.type.tensor_type.elem_type for o in mixed.graph.output}["mask_logits"] == TensorProto.FLOAT
    halves = sum(init.data_type == TensorProto.FLOAT16 for init in mixed.graph.initializer)
    assert halves > len(mixed.graph.initializer) // 2
    names = {n.name for n in mixed.graph.node}
    assert set(keep) <= names  # the fp32 nodes are still there, under their names
    rng = np.random.default_rng(0)
    feeds = {"images": rng.standard_normal((1, 3, 64, 96), dtype=np.float32),
             "text_embeddings": rng.standard_normal((6, tiny_model.config.clip.embed_dim), dtype=np.float32)}
    fp32, half = _run(model, feeds), _run(mixed, feeds)  # onnxruntime takes the file as it is
    for a, b in zip(fp32[:3], half[:3]):
        assert a.dtype == b.dtype == np.float32
        assert np.abs(a - b).mean() <= 0.01 * np.abs(a).mean()  # half precision, not another network
    np.testing.assert_array_equal(fp32[3], half[3])
