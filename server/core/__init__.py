"""The protocol-free core: request validation, the per-model queue, runs and targets.
It knows nothing of gRPC or HTTP and raises its own errors (errors.py)."""
