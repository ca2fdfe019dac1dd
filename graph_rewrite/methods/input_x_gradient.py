"""Input × gradient (Shrikumar et al. 2016), as Captum's InputXGradient: X·dY/dX."""

from __future__ import annotations

from .base import Context, MethodSpec


def build(ctx: Context) -> str:
    return ctx.g.Mul(ctx.ends.input, ctx.gradient())


METHOD = MethodSpec(
    name="input_x_gradient",
    summary="the input times the gradient at the input",
    build=build,
    merges=True,
)
