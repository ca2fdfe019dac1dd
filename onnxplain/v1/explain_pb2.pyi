from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_INT8: _ClassVar[DataType]
    DATA_TYPE_UINT16: _ClassVar[DataType]
    DATA_TYPE_INT16: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_BOOL: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_UINT32: _ClassVar[DataType]
    DATA_TYPE_UINT64: _ClassVar[DataType]
    DATA_TYPE_BFLOAT16: _ClassVar[DataType]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_VANILLA: _ClassVar[Method]
    METHOD_DECONVNET: _ClassVar[Method]
    METHOD_GUIDED: _ClassVar[Method]
    METHOD_GRADCAM: _ClassVar[Method]
    METHOD_GUIDED_GRADCAM: _ClassVar[Method]
    METHOD_INPUT_X_GRADIENT: _ClassVar[Method]
    METHOD_SMOOTHGRAD: _ClassVar[Method]
    METHOD_INTEGRATED_GRADIENTS: _ClassVar[Method]

class Integration(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTEGRATION_UNSPECIFIED: _ClassVar[Integration]
    INTEGRATION_GAUSS_LEGENDRE: _ClassVar[Integration]
    INTEGRATION_RIEMANN_TRAPEZOID: _ClassVar[Integration]
    INTEGRATION_RIEMANN_LEFT: _ClassVar[Integration]
    INTEGRATION_RIEMANN_RIGHT: _ClassVar[Integration]
    INTEGRATION_RIEMANN_MIDDLE: _ClassVar[Integration]

class CamStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAM_STYLE_UNSPECIFIED: _ClassVar[CamStyle]
    CAM_STYLE_CAPTUM: _ClassVar[CamStyle]
    CAM_STYLE_PYTORCH_GRAD_CAM: _ClassVar[CamStyle]

class ParameterKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAMETER_KIND_UNSPECIFIED: _ClassVar[ParameterKind]
    PARAMETER_KIND_GRAPH: _ClassVar[ParameterKind]
    PARAMETER_KIND_RUN_TIME: _ClassVar[ParameterKind]

class HeatmapSign(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEATMAP_SIGN_UNSPECIFIED: _ClassVar[HeatmapSign]
    HEATMAP_SIGN_ALL: _ClassVar[HeatmapSign]
    HEATMAP_SIGN_POSITIVE: _ClassVar[HeatmapSign]
    HEATMAP_SIGN_NEGATIVE: _ClassVar[HeatmapSign]
    HEATMAP_SIGN_ABSOLUTE: _ClassVar[HeatmapSign]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_INT8: DataType
DATA_TYPE_UINT16: DataType
DATA_TYPE_INT16: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_BOOL: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_UINT32: DataType
DATA_TYPE_UINT64: DataType
DATA_TYPE_BFLOAT16: DataType
METHOD_UNSPECIFIED: Method
METHOD_VANILLA: Method
METHOD_DECONVNET: Method
METHOD_GUIDED: Method
METHOD_GRADCAM: Method
METHOD_GUIDED_GRADCAM: Method
METHOD_INPUT_X_GRADIENT: Method
METHOD_SMOOTHGRAD: Method
METHOD_INTEGRATED_GRADIENTS: Method
INTEGRATION_UNSPECIFIED: Integration
INTEGRATION_GAUSS_LEGENDRE: Integration
INTEGRATION_RIEMANN_TRAPEZOID: Integration
INTEGRATION_RIEMANN_LEFT: Integration
INTEGRATION_RIEMANN_RIGHT: Integration
INTEGRATION_RIEMANN_MIDDLE: Integration
CAM_STYLE_UNSPECIFIED: CamStyle
CAM_STYLE_CAPTUM: CamStyle
CAM_STYLE_PYTORCH_GRAD_CAM: CamStyle
PARAMETER_KIND_UNSPECIFIED: ParameterKind
PARAMETER_KIND_GRAPH: ParameterKind
PARAMETER_KIND_RUN_TIME: ParameterKind
HEATMAP_SIGN_UNSPECIFIED: HeatmapSign
HEATMAP_SIGN_ALL: HeatmapSign
HEATMAP_SIGN_POSITIVE: HeatmapSign
HEATMAP_SIGN_NEGATIVE: HeatmapSign
HEATMAP_SIGN_ABSOLUTE: HeatmapSign

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("zeros", "constant", "blur_sigma", "tensor")
    ZEROS_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    zeros: bool
    constant: float
    blur_sigma: float
    tensor: Tensor
    def __init__(self, zeros: _Optional[bool] = ..., constant: _Optional[float] = ..., blur_sigma: _Optional[float] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ParamValue(_message.Message):
    __slots__ = ("int_value", "float_value", "string_value", "bool_value", "tensor_value")
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_VALUE_FIELD_NUMBER: _ClassVar[int]
    int_value: int
    float_value: float
    string_value: str
    bool_value: bool
    tensor_value: Tensor
    def __init__(self, int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., tensor_value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class MethodParameter(_message.Message):
    __slots__ = ("name", "type", "default_value", "description", "choices", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default_value: str
    description: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    kind: ParameterKind
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default_value: _Optional[str] = ..., description: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[ParameterKind, str]] = ...) -> None: ...

class MethodOutput(_message.Message):
    __slots__ = ("name", "type", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("method", "name", "summary", "parameters", "outputs")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    method: Method
    name: str
    summary: str
    parameters: _containers.RepeatedCompositeFieldContainer[MethodParameter]
    outputs: _containers.RepeatedCompositeFieldContainer[MethodOutput]
    def __init__(self, method: _Optional[_Union[Method, str]] = ..., name: _Optional[str] = ..., summary: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[MethodParameter, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[MethodOutput, _Mapping]]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("height", "width", "mean", "std", "layout", "color_mode")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    COLOR_MODE_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    layout: str
    color_mode: str
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., layout: _Optional[str] = ..., color_mode: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "available", "error", "input", "output", "labels", "methods", "default_method", "preprocessing", "method_info", "default_layer", "reload_error", "default_method_name", "sanity", "sanity_metric", "sanity_max_similarity", "sanity_score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    METHOD_INFO_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    SANITY_FIELD_NUMBER: _ClassVar[int]
    SANITY_METRIC_FIELD_NUMBER: _ClassVar[int]
    SANITY_MAX_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SANITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    error: str
    input: TensorSpec
    output: TensorSpec
    labels: _containers.RepeatedScalarFieldContainer[str]
    methods: _containers.RepeatedScalarFieldContainer[Method]
    default_method: Method
    preprocessing: Preprocessing
    method_info: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    default_layer: str
    reload_error: str
    default_method_name: str
    sanity: _containers.RepeatedCompositeFieldContainer[SanityResult]
    sanity_metric: str
    sanity_max_similarity: float
    sanity_score: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., error: _Optional[str] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., output: _Optional[_Union[TensorSpec, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., methods: _Optional[_Iterable[_Union[Method, str]]] = ..., default_method: _Optional[_Union[Method, str]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., method_info: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ..., default_layer: _Optional[str] = ..., reload_error: _Optional[str] = ..., default_method_name: _Optional[str] = ..., sanity: _Optional[_Iterable[_Union[SanityResult, _Mapping]]] = ..., sanity_metric: _Optional[str] = ..., sanity_max_similarity: _Optional[float] = ..., sanity_score: _Optional[str] = ...) -> None: ...

class SanityResult(_message.Message):
    __slots__ = ("method", "method_name", "passed", "spearman_abs", "spearman", "ssim", "hog")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    SPEARMAN_ABS_FIELD_NUMBER: _ClassVar[int]
    SPEARMAN_FIELD_NUMBER: _ClassVar[int]
    SSIM_FIELD_NUMBER: _ClassVar[int]
    HOG_FIELD_NUMBER: _ClassVar[int]
    method: Method
    method_name: str
    passed: bool
    spearman_abs: float
    spearman: float
    ssim: float
    hog: float
    def __init__(self, method: _Optional[_Union[Method, str]] = ..., method_name: _Optional[str] = ..., passed: _Optional[bool] = ..., spearman_abs: _Optional[float] = ..., spearman: _Optional[float] = ..., ssim: _Optional[float] = ..., hog: _Optional[float] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "tensor", "image", "method", "method_name", "parameters", "targets", "heatmap", "layer", "steps", "integration", "samples", "sigma", "baseline", "seed", "cam_style", "gradient", "noise", "heatmap_sign", "heatmap_opacity", "heatmap_colormap", "heatmap_percentile", "heatmap_overlay", "top_k", "target_names", "output_grad", "region", "position", "detection")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CAM_STYLE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_SIGN_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_OPACITY_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_COLORMAP_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAMES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRAD_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    tensor: Tensor
    image: bytes
    method: Method
    method_name: str
    parameters: _containers.MessageMap[str, ParamValue]
    targets: _containers.RepeatedScalarFieldContainer[int]
    heatmap: bool
    layer: str
    steps: int
    integration: Integration
    samples: int
    sigma: float
    baseline: Baseline
    seed: int
    cam_style: CamStyle
    gradient: Method
    noise: Tensor
    heatmap_sign: HeatmapSign
    heatmap_opacity: float
    heatmap_colormap: str
    heatmap_percentile: float
    heatmap_overlay: bool
    top_k: int
    target_names: _containers.RepeatedScalarFieldContainer[str]
    output_grad: Tensor
    region: RegionTarget
    position: PositionTarget
    detection: DetectionTarget
    def __init__(self, model: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., image: _Optional[bytes] = ..., method: _Optional[_Union[Method, str]] = ..., method_name: _Optional[str] = ..., parameters: _Optional[_Mapping[str, ParamValue]] = ..., targets: _Optional[_Iterable[int]] = ..., heatmap: _Optional[bool] = ..., layer: _Optional[str] = ..., steps: _Optional[int] = ..., integration: _Optional[_Union[Integration, str]] = ..., samples: _Optional[int] = ..., sigma: _Optional[float] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ..., seed: _Optional[int] = ..., cam_style: _Optional[_Union[CamStyle, str]] = ..., gradient: _Optional[_Union[Method, str]] = ..., noise: _Optional[_Union[Tensor, _Mapping]] = ..., heatmap_sign: _Optional[_Union[HeatmapSign, str]] = ..., heatmap_opacity: _Optional[float] = ..., heatmap_colormap: _Optional[str] = ..., heatmap_percentile: _Optional[float] = ..., heatmap_overlay: _Optional[bool] = ..., top_k: _Optional[int] = ..., target_names: _Optional[_Iterable[str]] = ..., output_grad: _Optional[_Union[Tensor, _Mapping]] = ..., region: _Optional[_Union[RegionTarget, _Mapping]] = ..., position: _Optional[_Union[PositionTarget, _Mapping]] = ..., detection: _Optional[_Union[DetectionTarget, _Mapping]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class RegionTarget(_message.Message):
    __slots__ = ("mask_png", "mask", "box", "classes")
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    mask_png: bytes
    mask: Tensor
    box: Box
    classes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, mask_png: _Optional[bytes] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., classes: _Optional[_Iterable[int]] = ...) -> None: ...

class PositionTarget(_message.Message):
    __slots__ = ("position", "class_index")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    position: int
    class_index: int
    def __init__(self, position: _Optional[int] = ..., class_index: _Optional[int] = ...) -> None: ...

class DetectionTarget(_message.Message):
    __slots__ = ("box", "class_index", "explain_box", "min_iou")
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_BOX_FIELD_NUMBER: _ClassVar[int]
    MIN_IOU_FIELD_NUMBER: _ClassVar[int]
    box: Box
    class_index: int
    explain_box: bool
    min_iou: float
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., class_index: _Optional[int] = ..., explain_box: _Optional[bool] = ..., min_iou: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("index", "box", "class_index", "score", "iou")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    index: int
    box: Box
    class_index: int
    score: float
    iou: float
    def __init__(self, index: _Optional[int] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., class_index: _Optional[int] = ..., score: _Optional[float] = ..., iou: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("saliency", "scores", "targets", "heatmap_png", "target_labels", "method", "method_name", "outputs", "completeness_gap", "seed", "layer", "heatmaps_png", "samples", "target_scores", "target_probabilities", "detections")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    SALIENCY_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    TARGET_LABELS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_GAP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_PNG_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TARGET_SCORES_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    saliency: Tensor
    scores: Tensor
    targets: _containers.RepeatedScalarFieldContainer[int]
    heatmap_png: bytes
    target_labels: _containers.RepeatedScalarFieldContainer[str]
    method: Method
    method_name: str
    outputs: _containers.MessageMap[str, ParamValue]
    completeness_gap: _containers.RepeatedScalarFieldContainer[float]
    seed: int
    layer: str
    heatmaps_png: _containers.RepeatedScalarFieldContainer[bytes]
    samples: _containers.RepeatedScalarFieldContainer[int]
    target_scores: _containers.RepeatedScalarFieldContainer[float]
    target_probabilities: _containers.RepeatedScalarFieldContainer[float]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    def __init__(self, saliency: _Optional[_Union[Tensor, _Mapping]] = ..., scores: _Optional[_Union[Tensor, _Mapping]] = ..., targets: _Optional[_Iterable[int]] = ..., heatmap_png: _Optional[bytes] = ..., target_labels: _Optional[_Iterable[str]] = ..., method: _Optional[_Union[Method, str]] = ..., method_name: _Optional[str] = ..., outputs: _Optional[_Mapping[str, ParamValue]] = ..., completeness_gap: _Optional[_Iterable[float]] = ..., seed: _Optional[int] = ..., layer: _Optional[str] = ..., heatmaps_png: _Optional[_Iterable[bytes]] = ..., samples: _Optional[_Iterable[int]] = ..., target_scores: _Optional[_Iterable[float]] = ..., target_probabilities: _Optional[_Iterable[float]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
