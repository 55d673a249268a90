// Lowering of a recorded Graph to an ONNX ModelProto (IR 8, opset 18 plus ORT's
// com.microsoft domain for the contrib ops the builder uses).

import { onnx } from "./onnx-proto.js";
import type { Attribute, Graph, Tensor } from "./graph.js";
import { onnxDataType, type DType, type TypedArray } from "./types.js";

export const OPSET = 18;
const IR_VERSION = 8;

function typeProto(t: Tensor): onnx.ITypeProto {
  const dims = t.shape.map((d) =>
    typeof d === "number"
      ? { dimValue: d }
      : /^[A-Za-z_][A-Za-z0-9_]*$/.test(d)
        ? { dimParam: d }
        : {},
  );
  return { tensorType: { elemType: onnxDataType(t.dtype), shape: { dim: dims } } };
}

function valueInfo(t: Tensor): onnx.IValueInfoProto {
  return { name: t.name, type: typeProto(t) };
}

function tensorProto(
  name: string,
  dtype: DType,
  dims: number[],
  data: TypedArray | number[],
): onnx.ITensorProto {
  const proto: onnx.ITensorProto = { name, dataType: onnxDataType(dtype), dims };
  if (Array.isArray(data)) {
    if (dtype === "float32") proto.floatData = data;
    else if (dtype === "float64") proto.doubleData = data;
    else if (dtype === "int64") proto.int64Data = data;
    else if (dtype === "int32" || dtype === "bool") proto.int32Data = data;
    else throw new Error(`tensor attribute of type ${dtype} is not supported`);
    return proto;
  }
  proto.rawData = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return proto;
}

function attributeProto(name: string, a: Attribute): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ("int" in a) return { name, type: T.INT, i: a.int };
  if ("float" in a) return { name, type: T.FLOAT, f: a.float };
  if ("ints" in a) return { name, type: T.INTS, ints: a.ints };
  if ("floats" in a) return { name, type: T.FLOATS, floats: a.floats };
  if ("string" in a) return { name, type: T.STRING, s: new TextEncoder().encode(a.string) };
  return {
    name,
    type: T.TENSOR,
    t: tensorProto("", a.tensor.dtype, [a.tensor.values.length], a.tensor.values),
  };
}

function staticDims(t: Tensor): number[] {
  return t.shape.map((d) => {
    if (typeof d !== "number") throw new Error(`initializer ${t.name} has symbolic dimension ${d}`);
    return d;
  });
}

/**
 * Builds the ModelProto. `externalLocation` maps an external initializer's file path to the
 * `location` written into the model (ORT accepts only relative locations).
 */
export function toModelProto(
  g: Graph,
  externalLocation: (path: string) => string = (path) => path,
): onnx.IModelProto {
  const initializer: onnx.ITensorProto[] = g.initializers.map((init) => {
    if (init.kind === "inline") {
      return tensorProto(init.tensor.name, init.tensor.dtype, staticDims(init.tensor), init.data);
    }
    return {
      name: init.tensor.name,
      dataType: onnxDataType(init.tensor.dtype),
      dims: staticDims(init.tensor),
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: "location", value: externalLocation(init.path) },
        { key: "offset", value: String(init.offset) },
        { key: "length", value: String(init.length) },
      ],
    };
  });

  const node: onnx.INodeProto[] = g.nodes.map((n, i) => ({
    name: `${n.opType}_${i}`,
    opType: n.opType,
    domain: n.domain,
    input: n.inputs.map((t) => (t === null ? "" : t.name)),
    output: n.outputs.map((t) => t.name),
    attribute: Object.entries(n.attributes).map(([k, v]) => attributeProto(k, v)),
  }));

  const domains = new Set(g.nodes.map((n) => n.domain).filter((d) => d !== ""));
  const opsetImport = [
    { domain: "", version: OPSET },
    ...[...domains].map((domain) => ({ domain, version: 1 })),
  ];

  return {
    irVersion: IR_VERSION,
    producerName: "midpo",
    opsetImport,
    graph: {
      name: g.name,
      node,
      initializer,
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  };
}

/** Serialises the graph to ONNX protobuf bytes, ready for `InferenceSession.create`. */
export function toOnnxBytes(g: Graph, externalLocation?: (path: string) => string): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(toModelProto(g, externalLocation))).finish();
}
