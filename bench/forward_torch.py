"""The PyTorch side of the forward benchmark: a Llama forward pass written the way the eager
modeling code of transformers 4.x runs it, measured on the same checkpoint and token ids as
bench/forward.ts. One phase per process; prints one JSON line (fields as in forward-plan.ts).

What it computes, step by step, as LlamaForCausalLM does in eager mode:
  embedding lookup -> per layer: RMSNorm (in float32), q/k/v projections, RoPE with
  rotate_half, torch.cat onto the KV cache, repeat_kv to expand 3 KV heads to 9, scores plus
  an additive causal-and-padding mask of finfo.min, softmax in float32, o_proj, residual,
  RMSNorm, down_proj(silu(gate_proj(x)) * up_proj(x)), residual -> final RMSNorm -> lm_head.

Needs torch (tested with Debian's python3-torch 1.13) and numpy; the safetensors file is read
with numpy. Run with /usr/bin/python3 when the python3 on PATH has no torch.

Usage: /usr/bin/python3 bench/forward_torch.py --plan FILE --phase matmul|prefill|decode
           [--batch N] [--threads N]
"""

import argparse
import json
import math
import os
import platform
import re
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


def peak_rss_bytes():
    """Return the peak resident set size (VmHWM) of this process, in bytes."""
    with open("/proc/self/status") as status:
        match = re.search(r"^VmHWM:\s+(\d+) kB$", status.read(), re.MULTILINE)
    return int(match.group(1)) * 1024


# ---------------------------------------------------------------------------------------------
# Checkpoint


def read_safetensors(path):
    """Read every F32 tensor of a safetensors file. The tensors are views of one buffer that
    contains the whole file, so the weights are in memory once."""
    raw = np.fromfile(path, dtype=np.uint8)
    (header_length,) = struct.unpack("<Q", raw[:8].tobytes())
    header = json.loads(raw[8 : 8 + header_length].tobytes())
    data = raw[8 + header_length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(
                f"{path}: tensor {name} is {info['dtype']}, but this reader supports only F32. "
                "Write the checkpoint in float32 (bench/make-random-model.ts does)."
            )
        start, end = info["data_offsets"]
        chunk = data[start:end]
        # A view needs 4-byte alignment; copy the rare tensor that lacks it.
        if chunk.ctypes.data % 4 != 0:
            chunk = chunk.copy()
        array = chunk.view(np.float32).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array)
    return tensors


class Config:
    def __init__(self, path):
        with open(path) as file:
            raw = json.load(file)
        self.hidden_size = raw["hidden_size"]
        self.num_layers = raw["num_hidden_layers"]
        self.num_heads = raw["num_attention_heads"]
        self.num_kv_heads = raw.get("num_key_value_heads", self.num_heads)
        self.head_dim = raw.get("head_dim", self.hidden_size // self.num_heads)
        self.rms_norm_eps = raw["rms_norm_eps"]
        self.rope_theta = raw.get("rope_theta", 10000.0)
        self.tie_word_embeddings = raw.get("tie_word_embeddings", False)
        if raw.get("rope_scaling"):
            raise ValueError(f"{path}: rope_scaling is not implemented in this benchmark")
        if raw.get("attention_bias") or raw.get("mlp_bias"):
            raise ValueError(f"{path}: attention_bias and mlp_bias are not implemented here")


# ---------------------------------------------------------------------------------------------
# Forward pass


def rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    """[B, KV, T, D] -> [B, KV * groups, T, D], each KV head repeated for its query heads."""
    if groups == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, groups, t, d).reshape(b, kv * groups, t, d)


