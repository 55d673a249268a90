// The MidPO router: per decoder layer, two independent gate networks α(h) and β(h) in (0, 1)
// that read the MLP activation h = act(gate_proj(x)) * up_proj(x) of each token.
//
// "reference" is the architecture of the MidPO code: Linear(I→W) → Linear(W→I) → Linear(I→1)
// → sigmoid, with no activation between the linear layers (W = 512 there). "compact" is
// Linear(I→W) → SiLU → Linear(W→1) → sigmoid, far smaller for the same width.

import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import type { Rng } from "../generate/sampling.js";

export type RouterKind = "reference" | "compact";

export interface RouterShape {
  kind: RouterKind;
  /** MLP intermediate size I. */
  intermediateSize: number;
  /** Hidden width W of the gate network. */
  hidden: number;
  layers: number;
}

export type Gate = "alpha" | "beta";

export interface RouterParam {
  name: string;
  dims: number[];
  /** fan_in of the layer, for torch's default nn.Linear initialisation. */
  fanIn: number;
}

/** The linear layers of one gate network: [out, in] per layer. */
function gateLayers(shape: RouterShape): [number, number][] {
  const { intermediateSize: i, hidden: w } = shape;
  return shape.kind === "reference"
    ? [
        [w, i],
        [i, w],
        [1, i],
      ]
    : [
        [w, i],
        [1, w],
      ];
}

export function gatePrefix(layer: number, gate: Gate): string {
  return `router.layers.${layer}.${gate}`;
}

/** Every router parameter with its shape, in a fixed order. */
export function routerParams(shape: RouterShape): RouterParam[] {
  const params: RouterParam[] = [];
  for (let l = 0; l < shape.layers; l++) {
    for (const gate of ["alpha", "beta"] as const) {
      gateLayers(shape).forEach(([out, inp], k) => {
        const p = `${gatePrefix(l, gate)}.${k}`;
        params.push({ name: `${p}.weight`, dims: [out, inp], fanIn: inp });
        params.push({ name: `${p}.bias`, dims: [out], fanIn: inp });
      });
    }
  }
  return params;
}

/** torch's default nn.Linear initialisation: weight and bias uniform in ±1/sqrt(fan_in). */
export function initRouterParams(shape: RouterShape, rng: Rng): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  for (const p of routerParams(shape)) {
    const bound = 1 / Math.sqrt(p.fanIn);
    const size = p.dims.reduce((a, b) => a * b, 1);
    values.set(
      p.name,
      Float32Array.from({ length: size }, () => (2 * rng.next() - 1) * bound),
    );
  }
  return values;
}

/**
 * Builds gate(h) for one layer: [batch, seq, I] -> [batch, seq] in (0, 1). `input` creates
 * (or returns) the graph input for a parameter name and shape.
 */
export function gateNetwork(
  shape: RouterShape,
  layer: number,
  gate: Gate,
  h: Tensor,
  input: (name: string, dims: number[]) => Tensor,
): Tensor {
  const layers = gateLayers(shape);
  let x = h;
  layers.forEach(([out, inp], k) => {
    const p = `${gatePrefix(layer, gate)}.${k}`;
    x = op.add(op.matmulTransB(x, input(`${p}.weight`, [out, inp])), input(`${p}.bias`, [out]));
    if (shape.kind === "compact" && k < layers.length - 1) x = op.mul(x, op.sigmoid(x)); // SiLU
  });
  return op.squeeze(op.sigmoid(x), [2]); // [B, S]
}
