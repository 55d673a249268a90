"""Float64 reference for one DPO training step of a LoRA adapter, and its fixtures.

Run from the repository root:

    /usr/bin/python3 scripts/reference/dpo_reference.py

Needs torch (tested with 1.13) and numpy, but neither transformers, peft nor
the safetensors package. The frozen base model is the committed tiny checkpoint
test/fixtures/tiny/llama-gqa, and it is also the DPO reference model. For each
adapter case in CASES the script writes

    test/fixtures/dpo/<case>/adapter_config.json         PEFT LoRA config
    test/fixtures/dpo/<case>/adapter_model.safetensors   lora_A and lora_B in F32
    test/fixtures/dpo/<case>.json                        pairs, losses, metrics, gradients

The lora_A and lora_B weights are seeded random values, and B is nonzero,
unlike PEFT's default init, so the gradient of A is nonzero too. Everything runs
in float64 on one thread, so a rerun on the same machine rewrites byte-identical
files. scripts/reference/DPO.md describes the JSON layout.

Before writing a case, the script asserts that policy and reference log-probs
are equal when every lora_B is zero, and that central finite differences match
the autograd gradient of each loss.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import (  # noqa: E402
    decode_safetensors,
    encode_safetensors,
    forward,
    target_logprobs,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_MODEL = "test/fixtures/tiny/llama-gqa"
OUT_DIR = "test/fixtures/dpo"

BOS_TOKEN_ID = 1
EOS_TOKEN_ID = 2
# Token ids below this value (pad 0, BOS 1, EOS 2) appear only where the pairs put them.
FIRST_PLAIN_TOKEN_ID = 3

PAIRS_SEED = 2024
# (prompt, chosen, rejected) lengths in tokens, including BOS in the prompt and EOS
# at the end of each response. Chosen and rejected differ in length in every pair.
PAIR_LENGTHS = [(3, 2, 5), (5, 6, 3), (7, 4, 6)]
# Zero, positive and negative margins. MidPO clips its margins at 0, but the negative one
# lifts z above 1 for the last pair, where the hinge loss and its gradient are zero.
MARGINS = [0.0, 1.2, -1.5]
BETA = 0.1

# Each entry is one loss setting, named as in TRL's DPOConfig (loss_type, label_smoothing).
LOSSES = [
    {"name": "sigmoid", "loss_type": "sigmoid", "label_smoothing": 0.0},
    {"name": "sigmoid_label_smoothing", "loss_type": "sigmoid", "label_smoothing": 0.1},
    {"name": "robust", "loss_type": "robust", "label_smoothing": 0.1},
    {"name": "hinge", "loss_type": "hinge", "label_smoothing": 0.0},
    {"name": "ipo", "loss_type": "ipo", "label_smoothing": 0.0},
]

CASES = [
    {
        "name": "lora-down-proj",
        "description": (
            "LoRA r=4, lora_alpha=8 (scale 2) on mlp.down_proj of both layers, the module of "
            "the MidPO reference setting."
        ),
        "seed": 3001,
        "r": 4,
        "lora_alpha": 8,
        "use_rslora": False,
        "target_modules": ["down_proj"],
    },
    {
        "name": "lora-q-v-down-proj",
        "description": (
            "LoRA r=2, lora_alpha=4 (scale 2) on self_attn.q_proj, self_attn.v_proj and "
            "mlp.down_proj of both layers. v_proj has 16 output rows because of GQA."
        ),
        "seed": 3002,
        "r": 2,
        "lora_alpha": 4,
        "use_rslora": False,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
    },
]

# Std of the random lora_A and lora_B entries. With scale 2 the update 2·B·A has entries
# of about 0.03 to 0.04, against 0.15 to 0.19 for the base weights, so the policy's
# sequence logps move away from the reference by 0.1 to 1.2 nats.
LORA_INIT_STD = 0.1

# Central differences with step h have truncation error O(h^2) and rounding error
# O(1e-16 / h), both far below the 1e-6 relative tolerance for h = 1e-5.
FINITE_DIFFERENCE_STEP = 1e-5
FINITE_DIFFERENCE_TOLERANCE = 1e-6
# Minimum |1 - z| of every pair, so that the finite differences and a float32 engine
# stay on the same side of the hinge's kink as the float64 reference.
HINGE_KINK_DISTANCE = 0.05

MODULE_PARENTS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}

# ---------------------------------------------------------------------------
# Files: base checkpoint, PEFT adapter, JSON
# ---------------------------------------------------------------------------


def load_base_model(directory):
    """Return (config, {HF name: float64 tensor}) for a single-file checkpoint."""
    with open(os.path.join(REPO_ROOT, directory, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    with open(os.path.join(REPO_ROOT, directory, "model.safetensors"), "rb") as file:
        stored = decode_safetensors(file.read())
    return config, {name: tensor.double() for name, tensor in stored.items()}


def target_paths(config, target_modules):
    """Return the paths of the wrapped modules in layer order, e.g. model.layers.0.mlp.down_proj."""
    paths = []
    for layer in range(config["num_hidden_layers"]):
        for module in target_modules:
            paths.append(f"model.layers.{layer}.{MODULE_PARENTS[module]}.{module}")
    return paths


def peft_key(path, matrix):
    """Return the PEFT tensor name of `matrix` ("lora_A" or "lora_B") for a module path."""
    return f"base_model.model.{path}.{matrix}.weight"


def lora_scale(r, lora_alpha, use_rslora):
    """Return PEFT's LoRA scale: lora_alpha / r, or lora_alpha / sqrt(r) when use_rslora is set."""
    if use_rslora:
        return lora_alpha / math.sqrt(r)
    return lora_alpha / r


