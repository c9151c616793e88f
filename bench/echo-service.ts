// The raw-bytes echo service definition shared by the baseline server and its client.
import type * as grpc from "@grpc/grpc-js";

const identity = (b: Buffer): Buffer => b;

/** `/bench.Echo/Echo`: unary, request and response passed through as bytes (no protobuf). */
export const ECHO_SERVICE: grpc.ServiceDefinition = {
  Echo: {
    path: "/bench.Echo/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
