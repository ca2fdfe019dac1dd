"""One model under test in the whole-model and conformance tests, and the checks run on it.

A `Subject` is a model, an input, and a seed for the explained output, and a context
manager: a module-scoped fixture enters it (`with Subject(...) as subject: yield subject`),
and its exit frees what the tests of that model share (the maps, small; the oracle's torch
module). The heavy resources each live in a `with` block of their own, so that at most one
model and one resource are alive at a time (the light zoo's VGG-19: 0.57 GB a copy):
- `explained(...)`: an explain model, built on entry, dropped on exit (no cache outlives it);
- a runtime's session, inside `saliency`, which lives as long as one run of it;
- the float64 torch module (`TorchReference.float64`), made and freed per oracle map.
The maps themselves are kept (an image's size each), so that every runtime and check of
one model builds each explain model once per runtime.

The checks:
- `check_oracle`: the map on onnxruntime CPU against onnx2torch in float64 (vanilla: the
  default explain model; deconvnet and guided: rectifiers="relu", as Captum rectifies);
- `check_runtime`: the default (portable) explain model's map on another runtime
  against onnxruntime CPU's;
- `check_onnxruntime_target`: the target="onnxruntime" explain model against the
  portable one, both on onnxruntime CPU.
Every bound is max(FACTOR x what float32 rounding alone does to the map on this model
and input, a floor): see tests/helpers/oracle.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType

import numpy as np
import onnx
from onnxplain.graph_rewrite import build_explain_model, default_input, default_output

from helpers import runtimes
from helpers.oracle import Oracle, TorchReference, cut_at

# A float32 map may sit this many times further from float64 than the float32 controls
# do (the control and the spread sample rounding; another float32 code is another
# sample, which may flip another near-tie); a wrong rule is off by O(1) over the map.
FACTOR = 4.0
# Without kinks or ties near rounding, float32 maps of these nets sit 1e-7 to 2e-6 from
# float64 (relative L2 and max error alike, measured on CPU runtimes).
FLOOR = 1e-5
# GPU runtimes may pick FFT or Winograd convolutions, whose float32 error is larger.
GPU_FLOOR = 1e-4
# Rectifiers deconvnet and guided treat as ReLU under rectifiers="all" but Captum does not.
OTHER_RECTIFIERS = {"Clip", "LeakyRelu", "PRelu", "HardSwish"}

Key = tuple[str, str, str, str]  # runtime, method, rectifiers, target
# Models from this size on park the oracle's float32 torch module (VGG-19: 0.8 GB) while a
# runtime loads an explain model; it is converted again when next asked for.
LARGE_MODEL_BYTES = 256 * 2**20


class Subject:
    """A model, an image, a seed, and the maps the checks compute from them; a context
    manager whose exit frees the maps and the oracle."""

    def __init__(
        self,
        name: str,
        model: onnx.ModelProto,
        image: np.ndarray,
        make_seed: Callable[[np.ndarray], np.ndarray],
        output: str | None = None,
        oracle_methods: tuple[str, ...] = ("vanilla", "deconvnet", "guided"),
    ) -> None:
        self.name, self.model, self.image = name, model, image
        # Methods whose float64 map the oracle computes; the others' bounds use vanilla's
        # rounding figures (where a float64 pass is too slow to run three times).
        self.oracle_methods = oracle_methods
        self.model_bytes = model.ByteSize()
        self.input = default_input(model)
        self.output = output or default_output(model)
        forward = runtimes.load(runtimes.REFERENCE, cut_at(model, self.output))
        self.value = forward({self.input: image}, [self.output])[0]
        self.seed = make_seed(self.value).astype(np.float32)
        assert self.seed.shape == self.value.shape and np.any(self.seed)
        self._maps: dict[Key, np.ndarray] = {}
        self._oracle: Oracle | None = None

    def has_other_rectifiers(self) -> bool:
        return any(n.op_type in OTHER_RECTIFIERS for n in self.model.graph.node)

    @contextlib.contextmanager
    def explained(
        self, method: str, rectifiers: str = "all", target: str = "portable"
    ) -> Iterator[onnx.ModelProto]:
        """The explain model for `method`, built on entry and dropped on exit: an explain
        model is about its model's size, and six of them kept for VGG-19's module were
        most of the run's old 14 GB peak; building one again costs seconds."""
        if not self.has_other_rectifiers():
            rectifiers = "all"  # the same explain model
        built = build_explain_model(
            self.model,
            method,  # type: ignore[arg-type]
            output_name=self.output,
            rectifiers=rectifiers,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
        )
        assert built is not self.model
        try:
            yield built
        finally:
            # Clearing the message frees its weights now, even where a traceback or a
            # caller's name still refers to it.
            built.Clear()

    def saliency(
        self, runtime: str, method: str, rectifiers: str = "all", target: str = "portable"
    ) -> np.ndarray:
        if not self.has_other_rectifiers():
            rectifiers = "all"  # the same explain model: share its map
        key = (runtime, method, rectifiers, target)
        if key not in self._maps:
            if self._oracle is not None and self.model_bytes > LARGE_MODEL_BYTES:
                # A large model's torch module makes way for the runtime's copy of the
                # explain model; the oracle converts the model again if asked.
                self._oracle.reference.park()
            with self.explained(method, rectifiers, target) as explain:
                run = runtimes.load(runtime, explain)
                feeds = {self.input: self.image, "output_grad": self.seed}
                (got,) = run(feeds, ["saliency"])
                del run  # the session (its copy of the weights) goes before the model does
            assert got.shape == self.image.shape, f"{runtime}: saliency shaped {got.shape}"
            assert np.all(np.isfinite(got)), f"{runtime}: the saliency has NaN or inf"
            self._maps[key] = np.array(got)  # a copy: no view into a runtime's buffer
        return self._maps[key]

    @property
    def oracle(self) -> Oracle:
        if self._oracle is None:
            reference = TorchReference(self.model, self.input, self.output, self.image)
            error = reference.forward_error(self.image, self.value)
            # onnx2torch must compute what onnxruntime computes before its gradient counts.
            assert error < 1e-4, f"onnx2torch's forward is {error:.3g} from onnxruntime's"
            self._oracle = Oracle(reference, self.image, self.seed)
        return self._oracle

    def __enter__(self) -> Subject:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Frees what the tests of this model shared, before the next model's fixture loads
        # it: the oracle's torch module (its weights dropped now, not at garbage collection).
        self._maps.clear()
        if self._oracle is not None:
            self._oracle.reference.park()
            self._oracle = None


