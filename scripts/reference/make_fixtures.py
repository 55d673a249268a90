"""Write tiny random Llama-family checkpoints and their float64 expected outputs.

Run from the repository root:

    /usr/bin/python3 scripts/reference/make_fixtures.py

Needs torch (tested with 1.13) and numpy. It uses neither transformers nor the
safetensors package. For each case in CASES it writes

    test/fixtures/tiny/<case>/config.json        as transformers' save_pretrained writes it
    test/fixtures/tiny/<case>/*.safetensors      one file, or two shards plus
                                                 model.safetensors.index.json
    test/fixtures/tiny/<case>.expected.json      inputs and float64 expected logprobs

Weights and inputs are seeded, and torch runs on one thread, so a rerun on the
same machine rewrites byte-identical files. scripts/reference/README.md
describes the layout of the expected-output JSON.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import (  # noqa: E402
    apply_rope,
    config_head_dim,
    decode_safetensors,
    default_inv_freq,
    encode_safetensors,
    forward,
    greedy_decode,
    rope_inv_freq,
    target_logprobs,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO_ROOT, "test", "fixtures", "tiny")
TRANSFORMERS_VERSION = "4.46.3"

SEQUENCE_LENGTHS = [1, 2, 7, 24]
# Rows of the padded batch, as indices into the sequences above: unsorted, and
# including a length-1 row that has no logprobs at all.
BATCH_ROWS = [2, 3, 1, 0]
PAD_TOKEN_ID = 0
GREEDY_PROMPT_INDEX = 2
GREEDY_NEW_TOKENS = 8

# A float32 engine should pick the same greedy tokens as the float64 reference,
# so every greedy step must win by more than float32 rounding can move a logit.
MIN_GREEDY_MARGIN = 1e-3
# float64 rounding bound used by the consistency checks.
FLOAT64_TOLERANCE = 1e-10

# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def llama_config(**overrides):
    """LlamaForCausalLM config.json fields as transformers 4.46 writes them."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 128,
        "mlp_bias": False,
        "model_type": "llama",
        "num_hidden_layers": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
    }
    config.update(overrides)
    return config


def qwen2_config(**overrides):
    """Qwen2ForCausalLM config.json fields. Qwen2 has no head_dim and no attention_bias key."""
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 128,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_hidden_layers": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_sliding_window": False,
    }
    config.update(overrides)
    return config


def mistral_config(**overrides):
    """MistralForCausalLM config.json fields, with sliding_window null as in Mistral 7B v0.2."""
    config = {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 128,
        "model_type": "mistral",
        "num_hidden_layers": 2,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
    }
    config.update(overrides)
    return config


CASES = [
    {
        "name": "llama-gqa",
        "description": "Llama, 8 query heads sharing 2 KV heads, untied lm_head, F32.",
        "seed": 1011,
        "shards": 1,
        "config": llama_config(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=8,
        ),
    },
    {
        "name": "llama-tied-linear-rope",
        "description": (
            "Llama with tied embeddings, head_dim 16 while hidden_size / heads is 12, and "
            'linear RoPE scaling with factor 2 under the legacy "type" key, F32.'
        ),
        "seed": 1002,
        "shards": 1,
        "config": llama_config(
            vocab_size=192,
            hidden_size=48,
            intermediate_size=80,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
            rms_norm_eps=1e-05,
            rope_scaling={"factor": 2.0, "type": "linear"},
            max_position_embeddings=256,
            tie_word_embeddings=True,
        ),
    },
    {
        "name": "llama3-rope-bf16",
        "description": (
            "Llama 3.1-style RoPE scaling (rope_type llama3) with original_max_position_embeddings "
            "64, so some frequencies keep their value, some are divided by the factor and one "
            "is interpolated; a list of eos_token_id values; stored in BF16."
        ),
        "seed": 1003,
        "shards": 1,
        "config": llama_config(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-05,
            rope_theta=500000.0,
            rope_scaling={
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64,
                "rope_type": "llama3",
            },
            max_position_embeddings=512,
            eos_token_id=[2, 3],
            torch_dtype="bfloat16",
        ),
    },
    {
        "name": "qwen2-bias-f16",
        "description": "Qwen2 with bias on q_proj, k_proj and v_proj only, tied embeddings, F16.",
        "seed": 1004,
        "shards": 1,
        "config": qwen2_config(
            vocab_size=200,
            hidden_size=64,
            intermediate_size=88,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=198,
            eos_token_id=199,
        ),
    },
    {
        "name": "mistral-sharded",
        "description": (
            "Mistral, 8 query heads sharing 4 KV heads, weights split into two safetensors "
            "shards with model.safetensors.index.json, F32."
        ),
        "seed": 1005,
        "shards": 2,
        "config": mistral_config(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=8,
        ),
    },
    {
        "name": "llama-attn-bias",
        "description": (
            "Llama with attention_bias (q/k/v/o_proj) and mlp_bias (gate/up/down_proj), no "
            "head_dim key as in configs written before transformers 4.44, F32."
        ),
        "seed": 1006,
        "shards": 1,
        "config": llama_config(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=80,
            num_attention_heads=4,
            num_key_value_heads=2,
            attention_bias=True,
            mlp_bias=True,
        ),
    },
]

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# ---------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------


