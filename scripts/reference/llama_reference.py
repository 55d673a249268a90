"""Float64 reference for the Llama family, plus a minimal safetensors reader and writer.

The forward pass follows the Hugging Face transformers modeling code for
LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM. RoPE uses the
`rotate_half` layout, where element i of a head pairs with element
i + head_dim/2 rather than with its neighbour. Attention is grouped-query, by
repeating KV heads, under a causal mask combined with a padding mask. The
norms are RMSNorm and the MLP is SiLU-gated.
Everything runs in float64, so the fixtures built from it are exact up to
float64 rounding. transformers computes the RoPE angles in float32, so it
differs from this reference by float32 rounding there.

Used by make_fixtures.py and stories260k_greedy.py. Needs torch (tested with
1.13) and numpy. The `safetensors` Python package is not used.
"""

import json
import math
import struct

import numpy as np
import torch

# ---------------------------------------------------------------------------
# safetensors: 8-byte little-endian header size, a JSON header, then raw data.
# The header maps each tensor name to dtype, shape and [begin, end) byte offsets
# relative to the first byte after the header.
# ---------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
}


def tensor_to_bytes(tensor):
    """Return the little-endian bytes of a contiguous F32, F16 or BF16 tensor."""
    tensor = tensor.contiguous()
    if tensor.dtype == torch.bfloat16:
        # numpy has no bfloat16, so reinterpret the 16-bit patterns as int16.
        return tensor.view(torch.int16).numpy().astype("<i2").tobytes()
    if tensor.dtype == torch.float16:
        return tensor.numpy().astype("<f2").tobytes()
    if tensor.dtype == torch.float32:
        return tensor.numpy().astype("<f4").tobytes()
    raise ValueError(f"unsupported dtype {tensor.dtype} for safetensors output")


def encode_safetensors(tensors):
    """Serialize {name: tensor} into safetensors bytes, with tensors in name order.

    The header JSON is compact and padded with spaces to a multiple of 8 bytes,
    as the reference Rust implementation writes it.
    """
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        data = tensor_to_bytes(tensor)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def decode_safetensors(blob):
    """Parse safetensors bytes into {name: tensor} in the stored dtype."""
    (header_size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_size].decode("utf-8"))
    data = blob[8 + header_size :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] == "F32":
            array = np.frombuffer(raw, dtype="<f4").copy()
            tensor = torch.from_numpy(array)
        elif entry["dtype"] == "F16":
            array = np.frombuffer(raw, dtype="<f2").copy()
            tensor = torch.from_numpy(array)
        elif entry["dtype"] == "BF16":
            array = np.frombuffer(raw, dtype="<i2").copy()
            tensor = torch.from_numpy(array).view(torch.bfloat16)
        else:
            raise ValueError(f"tensor {name}: unsupported safetensors dtype {entry['dtype']}")
        tensors[name] = tensor.reshape(entry["shape"])
    return tensors


# ---------------------------------------------------------------------------
# RoPE frequencies
# ---------------------------------------------------------------------------


