"""onnxplain: gradient saliency (vanilla, deconvnet, guided backprop) for ONNX image models."""

__version__ = "0.1.0"
