// onnx-proto is a CommonJS module whose named export Node's ESM loader cannot detect, so it
// is imported whole and its namespace re-exported for both values and types.
import onnxProto from "onnx-proto";

export import onnx = onnxProto.onnx;
