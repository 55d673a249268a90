"""The PyTorch side of the router step benchmark: one training step of the MidPO router in
eager mode, with the same model, batch and loss as bench/router-step.ts. Reads the plan
written by bench/run-train-benches.ts and prints one JSON line (StepResult in
bench/train-plan.ts).

The model follows the MidPO reference code (a fork of PKU safe-rlhf): in every layer's MLP,
with h = silu(gate_proj(x)) * up_proj(x),
  out = down_proj(h) + alpha(h) * safety(h) + beta(h) * helpfulness(h),
where each expert is a frozen LoRA branch lora_B(lora_A(h)) * scaling and each gate is
Linear(I->512) -> Linear(512->I) -> Linear(I->1) -> sigmoid, evaluated per token. The loss is
plain DPO against the base model plus lambda_alpha * mean|alpha| + lambda_beta * mean|beta - 1|.
Only the router's weights and biases have requires_grad.

Two details follow midpo rather than the reference code, so that both sides compute the same
numbers: the LoRA scaling is applied during training, and padding is left out of the
regulariser's means. Neither changes the cost. The reference log-probs are computed once before
timing (midpo caches them); bench/dpo_step_torch.py times that forward pass on every step.

Usage: /usr/bin/python3 bench/router_step_torch.py --plan FILE [--threads N]
"""

import json
import time

import torch
import torch.nn.functional as F

from dpo_step_torch import (
    PairBatch,
    dpo_loss,
    matmul_fields,
    parse_args,
    process_fields,
    sequence_logps,
    time_steps,
)
from forward_torch import Llama, read_safetensors


class MixedLlama(Llama):
    """Llama whose MLPs add both experts, gated per token by the router. With `mixed` False it
    is the base model, which gives the reference log-probs."""

    def __init__(self, model_dir, scaling):
        super().__init__(model_dir)
        self.scaling = scaling
        self.experts = {}
        self.router = {}
        self.mixed = True
        # Gates [B, S] of every layer in the last forward pass, for the regulariser.
        self.alphas = []
        self.betas = []

    def load_experts(self, path):
        tensors = read_safetensors(path)
        for role in ("safety", "helpfulness"):
            for layer in range(self.config.num_layers):
                module = f"{role}.model.layers.{layer}.mlp.down_proj"
                self.experts[role, layer] = (
                    tensors[f"{module}.lora_A.weight"],
                    tensors[f"{module}.lora_B.weight"],
                )

    def load_router(self, path):
        """Read the router's initial weights as trainable leaf tensors; return them under
        midpo's input names."""
        tensors = read_safetensors(path)
        named = {}
        for layer in range(self.config.num_layers):
            for gate in ("alpha", "beta"):
                linears = []
                for k in range(3):
                    prefix = f"router.layers.{layer}.{gate}.{k}"
                    weight = tensors[f"{prefix}.weight"].requires_grad_()
                    bias = tensors[f"{prefix}.bias"].requires_grad_()
                    named[f"{prefix}.weight"] = weight
                    named[f"{prefix}.bias"] = bias
                    linears.append((weight, bias))
                self.router[layer, gate] = linears
        return named

    def gate(self, layer, name, h):
        """alpha(h) or beta(h): [B, S, I] -> [B, S] in (0, 1)."""
        x = h
        for weight, bias in self.router[layer, name]:
            x = F.linear(x, weight, bias)
        return torch.sigmoid(x).squeeze(-1)

    def expert(self, role, layer, h):
        lora_a, lora_b = self.experts[role, layer]
        return F.linear(F.linear(h, lora_a), lora_b) * self.scaling

    def mlp(self, layer, x):
        p = f"model.layers.{layer}.mlp"
        gate = F.linear(x, self.w(f"{p}.gate_proj.weight"))
        h = F.silu(gate) * F.linear(x, self.w(f"{p}.up_proj.weight"))
        out = F.linear(h, self.w(f"{p}.down_proj.weight"))
        if not self.mixed:
            return out
        alpha = self.gate(layer, "alpha", h)
        beta = self.gate(layer, "beta", h)
        self.alphas.append(alpha)
        self.betas.append(beta)
        out = out + alpha.unsqueeze(-1) * self.expert("safety", layer, h)
        return out + beta.unsqueeze(-1) * self.expert("helpfulness", layer, h)


def gate_regularizer(model, mask, lambda_alpha, lambda_beta):
    """lambda_alpha * mean|alpha| + lambda_beta * mean|beta - 1| over layers and real tokens;
    also returns mean alpha and mean beta."""
    count = mask.sum() * len(model.alphas)
    mean_abs_alpha = sum((a.abs() * mask).sum() for a in model.alphas) / count
    mean_beta_gap = sum(((b - 1).abs() * mask).sum() for b in model.betas) / count
    penalty = lambda_alpha * mean_abs_alpha + lambda_beta * mean_beta_gap
    return penalty, mean_abs_alpha, 1 - mean_beta_gap


def main():
    args, plan = parse_args(__doc__.split("\n\n")[0], ["step"])
    matmul = matmul_fields(plan)

    lora = plan["lora"]
    start = time.perf_counter()
    model = MixedLlama(plan["model_dir"], lora["alpha"] / lora["r"])
    load_seconds = time.perf_counter() - start
    model.load_experts(plan["experts_path"])
    named = model.load_router(plan["router_path"])

    batch = PairBatch(plan["pairs"])
    batch.margins.zero_()  # router training is plain DPO
    mask = batch.attention_mask.float()
    router = plan["router"]

    def reference_logps():
        model.mixed = False
        try:
            return sequence_logps(model, batch)
        finally:
            model.mixed = True

    def policy_loss(reference):
        model.alphas, model.betas = [], []
        policy = sequence_logps(model, batch)
        penalty, mean_alpha, mean_beta = gate_regularizer(
            model, mask, router["lambda_alpha"], router["lambda_beta"]
        )
        loss = dpo_loss(policy, reference, batch, plan["beta"]) + penalty
        return loss, policy, {"mean_alpha": mean_alpha.item(), "mean_beta": mean_beta.item()}

    last = model.config.num_layers - 1
    sampled = [
        "router.layers.0.alpha.0.weight",
        "router.layers.0.alpha.2.weight",
        f"router.layers.{last}.beta.0.weight",
        f"router.layers.{last}.beta.2.weight",
    ]
    timed = time_steps(plan, args.mode, reference_logps, policy_loss, named, sampled)
    matmul = matmul_fields(plan, matmul)
    result = {
        "side": "pytorch",
        "bench": "router-step",
        "rows": batch.rows,
        "width": batch.width,
        "load_s": load_seconds,
        "session_create_s": 0.0,
        "matmul": matmul,
        **timed,
        **process_fields(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
