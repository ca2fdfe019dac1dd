"""One model under test in the whole-model and conformance tests, and the checks run on it.

A `Subject` is a model, an input, and a seed for the explained output. It builds each
explain model, each runtime's session and map, and the float64 oracle once, on first
use, so that every test of one model (module-scoped fixtures) shares them: converting and
loading a model costs seconds, running it a fraction of that.

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

from collections.abc import Callable

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
# Explain models are kept for reuse while they take up to this many bytes in all; past
# that only the latest is kept and the others are rebuilt when asked for again. The six
# explain models of one light-zoo model (VGG-19: 0.57 GB each) all kept for the module
# were most of the test run's 14 GB peak; rebuilding one costs seconds.
EXPLAIN_CACHE_BYTES = 256 * 2**20


class Subject:
    """A model, an image, a seed, and what the checks build from them, each built once."""

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
        self._explain: dict[tuple[str, str, str], onnx.ModelProto] = {}
        self._explain_bytes: dict[tuple[str, str, str], int] = {}
        self._maps: dict[Key, np.ndarray] = {}
        self._oracle: Oracle | None = None

    def has_other_rectifiers(self) -> bool:
        return any(n.op_type in OTHER_RECTIFIERS for n in self.model.graph.node)

    def explain(
        self, method: str, rectifiers: str = "all", target: str = "portable"
    ) -> onnx.ModelProto:
        if not self.has_other_rectifiers():
            rectifiers = "all"  # the same explain model: share it
        key = (method, rectifiers, target)
        if key not in self._explain:
            # An explain model is about its model's size: make room before building one.
            if sum(self._explain_bytes.values()) + self.model_bytes > EXPLAIN_CACHE_BYTES:
                self._explain.clear()
                self._explain_bytes.clear()
            built = build_explain_model(
                self.model,
                method,  # type: ignore[arg-type]
                output_name=self.output,
                rectifiers=rectifiers,  # type: ignore[arg-type]
                target=target,  # type: ignore[arg-type]
            )
            self._explain[key], self._explain_bytes[key] = built, built.ByteSize()
        return self._explain[key]

    def saliency(
        self, runtime: str, method: str, rectifiers: str = "all", target: str = "portable"
    ) -> np.ndarray:
        if not self.has_other_rectifiers():
            rectifiers = "all"  # the same explain model: share its map
        key = (runtime, method, rectifiers, target)
        if key not in self._maps:
            explain = self.explain(method, rectifiers, target)
            if self._oracle is not None and self.model_bytes > EXPLAIN_CACHE_BYTES:
                # A large model's torch module (VGG-19: 0.8 GB) makes way for the runtime's
                # copy of the explain model; the oracle converts the model again if asked.
                self._oracle.reference.park()
            run = runtimes.load(runtime, explain)
            feeds = {self.input: self.image, "output_grad": self.seed}
            (got,) = run(feeds, ["saliency"])
            assert got.shape == self.image.shape, f"{runtime}: saliency shaped {got.shape}"
            assert np.all(np.isfinite(got)), f"{runtime}: the saliency has NaN or inf"
            self._maps[key] = np.asarray(got)
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

    def release(self) -> None:
        """Drops what was built (the light zoo's VGG-19 holds gigabytes of it)."""
        self._explain.clear()
        self._explain_bytes.clear()
        self._maps.clear()
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
