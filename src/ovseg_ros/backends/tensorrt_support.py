"""What TensorRT's ONNX parser imports, per version, and a check of an exported graph
against it: a file that fails here would fail (or, worse, import wrongly) at build time
on the robot.

The tables come from onnx-tensorrt's `docs/operators.md` and its importers:
- 8.6: branch 8.6-GA @ ee0b139bc68567a89618c1d84dcd461cc144aad4 (TensorRT release/8.6
  pins 6ba67d34, whose importers are the same for everything checked here);
- 10.0: branch 10.0-GA @ 73f629e04a68765647010b98dd94257282d05d11;
- 10.3: branch 10.1-GA @ 96e781103cfc4adf4a6bb557e94bac8e693f6f4c plus NVIDIA/TensorRT
  CHANGELOG.md (release/10.3 @ 5b990f0a739d): 10.2 changed no importer, 10.3 reads tensor
  `axes` of Slice (the 10.3 parser commit 62bdde2a is not published as a branch);
- 11.x: operators.md of onnx-tensorrt @ 7c51a63a719180eb5160c874c111746f3fb46a6b (the
  commit TensorRT release/11.1 pins) and CHANGELOG.md (10.4-11.1 entries).
Importer facts used by the checks (file:line on the branch named):
- 8.6 reads the axes of ReduceMean/Max/Min/Prod/L2 from the attribute only: an axes input
  (opset 18) is dropped and every axis reduced, silently (builtin_op_importers.cpp
  3681-3715, onnx2trt_utils.cpp 1599-1632); ReduceSum reads an initializer axes input.
- 8.6 and 10.0 have no DeformConv importer: the fallback looks for a plugin named after
  the op type (ModelImporter.cpp 160-169) and none is called DeformConv; 10.1 maps it to
  the ModulatedDeformConv2d plugin (onnxOpImporters.cpp 1208-1243).
- GridSample: 4D only (NvInfer.h release/8.6 6433-6441); unknown mode strings fall back
  to nearest without an error (8.6 builtin_op_importers.cpp 4363, 4378), which is what
  opset 20's "linear" becomes.
- 8.6 reads Constant's value_int(s) as floats: 0 or empty (builtin_op_importers.cpp 596-611).
- Squeeze/Unsqueeze/Slice axes must be constants (8.6 4749, 5010, 4493); Slice takes
  tensor axes from 10.3.
- ScatterND: 8.6 ignores `reduction`; 10.0-10.8 refuse the attribute even when "none".
- Einsum before 10.12: no ellipsis, no diagonal, no broadcasting between inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

F = frozenset({"FLOAT", "FLOAT16"})
BF = frozenset({"BFLOAT16"})
I32 = frozenset({"INT32"})
I64 = frozenset({"INT64"})
B = frozenset({"BOOL"})
I8 = frozenset({"INT8"})
U8 = frozenset({"UINT8"})

REDUCE_OPS_NAMES = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                    "ReduceProd", "ReduceSum", "ReduceSumSquare")

# 8.6 (operators.md rows of 8.6-GA); INT64 is cast down to INT32 by this parser
OPS_8_6: dict[str, frozenset[str]] = {
    **dict.fromkeys(["Abs", "Add", "ArgMax", "ArgMin", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
                     "Max", "Min", "Mul", "Neg", "Sub", "Range", "TopK"], F | I32),
    **dict.fromkeys(["And", "Not", "Or", "Xor"], B),
    "AveragePool": F | I8 | I32, "BatchNormalization": F, "Cast": F | I32 | I8 | U8 | B, "Ceil": F, "Clip": F | I8,
    "Concat": F | I32 | I8 | B, "Constant": F | I32 | I8 | B, "ConstantOfShape": frozenset({"FLOAT"}),
    "Conv": F | I8, "ConvTranspose": F | I8, "Cos": F, "CumSum": F, "Einsum": F, "Erf": F, "Exp": F,
    "Expand": F | I32 | B, "Flatten": F | I32 | B, "Floor": F, "Gather": F | I8 | I32 | B,
    "GatherElements": F | I8 | I32 | B, "Gemm": F | I8, "GlobalAveragePool": F | I8, "GridSample": F,
    "Identity": F | I32 | I8 | B, "InstanceNormalization": F, "LayerNormalization": F, "MatMul": F,
    "MaxPool": F | I8, "NonZero": F, "OneHot": F | I32 | B, "Pad": F | I8 | I32, "Pow": F, "Reciprocal": F,
    **dict.fromkeys(REDUCE_OPS_NAMES, F),
    "Relu": F | I8, "Reshape": F | I32 | I8 | B, "Resize": F, "ScatterND": F | I8 | I32, "ScatterElements": F | I8 | I32,
    "Shape": F | I32 | I8 | B, "Sigmoid": F | I8, "Sin": F, "Slice": F | I32 | I8 | B, "Softmax": F,
    "Split": F | I32 | B, "Sqrt": F, "Squeeze": F | I32 | I8 | B, "Tanh": F | I8, "Tile": F | I32 | B,
    "Transpose": F | I32 | I8 | B, "Trilu": F | I32 | I8 | B, "Unsqueeze": F | I32 | I8 | B, "Where": F | I32 | B,
    "Mod": F | I32, "Elu": F | I8,  # Elu: SED's linear attention (operators.md 8.6-GA line 56)
}


def _widened(ops: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """10.x rows: BF16 wherever FP16 is, INT64 wherever INT32 is (native from 9.0)."""
    out = {}
    for op, types in ops.items():
        extra = (BF if "FLOAT16" in types else frozenset()) | (I64 if "INT32" in types else frozenset())
        out[op] = types | extra
    return out


OPS_10_0 = {
    **_widened(OPS_8_6),
    "Gelu": F | BF | I8 | I32 | I64, "Cast": F | BF | I32 | I64 | U8 | B, "Constant": F | BF | I32 | I64 | B,
    "ConstantOfShape": F | BF | I32 | I64 | B, "Relu": F | BF | I32 | I64, "Elu": F | BF,  # 10.0-GA line 64
    **dict.fromkeys(REDUCE_OPS_NAMES, F | BF | I32 | I64),
}
OPS_10_1 = {**OPS_10_0, "DeformConv": F}  # the ModulatedDeformConv2d plugin
OPS_11 = {**OPS_10_1, "Pow": F | BF | I32 | I64, "Swish": F | BF}

REDUCE_OPS = frozenset(REDUCE_OPS_NAMES)
AXES_INPUT_INDEX = {"Squeeze": 1, "Unsqueeze": 1, "Slice": 3, "Pad": 3}
GRID_SAMPLE_MODES = frozenset({"bilinear", "nearest", "bicubic"})  # opset 16-19 spelling
GRID_SAMPLE_PADDING = frozenset({"zeros", "border", "reflection"})
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})
RESIZE_COORDINATES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
# (op, attribute) -> (ONNX default, values every parser reads, what happens otherwise)
ATTRIBUTE_VALUES = {
    ("GridSample", "mode"): ("bilinear", GRID_SAMPLE_MODES, "is not read (falls back to nearest): export at opset <= 19"),
    ("GridSample", "padding_mode"): ("zeros", GRID_SAMPLE_PADDING, "is not supported"),
    ("Resize", "mode"): ("nearest", RESIZE_MODES, "is not supported"),
    ("Resize", "coordinate_transformation_mode"): ("half_pixel", RESIZE_COORDINATES, "is not supported"),
    ("Resize", "antialias"): (0, frozenset({0}), "is not supported (antialiasing)"),
}


@dataclass(frozen=True)
class ParserSupport:
    """One TensorRT version's ONNX parser, as far as our checks need it."""

    version: tuple[int, int]
    max_opset: int
    ops: dict[str, frozenset[str]] = field(repr=False)
    int64_cast_down: bool  # 8.x: INT64 becomes INT32
    reduce_axes_input_read: frozenset[str]  # Reduce ops whose axes *input* is read (an initializer)
    tensor_axes: frozenset[str]  # ops whose axes input may be a computed tensor
    einsum_general: bool  # ellipsis, diagonal, broadcasting (10.12)
    scatter_nd_reduction_attribute: str  # "ignored" | "refused" | "none-only"

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


