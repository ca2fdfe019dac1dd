"""Vanilla gradient (Simonyan et al. 2014): the true gradient at the input, dX = dY·f'(X)."""

from .base import MethodSpec, gradient_at_input

# No rectifier override: every op keeps its true backward.
RECTIFIER_RULE = None

METHOD = MethodSpec(
    name="vanilla",
    summary="the gradient of the explained output at the input",
    build=gradient_at_input(RECTIFIER_RULE),
    merges=True,
)
