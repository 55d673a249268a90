// Element types and shapes shared by the graph builder, the ONNX lowering and the runtime.

import { onnx } from "./onnx-proto.js";

export type DType = "float32" | "float64" | "float16" | "bfloat16" | "int64" | "int32" | "bool";

/** A dimension: a fixed size, or a symbolic name such as "batch" that ORT binds per run. */
export type Dim = number | string;

export type Shape = Dim[];

export type TypedArray =
  Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

const ONNX_TYPES: Record<DType, onnx.TensorProto.DataType> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float64: onnx.TensorProto.DataType.DOUBLE,
  float16: onnx.TensorProto.DataType.FLOAT16,
  bfloat16: onnx.TensorProto.DataType.BFLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
};

export function onnxDataType(dtype: DType): onnx.TensorProto.DataType {
  return ONNX_TYPES[dtype];
}

export function isFloat(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float64" || dtype === "float16" || dtype === "bfloat16";
}

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case "float64":
    case "int64":
      return 8;
    case "float32":
    case "int32":
      return 4;
    case "float16":
    case "bfloat16":
      return 2;
    case "bool":
      return 1;
  }
}

/** Number of elements of a fully static shape; throws on a symbolic dimension. */
export function staticSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== "number") throw new Error(`shape [${shape}] has symbolic dimension ${d}`);
    n *= d;
  }
  return n;
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}