class Llama:
    def __init__(self, model_dir):
        self.config = Config(os.path.join(model_dir, "config.json"))
        self.weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        c = self.config
        self.inv_freq = 1.0 / (
            c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim)
        )
        head = "model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"
        self.lm_head_weight = self.weights[head]

    def w(self, name):
        return self.weights[name]

    def rotary(self, position_ids):
        """cos and sin for each position, [B, S, head_dim], formed in float32."""
        freqs = (self.inv_freq[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def additive_mask(self, attention_mask, seq):
        """[B, 1, S, T]: 0 where query s may see key t (t <= past + s and t is not padding),
        finfo.min elsewhere."""
        total = attention_mask.shape[1]
        past = total - seq
        query = torch.arange(seq)[:, None] + past
        key = torch.arange(total)[None, :]
        visible = (key <= query)[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(visible.shape, dtype=torch.float32)
        return mask.masked_fill(~visible, torch.finfo(torch.float32).min)

    def attention(self, layer, x, cos, sin, mask, cache):
        c = self.config
        p = f"model.layers.{layer}.self_attn"
        b, s, _ = x.shape
        q = F.linear(x, self.w(f"{p}.q_proj.weight")).view(b, s, c.num_heads, c.head_dim)
        k = F.linear(x, self.w(f"{p}.k_proj.weight")).view(b, s, c.num_kv_heads, c.head_dim)
        v = F.linear(x, self.w(f"{p}.v_proj.weight")).view(b, s, c.num_kv_heads, c.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin

        # The KV cache grows by concatenation at every step, as DynamicCache.update does.
        if cache is not None:
            if layer < len(cache):
                k = torch.cat([cache[layer][0], k], dim=-2)
                v = torch.cat([cache[layer][1], v], dim=-2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))

        groups = c.num_heads // c.num_kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(c.head_dim) + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).contiguous().reshape(b, s, -1)
        return F.linear(out, self.w(f"{p}.o_proj.weight"))

    def mlp(self, layer, x):
        p = f"model.layers.{layer}.mlp"
        gate = F.linear(x, self.w(f"{p}.gate_proj.weight"))
        up = F.linear(x, self.w(f"{p}.up_proj.weight"))
        return F.linear(F.silu(gate) * up, self.w(f"{p}.down_proj.weight"))

    def hidden_states(self, input_ids, attention_mask, position_ids, cache=None):
        """Run the decoder and return the final-normed hidden states [B, S, hidden]. When
        `cache` is given (a list with one (key, value) pair [B, KV, T, D] per layer), append
        this call's keys and values to it."""
        c = self.config
        x = F.embedding(input_ids, self.w("model.embed_tokens.weight"))
        cos, sin = self.rotary(position_ids)
        mask = self.additive_mask(attention_mask, input_ids.shape[1])
        for i in range(c.num_layers):
            p = f"model.layers.{i}"
            h = rms_norm(x, self.w(f"{p}.input_layernorm.weight"), c.rms_norm_eps)
            x = x + self.attention(i, h, cos, sin, mask, cache)
            h = rms_norm(x, self.w(f"{p}.post_attention_layernorm.weight"), c.rms_norm_eps)
            x = x + self.mlp(i, h)
        return rms_norm(x, self.w("model.norm.weight"), c.rms_norm_eps)

    def logits(self, hidden):
        return F.linear(hidden, self.lm_head_weight).float()


# ---------------------------------------------------------------------------------------------
# Phases


def measure_matmul(plan):
    m, k, n, runs = (plan["matmul"][key] for key in ("m", "k", "n", "runs"))
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(m, k, generator=generator) - 0.5
    b = torch.rand(k, n, generator=generator) - 0.5
    torch.matmul(a, b)
    times = []
    for _ in range(plan["repeats"]):
        start = time.perf_counter()
        for _ in range(runs):
            torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return {
        "side": "pytorch",
        "phase": "matmul",
        "m": m,
        "k": k,
        "n": n,
        "runs": runs,
        "seconds": times,
    }


def token_logprobs(model, input_ids):
    """log p(ids[t] | ids[<t]) for t = 1..S-1, [B, S-1], from the logits at every position."""
    b, s = input_ids.shape
    mask = torch.ones(b, s, dtype=torch.int64)
    positions = torch.arange(s)[None, :].expand(b, s)
    logits = model.logits(model.hidden_states(input_ids, mask, positions))  # [B, S, V]
    logprobs = F.log_softmax(logits[:, :-1], dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def measure_prefill(model, plan, load_seconds):
    input_ids = torch.tensor(plan["prefill_input_ids"], dtype=torch.int64)
    start = time.perf_counter()
    logprobs = token_logprobs(model, input_ids)
    warmup_seconds = time.perf_counter() - start
    times = []
    for _ in range(plan["repeats"]):
        start = time.perf_counter()
        logprobs = token_logprobs(model, input_ids)
        times.append(time.perf_counter() - start)
    b, s = input_ids.shape
    return {
        "side": "pytorch",
        "phase": "prefill",
        "batch": b,
        "seq": s,
        "load_s": load_seconds,
        "session_create_s": 0.0,
        "warmup_s": warmup_seconds,
        "seconds": times,
        "row_logprob_sums": logprobs.double().sum(-1).tolist(),
        "first_logprobs": logprobs[0, :16].tolist(),
    }


def greedy_generate(model, prompts, new_tokens):
    """Decode greedily with a KV cache, all rows the same length (no padding). Return the
    tokens [B, new_tokens] and the seconds spent on the prompt step and on the decode steps.
    The prompt step computes logits at the last position only, as midpo's generate() does."""
    b, s = prompts.shape
    cache = []
    mask = torch.ones(b, s, dtype=torch.int64)
    positions = torch.arange(s)[None, :].expand(b, s)

    start = time.perf_counter()
    hidden = model.hidden_states(prompts, mask, positions, cache)
    next_ids = model.logits(hidden[:, -1:]).argmax(-1)  # [B, 1]
    prompt_done = time.perf_counter()

    tokens = [next_ids]
    for step in range(new_tokens - 1):
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.int64)], dim=1)
        positions = torch.full((b, 1), s + step, dtype=torch.int64)
        hidden = model.hidden_states(next_ids, mask, positions, cache)
        next_ids = model.logits(hidden[:, -1:]).argmax(-1)
        tokens.append(next_ids)
    end = time.perf_counter()
    return torch.cat(tokens, dim=1), prompt_done - start, end - prompt_done


def measure_decode(model, plan, batch, load_seconds):
    prompts = torch.tensor(plan["decode_prompts"][:batch], dtype=torch.int64)
    new_tokens = plan["new_tokens"]
    start = time.perf_counter()
    greedy_generate(model, prompts, 8)
    warmup_seconds = time.perf_counter() - start

    runs = [greedy_generate(model, prompts, new_tokens) for _ in range(plan["repeats"])]
    return {
        "side": "pytorch",
        "phase": "decode",
        "batch": batch,
        "prompt_length": prompts.shape[1],
        "new_tokens": new_tokens,
        "load_s": load_seconds,
        "session_create_s": 0.0,
        "warmup_s": warmup_seconds,
        "prompt_seconds": [run[1] for run in runs],
        "decode_seconds": [run[2] for run in runs],
        "decode_steps": new_tokens - 1,
        "first_tokens": runs[0][0][0, :16].tolist(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help="plan file written by bench/run-forward.ts")
    parser.add_argument("--phase", required=True, choices=["matmul", "prefill", "decode"])
    parser.add_argument("--batch", type=int, help="decode batch size")
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

    with torch.inference_mode():
        if args.phase == "matmul":
            result = measure_matmul(plan)
        else:
            start = time.perf_counter()
            model = Llama(plan["model_dir"])
            load_seconds = time.perf_counter() - start
            if args.phase == "prefill":
                result = measure_prefill(model, plan, load_seconds)
            else:
                if args.batch is None:
                    parser.error("--phase decode needs --batch")
                result = measure_decode(model, plan, args.batch, load_seconds)
    times = os.times()
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["cpu_s"] = times.user + times.system
    result["threads"] = torch.get_num_threads()
    result["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
