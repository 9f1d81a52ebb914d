"""Which layers must stay fp32 in an fp16 engine, found by measurement, and the
mixed-precision ONNX that strongly typed TensorRT builds from.

No GPU is needed: fp16 is emulated in onnxruntime on the CPU by rounding every float
computation's output (and the weights and inputs) to half precision and back, which is
what an fp16 engine stores between layers (TensorRT accumulates matrix products in fp32).
1. One fp32 run with every intermediate exposed gives each node's largest magnitude:
   nodes within `OVERFLOW_MARGIN` of fp16's limit (65504) stay fp32.
2. The network with everything else rounded is compared with fp32 on the calibration
   inputs (panoptic and semantic pixels, per-query classes, mask IoU). If it misses the
   targets, a best-first bisection of the node-name scopes (`search_fp32_set`) finds the
   nodes whose rounding changes the result most, and they join the fp32 set until the
   targets are met.
The resulting node names travel in the ONNX metadata (`fp32_nodes`): the weakly typed
build (TensorRT 8.6 / 10 before 10.12) constrains exactly those layers, and the strongly
typed build (10.12 on, 11) compiles `mixed_precision_model`, which keeps them in fp32.
"""

from __future__ import annotations

import heapq
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
OVERFLOW_MARGIN = 4.0  # calibration images are few: keep fp32 where they came within 4x of the limit
FP32_NODES_KEY = "fp32_nodes"

# ops that move or select values without computing new ones: their precision follows
# their inputs, so they are neither rounded separately nor ever constrained
DATA_MOVEMENT_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "GatherElements", "Concat", "Split",
    "Expand", "Identity", "Flatten", "Pad", "Where", "Tile", "Cast", "Constant", "ConstantOfShape", "Shape",
})


@dataclass(frozen=True)
class AgreementTargets:
    """fp16 against fp32, on the calibration inputs (fractions)."""

    panoptic_pixels: float = 0.99
    semantic_pixels: float = 0.99
    query_classes: float = 0.98
    mask_iou: float = 0.97  # mean over queries of IoU(logit > 0)


@dataclass(frozen=True)
class Agreement:
    panoptic_pixels: float
    semantic_pixels: float
    query_classes: float
    mask_iou: float
    mask_iou_min: float

    def meets(self, targets: AgreementTargets) -> bool:
        return (self.panoptic_pixels >= targets.panoptic_pixels and self.semantic_pixels >= targets.semantic_pixels
                and self.query_classes >= targets.query_classes and self.mask_iou >= targets.mask_iou)

    def damage(self, targets: AgreementTargets) -> float:
        """How much rounding changed the result, in units of what the targets allow (above
        1 misses them): ranks parts of the network even when each alone meets the targets."""
        return max((1.0 - getattr(self, f)) / max(1.0 - getattr(targets, f), 1e-9)
                   for f in ("panoptic_pixels", "semantic_pixels", "query_classes", "mask_iou"))

    @staticmethod
    def mean(items: Sequence["Agreement"]) -> "Agreement":
        return Agreement(
            *(float(np.mean([getattr(a, f) for a in items])) for f in ("panoptic_pixels", "semantic_pixels", "query_classes", "mask_iou")),
            float(min(a.mask_iou_min for a in items)),
        )


