"""Write tiny random score-model checkpoints and their float64 expected end scores.

Run from the repository root:

    /usr/bin/python3 scripts/reference/score_reference.py

Needs torch (tested with 1.13) and numpy. It uses neither transformers nor the
safetensors package. A score model is a Llama backbone, final RMSNorm included,
followed by a linear head with one output. The end score of a sequence is that
head applied to the hidden state of its last non-padding token. For each case in
CASES the script writes

    test/fixtures/score/<case>/config.json          sorted keys, 2-space indent
    test/fixtures/score/<case>/model.safetensors    backbone as model.*, plus the head
    test/fixtures/score/<case>.expected.json        token ids and float64 end scores

Two checkpoint layouts are covered: transformers' LlamaForSequenceClassification
(`score.weight`, no bias) and PKU safe-rlhf's LlamaForScore (`score_head.weight`,
`score_head.bias` and the `normalizer.*` buffers). Weights and inputs are seeded
and torch runs on one thread, so a rerun on the same machine rewrites
byte-identical files. scripts/reference/SCORE.md describes the JSON layout.
"""

import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import (  # noqa: E402
    SAFETENSORS_DTYPES,
    decode_safetensors,
    forward,
    tensor_to_bytes,
)
from make_fixtures import (  # noqa: E402
    FLOAT64_TOLERANCE,
    STORAGE_DTYPES,
    assert_close,
    llama_config,
    random_weights,
    write_json,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO_ROOT, "test", "fixtures", "score")

SEQUENCE_LENGTHS = [1, 3, 9, 20]
# Rows of the padded batch, as indices into the sequences above: unsorted, one row
# without padding and one row of a single token.
BATCH_ROWS = [2, 0, 3, 1]
PAD_TOKEN_ID = 0
# Sequences that share prefixes, as responses to one prompt do: (prefix length, suffix
# lengths) per prompt. Every prefix is at least midpo's default MIN_SHARED_PREFIX (16), so an
# engine that runs each shared prefix once does so with its default settings.
SHARED_PREFIX_GROUPS = [(18, [1, 4, 9]), (24, [2, 6])]
BOS_TOKEN_ID = 1

# transformers' LlamaForSequenceClassification finds the last real token by looking for
# pad_token_id in input_ids, not in the attention mask. Real tokens therefore never use
# the pad id, so both rules pick the same position.
FIRST_REAL_TOKEN_ID = PAD_TOKEN_ID + 1

# A score read at the wrong position (the last padding position instead of the last real
# token) must miss the expected score by more than this, or the padded batch would not
# catch that bug.
MIN_WRONG_POSITION_GAP = 1e-2
# An engine that drops the PKU head bias, or applies the normaliser although do_normalize
# is false, must miss every expected end score by more than this.
MIN_DETECTABLE_ERROR = 0.1

# safe-rlhf's normaliser buffers for the PKU case. With do_normalize false they are not
# applied. The values are far from the identity (mean 0, var 1) so that an engine which
# applies them anyway fails the test.
NORMALIZER_MEAN = 0.75
NORMALIZER_VAR = 2.25
NORMALIZER_COUNT = 4096

# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def sequence_classification_config(**overrides):
    """LlamaForSequenceClassification config.json fields for a single-output head.

    transformers derives num_labels from id2label and writes only id2label and
    label2id. The num_labels key is added for readers that look for it. On load,
    transformers uses len(id2label) and warns only when num_labels differs from it.
    """
    config = llama_config(
        architectures=["LlamaForSequenceClassification"],
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
        num_labels=1,
        pad_token_id=PAD_TOKEN_ID,
    )
    config.update(overrides)
    return config


def pku_score_config(**overrides):
    """LlamaForScore config.json fields as PKU safe-rlhf's ScoreModelMixin stores them.

    safe-rlhf copies the score-head options (score_dim, bias, score_type, do_normalize,
    normalizer_type, momentum) into the Llama config and, during training, the
    normaliser's running mean and var as one-element lists.
    """
    config = llama_config(
        architectures=["LlamaForScore"],
        bias=True,
        do_normalize=False,
        mean=[NORMALIZER_MEAN],
        momentum=0.9,
        normalizer_type="ExponentialMovingAverage",
        pad_token_id=PAD_TOKEN_ID,
        score_dim=1,
        score_type="cost",
        var=[NORMALIZER_VAR],
    )
    config.update(overrides)
    return config