def has_qkv_bias(config):
    return config["model_type"] == "qwen2" or config.get("attention_bias", False)


def has_o_bias(config):
    return config["model_type"] != "qwen2" and config.get("attention_bias", False)


def random_weights(config):
    """Return {HF name: float32 tensor} in module order, which is also the shard order.

    Linear weights have std 1.5 / sqrt(fan_in), between 0.15 and 0.27 at these sizes, and
    norm weights are 1 + N(0, 0.1), so the logits spread over a few nats instead of being flat.
    """
    hidden = config["hidden_size"]
    inter = config["intermediate_size"]
    head_dim = config_head_dim(config)
    q_dim = config["num_attention_heads"] * head_dim
    kv_dim = config["num_key_value_heads"] * head_dim
    mlp_bias = config.get("mlp_bias", False)

    def matrix(rows, cols):
        return torch.randn(rows, cols) * (1.5 / math.sqrt(cols))

    def norm_weight(size):
        return 1.0 + 0.1 * torch.randn(size)

    def bias(size):
        return 0.1 * torch.randn(size)

    weights = {"model.embed_tokens.weight": 0.5 * torch.randn(config["vocab_size"], hidden)}
    for layer in range(config["num_hidden_layers"]):
        attn = f"model.layers.{layer}.self_attn"
        mlp = f"model.layers.{layer}.mlp"
        for proj, rows in (("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)):
            weights[f"{attn}.{proj}.weight"] = matrix(rows, hidden)
            if has_qkv_bias(config):
                weights[f"{attn}.{proj}.bias"] = bias(rows)
        weights[f"{attn}.o_proj.weight"] = matrix(hidden, q_dim)
        if has_o_bias(config):
            weights[f"{attn}.o_proj.bias"] = bias(hidden)

        for proj, rows, cols in (
            ("gate_proj", inter, hidden),
            ("up_proj", inter, hidden),
            ("down_proj", hidden, inter),
        ):
            weights[f"{mlp}.{proj}.weight"] = matrix(rows, cols)
            if mlp_bias:
                weights[f"{mlp}.{proj}.bias"] = bias(rows)

        weights[f"model.layers.{layer}.input_layernorm.weight"] = norm_weight(hidden)
        weights[f"model.layers.{layer}.post_attention_layernorm.weight"] = norm_weight(hidden)

    weights["model.norm.weight"] = norm_weight(hidden)
    if not config["tie_word_embeddings"]:
        weights["lm_head.weight"] = matrix(config["vocab_size"], hidden)
    return weights


# ---------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------


def write_json(path, value):
    """Write JSON the way transformers does: 2-space indent, sorted keys, trailing newline."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def split_shards(names, tensors, shards):
    """Split names, kept in module order, into `shards` groups of about equal byte size.

    Like transformers' sharding, a group closes when it passes its share of the
    bytes, so a layer's tensors may end up in two files.
    """
    sizes = [tensors[name].numel() * tensors[name].element_size() for name in names]
    target = sum(sizes) / shards
    groups = [[]]
    filled = 0
    for name, size in zip(names, sizes):
        if filled >= target and len(groups) < shards:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += size
    assert len(groups) == shards, f"could not split {len(names)} tensors into {shards} shards"
    return groups


def write_checkpoint(directory, config, stored, shards):
    """Write config.json and safetensors files, and return {name: tensor} read back from disk."""
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):
        os.remove(os.path.join(directory, entry))
    write_json(os.path.join(directory, "config.json"), config)

    names = list(stored)
    if shards == 1:
        files = {"model.safetensors": names}
    else:
        groups = split_shards(names, stored, shards)
        files = {
            f"model-{index + 1:05d}-of-{shards:05d}.safetensors": group
            for index, group in enumerate(groups)
        }
        index = {
            "metadata": {
                "total_size": sum(t.numel() * t.element_size() for t in stored.values())
            },
            "weight_map": {name: file for file, group in files.items() for name in group},
        }
        write_json(os.path.join(directory, "model.safetensors.index.json"), index)

    loaded = {}
    for file, group in files.items():
        path = os.path.join(directory, file)
        with open(path, "wb") as handle:
            handle.write(encode_safetensors({name: stored[name] for name in group}))
        with open(path, "rb") as handle:
            loaded.update(decode_safetensors(handle.read()))

    # The reference must see exactly the stored bits, including F16/BF16 rounding.
    assert sorted(loaded) == sorted(stored), f"{directory}: tensor names changed on reload"
    for name, tensor in stored.items():
        assert loaded[name].dtype == tensor.dtype, f"{directory}: {name} changed dtype on reload"
        assert torch.equal(loaded[name], tensor), f"{directory}: {name} changed value on reload"
    return loaded


# ---------------------------------------------------------------------------
# Consistency checks of the reference itself
# ---------------------------------------------------------------------------


def assert_close(actual, expected, label, tolerance=FLOAT64_TOLERANCE):
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    if actual.numel() == 0:
        return
    difference = (actual - expected).abs().max().item()
    assert difference <= tolerance, f"{label}: max abs difference {difference:.3e} > {tolerance}"


def expand_kv_heads(weights, config):
    """Return an equivalent MHA checkpoint: each KV head's k/v rows copied for its query heads."""
    n_heads = config["num_attention_heads"]
    n_kv_heads = config["num_key_value_heads"]
    head_dim = config_head_dim(config)
    n_rep = n_heads // n_kv_heads
    expanded = dict(weights)
    for name, tensor in weights.items():
        if ".k_proj." not in name and ".v_proj." not in name:
            continue
        per_head = tensor.reshape(n_kv_heads, head_dim, *tensor.shape[1:])
        repeated = per_head.repeat_interleave(n_rep, dim=0)
        expanded[name] = repeated.reshape(n_heads * head_dim, *tensor.shape[1:])
    return expanded, dict(config, num_key_value_heads=n_heads)


def check_reference(name, weights, config, sequences):
    """Assert properties of the reference that do not depend on the expected numbers."""
    longest = torch.tensor([sequences[-1]])
    logits = forward(weights, config, longest)[0]

    # Causality: the logits of a prefix do not depend on the tokens after it.
    for length in SEQUENCE_LENGTHS[:-1]:
        prefix_logits = forward(weights, config, longest[:, :length])[0]
        assert_close(prefix_logits, logits[:length], f"{name}: prefix of length {length}")

    # GQA grouping: repeating each KV head's projection rows gives the same model as MHA.
    if config["num_key_value_heads"] != config["num_attention_heads"]:
        mha_weights, mha_config = expand_kv_heads(weights, config)
        mha_logits = forward(mha_weights, mha_config, longest)[0]
        assert_close(mha_logits, logits, f"{name}: GQA against expanded MHA")

    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    head_dim = config_head_dim(config)
    base = default_inv_freq(head_dim, config["rope_theta"])
    if rope_type == "linear":
        # Dividing inv_freq by the factor must equal dividing the positions by it.
        x = torch.randn(1, 1, 32, head_dim, dtype=torch.float64)
        positions = torch.arange(32, dtype=torch.float64)
        by_freq = apply_rope(x, positions, rope_inv_freq(config))
        by_position = apply_rope(x, positions / scaling["factor"], base)
        assert_close(by_freq, by_position, f"{name}: linear RoPE by frequency and by position")
    if rope_type == "llama3":
        ratio = base / rope_inv_freq(config)
        unchanged = int((ratio == 1.0).sum())
        divided = int((ratio == scaling["factor"]).sum())
        smoothed = len(ratio) - unchanged - divided
        counts = f"{unchanged} unchanged, {divided} divided, {smoothed} smoothed"
        assert unchanged > 0, f"{name}: llama3 scaling changed every frequency ({counts})"
        assert divided > 0, f"{name}: llama3 scaling divided no frequency ({counts})"
        assert smoothed > 0, f"{name}: llama3 scaling smoothed no frequency ({counts})"


# ---------------------------------------------------------------------------
# Expected outputs
# ---------------------------------------------------------------------------


def random_sequences(config):
    """Return random token-id lists of SEQUENCE_LENGTHS, starting with BOS except for Qwen2."""
    vocab = config["vocab_size"]
    bos = config.get("bos_token_id") if config["model_type"] != "qwen2" else None
    sequences = []
    for length in SEQUENCE_LENGTHS:
        ids = torch.randint(0, vocab, (length,)).tolist()
        if bos is not None:
            ids[0] = bos
        sequences.append(ids)
    return sequences


def sequence_expectations(weights, config, ids):
    input_ids = torch.tensor([ids])
    logits = forward(weights, config, input_ids)
    logprobs = target_logprobs(logits, input_ids)[0]
    return {
        "input_ids": ids,
        "logprobs": logprobs.tolist(),
        "sum": float(logprobs.sum()),
        "last_logits": logits[0, -1].tolist(),
    }


def padded_batch_expectations(name, weights, config, sequences, unpadded):
    rows = [sequences[index] for index in BATCH_ROWS]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), PAD_TOKEN_ID, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1

    all_logprobs = target_logprobs(forward(weights, config, input_ids, attention_mask), input_ids)
    logprobs, sums = [], []
    for row, index in enumerate(BATCH_ROWS):
        real = all_logprobs[row, : len(rows[row]) - 1]
        expected = torch.tensor(unpadded[index]["logprobs"], dtype=torch.float64)
        assert_close(real, expected, f"{name}: padded batch row {row} against unpadded")
        logprobs.append(real.tolist())
        sums.append(float(real.sum()))

    return {
        "pad_token_id": PAD_TOKEN_ID,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "sequence_index": BATCH_ROWS,
        "logprobs": logprobs,
        "sums": sums,
    }


def greedy_expectations(name, weights, config, prompt):
    def next_logits(ids):
        return forward(weights, config, torch.tensor([ids]))[0, -1]

    new_tokens, logprobs, margins = greedy_decode(next_logits, prompt, GREEDY_NEW_TOKENS)
    assert min(margins) > MIN_GREEDY_MARGIN, (
        f"{name}: greedy step {margins.index(min(margins))} is a near tie "
        f"(margin {min(margins):.2e}); change the case's seed"
    )
    return {
        "prompt": prompt,
        "max_new_tokens": GREEDY_NEW_TOKENS,
        "new_tokens": new_tokens,
        "logprobs": logprobs,
        "top2_margins": margins,
    }


def float32_drift(weights, config, sequences):
    """Max |logprob| difference between this reference run in float32 and in float64."""
    weights32 = {name: tensor.to(torch.float32) for name, tensor in weights.items()}
    drift = 0.0
    for ids in sequences:
        input_ids = torch.tensor([ids])
        lp64 = target_logprobs(forward(weights, config, input_ids), input_ids)
        lp32 = target_logprobs(forward(weights32, config, input_ids), input_ids)
        if lp64.numel() > 0:
            drift = max(drift, (lp32.double() - lp64).abs().max().item())
    return drift


def make_case(case):
    name = case["name"]
    config = case["config"]
    torch.manual_seed(case["seed"])
    storage_dtype = STORAGE_DTYPES[config["torch_dtype"]]
    stored = {
        tensor_name: tensor.to(storage_dtype)
        for tensor_name, tensor in random_weights(config).items()
    }
    loaded = write_checkpoint(os.path.join(OUT_DIR, name), config, stored, case["shards"])
    weights = {tensor_name: tensor.double() for tensor_name, tensor in loaded.items()}

    sequences = random_sequences(config)
    check_reference(name, weights, config, sequences)
    unpadded = [sequence_expectations(weights, config, ids) for ids in sequences]
    expected = {
        "case": name,
        "description": case["description"],
        "checkpoint": name,
        "sequences": unpadded,
        "padded_batch": padded_batch_expectations(name, weights, config, sequences, unpadded),
        "greedy": greedy_expectations(name, weights, config, sequences[GREEDY_PROMPT_INDEX]),
        "float32_max_abs_logprob_error": float32_drift(weights, config, sequences),
    }
    write_json(os.path.join(OUT_DIR, f"{name}.expected.json"), expected)

    spread = torch.tensor(unpadded[-1]["last_logits"]).std().item()
    print(
        f"{name}: last-position logit std {spread:.2f}, "
        f"min greedy margin {min(expected['greedy']['top2_margins']):.3f}, "
        f"float32 drift {expected['float32_max_abs_logprob_error']:.1e}"
    )


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for case in CASES:
        make_case(case)


if __name__ == "__main__":
    main()
