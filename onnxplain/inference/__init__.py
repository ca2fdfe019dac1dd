"""The Open Inference Protocol's messages and gRPC stubs, generated from
proto/inference/grpc_service.proto by scripts/gen_proto.sh."""
