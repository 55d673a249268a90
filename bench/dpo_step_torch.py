"""The PyTorch side of the DPO step benchmark: one DPO training step of a LoRA adapter on
down_proj, in eager mode, computed the way TRL's DPOTrainer (with a PEFT model) and
safe-rlhf's DPO trainer compute it. Reads the plan written by bench/run-train-benches.ts and
prints one JSON line (fields as StepResult in bench/train-plan.ts).

One step, as those trainers run it when reference log-probs are not precomputed:
  1. reference forward under torch.no_grad with the adapter disabled (PEFT's
     disable_adapter): logits at every position, log_softmax, gather of the next token,
     sum over the response tokens;
  2. policy forward with the adapter, the same sequence log-probs, then the loss
     -logsigmoid(beta * (chosen log-ratio - rejected log-ratio) - margin), mean over pairs;
  3. loss.backward(), which fills the gradients of lora_A and lora_B only (every base weight
     has requires_grad False).
With --mode step, step 1 runs once before timing, as with TRL's precompute_ref_log_probs.

The Llama forward pass is bench/forward_torch.py's (transformers' eager modeling code); this
file adds the LoRA branch, the batch layout and the loss. Needs torch and numpy; run with
/usr/bin/python3 when the python3 on PATH has no torch.

Usage: /usr/bin/python3 bench/dpo_step_torch.py --plan FILE --mode step|step+ref [--threads N]
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from forward_torch import Llama, peak_rss_bytes, read_safetensors

# ---------------------------------------------------------------------------------------------
# Model


class LoraLlama(Llama):
    """Llama with PEFT's LoRA on mlp.down_proj: down_proj(h) + lora_B(lora_A(h)) * scaling.
    `adapter` maps a layer index to (lora_A [r, I], lora_B [H, r]); load_adapter fills it."""

    def __init__(self, model_dir, scaling):
        super().__init__(model_dir)
        self.scaling = scaling
        self.adapter = {}
        self.adapter_enabled = True

    def load_adapter(self, path):
        """Read the adapter's initial lora_A and lora_B as trainable leaf tensors and return
        them under midpo's input names, so that gradients are named as on midpo's side."""
        tensors = read_safetensors(path)
        named = {}
        for layer in range(self.config.num_layers):
            module = f"model.layers.{layer}.mlp.down_proj"
            lora_a = tensors[f"{module}.lora_A.weight"].clone().requires_grad_()
            lora_b = tensors[f"{module}.lora_B.weight"].clone().requires_grad_()
            self.adapter[layer] = (lora_a, lora_b)
            named[f"{module}.lora_A.weight"] = lora_a
            named[f"{module}.lora_B.weight"] = lora_b
        return named

    def mlp(self, layer, x):
        p = f"model.layers.{layer}.mlp"
        gate = F.linear(x, self.w(f"{p}.gate_proj.weight"))
        h = F.silu(gate) * F.linear(x, self.w(f"{p}.up_proj.weight"))
        out = F.linear(h, self.w(f"{p}.down_proj.weight"))
        if self.adapter_enabled and layer in self.adapter:
            lora_a, lora_b = self.adapter[layer]
            out = out + F.linear(F.linear(h, lora_a), lora_b) * self.scaling
        return out


# ---------------------------------------------------------------------------------------------
# Batch and loss


class PairBatch:
    """The pairs as model inputs, laid out as midpo's collatePairs lays them out: the P chosen
    rows, then the P rejected rows, right-padded with token 0."""

    def __init__(self, pairs):
        rows = [p["prompt_ids"] + p["chosen_ids"] for p in pairs]
        rows += [p["prompt_ids"] + p["rejected_ids"] for p in pairs]
        prompts = [len(p["prompt_ids"]) for p in pairs] * 2
        width = max(2, *(len(r) for r in rows))
        self.pairs = len(pairs)
        self.rows = len(rows)
        self.width = width
        self.input_ids = torch.zeros(len(rows), width, dtype=torch.int64)
        self.attention_mask = torch.zeros(len(rows), width, dtype=torch.int64)
        # Position t of a log-prob row scores token t + 1: 1 where that token is response.
        self.response_mask = torch.zeros(len(rows), width - 1)
        for r, ids in enumerate(rows):
            self.input_ids[r, : len(ids)] = torch.tensor(ids)
            self.attention_mask[r, : len(ids)] = 1
            self.response_mask[r, prompts[r] - 1 : len(ids) - 1] = 1
        self.position_ids = torch.arange(width)[None, :].expand(len(rows), width)
        self.margins = torch.tensor([p["margin"] for p in pairs], dtype=torch.float32)


def sequence_logps(model, batch):
    """Sum of log p(token | prefix) over each row's response tokens, [rows], as TRL's
    get_batch_logps computes it: log_softmax over the whole vocabulary, then a gather."""
    hidden = model.hidden_states(batch.input_ids, batch.attention_mask, batch.position_ids)
    logits = model.logits(hidden)[:, :-1]  # [R, W-1, V]
    targets = batch.input_ids[:, 1:, None]
    token_logps = torch.gather(logits.log_softmax(-1), 2, targets).squeeze(2)
    return (token_logps * batch.response_mask).sum(-1)


def dpo_loss(policy, reference, batch, beta):
    """Mean over pairs of -log sigma(beta * delta - margin), delta being the chosen log-ratio
    minus the rejected log-ratio."""
    ratios = (policy - reference).view(2, batch.pairs)
    return -F.logsigmoid(beta * (ratios[0] - ratios[1]) - batch.margins).mean()


# ---------------------------------------------------------------------------------------------
# Timing, shared with router_step_torch.py


def time_steps(plan, mode, reference_logps, policy_loss, named_params, sampled_grads):
    """Run one untimed warm-up step, whose outputs (at the initial parameters) are kept for the
    comparison with midpo, then plan["repeats"] timed runs. After each timed run, gradient
    clipping and one AdamW update are timed apart, as midpo's side does.

    reference_logps() returns the reference sequence log-probs (called under no_grad);
    policy_loss(reference) returns (loss, policy logps, extra outputs) with autograd on."""
    params = list(named_params.values())
    optimizer = torch.optim.AdamW(
        params, lr=plan["learning_rate"], betas=(0.9, 0.95), weight_decay=0.01
    )

    start = time.perf_counter()
    with torch.no_grad():
        reference = reference_logps()
    loss, policy, extra = policy_loss(reference)
    loss.backward()
    warmup_seconds = time.perf_counter() - start
    first = {
        "loss": loss.item(),
        "logps": policy.detach().tolist(),
        "ref_logps": reference.tolist(),
        "grad_norm": torch.sqrt(
            sum((p.grad.double() ** 2).sum() for p in params)
        ).item(),
        "grad_samples": {
            name: named_params[name].grad.flatten()[:8].tolist() for name in sampled_grads
        },
        **extra,
    }
    optimizer.zero_grad(set_to_none=True)

    times, ref_times, optimizer_times = [], [], []
    for _ in range(plan["repeats"]):
        start = time.perf_counter()
        if mode == "step+ref":
            with torch.no_grad():
                reference = reference_logps()
        ref_times.append(time.perf_counter() - start if mode == "step+ref" else 0.0)
        loss, _, _ = policy_loss(reference)
        loss.backward()
        times.append(time.perf_counter() - start)

        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, plan["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        optimizer_times.append(time.perf_counter() - start)

    return {
        "mode": mode,
        "warmup_s": warmup_seconds,
        "seconds": times,
        "ref_seconds": ref_times,
        "optimizer_seconds": optimizer_times,
        **first,
    }


def process_fields():
    """Peak RSS, CPU time, threads and versions of this process."""
    times = os.times()
    return {
        "peak_rss_bytes": peak_rss_bytes(),
        "cpu_s": times.user + times.system,
        "threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }


def matmul_fields(plan, previous=None):
    """Time the plan's matmul chain, as measureOrtMatmul in bench/train-plan.ts does: `runs`
    products alternately [m, k] @ [k, n] and [m, n] @ [n, k], one chain per repeat after one
    warm-up chain. The times are appended to those of `previous` when given."""
    m, k, n, runs = (plan["matmul"][key] for key in ("m", "k", "n", "runs"))
    generator = torch.Generator().manual_seed(7)

    def uniform(rows, cols, bound):
        return (torch.rand(rows, cols, generator=generator) * 2 - 1) * bound

    # Weights with variance 1/fan_in keep the activations near unit scale along the chain.
    x = uniform(m, k, 1.0)
    up = uniform(k, n, (3 / k) ** 0.5)
    down = uniform(n, k, (3 / n) ** 0.5)

    def chain():
        h = x
        for i in range(runs):
            h = torch.matmul(h, up if i % 2 == 0 else down)
        return h

    times = []
    with torch.inference_mode():
        chain()
        for _ in range(plan["repeats"]):
            start = time.perf_counter()
            chain()
            times.append(time.perf_counter() - start)
    previous_times = [] if previous is None else previous["seconds"]
    return {"m": m, "k": k, "n": n, "runs": runs, "seconds": previous_times + times}


def parse_args(description, modes):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--plan", required=True, help="plan file written by run-train-benches.ts")
    # A benchmark with one mode needs no --mode.
    if len(modes) == 1:
        parser.add_argument("--mode", choices=modes, default=modes[0])
    else:
        parser.add_argument("--mode", required=True, choices=modes)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch intra-op threads (default: one per core)",
    )
    args = parser.parse_args()
    with open(args.plan) as file:
        plan = json.load(file)
    torch.set_num_threads(args.threads)
    return args, plan


# ---------------------------------------------------------------------------------------------


def main():
    args, plan = parse_args(__doc__.split("\n\n")[0], ["step", "step+ref"])
    if plan["lora"]["target_modules"] != ["down_proj"]:
        raise SystemExit(
            f"target_modules {plan['lora']['target_modules']} is not supported here: "
            'this baseline adapts down_proj only. Use ["down_proj"] in the plan.'
        )
    matmul = matmul_fields(plan)

    lora = plan["lora"]
    start = time.perf_counter()
    model = LoraLlama(plan["model_dir"], lora["alpha"] / lora["r"])
    load_seconds = time.perf_counter() - start
    named = model.load_adapter(plan["adapter_path"])
    layers = model.config.num_layers
    batch = PairBatch(plan["pairs"])

    def reference_logps():
        model.adapter_enabled = False
        try:
            return sequence_logps(model, batch)
        finally:
            model.adapter_enabled = True

    def policy_loss(reference):
        policy = sequence_logps(model, batch)
        return dpo_loss(policy, reference, batch, plan["beta"]), policy, {}

    sampled = [
        f"model.layers.{layer}.mlp.down_proj.lora_{m}.weight"
        for layer in (0, layers - 1)
        for m in "AB"
    ]
    timed = time_steps(plan, args.mode, reference_logps, policy_loss, named, sampled)
    matmul = matmul_fields(plan, matmul)
    result = {
        "side": "pytorch",
        "bench": "dpo-step",
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
