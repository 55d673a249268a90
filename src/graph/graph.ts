// The graph builder: records tensor operations as ONNX nodes with their element types and
// (possibly symbolic) shapes. Ops live in ops.ts; lowering to an ONNX model in onnx.ts.
//
// A graph is built once and run many times: symbolic dimensions ("batch", "seq") let one
// ORT session serve every batch shape. Nodes are appended in execution order, so the node
// list is always topologically sorted; reverse-mode differentiation walks it backwards.

import type { DType, Shape, TypedArray } from "./types.js";

/** A symbolic tensor: the output of a node, a graph input or an initializer. */
export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: Shape,
  ) {}

  get rank(): number {
    return this.shape.length;
  }
}

export type Attribute =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { string: string }
  | { tensor: { dtype: DType; values: number[] } };

export interface Node {
  opType: string;
  /** "" for the default ONNX domain, "com.microsoft" for ORT's contrib ops. */
  domain: string;
  /** null marks an omitted optional input. */
  inputs: (Tensor | null)[];
  outputs: Tensor[];
  attributes: Record<string, Attribute>;
}

/** Tensor data stored in the model itself. */
export interface InlineInitializer {
  kind: "inline";
  tensor: Tensor;
  data: TypedArray;
}

/** A run of bytes in a file: where an external-data initializer's values are stored. */
export interface FileRange {
  path: string;
  offset: number;
  length: number;
}

/** Tensor data that ORT reads from a file at session creation (e.g. straight from a
 *  .safetensors file), so that models over protobuf's 2 GB limit still load. */
export interface ExternalInitializer extends FileRange {
  kind: "external";
  tensor: Tensor;
}

export type Initializer = InlineInitializer | ExternalInitializer;

export interface OutputSpec {
  dtype: DType;
  shape: Shape;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly outputs: Tensor[] = [];
  readonly initializers: Initializer[] = [];
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(readonly name = "midpo") {}

  /** Declares a graph input. Frozen weights are inputs too (see model/llama.ts for why). */
  input(name: string, dtype: DType, shape: Shape): Tensor {
    const t = new Tensor(this, this.claim(name), dtype, shape);
    this.inputs.push(t);
    return t;
  }

  /** Stores a constant in the model. Meant for small tensors: large initializers make session
   *  creation slow because ORT copies and pre-packs them. */
  initializer(name: string | null, dtype: DType, shape: Shape, data: TypedArray): Tensor {
    const t = new Tensor(
      this,
      name === null ? this.fresh("const") : this.claim(name),
      dtype,
      shape,
    );
    this.initializers.push({ kind: "inline", tensor: t, data });
    return t;
  }

  externalInitializer(name: string, dtype: DType, shape: Shape, file: FileRange): Tensor {
    const t = new Tensor(this, this.claim(name), dtype, shape);
    this.initializers.push({ kind: "external", tensor: t, ...file });
    return t;
  }

  /** Records a node and returns its outputs. Ops in ops.ts compute the output specs. */
  addNode(
    opType: string,
    inputs: (Tensor | null)[],
    outputs: OutputSpec[],
    attributes: Record<string, Attribute> = {},
    domain = "",
  ): Tensor[] {
    for (const t of inputs) {
      if (t !== null && t.graph !== this) {
        throw new Error(`${opType}: input ${t.name} belongs to another graph`);
      }
    }
    const outs = outputs.map(
      (spec) => new Tensor(this, this.fresh(opType.toLowerCase()), spec.dtype, spec.shape),
    );
    this.nodes.push({ opType, domain, inputs, outputs: outs, attributes });
    return outs;
  }

  /** Marks a tensor as a graph output under the given name (adding an Identity if the tensor
   *  already has another name). */
  output(name: string, t: Tensor): Tensor {
    let out = t;
    if (t.name !== name || this.isInputOrInitializer(t)) {
      out = new Tensor(this, this.claim(name), t.dtype, t.shape);
      this.nodes.push({
        opType: "Identity",
        domain: "",
        inputs: [t],
        outputs: [out],
        attributes: {},
      });
    }
    this.outputs.push(out);
    return out;
  }

  /** A name not yet used in this graph, built from a readable stem. */
  fresh(stem: string): string {
    let name: string;
    do {
      name = `${stem}_${this.counter++}`;
    } while (this.names.has(name));
    this.names.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`graph ${this.name}: name ${name} is already used`);
    this.names.add(name);
    return name;
  }

  private isInputOrInitializer(t: Tensor): boolean {
    return this.inputs.includes(t) || this.initializers.some((i) => i.tensor === t);
  }
}