PARSERS = {
    "8.6": ParserSupport((8, 6), 17, OPS_8_6, True, frozenset({"ReduceSum"}), frozenset(), False, "ignored"),
    "10.0": ParserSupport((10, 0), 20, OPS_10_0, False, REDUCE_OPS, frozenset(), False, "refused"),
    "10.3": ParserSupport((10, 3), 20, OPS_10_1, False, REDUCE_OPS, frozenset({"Slice"}), False, "refused"),
    # opset 24 per 11.1's operators.md; tensor axes: Pad 10.4, Squeeze/Unsqueeze 10.7 (CHANGELOG)
    "11": ParserSupport((11, 1), 24, OPS_11, False, REDUCE_OPS, frozenset({"Slice", "Pad", "Squeeze", "Unsqueeze"}), True, "none-only"),
}


@dataclass(frozen=True)
class Problem:
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


def _attributes(node) -> dict:
    from onnx import helper

    values = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _graph_info(model):
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types, shapes = {}, {}
    for value in (*graph.value_info, *graph.input, *graph.output):
        tensor = value.type.tensor_type
        types[value.name] = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else None
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    for init in graph.initializer:
        types[init.name] = onnx.TensorProto.DataType.Name(init.data_type)
        shapes[init.name] = list(init.dims)
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return types, shapes, constants


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_graph(model, parser: ParserSupport) -> list[Problem]:
    """Every reason `parser` would refuse or mis-import a node of `model` (ONNX proto)."""
    problems = []
    opset = _opset(model)
    if opset > parser.max_opset:
        problems.append(Problem("<model>", "opset", f"opset {opset} > {parser.max_opset}, the newest TensorRT {parser.name} reads "
                                "(newer forms are imported with older semantics, without an error)"))
    types, shapes, constants = _graph_info(model)
    for node in model.graph.node:
        problems += _check_node(node, parser, opset, types, shapes, constants)
    return problems


