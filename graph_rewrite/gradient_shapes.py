"""The shapes of the backward pass's gradient tensors, written into the explain model
where the runtime cannot infer them itself.

A gradient has its forward tensor's shape. With every dimension a number, onnxruntime
infers that along the backward ops; with a free one (a dynamic batch, a batch method's
copies), its inference loses the dimension at the first Reshape or Expand of a shape
computed at run time, and each later gradient's batch is a dimension of its own. Its NCHWc
transformer keeps an elementwise Mul in the blocked layout only where both inputs are
shown to have one shape (the same number, or the same symbol), so every ReLU mask's
`dy·[x > 0]`, whose `x` is forward and whose `dy` is not, left the layout and came back:
ResNet-50's vanilla explain model with a free batch held 155 reorders, against 20 with
the batch fixed. Declaring each gradient's shape as its forward tensor's (the symbols
shape inference gave the forward pass), and that of each broadcast a rule makes to a
forward tensor's shape (squeeze-excitation's nearest Resize, whose inferred batch is
unknown too), lets the transformer match them: the free batch then holds the reorders of
the fixed one (20 for ResNet-50, 68 for MobileNetV3-Large against 201 before).

Only float32 4-D tensors with a free dimension are declared: those are what the blocked
layout holds and what inference cannot already see.
"""

from __future__ import annotations

import onnx
from onnx import helper

from .builder import Builder


def gradient_value_info(g: Builder) -> list[onnx.ValueInfoProto]:
    """Value infos for the tensors `g` made with a forward tensor's shape (`same_shape`)."""
    made = {t for node in g.nodes for t in node.output}
    declared = []
    for grad, forward in g.shaped_like.items():
        info = g.tensor(forward)
        shape = info.shape
        if (
            grad not in made
            or info.elem_type != onnx.TensorProto.FLOAT
            or shape is None
            or len(shape) != 4
            or info.static_shape is not None
        ):
            continue
        declared.append(helper.make_tensor_value_info(grad, info.elem_type, list(shape)))
    return declared