CASES = [
    {
        "name": "llama-seqcls",
        "description": (
            "transformers LlamaForSequenceClassification with num_labels 1: 6 query heads "
            "sharing 2 KV heads, score.weight [1, hidden] without bias, F32."
        ),
        "seed": 4001,
        "head": "score",
        "config": sequence_classification_config(
            vocab_size=160,
            hidden_size=48,
            intermediate_size=64,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=8,
        ),
    },
    {
        "name": "pku-score-bf16",
        "description": (
            "PKU safe-rlhf LlamaForScore cost model: 4 query heads sharing 2 KV heads, no "
            "head_dim key, score_head.weight [1, hidden] and score_head.bias [1], normaliser "
            "buffers present but do_normalize false, BF16 with normalizer.count in I64."
        ),
        "seed": 4002,
        "head": "score_head",
        "config": pku_score_config(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-05,
            torch_dtype="bfloat16",
        ),
    },
]

# ---------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------


def random_score_weights(config, head):
    """Return {HF name: tensor}: the backbone of make_fixtures plus a score head, no lm_head.

    The head weight has std 1.5 / sqrt(hidden), so end scores spread over a few units.
    Floating tensors are float32 here and get the storage dtype later. The PKU
    normaliser count stays int64, as safe-rlhf registers it with dtype torch.long.
    """
    hidden = config["hidden_size"]
    weights = random_weights(config)
    del weights["lm_head.weight"]
    weights[f"{head}.weight"] = torch.randn(1, hidden) * (1.5 / hidden**0.5)
    if config.get("bias", False):
        weights[f"{head}.bias"] = 0.5 * torch.randn(1)
    if config["architectures"] == ["LlamaForScore"]:
        weights["normalizer.mean"] = torch.tensor([NORMALIZER_MEAN])
        weights["normalizer.var"] = torch.tensor([NORMALIZER_VAR])
        weights["normalizer.count"] = torch.tensor([NORMALIZER_COUNT], dtype=torch.int64)
    return weights


# ---------------------------------------------------------------------------
# safetensors with I64
# ---------------------------------------------------------------------------


def encode_safetensors_with_int64(tensors):
    """Serialize {name: tensor} like llama_reference.encode_safetensors, also accepting int64.

    The header layout is the same: __metadata__ first, then names in sorted order,
    compact JSON padded with spaces to a multiple of 8 bytes.
    """
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        if tensor.dtype == torch.int64:
            dtype = "I64"
            data = tensor.numpy().astype("<i8").tobytes()
        else:
            dtype = SAFETENSORS_DTYPES[tensor.dtype]
            data = tensor_to_bytes(tensor)
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def decode_safetensors_with_int64(blob):
    """Parse safetensors bytes into {name: tensor}, reading I64 entries here.

    The floating entries go to llama_reference.decode_safetensors, which rejects I64,
    through a copy of the file whose header lists only those entries. The data
    offsets stay valid because the data section is copied unchanged.
    """
    (header_size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_size].decode("utf-8"))
    data = blob[8 + header_size :]

    tensors = {}
    float_header = {}
    for name, entry in header.items():
        if name != "__metadata__" and entry["dtype"] == "I64":
            begin, end = entry["data_offsets"]
            array = np.frombuffer(data[begin:end], dtype="<i8").copy()
            tensors[name] = torch.from_numpy(array).reshape(entry["shape"])
        else:
            float_header[name] = entry

    float_header_bytes = json.dumps(float_header).encode("utf-8")
    float_blob = struct.pack("<Q", len(float_header_bytes)) + float_header_bytes + data
    tensors.update(decode_safetensors(float_blob))
    return tensors