def _main_type(node, types) -> str | None:
    """The type the operators.md row is about: the data input (Where: the values;
    ConstantOfShape: its output, the input being a shape)."""
    if node.op_type == "ConstantOfShape":
        return types.get(node.output[0])
    index = 1 if node.op_type == "Where" else 0
    inputs = list(node.input)
    return types.get(inputs[index]) if len(inputs) > index and inputs[index] else None


def _check_node(node, parser: ParserSupport, opset: int, types, shapes, constants) -> list[Problem]:
    op = node.op_type
    problem = lambda reason: [Problem(node.name or f"node_of_{node.output[0]}", op, reason)]  # noqa: E731
    if node.domain not in ("", "ai.onnx"):
        return problem(f"custom domain {node.domain!r}: TensorRT {parser.name} would need a plugin")
    if op not in parser.ops:
        return problem(f"TensorRT {parser.name} has no importer for {op} (it would look for a plugin of that name)")
    attrs = _attributes(node)
    dtype = _main_type(node, types)
    if parser.int64_cast_down and dtype == "INT64":
        dtype = "INT32"
    if dtype is not None and dtype not in parser.ops[op]:
        return problem(f"input type {dtype} not supported (TensorRT {parser.name}: {', '.join(sorted(parser.ops[op]))})")
    found: list[Problem] = []
    if op in REDUCE_OPS and len(node.input) > 1 and node.input[1]:
        if op not in parser.reduce_axes_input_read:
            found += problem("axes given as an input (opset 18 form): this parser ignores it and reduces every axis; "
                             "export at opset <= 17, where the axes are an attribute")
        elif node.input[1] not in constants:
            found += problem("axes input must be an initializer")
    index = AXES_INPUT_INDEX.get(op)
    if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        if op not in parser.tensor_axes:
            found += problem("axes must be a constant")
    for (rule_op, name), (default, allowed, consequence) in ATTRIBUTE_VALUES.items():
        if op == rule_op and attrs.get(name, default) not in allowed:
            found += problem(f"{name} {attrs.get(name)!r} {consequence}")
    if op == "GridSample" and any(len(shapes.get(name) or []) != 4 for name in node.input[:2]):
        found += problem("GridSample input and grid must be 4D")
    if op == "Einsum" and not parser.einsum_general:
        found += _check_einsum(node, attrs.get("equation", ""), shapes, problem)
    if op == "ScatterND" and "reduction" in attrs:
        if parser.scatter_nd_reduction_attribute == "refused":
            found += problem("this parser refuses the reduction attribute, even 'none': leave it out")
        elif attrs["reduction"] != "none":
            found += problem(f"reduction {attrs['reduction']!r} is not applied")
    if op == "Constant" and ({"value_int", "value_ints"} & set(attrs)) and parser.version < (10, 0):
        found += problem("value_int(s) are read as floats by this parser (0 or empty): use a value tensor")
    return found


def _check_einsum(node, equation: str, shapes, problem) -> list[Problem]:
    equation = equation.replace(" ", "")
    if "..." in equation:
        return problem("Einsum with an ellipsis is not supported before TensorRT 10.12")
    terms = equation.split("->")[0].split(",")
    for term in terms:
        if len(set(term)) != len(term):
            return problem("Einsum diagonal (a repeated index in one input) is not supported before TensorRT 10.12")
    sizes: dict[str, set] = {}
    for term, name in zip(terms, node.input):
        dims = shapes.get(name)
        if dims is None or len(dims) != len(term):
            continue
        for letter, dim in zip(term, dims):
            sizes.setdefault(letter, set()).add(dim)
    if any(len(values) > 1 for values in sizes.values()):
        return problem("Einsum broadcasts between inputs, which is not supported before TensorRT 10.12")
    return []


def dynamic_shape_arithmetic(model) -> list[str]:
    """Shape nodes that read a tensor with a dynamic dimension: computed at run time from
    the vocabulary size (the text rows), which a fixed-size graph should not need."""
    _, shapes, _ = _graph_info(model)
    return [n.name for n in model.graph.node if n.op_type == "Shape" and None in (shapes.get(n.input[0]) or [None])]


def plugin_ops(model, parser: ParserSupport) -> list[str]:
    """Op types that would import through a plugin (none in our exports)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type not in parser.ops or n.op_type == "DeformConv"})