def compare(reference: dict, candidate: dict) -> Agreement:
    """Agreement of one image's results: dicts with `panoptic` [H, W], `semantic` [H, W],
    `query_classes` [Q] and `masks` [Q, h, w] bool."""
    def same_segments(a: np.ndarray, b: np.ndarray) -> float:
        # segment ids are arbitrary: pixels agree when they fall in matched segments
        # under the one-to-one matching of ids that maximises overlap (scipy's assignment)
        from scipy.optimize import linear_sum_assignment

        ids_a, inv_a = np.unique(a, return_inverse=True)
        ids_b, inv_b = np.unique(b, return_inverse=True)
        overlap = np.zeros((ids_a.size, ids_b.size), np.int64)
        np.add.at(overlap, (inv_a.ravel(), inv_b.ravel()), 1)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        return overlap[rows, cols].sum() / a.size

    ref_masks, cand_masks = reference["masks"], candidate["masks"]
    inter = (ref_masks & cand_masks).sum((1, 2))
    union = (ref_masks | cand_masks).sum((1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return Agreement(
        panoptic_pixels=float(same_segments(reference["panoptic"], candidate["panoptic"])),
        semantic_pixels=float((reference["semantic"] == candidate["semantic"]).mean()),
        query_classes=float((reference["query_classes"] == candidate["query_classes"]).mean()),
        mask_iou=float(iou.mean()),
        mask_iou_min=float(iou.min()),
    )


def _float_types(model) -> dict[str, int]:
    import onnx

    def collect(graph) -> dict[str, int]:
        types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
        types.update({t.name: t.data_type for t in graph.initializer})
        return {k: v for k, v in types.items() if v}

    types = collect(model.graph)  # our exports carry every tensor's type (onnx-graphsurgeon writes them)
    if all(o in types for n in model.graph.node for o in n.output if o):
        return types
    return collect(onnx.shape_inference.infer_shapes(model).graph)


def compute_nodes(model) -> list[str]:
    """Names of the nodes that compute new float values (float in, float out)."""
    import onnx

    float_type = onnx.TensorProto.FLOAT
    types = _float_types(model)
    names = []
    for node in model.graph.node:
        if node.op_type in DATA_MOVEMENT_OPS or not node.output:
            continue
        outputs_float = all(types.get(o) == float_type for o in node.output if o)
        inputs_float = any(types.get(i) == float_type for i in node.input if i)
        if outputs_float and inputs_float:
            names.append(node.name)
    return names


def check_node_names(model) -> None:
    names = [n.name for n in model.graph.node]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError("every node needs a unique name to be kept in fp32 by name")


def rounded_model(model, fp32_nodes: Iterable[str] = (), computing: Sequence[str] | None = None):
    """A copy of `model` that emulates an fp16 engine: the outputs of every computing
    node outside `fp32_nodes`, the float inputs and the weights those nodes read are
    rounded to fp16 and back (Cast pairs; onnxruntime then runs it in fp32)."""
    import onnx
    from onnx import helper, numpy_helper

    check_node_names(model)
    keep = set(fp32_nodes)
    computing = compute_nodes(model) if computing is None else computing  # shape inference: slow on big files
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    graph = rounded.graph
    rounding = set(computing) - keep
    targets = [n for n in graph.node if n.name in rounding]
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def round_tensor(name: str) -> str:
        half, back = f"{name}__fp16", f"{name}__fp16_rounded"
        graph.node.extend([
            helper.make_node("Cast", [name], [half], to=onnx.TensorProto.FLOAT16, name=f"{name}__to_fp16"),
            helper.make_node("Cast", [half], [back], to=onnx.TensorProto.FLOAT, name=f"{name}__to_fp32"),
        ])
        return back

    renames: dict[str, str] = {}
    outputs = {o.name for o in graph.output}
    for node in targets:
        for name in node.output:
            if name and name not in outputs:
                renames[name] = round_tensor(name)
    float_inputs = [i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    for name in float_inputs:
        renames[name] = round_tensor(name)
    for node in graph.node:
        if node.op_type == "Cast" and node.name.endswith(("__to_fp16", "__to_fp32")):
            continue
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    target_names = {n.name for n in targets}
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        users = consumers.get(init.name, [])
        if users and all(u.name in target_names for u in users):
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float16).astype(np.float32), init.name))
    rounded_graph = helper.make_graph(list(_toposorted(graph)), graph.name, graph.input, graph.output, graph.initializer)
    del graph.node[:]
    graph.node.extend(rounded_graph.node)
    return rounded


def _toposorted(graph):
    """The nodes in an order where each comes after its inputs' producers, the original
    order wherever it allows (Kahn's algorithm: linear, a search costs one per run)."""
    produced = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = list(graph.node)
    waiting_on = [0] * len(nodes)
    consumers: dict[str, list[int]] = {}
    for k, node in enumerate(nodes):
        for name in set(node.input) - produced:
            waiting_on[k] += 1
            consumers.setdefault(name, []).append(k)
    ready = [k for k, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    emitted = 0
    while ready:
        k = heapq.heappop(ready)
        emitted += 1
        yield nodes[k]
        for name in nodes[k].output:
            for consumer in consumers.pop(name, ()):
                waiting_on[consumer] -= 1
                if waiting_on[consumer] == 0:
                    heapq.heappush(ready, consumer)
    if emitted != len(nodes):
        raise ValueError("graph has a cycle or an undefined input")


def output_ranges(model, feeds: Sequence[dict[str, np.ndarray]], computing: Sequence[str] | None = None) -> dict[str, float]:
    """Largest |value| each computing node produced over `feeds` (fp32 run)."""
    import onnx
    import onnxruntime as ort

    nodes = {n.name: n for n in model.graph.node}
    names = compute_nodes(model) if computing is None else list(computing)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    wanted = {}
    for name in names:
        for out in nodes[name].output:
            wanted[out] = name
            if out not in have:
                exposed.graph.output.append(onnx.ValueInfoProto(name=out))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every intermediate as exported
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    largest = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for out, value in zip(output_names, session.run(output_names, feed)):
            node = wanted.get(out)
            if node is not None and value.size and np.issubdtype(value.dtype, np.floating):
                finite = np.abs(value[np.isfinite(value)])
                largest[node] = max(largest[node], float(finite.max()) if finite.size else float("inf"))
    return largest


def overflow_nodes(ranges: dict[str, float], margin: float = OVERFLOW_MARGIN) -> list[str]:
    return sorted(name for name, value in ranges.items() if value * margin > FP16_MAX)


def module_of(node_name: str) -> str:
    """The scope a torch export gives a node: '/model/decoder/mask_heads.0/s_atten/MatMul' ->
    '/model/decoder/mask_heads.0/s_atten'."""
    return node_name.rsplit("/", 1)[0] if "/" in node_name else node_name


@dataclass
class Fp32Set:
    """The outcome of `find_fp32_nodes`, kept in the export's metadata and reports."""

    nodes: list[str]
    overflow: list[str]  # from the range run
    modules: list[str]  # added because rounding them alone changed the result
    agreement: Agreement  # final fp16 emulation against fp32 (mean over inputs)
    agreement_all_fp16: Agreement  # before anything was kept in fp32
    targets: AgreementTargets = field(default_factory=AgreementTargets)
    evaluations: int = 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "targets": asdict(self.targets)})

    @staticmethod
    def from_json(text: str) -> "Fp32Set":
        data = json.loads(text)
        return Fp32Set(
            nodes=data["nodes"], overflow=data["overflow"], modules=data["modules"],
            agreement=Agreement(**data["agreement"]), agreement_all_fp16=Agreement(**data["agreement_all_fp16"]),
            targets=AgreementTargets(**data["targets"]), evaluations=data.get("evaluations", 0),
        )