def write_checkpoint(directory, config, stored):
    """Write config.json and model.safetensors, and return {name: tensor} read back from disk."""
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):
        os.remove(os.path.join(directory, entry))
    write_json(os.path.join(directory, "config.json"), config)

    path = os.path.join(directory, "model.safetensors")
    with open(path, "wb") as handle:
        handle.write(encode_safetensors_with_int64(stored))
    with open(path, "rb") as handle:
        loaded = decode_safetensors_with_int64(handle.read())

    # The reference must see exactly the stored bits, including BF16 rounding.
    assert sorted(loaded) == sorted(stored), f"{directory}: tensor names changed on reload"
    for name, tensor in stored.items():
        assert loaded[name].dtype == tensor.dtype, f"{directory}: {name} changed dtype on reload"
        assert torch.equal(loaded[name], tensor), f"{directory}: {name} changed value on reload"
    return loaded


# ---------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------


def final_hidden_states(weights, config, input_ids, attention_mask=None):
    """Return the final-normed hidden states (B, T, hidden) of the backbone.

    llama_reference.forward ends with `h @ lm_head.T`. With an identity lm_head that
    product is h itself, exactly, so the backbone is the unchanged reference forward.
    """
    hidden = config["hidden_size"]
    dtype = weights["model.embed_tokens.weight"].dtype
    with_identity_head = dict(weights)
    with_identity_head["lm_head.weight"] = torch.eye(hidden, dtype=dtype)
    return forward(with_identity_head, config, input_ids, attention_mask)


def scores_at_every_position(weights, config, head, input_ids, attention_mask=None):
    """Return the head output (B, T) at every position. The bias is added when stored."""
    hidden_states = final_hidden_states(weights, config, input_ids, attention_mask)
    scores = hidden_states @ weights[f"{head}.weight"].T  # (B, T, 1)
    bias = weights.get(f"{head}.bias")
    if bias is not None:
        scores = scores + bias
    return scores[..., 0]


def end_score(weights, config, head, ids):
    """Return the score at the last token of one unpadded sequence."""
    return scores_at_every_position(weights, config, head, torch.tensor([ids]))[0, -1]


def random_sequences(config):
    """Return token-id lists of SEQUENCE_LENGTHS that start with BOS and never use the pad id."""
    sequences = []
    for length in SEQUENCE_LENGTHS:
        ids = torch.randint(FIRST_REAL_TOKEN_ID, config["vocab_size"], (length,)).tolist()
        ids[0] = BOS_TOKEN_ID
        sequences.append(ids)
    return sequences


def shared_prefix_sequences(config, seed):
    """Return sequences in SHARED_PREFIX_GROUPS, interleaved across prompts, plus a copy of
    the first one. A separate generator leaves the other cases' draws unchanged."""
    generator = torch.Generator().manual_seed(seed)

    def draw(length):
        return torch.randint(
            FIRST_REAL_TOKEN_ID, config["vocab_size"], (length,), generator=generator
        ).tolist()

    groups = []
    for prefix_length, suffix_lengths in SHARED_PREFIX_GROUPS:
        prefix = [BOS_TOKEN_ID] + draw(prefix_length - 1)
        groups.append([prefix + draw(length) for length in suffix_lengths])
    sequences = []
    for index in range(max(len(group) for group in groups)):
        sequences.extend(group[index] for group in groups if index < len(group))
    return sequences + [list(sequences[0])]


def check_prefix_scores(name, weights, config, head, ids):
    """Assert that the end score of each prefix of `ids` equals the score at that position.

    The backbone is causal, so the score at position t depends on tokens 0..t only.
    """
    all_scores = scores_at_every_position(weights, config, head, torch.tensor([ids]))[0]
    for length in SEQUENCE_LENGTHS[:-1]:
        prefix_score = end_score(weights, config, head, ids[:length])
        assert_close(
            prefix_score.reshape(1),
            all_scores[length - 1].reshape(1),
            f"{name}: end score of the length-{length} prefix",
        )


