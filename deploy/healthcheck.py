"""Container health check: exit 0 when the server's grpc.health.v1 service answers SERVING.

Docker runs it as the image's HEALTHCHECK; it needs only grpcio and grpcio-health-checking,
which the `serve` extra installs.

    python healthcheck.py [HOST:PORT] [--service NAME] [--timeout SECONDS]

HOST:PORT defaults to $ONNXPLAIN_HEALTH_ADDRESS, else 127.0.0.1:50051. The check speaks
plaintext: a server with TLS answers it on its --health-port.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """Return the serving status name that `address` reports for `service` ("" = the server)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        reply = stub.Check(request, timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("ONNXPLAIN_HEALTH_ADDRESS") or "127.0.0.1:50051"
    parser.add_argument("address", nargs="?", default=default)
    parser.add_argument("--service", default="", help="service name; empty = the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        status = check(args.address, args.service, args.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.address} reports {status}", file=sys.stderr)
        return 1
    print(f"healthy: {args.address} reports SERVING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