def random_adapter(config, weights, case):
    """Return {PEFT key: float32 tensor} with lora_A [r, in] and lora_B [out, r] for each target."""
    torch.manual_seed(case["seed"])
    tensors = {}
    for path in target_paths(config, case["target_modules"]):
        out_features, in_features = weights[path + ".weight"].shape
        lora_a = LORA_INIT_STD * torch.randn(case["r"], in_features)
        lora_b = LORA_INIT_STD * torch.randn(out_features, case["r"])
        tensors[peft_key(path, "lora_A")] = lora_a
        tensors[peft_key(path, "lora_B")] = lora_b
    return tensors


def adapter_config(case):
    """Return the adapter_config.json content: a subset of the keys PEFT writes for LoRA."""
    return {
        "base_model_name_or_path": BASE_MODEL,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "layers_to_transform": None,
        "lora_alpha": case["lora_alpha"],
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": case["r"],
        "target_modules": sorted(case["target_modules"]),
        "task_type": "CAUSAL_LM",
        "use_rslora": case["use_rslora"],
    }


def write_adapter(directory, case, tensors):
    """Write a PEFT adapter directory and return its tensors read back, widened to float64."""
    absolute = os.path.join(REPO_ROOT, directory)
    os.makedirs(absolute, exist_ok=True)
    with open(os.path.join(absolute, "adapter_config.json"), "w", encoding="utf-8") as file:
        # PEFT writes its config with indent 2 and sorted keys.
        file.write(json.dumps(adapter_config(case), indent=2, sort_keys=True) + "\n")

    path = os.path.join(absolute, "adapter_model.safetensors")
    with open(path, "wb") as file:
        file.write(encode_safetensors(tensors))
    with open(path, "rb") as file:
        loaded = decode_safetensors(file.read())

    # The expected values must come from exactly the stored F32 bits.
    assert sorted(loaded) == sorted(tensors), f"{directory}: tensor names changed on reload"
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), f"{directory}: {name} changed value on reload"
    return {name: tensor.double() for name, tensor in loaded.items()}