def default_inv_freq(head_dim, theta):
    """inv_freq[i] = 1 / theta^(2i / head_dim) for i in [0, head_dim / 2), float64."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    return 1.0 / (theta**exponents)


def llama3_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_positions):
    """Apply Llama 3.1 frequency smoothing, as `_compute_llama3_parameters` in transformers.

    Wavelengths shorter than original_max_positions / high_freq_factor keep their
    frequency, wavelengths longer than original_max_positions / low_freq_factor
    are divided by `factor`, and those in between interpolate between the two.
    """
    low_freq_wavelen = original_max_positions / low_freq_factor
    high_freq_wavelen = original_max_positions / high_freq_factor
    wavelen = 2 * math.pi / inv_freq

    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_positions / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_inv_freq(config):
    """Return the float64 inv_freq vector for a config dict, applying `rope_scaling`.

    Accepts the current `rope_type` key and the legacy `type` key.
    """
    head_dim = config_head_dim(config)
    inv_freq = default_inv_freq(head_dim, config.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling")
    if scaling is None:
        return inv_freq

    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "linear":
        # transformers divides inv_freq by the factor, which equals dividing positions.
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return llama3_inv_freq(
            inv_freq,
            scaling["factor"],
            scaling["low_freq_factor"],
            scaling["high_freq_factor"],
            scaling["original_max_position_embeddings"],
        )
    raise ValueError(f"unsupported rope_scaling type {rope_type!r}")


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, positions, inv_freq):
    """Rotate x (B, heads, T, head_dim) by angle positions[t] * inv_freq, rotate_half layout.

    The angles are computed in float64 and only cos and sin are cast to x.dtype.
    """
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim)
    cos = torch.cos(angles).to(x.dtype)
    sin = torch.sin(angles).to(x.dtype)
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------


def config_head_dim(config):
    head_dim = config.get("head_dim")
    if head_dim is None:
        head_dim = config["hidden_size"] // config["num_attention_heads"]
    return head_dim


def rms_norm(x, weight, eps):
    """weight * x / sqrt(mean(x^2) + eps) over the last axis."""
    variance = x.pow(2).mean(dim=-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def linear(weights, prefix, x):
    """x @ W^T (+ b) for the HF Linear `prefix`, with the bias used only when it is stored."""
    out = x @ weights[prefix + ".weight"].T
    bias = weights.get(prefix + ".bias")
    if bias is not None:
        out = out + bias
    return out


def attention_mask_bias(attention_mask, seq_len, dtype):
    """Additive mask (B, 1, T, T): 0 where key j <= query i and key j is not padding, else -inf."""
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
    allowed = causal[None, :, :] & attention_mask.bool()[:, None, :]  # (B, T, T)
    bias = torch.zeros(allowed.shape, dtype=dtype)
    bias[~allowed] = -math.inf
    return bias[:, None, :, :]


def self_attention(weights, prefix, config, x, positions, mask_bias, inv_freq):
    """Apply grouped-query self-attention to x (B, T, hidden) and return (B, T, hidden)."""
    batch, seq_len, _ = x.shape
    n_heads = config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads", n_heads)
    head_dim = config_head_dim(config)

    q = linear(weights, prefix + ".q_proj", x).view(batch, seq_len, n_heads, head_dim)
    k = linear(weights, prefix + ".k_proj", x).view(batch, seq_len, n_kv_heads, head_dim)
    v = linear(weights, prefix + ".v_proj", x).view(batch, seq_len, n_kv_heads, head_dim)
    q = apply_rope(q.transpose(1, 2), positions, inv_freq)  # (B, H, T, D)
    k = apply_rope(k.transpose(1, 2), positions, inv_freq)  # (B, KV, T, D)
    v = v.transpose(1, 2)  # (B, KV, T, D)

    # Query head h reads KV head h // (n_heads / n_kv_heads), as transformers' repeat_kv.
    n_rep = n_heads // n_kv_heads
    k = k.repeat_interleave(n_rep, dim=1)  # (B, H, T, D)
    v = v.repeat_interleave(n_rep, dim=1)

    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask_bias  # (B, H, T, T)
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(batch, seq_len, n_heads * head_dim)
    return linear(weights, prefix + ".o_proj", out)


def gated_mlp(weights, prefix, x):
    gate = torch.nn.functional.silu(linear(weights, prefix + ".gate_proj", x))
    return linear(weights, prefix + ".down_proj", gate * linear(weights, prefix + ".up_proj", x))


def forward(weights, config, input_ids, attention_mask=None):
    """Return logits (B, T, vocab) for input_ids (B, T), in the dtype of the weights.

    `weights` maps HF tensor names to tensors of one dtype: float64 for the
    fixtures, float32 to measure how far a float32 engine can be expected to
    drift. Positions are 0..T-1 for every row, which is what transformers uses
    for right-padded batches.
    """
    batch, seq_len = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch, seq_len, dtype=torch.int64)
    eps = config["rms_norm_eps"]
    inv_freq = rope_inv_freq(config)
    positions = torch.arange(seq_len)
    embed_tokens = weights["model.embed_tokens.weight"]
    mask_bias = attention_mask_bias(attention_mask, seq_len, embed_tokens.dtype)

    h = embed_tokens[input_ids]  # (B, T, hidden)
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        normed = rms_norm(h, weights[prefix + ".input_layernorm.weight"], eps)
        h = h + self_attention(
            weights, prefix + ".self_attn", config, normed, positions, mask_bias, inv_freq
        )
        normed = rms_norm(h, weights[prefix + ".post_attention_layernorm.weight"], eps)
        h = h + gated_mlp(weights, prefix + ".mlp", normed)

    h = rms_norm(h, weights["model.norm.weight"], eps)
    lm_head = weights.get("lm_head.weight")
    if lm_head is None:
        lm_head = embed_tokens
    return h @ lm_head.T


def target_logprobs(logits, input_ids):
    """log p(input_ids[:, t] | input_ids[:, :t]) for t = 1..T-1, shape (B, T-1)."""
    logprobs = torch.log_softmax(logits[:, :-1, :], dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None])[..., 0]


def greedy_decode(next_logits, prompt, max_new_tokens):
    """Append argmax tokens to `prompt`, recomputing `next_logits(ids)` over the whole sequence.

    Returns the new token ids, the logprob of each chosen token and the gap between
    the best and second-best logit at each step, which shows how close a step is to a tie.
    """
    ids = list(prompt)
    new_tokens, logprobs, margins = [], [], []
    for _ in range(max_new_tokens):
        logits = next_logits(ids)  # (vocab,)
        top2 = torch.topk(logits, 2)
        token = int(top2.indices[0])
        new_tokens.append(token)
        logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
        margins.append(float(top2.values[0] - top2.values[1]))
        ids.append(token)
    return new_tokens, logprobs, margins
