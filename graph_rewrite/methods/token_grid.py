"""A transformer's token layer [N, tokens, C] read as an image grid [N, C, gh, gw].

ViT/DeiT-style models carry a few extra tokens (class, distillation, registers) ahead of
the patch tokens. pytorch-grad-cam's users drop them by hand in a `reshape_transform`
(tensor[:, 1:, :].reshape(N, 14, 14, C), then channels first); here the grid is inferred:
the fewest leading tokens to drop such that the rest form a gh x gw grid with the
input's aspect ratio (gh·W == gw·H), which holds for any patch size or hybrid stem.
"""

from __future__ import annotations

from ..builder import Builder
from ..errors import RewriteError

MAX_PREFIX_TOKENS = 8  # class + distillation + up to 6 register tokens


def token_grid(tokens: int, input_hw: tuple[int, int] | None) -> tuple[int, int, int]:
    """(prefix tokens to drop, grid height, grid width) for a layer of `tokens` tokens."""
    for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        patches = tokens - prefix
        for gh in range(1, patches + 1):
            if patches % gh:
                continue
            gw = patches // gh
            fits = gh == gw if input_hw is None else gh * input_hw[1] == gw * input_hw[0]
            if fits:
                return prefix, gh, gw
    raise RewriteError(
        f"a token layer of {tokens} tokens does not form a grid with the input's aspect "
        f"ratio after dropping up to {MAX_PREFIX_TOKENS} leading tokens; name a 4-D layer"
    )


def tokens_as_grid(g: Builder, tensor: str, prefix: int, gh: int, gw: int) -> str:
    """[N, tokens, C] -> drop `prefix` leading tokens -> [N, C, gh, gw]."""
    patches = g.Slice(tensor, g.ints([prefix]), g.ints([prefix + gh * gw]), g.ints([1]))
    grid = g.Reshape(patches, g.ints([0, gh, gw, -1]))
    return g.Transpose(grid, perm=[0, 3, 1, 2])


def grid_of_layer(g: Builder, layer: str, x: str) -> tuple[int, int, int] | None:
    """The grid of a 3-D token layer explained against a 4-D image input; None otherwise."""
    layer_info, input_info = g.tensor(layer), g.tensor(x)
    if layer_info.rank != 3 or input_info.rank != 4:
        return None
    per_sample = layer_info.static_from(1)
    if per_sample is None:
        raise RewriteError(
            f"the Grad-CAM layer {layer!r} is a token layer [N, tokens, C] whose token count "
            "is not static: the grid cannot be inferred"
        )
    spatial = input_info.static_from(2)
    return token_grid(per_sample[0], None if spatial is None else (spatial[0], spatial[1]))


# A layer whose (rows, columns) miss the input's aspect ratio by more than this is not laid
# out as [N, C, H, W]; the margin covers the rounding of strided convs (300x500 -> 10x16).
ASPECT_SLACK = 0.25


def _aspect_miss(rows: int, columns: int, input_hw: tuple[int, int]) -> float:
    """How far rows/columns is from the input's height/width, relatively."""
    want = input_hw[0] / input_hw[1]
    return abs(rows / columns - want) / want


def is_channels_last(g: Builder, layer: str, x: str) -> bool:
    """Whether a 4-D layer explained against a 4-D image is [N, H, W, C] (Swin-style blocks,
    and channels-last exports), not [N, C, H, W].

    Read from the shapes: channels last when dims (1, 2) follow the input's aspect ratio and
    dims (2, 3) clearly do not ([N, 7, 7, 768] against 224x224). A layer whose shape fits
    both readings, or is not static, is taken as channels first, as before.
    """
    layer_info, input_info = g.tensor(layer), g.tensor(x)
    if layer_info.rank != 4 or input_info.rank != 4:
        return False
    dims, spatial = layer_info.static_from(1), input_info.static_from(2)
    if dims is None or spatial is None or 0 in dims or 0 in spatial:
        return False
    hw = (spatial[0], spatial[1])
    first, last = _aspect_miss(dims[1], dims[2], hw), _aspect_miss(dims[0], dims[1], hw)
    return first > ASPECT_SLACK and last < first