def format_json(value, indent=0):
    """Format JSON with 2-space indent, but each list of numbers on one line.

    One number per line, as json.dumps(indent=2) writes it, would make the
    gradient lists several times longer.
    """
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for key, item in value.items():
            items.append(f"{pad}{json.dumps(key)}: {format_json(item, indent + 1)}")
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = [pad + format_json(item, indent + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value)


# ---------------------------------------------------------------------------
# Sequence log-probs of the policy (base + LoRA) and the reference (base)
# ---------------------------------------------------------------------------


def merge_adapter(weights, adapter, paths, scale):
    """Return base weights with W + scale · B @ A in place of each target W.

    PEFT's LoRA layer outputs x W^T + scale · (dropout(x) A^T) B^T. With dropout 0 this
    equals x (W + scale · B A)^T, so the unchanged reference forward pass computes the
    policy, and autograd carries the gradient of W' back to A and B.
    """
    merged = dict(weights)
    for path in paths:
        lora_a = adapter[peft_key(path, "lora_A")]  # (r, in)
        lora_b = adapter[peft_key(path, "lora_B")]  # (out, r)
        merged[path + ".weight"] = weights[path + ".weight"] + scale * (lora_b @ lora_a)
    return merged


def response_logprobs(weights, config, prompt_ids, response_ids):
    """Return log p(response[t] | prompt, response[:t]) for each response token, shape (response,).

    The prompt is context only, so its tokens get no logprob. The first response token
    is scored from the logits at the last prompt position.
    """
    input_ids = torch.tensor([prompt_ids + response_ids])
    logprobs = target_logprobs(forward(weights, config, input_ids), input_ids)[0]  # (T-1,)
    return logprobs[len(prompt_ids) - 1 :]


def pair_token_logprobs(weights, config, pairs):
    """Return (chosen, rejected) lists of per-token response logprob tensors, one per pair."""
    chosen, rejected = [], []
    for pair in pairs:
        chosen.append(response_logprobs(weights, config, pair["prompt_ids"], pair["chosen_ids"]))
        rejected.append(
            response_logprobs(weights, config, pair["prompt_ids"], pair["rejected_ids"])
        )
    return chosen, rejected


def sequence_logps(token_logprobs):
    """Sum each sequence's response-token logprobs into a tensor of shape (pairs,)."""
    return torch.stack([logprobs.sum() for logprobs in token_logprobs])


# ---------------------------------------------------------------------------
# DPO losses and metrics
# ---------------------------------------------------------------------------


def dpo_logits(policy, reference, margins, beta):
    """Return z = β·Δ - m per pair (pairs,).

    Δ = [log π(y_w) - log π_ref(y_w)] - [log π(y_l) - log π_ref(y_l)].
    """
    chosen_logratios = policy["chosen"] - reference["chosen"]
    rejected_logratios = policy["rejected"] - reference["rejected"]
    return beta * (chosen_logratios - rejected_logratios) - margins


def dpo_losses(spec, policy, reference, margins, beta):
    """Return the per-pair loss (pairs,) for one LOSSES entry, as a function of z = β·Δ - m.

    With m = 0 each formula is TRL's DPOTrainer.dpo_loss for the same loss_type.
    """
    z = dpo_logits(policy, reference, margins, beta)
    smoothing = spec["label_smoothing"]
    logsigmoid = torch.nn.functional.logsigmoid
    loss_type = spec["loss_type"]

    if loss_type == "sigmoid":
        # Conservative DPO when ε > 0: -(1-ε) log σ(z) - ε log σ(-z).
        return -(1 - smoothing) * logsigmoid(z) - smoothing * logsigmoid(-z)
    if loss_type == "robust":
        # Robust DPO: (-(1-ε) log σ(z) + ε log σ(-z)) / (1 - 2ε).
        return (-(1 - smoothing) * logsigmoid(z) + smoothing * logsigmoid(-z)) / (
            1 - 2 * smoothing
        )
    if loss_type == "hinge":
        # relu(1 - z)
        return torch.relu(1 - z)
    if loss_type == "ipo":
        # (z - 1/2)^2 / β^2, which is TRL's (Δ - 1/(2β))^2 when m = 0. TRL's IPO uses
        # length-averaged logps, but midpo sums them for IPO as for every other loss.
        return (z - 0.5) ** 2 / beta**2
    raise ValueError(
        f"unsupported loss_type {loss_type!r}; expected sigmoid, robust, hinge or ipo"
    )


def dpo_metrics(policy, reference, beta):
    """Return TRL's DPO metrics, each the mean over pairs. Rewards leave the margin out."""
    chosen_rewards = beta * (policy["chosen"] - reference["chosen"])
    rejected_rewards = beta * (policy["rejected"] - reference["rejected"])
    return {
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracies": float((chosen_rewards > rejected_rewards).double().mean()),
        "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
        "logps/chosen": float(policy["chosen"].mean()),
        "logps/rejected": float(policy["rejected"].mean()),
    }


# ---------------------------------------------------------------------------
# One DPO step
# ---------------------------------------------------------------------------


class DpoStep:
    """The fixed parts of one case: base model, reference logps, pairs, margins and targets."""

    def __init__(self, config, weights, pairs, case):
        self.config = config
        self.weights = weights
        self.pairs = pairs
        self.paths = target_paths(config, case["target_modules"])
        self.scale = lora_scale(case["r"], case["lora_alpha"], case["use_rslora"])
        self.margins = torch.tensor(MARGINS, dtype=torch.float64)

        # The reference model is fixed, so its logps are computed once, as a trainer caches them.
        chosen, rejected = pair_token_logprobs(weights, config, pairs)
        self.reference_tokens = {"chosen": chosen, "rejected": rejected}
        self.reference = {"chosen": sequence_logps(chosen), "rejected": sequence_logps(rejected)}

    def policy_token_logprobs(self, adapter):
        merged = merge_adapter(self.weights, adapter, self.paths, self.scale)
        chosen, rejected = pair_token_logprobs(merged, self.config, self.pairs)
        return {"chosen": chosen, "rejected": rejected}

    def loss(self, spec, adapter):
        """Return (mean loss over pairs, policy logps {"chosen", "rejected"})."""
        tokens = self.policy_token_logprobs(adapter)
        policy = {side: sequence_logps(tokens[side]) for side in ("chosen", "rejected")}
        return dpo_losses(spec, policy, self.reference, self.margins, BETA).mean(), policy

    def gradients(self, spec, adapter):
        """Return (loss, policy logps, {PEFT key: gradient}) from float64 autograd."""
        leaves = {name: tensor.clone().requires_grad_(True) for name, tensor in adapter.items()}
        loss, policy = self.loss(spec, leaves)
        loss.backward()
        grads = {name: leaf.grad.detach() for name, leaf in leaves.items()}
        detached = {side: logps.detach() for side, logps in policy.items()}
        return loss.detach(), detached, grads


# ---------------------------------------------------------------------------
# Checks of the reference itself
# ---------------------------------------------------------------------------


def check_zero_lora_b(step, adapter, case_name):
    """Assert that policy and reference logps are equal when every lora_B is zero."""
    zeroed = {
        name: torch.zeros_like(tensor) if ".lora_B." in name else tensor
        for name, tensor in adapter.items()
    }
    tokens = step.policy_token_logprobs(zeroed)
    for side in ("chosen", "rejected"):
        for index, (policy, reference) in enumerate(zip(tokens[side], step.reference_tokens[side])):
            difference = (policy - reference).abs().max().item()
            assert difference <= 1e-12, (
                f"{case_name}: pair {index} {side} logprobs differ by {difference:.3e} "
                "with lora_B = 0"
            )


def check_hinge_sides(z, case_name):
    """Assert that relu(1 - z) is positive for some pairs and zero for others, away from z = 1."""
    active = [value < 1 for value in z]
    assert any(active), f"{case_name}: z = {z} is above 1 for every pair; change MARGINS"
    assert not all(active), f"{case_name}: z = {z} is below 1 for every pair; change MARGINS"
    closest = min(abs(1 - value) for value in z)
    assert closest > HINGE_KINK_DISTANCE, (
        f"{case_name}: z = {z} is within {closest:.3f} of the hinge at z = 1; change MARGINS"
    )


def check_finite_differences(step, spec, adapter, grads, case_name):
    """Compare autograd with central differences at the largest |gradient| entry of 4 tensors.

    The tensors are lora_A and lora_B of the first and last target. Taking the largest
    entry keeps the relative error meaningful, since a near-zero gradient would make
    any rounding look like a large relative error.
    """
    first, last = step.paths[0], step.paths[-1]
    names = [peft_key(path, matrix) for path in (first, last) for matrix in ("lora_A", "lora_B")]
    h = FINITE_DIFFERENCE_STEP
    for name in names:
        flat_index = int(grads[name].abs().argmax())
        analytic = grads[name].reshape(-1)[flat_index].item()

        values = []
        for sign in (1.0, -1.0):
            shifted = dict(adapter)
            shifted[name] = adapter[name].clone()
            shifted[name].view(-1)[flat_index] += sign * h
            with torch.no_grad():
                values.append(step.loss(spec, shifted)[0].item())
        numeric = (values[0] - values[1]) / (2 * h)

        relative = abs(numeric - analytic) / abs(analytic)
        assert relative < FINITE_DIFFERENCE_TOLERANCE, (
            f"{case_name} {spec['name']}: {name}[{flat_index}] autograd {analytic:.12e}, "
            f"finite difference {numeric:.12e}, relative error {relative:.2e}"
        )


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def random_pairs(config):
    """Return the seeded pairs: BOS + plain tokens as prompt, plain tokens + EOS as responses."""
    generator = torch.Generator().manual_seed(PAIRS_SEED)

    def plain_tokens(count):
        vocab_size = config["vocab_size"]
        ids = torch.randint(FIRST_PLAIN_TOKEN_ID, vocab_size, (count,), generator=generator)
        return ids.tolist()

    pairs = []
    for prompt_length, chosen_length, rejected_length in PAIR_LENGTHS:
        pairs.append(
            {
                "prompt_ids": [BOS_TOKEN_ID] + plain_tokens(prompt_length - 1),
                "chosen_ids": plain_tokens(chosen_length - 1) + [EOS_TOKEN_ID],
                "rejected_ids": plain_tokens(rejected_length - 1) + [EOS_TOKEN_ID],
            }
        )
    return pairs


def loss_expectations(step, spec, adapter, case_name):
    loss, policy, grads = step.gradients(spec, adapter)
    check_finite_differences(step, spec, adapter, grads, case_name)
    grad_norm = torch.sqrt(sum((grad**2).sum() for grad in grads.values()))
    return {
        "loss_type": spec["loss_type"],
        "label_smoothing": spec["label_smoothing"],
        "loss": float(loss),
        "metrics": dpo_metrics(policy, step.reference, BETA),
        "grads": {name: grads[name].reshape(-1).tolist() for name in sorted(grads)},
        "grad_norm": float(grad_norm),
    }


def make_case(case, config, weights, pairs):
    name = case["name"]
    adapter_dir = f"{OUT_DIR}/{name}"
    stored = random_adapter(config, weights, case)
    adapter = write_adapter(adapter_dir, case, stored)

    step = DpoStep(config, weights, pairs, case)
    check_zero_lora_b(step, adapter, name)
    with torch.no_grad():
        policy_tokens = step.policy_token_logprobs(adapter)
    policy = {side: sequence_logps(policy_tokens[side]) for side in ("chosen", "rejected")}
    z = dpo_logits(policy, step.reference, step.margins, BETA).tolist()
    check_hinge_sides(z, name)

    def listed(token_logprobs):
        return [logprobs.tolist() for logprobs in token_logprobs]

    expected = {
        "case": name,
        "description": (
            case["description"] + " Sequence logps are sums over the response tokens, EOS "
            "included, for every loss type. IPO therefore uses summed logps, not TRL's "
            "length-averaged ones."
        ),
        "base_model": BASE_MODEL,
        "adapter": {
            "path": adapter_dir,
            "r": case["r"],
            "lora_alpha": case["lora_alpha"],
            "use_rslora": case["use_rslora"],
            "scale": step.scale,
            "target_modules": sorted(case["target_modules"]),
            "shapes": {key: list(stored[key].shape) for key in sorted(stored)},
        },
        "beta": BETA,
        "margins": MARGINS,
        "pairs": pairs,
        "logps": {
            "policy_chosen": policy["chosen"].tolist(),
            "policy_rejected": policy["rejected"].tolist(),
            "reference_chosen": step.reference["chosen"].tolist(),
            "reference_rejected": step.reference["rejected"].tolist(),
        },
        "token_logprobs": {
            "policy_chosen": listed(policy_tokens["chosen"]),
            "policy_rejected": listed(policy_tokens["rejected"]),
            "reference_chosen": listed(step.reference_tokens["chosen"]),
            "reference_rejected": listed(step.reference_tokens["rejected"]),
        },
        "losses": {spec["name"]: loss_expectations(step, spec, adapter, name) for spec in LOSSES},
    }
    with open(os.path.join(REPO_ROOT, OUT_DIR, f"{name}.json"), "w", encoding="utf-8") as file:
        file.write(format_json(expected) + "\n")

    losses = [f"{spec['name']} {expected['losses'][spec['name']]['loss']:.4f}" for spec in LOSSES]
    print(f"{name}: z = β·Δ - m {[round(value, 4) for value in z]}, losses {', '.join(losses)}")


def main():
    torch.set_num_threads(1)
    os.makedirs(os.path.join(REPO_ROOT, OUT_DIR), exist_ok=True)
    config, weights = load_base_model(BASE_MODEL)
    pairs = random_pairs(config)
    for case in CASES:
        make_case(case, config, weights, pairs)


if __name__ == "__main__":
    main()
