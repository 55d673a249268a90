// Reverse-mode differentiation over the graph builder.
//
// `gradients` appends the backward pass to the same graph, built from ordinary ops, so a
// training step (forward, loss, backward) is one ORT session run. Each op type has one small
// rule in src/graph/grad/, which receives the node and the gradients of its outputs and
// returns the gradients of its inputs. Only nodes on a path from a differentiated input to
// the loss are visited, and a rule is told which inputs need a gradient, so frozen weights
// cost no weight-gradient matmuls: only the activations flowing through them get gradients.

import type { Graph, Node, Tensor } from "./graph.js";
import { elementwiseRules } from "./grad/elementwise.js";
import { layoutRules } from "./grad/layout.js";
import { matmulRules } from "./grad/matmul.js";
import { reduceRules } from "./grad/reduce.js";
import * as op from "./ops.js";
import { isFloat } from "./types.js";

/** What a gradient rule gets: the node, its output gradients, and which inputs need one. */
export interface GradContext {
  node: Node;
  /** Gradient of each output; null where the loss does not depend on that output. */
  dOutputs: (Tensor | null)[];
  /** Whether input i needs a gradient. */
  needs(i: number): boolean;
}

/** Returns one gradient (or null) per input of the node. */
export type GradRule = (ctx: GradContext) => (Tensor | null)[];

const RULES: Record<string, GradRule> = {
  ...elementwiseRules,
  ...matmulRules,
  ...reduceRules,
  ...layoutRules,
};

export function hasGradientRule(opType: string): boolean {
  return opType in RULES;
}

/** Nodes in forward order whose outputs depend on one of `wrt`. */
function dependentTensors(g: Graph, wrt: Tensor[]): Set<Tensor> {
  const dependent = new Set<Tensor>(wrt);
  for (const node of g.nodes) {
    if (node.inputs.some((t) => t !== null && dependent.has(t))) {
      for (const out of node.outputs) if (isFloat(out.dtype)) dependent.add(out);
    }
  }
  return dependent;
}

/**
 * Appends the backward pass of `loss` (a scalar) to its graph and returns d loss / d t for
 * each tensor in `wrt`. A tensor the loss does not depend on gets zeros.
 */
export function gradients(loss: Tensor, wrt: Tensor[]): Map<Tensor, Tensor> {
  const g = loss.graph;
  if (loss.rank !== 0)
    throw new Error(`gradients: loss must be a scalar, got shape [${loss.shape}]`);
  const dependent = dependentTensors(g, wrt);
  if (!dependent.has(loss)) {
    throw new Error("gradients: the loss does not depend on any of the requested tensors");
  }

  const grads = new Map<Tensor, Tensor>();
  const accumulate = (t: Tensor, d: Tensor) => {
    const prev = grads.get(t);
    grads.set(t, prev === undefined ? d : op.add(prev, d));
  };
  accumulate(loss, op.scalar(g, 1, loss.dtype));

  const forwardNodes = [...g.nodes];
  for (let n = forwardNodes.length - 1; n >= 0; n--) {
    const node = forwardNodes[n];
    const dOutputs = node.outputs.map((t) => grads.get(t) ?? null);
    if (dOutputs.every((d) => d === null)) continue;
    const needed = node.inputs.map((t) => t !== null && dependent.has(t));
    if (!needed.some(Boolean)) continue;

    const rule = RULES[node.opType];
    if (rule === undefined) {
      throw new Error(
        `gradients: no gradient rule for ${node.opType} (node output ${node.outputs[0].name})`,
      );
    }
    const dInputs = rule({ node, dOutputs, needs: (i) => needed[i] });
    node.inputs.forEach((t, i) => {
      const d = dInputs[i];
      if (t !== null && needed[i] && d !== null && d !== undefined) accumulate(t, d);
    });
  }

  const result = new Map<Tensor, Tensor>();
  for (const t of wrt) result.set(t, grads.get(t) ?? op.zerosLike(t));
  return result;
}
