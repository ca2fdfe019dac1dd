// A Node.js client of onnxplain's Explain service, built from the .proto file at run time.
//
//   node explain.js HOST:PORT PROTO_ROOT MODEL INPUT.f32 SHAPE METHOD
//
// INPUT.f32 holds raw little-endian float32 values, SHAPE is e.g. 1,1,8,8, METHOD is
// METHOD_VANILLA, METHOD_DECONVNET or METHOD_GUIDED. Prints the response as JSON, with the
// saliency and scores decoded to arrays of numbers.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function decodeFloat32(tensor) {
  if (tensor.dtype !== "DATA_TYPE_FLOAT32") {
    throw new Error(`expected float32, got ${tensor.dtype}`);
  }
  const data = tensor.data;
  const values = [];
  for (let i = 0; i < data.length; i += 4) values.push(data.readFloatLE(i));
  return { shape: tensor.shape.map(Number), values };
}

function main() {
  const [address, protoRoot, model, inputPath, shape, method] = process.argv.slice(2);
  const definition = protoLoader.loadSync("onnxplain/v1/explain.proto", {
    includeDirs: [path.resolve(protoRoot)],
    keepCase: true,
    enums: String,
    longs: Number,
    defaults: true,
    oneofs: true,
  });
  const { ExplainService } = grpc.loadPackageDefinition(definition).onnxplain.v1;
  const client = new ExplainService(address, grpc.credentials.createInsecure());
  const request = {
    model,
    tensor: {
      dtype: "DATA_TYPE_FLOAT32",
      shape: shape.split(",").map(Number),
      data: fs.readFileSync(inputPath),
    },
    method,
  };
  client.Explain(request, { deadline: Date.now() + 30000 }, (err, response) => {
    if (err) {
      console.error(`Explain failed: ${err.code} ${err.details}`);
      process.exit(1);
    }
    const out = {
      saliency: decodeFloat32(response.saliency),
      scores: decodeFloat32(response.scores),
      targets: response.targets.map(Number),
      method: response.method,
    };
    process.stdout.write(JSON.stringify(out));
    client.close();
  });
}

main();