def scope_parts(scope: str, nodes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """A scope's parts one level down the export's node-name tree: each sub-scope with
    its nodes, and the scope's own nodes (those directly in it) as one part named after
    the scope. A part of one node is that node."""
    depth = scope.count("/") + 1 if scope else 1
    own: list[str] = []
    parts: dict[str, list[str]] = {}
    for name in nodes:
        components = module_of(name).split("/")
        if len(components) > depth and "/" in name:
            parts.setdefault("/".join(components[:depth + 1]), []).append(name)
        else:
            own.append(name)
    found = list(parts.items())
    if own:
        found.append((own[0] if len(own) == 1 else scope, own))
    return found


def halves(scope: str, nodes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Two parts of a scope's nodes for the search to score, each (its scope, its nodes):
    its two sub-scopes (or sub-scope and own nodes), or the first and second half of its
    parts (in graph order), or of its own nodes when it has no sub-scopes; none for a
    single node. A scope with one sub-scope is that sub-scope."""
    parts = scope_parts(scope, nodes)
    while len(parts) == 1 and parts[0][0] != scope and len(nodes) > 1:
        scope, nodes = parts[0]
        parts = scope_parts(scope, nodes)
    if len(parts) == 2:
        return [(name, part) for name, part in parts]
    if len(parts) > 2:
        middle = len(parts) // 2
        return [(scope, [n for _, part in group for n in part]) for group in (parts[:middle], parts[middle:])]
    if len(nodes) == 1:
        return []
    return [(scope, list(nodes[:len(nodes) // 2])), (scope, list(nodes[len(nodes) // 2:]))]


def search_fp32_set(
    computing: Sequence[str],
    overflow: Sequence[str],
    evaluate: Callable[[list[str]], Agreement],
    targets: AgreementTargets = AgreementTargets(),
    max_evaluations: int = 400,
) -> Fp32Set:
    """The fp32 set, from `evaluate(fp32_nodes)`: the agreement with fp32 when every
    computing node but those is rounded.

    The overflow nodes first. If the rest rounded still misses the targets, a best-first
    bisection of the node-name tree: a part of the network is rounded alone (all else
    fp32) and scored by how much that changed the result (`Agreement.damage`); the most
    damaging part scored so far is split in two (`halves`: sub-scopes, then nodes) and
    both scored, until the most damaging is a single node, or a part neither of whose
    halves does damage alone, which joins the fp32 set; then the next, until the targets
    are met. Two runs per split: a few dozen runs where one per module took hundreds at
    camera sizes (seconds each on a CPU). A score taken before nodes of its part joined
    the set is taken again when the part comes up."""
    keep = list(overflow)  # in the order nodes joined: a part's score is stale if any joined after it
    kept = set(keep)
    evaluations = 0

    def run(fp32_nodes: Iterable[str]) -> Agreement:
        nonlocal evaluations
        evaluations += 1
        if evaluations % 10 == 0:
            log.warning("fp16 layer search: %d runs so far", evaluations)
        return evaluate(list(fp32_nodes))

    all_fp16 = run([])
    agreement = run(keep) if keep else all_fp16
    added: list[str] = []
    if not agreement.meets(targets):
        log.warning("fp16 misses the agreement targets beyond overflow (%s): searching %d nodes", agreement, len(computing))
        heap: list[tuple[float, int, str, list[str], int]] = []  # (-damage, order, scope, nodes, len(keep) when scored)

        def score(scope: str, nodes: list[str]) -> float:
            rounded = [n for n in nodes if n not in kept]
            if not rounded:
                return 0.0
            rounding = set(rounded)
            damage = run(n for n in computing if n not in rounding).damage(targets)
            log.info("fp16 layer search: %d nodes of %s rounded alone: damage %.3f", len(rounded), scope or "the network", damage)
            if damage > 0.0:
                heapq.heappush(heap, (-damage, evaluations, scope, rounded, len(keep)))
            return damage

        heap.append((-agreement.damage(targets), 0, "", [n for n in computing if n not in kept], len(keep)))  # that run
        while heap and not agreement.meets(targets) and evaluations < max_evaluations:
            _, _, scope, nodes, kept_then = heapq.heappop(heap)
            if len(keep) != kept_then and not set(keep[kept_then:]).isdisjoint(nodes):
                score(scope, nodes)  # some of it joined the set since: score what is left
                continue
            damages = [score(*half) for half in halves(scope, nodes)]  # both scored
            if any(d > 0.0 for d in damages):
                continue
            joining = [n for n in nodes if n not in kept]  # one node, or a part whose halves do damage only together
            keep.extend(joining)
            kept.update(joining)
            added.extend(m for m in dict.fromkeys(module_of(n) for n in nodes) if m not in added)
            agreement = run(keep)
    if not agreement.meets(targets):
        log.warning("fp16 still misses the agreement targets with %d nodes in fp32: %s", len(keep), agreement)
    return Fp32Set(sorted(keep), list(overflow), added, agreement, all_fp16, targets, evaluations)


def find_fp32_nodes(
    model,
    feeds: Sequence[dict[str, np.ndarray]],
    evaluate: Callable[[object], Agreement],
    targets: AgreementTargets = AgreementTargets(),
    max_evaluations: int = 400,
) -> Fp32Set:
    """`evaluate(model_proto)` runs a (rounded) model on the calibration inputs and returns
    its mean agreement with the fp32 reference. Overflow from one range run, then
    `search_fp32_set`."""
    computing = compute_nodes(model)
    overflow = overflow_nodes(output_ranges(model, feeds, computing))
    return search_fp32_set(computing, overflow, lambda keep: evaluate(rounded_model(model, keep, computing)), targets,
                           max_evaluations)


def mixed_precision_model(model, fp32_nodes: Sequence[str]):
    """fp16 weights and activations except `fp32_nodes` (inputs and outputs stay fp32):
    what a strongly typed TensorRT build compiles for `--precision fp16`
    (onnxconverter-common's converter, with Cast nodes at the fp32 boundaries)."""
    from onnxconverter_common import float16

    check_node_names(model)
    mixed = float16.convert_float_to_float16(_unshared_initializers(model), keep_io_types=True, node_block_list=list(fp32_nodes),
                                             disable_shape_infer=False)
    _fix_cast_targets(mixed)
    return mixed


def _unshared_initializers(model):
    """A copy where no float initializer feeds two nodes: the converter types a shared
    one by its first consumer, so a constant shared by an fp32 and an fp16 node would
    meet the fp16 one in the wrong type (e.g. the 0.5 of a sigmoid threshold)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    # a graph output that nodes also read (mask_logits feeds the last mask pooling) is cast
    # back to fp32 for the caller: the readers get an Identity's copy of their own instead
    outputs = {o.name for o in graph.output}
    read = {i for n in graph.node for i in n.input}
    for name in outputs & read:
        inner = f"{name}__inner"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}__output"))
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    seen: dict[str, int] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name not in floats:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                clone = onnx.TensorProto()
                clone.CopyFrom(floats[name])
                clone.name = f"{name}__for_{node.name}"
                graph.initializer.append(clone)
                node.input[k] = clone.name
    return copy


def _fix_cast_targets(model) -> None:
    """The converter retypes the tensors a Cast writes (bool -> float becomes bool ->
    half in the fp16 part) but leaves the Cast's `to` attribute at FLOAT: onnxruntime
    and strongly typed TensorRT refuse the mismatch. Set `to` to the tensor's type."""
    import onnx

    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    for node in model.graph.node:
        if node.op_type != "Cast":
            continue
        wanted = types.get(node.output[0])
        for attr in node.attribute:
            if attr.name == "to" and wanted in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and attr.i != wanted:
                attr.i = wanted


def write_fp32_set(onnx_path, found: Fp32Set, proto=None) -> None:
    import onnx

    proto = proto if proto is not None else onnx.load(str(onnx_path))
    kept = [p for p in proto.metadata_props if p.key != FP32_NODES_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = FP32_NODES_KEY, found.to_json()
    onnx.save(proto, str(onnx_path))
