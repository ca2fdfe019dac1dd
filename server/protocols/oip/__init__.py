"""The Open Inference Protocol (v2, KServe's and Triton's): over gRPC (`grpc_servicer`) and
REST (`rest`), both around one protocol-free model of it (`model`)."""