def padded_batch_expectations(name, weights, config, head, sequences, unpadded_scores):
    """Score the right-padded batch and assert each row equals its unpadded end score."""
    rows = [sequences[index] for index in BATCH_ROWS]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), PAD_TOKEN_ID, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1

    all_scores = scores_at_every_position(weights, config, head, input_ids, attention_mask)
    end_scores = []
    for row, index in enumerate(BATCH_ROWS):
        # safe-rlhf reads the last position whose attention mask is 1.
        last_real = int(attention_mask[row].nonzero()[-1])
        score = all_scores[row, last_real]
        expected = unpadded_scores[index]
        assert_close(
            score.reshape(1),
            expected.reshape(1),
            f"{name}: padded batch row {row} against unpadded",
        )
        if last_real < width - 1:
            gap = abs(float(all_scores[row, -1] - expected))
            assert gap > MIN_WRONG_POSITION_GAP, (
                f"{name}: row {row} scores {gap:.2e} away at the last padding position, so "
                f"reading the wrong position would go unnoticed; change the case's seed"
            )
        end_scores.append(float(score))

    return {
        "pad_token_id": PAD_TOKEN_ID,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "sequence_index": BATCH_ROWS,
        "end_scores": end_scores,
    }


def check_normalizer_detectable(name, loaded, scores):
    """Assert that applying the stored normaliser would move every end score noticeably.

    The two forms checked are (s - mean) / sqrt(var) and s / sqrt(var), the "affine" and
    "scale" forms of safe-rlhf's Normalizer without its 1e-8 epsilon.
    """
    mean = float(loaded["normalizer.mean"][0])
    std = float(loaded["normalizer.var"][0]) ** 0.5
    for index, score in enumerate(scores):
        raw = float(score)
        for label, normalized in (("mean and std", (raw - mean) / std), ("std", raw / std)):
            error = abs(normalized - raw)
            assert error > MIN_DETECTABLE_ERROR, (
                f"{name}: normalising sequence {index} by {label} moves its score by only "
                f"{error:.3f}, so a wrongly applied normaliser would go unnoticed"
            )


def float32_drift(weights, config, head, sequences, expected_scores):
    """Max |end score| difference between this reference run in float32 and in float64."""
    weights32 = {
        name: tensor.to(torch.float32)
        for name, tensor in weights.items()
        if tensor.is_floating_point()
    }
    drift = 0.0
    for ids, expected in zip(sequences, expected_scores):
        score32 = end_score(weights32, config, head, ids)
        drift = max(drift, abs(float(score32.double() - expected)))
    return drift


def make_case(case):
    name = case["name"]
    config = case["config"]
    head = case["head"]
    torch.manual_seed(case["seed"])
    storage_dtype = STORAGE_DTYPES[config["torch_dtype"]]
    stored = {
        tensor_name: tensor.to(storage_dtype) if tensor.is_floating_point() else tensor
        for tensor_name, tensor in random_score_weights(config, head).items()
    }
    loaded = write_checkpoint(os.path.join(OUT_DIR, name), config, stored)
    weights = {
        tensor_name: tensor.double()
        for tensor_name, tensor in loaded.items()
        if tensor.is_floating_point() and not tensor_name.startswith("normalizer.")
    }

    bias = weights.get(f"{head}.bias")
    if bias is not None:
        assert abs(float(bias)) > MIN_DETECTABLE_ERROR, (
            f"{name}: head bias {float(bias):.3f} is too small to detect a missing bias; "
            f"change the case's seed"
        )

    sequences = random_sequences(config)
    check_prefix_scores(name, weights, config, head, sequences[-1])

    scores = [end_score(weights, config, head, ids) for ids in sequences]
    if "normalizer.mean" in loaded:
        check_normalizer_detectable(name, loaded, scores)
    expected = {
        "case": name,
        "description": case["description"],
        "checkpoint": name,
        "sequences": [
            {"input_ids": ids, "end_score": float(score)} for ids, score in zip(sequences, scores)
        ],
        "padded_batch": padded_batch_expectations(name, weights, config, head, sequences, scores),
        "shared_prefix_sequences": [
            {"input_ids": ids, "end_score": float(end_score(weights, config, head, ids))}
            for ids in shared_prefix_sequences(config, case["seed"] + 1)
        ],
        "float32_max_abs_score_error": float32_drift(weights, config, head, sequences, scores),
    }
    write_json(os.path.join(OUT_DIR, f"{name}.expected.json"), expected)

    print(
        f"{name}: end scores {[round(float(score), 3) for score in scores]}, "
        f"float32 drift {expected['float32_max_abs_score_error']:.1e}"
    )


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for case in CASES:
        make_case(case)


if __name__ == "__main__":
    main()
