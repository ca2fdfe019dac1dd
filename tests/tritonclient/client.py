"""tritonclient, the Open Inference Protocol's reference client, against a test server.

Run by tests/test_oip_grpc.py and tests/test_oip_rest.py with .venv-triton's python (it
needs protobuf 6, the server 7), never imported by them. Prints one JSON line: what the
server said to each call; saves each array it got to OUT/<name>.npy.

    client.py {grpc,http} URL MODEL INPUT.npy OUT [--token T] [--parameters JSON]
              [--images A.png,B.png --image-parameters JSON]
    (--images: those files as one BYTES input, saved as OUT/images_<name>.npy)
    client.py descriptor     the messages of tritonclient's own grpc_service.proto
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _repeated(field: Any) -> bool:
    """protobuf 7 has is_repeated and no label; protobuf 6 (tritonclient's) may lack it."""
    repeated = getattr(field, "is_repeated", None)
    return bool(field.label == 3) if repeated is None else bool(repeated)


def descriptor() -> dict[str, Any]:
    """Every message of tritonclient's generated service_pb2 (nested ones by dotted name),
    each field's number, type, whether it repeats and its message type; and the RPCs."""
    from tritonclient.grpc import service_pb2

    messages: dict[str, Any] = {}

    def walk(message: Any) -> None:
        messages[message.full_name] = {
            f.name: [
                f.number,
                f.type,
                _repeated(f),
                f.message_type.full_name if f.message_type else "",
            ]
            for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    for message in service_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    rpcs = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
    return {"package": service_pb2.DESCRIPTOR.package, "messages": messages, "rpcs": rpcs}


def talk(args: argparse.Namespace) -> dict[str, Any]:
    if args.transport == "grpc":
        import tritonclient.grpc as client
    else:
        import tritonclient.http as client
    from tritonclient.utils import InferenceServerException

    server = client.InferenceServerClient(url=args.url)
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    out = Path(args.out)
    report: dict[str, Any] = {
        "live": server.is_server_live(headers=headers),
        "ready": server.is_server_ready(headers=headers),
        "model_ready": server.is_model_ready(args.model, headers=headers),
    }
    if args.transport == "grpc":
        report["server"] = server.get_server_metadata(headers=headers, as_json=True)
        report["metadata"] = server.get_model_metadata(args.model, headers=headers, as_json=True)
    else:
        report["server"] = server.get_server_metadata(headers=headers)
        report["metadata"] = server.get_model_metadata(args.model, headers=headers)
    x = np.load(args.input)
    name = report["metadata"]["inputs"][0]["name"]
    parameters = json.loads(args.parameters)

    def infer(array: np.ndarray, datatype: str) -> Any:
        tensor = client.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return server.infer(args.model, [tensor], parameters=parameters, headers=headers)

    result = infer(x, "FP32")
    outputs = result.get_response(as_json=True) if args.transport == "grpc" else None
    response = outputs if outputs is not None else result.get_response()
    report["outputs"] = [o["name"] for o in response["outputs"]]
    report["parameters"] = response.get("parameters", {})
    for output in report["outputs"]:
        np.save(out / f"{output}.npy", result.as_numpy(output))
    try:  # a wrong datatype: refused, and the server keeps serving
        infer(x.astype(np.float64), "FP64")
        report["wrong_datatype"] = None
    except InferenceServerException as exc:
        report["wrong_datatype"] = {"status": str(exc.status()), "message": exc.message()}
    again = infer(x, "FP32")
    report["after_refusal"] = again.as_numpy("explained_targets").tolist()
    if args.images:  # encoded images as BYTES: an np.object_ array of the files' bytes
        files = [Path(f).read_bytes() for f in args.images.split(",")]
        tensor = client.InferInput(name, [len(files)], "BYTES")
        tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
        images = server.infer(
            args.model, [tensor], parameters=json.loads(args.image_parameters), headers=headers
        )
        answer = images.get_response(as_json=True) if args.transport == "grpc" else None
        answer = answer if answer is not None else images.get_response()
        report["image_outputs"] = [o["name"] for o in answer["outputs"]]
        for output in report["image_outputs"]:
            np.save(out / f"images_{output}.npy", images.as_numpy(output))
    return report


def main() -> None:
    if sys.argv[1:] == ["descriptor"]:
        print(json.dumps(descriptor()))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["grpc", "http"])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("out")
    parser.add_argument("--token")
    parser.add_argument("--parameters", default="{}")
    parser.add_argument("--images", default="")
    parser.add_argument("--image-parameters", default="{}")
    print(json.dumps(talk(parser.parse_args())))


if __name__ == "__main__":
    main()
