"""onnxplain: gradient saliency maps (the methods of `graph_rewrite.methods`) for ONNX models."""

__version__ = "0.1.0"