def _record(subject: Subject, what: str, l2: float, peak: float, figure: str) -> None:
    # The measured figures, for `pytest -s` (the suite's numbers in reports come from here).
    control, spread = subject.oracle.figures(figure)
    print(
        f"\n[{subject.name}] {what}: relative L2 {l2:.3g}, max error {peak:.3g}; "
        f"float32 control {_pair(control)}, spread {_pair(spread)}"
    )


def _pair(figures: tuple[float, float] | None) -> str:
    return "-" if figures is None else f"{figures[0]:.3g} / {figures[1]:.3g}"


def _figure_method(subject: Subject, method: str) -> str:
    return method if method in subject.oracle_methods else "vanilla"


def _floor(runtime: str) -> float:
    return GPU_FLOOR if runtime in runtimes.GPU_RUNTIMES else FLOOR


def check_oracle(subject: Subject, method: str) -> tuple[float, float]:
    """The onnxruntime CPU map against the float64 oracle; returns (relative L2, max error)."""
    rectifiers = "all" if method == "vanilla" else "relu"
    got = subject.saliency(runtimes.REFERENCE, method, rectifiers)
    want = subject.oracle.exact(method)
    assert np.abs(want).max() > 0, f"{subject.name}: the {method} map is all zeros"
    l2, peak, verdict = subject.oracle.judge(method, got, FACTOR, FLOOR)
    _record(subject, f"{method} vs float64", l2, peak, method)
    assert not verdict, f"{subject.name}: {verdict}"
    return l2, peak


def check_runtime(subject: Subject, method: str, runtime: str) -> tuple[float, float]:
    """The portable map on `runtime` against onnxruntime CPU's; (relative L2, max error)."""
    want = subject.saliency(runtimes.REFERENCE, method)
    got = subject.saliency(runtime, method)
    figure = _figure_method(subject, method)
    l2, peak, verdict = subject.oracle.judge(figure, got, FACTOR, _floor(runtime), want=want)
    _record(subject, f"{method} {runtime} vs onnxruntime-cpu", l2, peak, figure)
    assert not verdict, f"{subject.name} on {runtime}: {verdict}"
    return l2, peak


def check_onnxruntime_target(subject: Subject, method: str) -> tuple[float, float]:
    """target="onnxruntime" against the portable model, both on onnxruntime CPU."""
    want = subject.saliency(runtimes.REFERENCE, method)
    got = subject.saliency(runtimes.REFERENCE, method, target="onnxruntime")
    figure = _figure_method(subject, method)
    l2, peak, verdict = subject.oracle.judge(figure, got, FACTOR, FLOOR, want=want)
    _record(subject, f"{method} target onnxruntime vs portable", l2, peak, figure)
    assert not verdict, f"{subject.name}, target onnxruntime: {verdict}"
    return l2, peak
