"""The PyTorch side of the scoring benchmark: end scores of the plan's sequences in eager mode.

The computation is that of transformers' LlamaForSequenceClassification. The backbone gives
final-normed hidden states, the linear head `score` runs at every position, and each row's
score is the value at its last non-padding token. Runs under torch.no_grad, as safe-rlhf's
evaluation does. Reads the plan written by bench/run-train-benches.ts and prints one JSON line
(ScoreResult in bench/train-plan.ts).

Usage: /usr/bin/python3 bench/score_torch.py --plan FILE [--threads N]
"""

import json
import time

import torch
import torch.nn.functional as F

from dpo_step_torch import matmul_fields, parse_args, process_fields
from forward_torch import Llama


def end_scores(model, head, sequences, batch_size):
    """Score the sequences longest first, batch_size right-padded rows per forward pass.
    Return the scores in input order."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    scores = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        lengths = torch.tensor([len(sequences[i]) for i in rows])
        width = int(lengths.max())
        input_ids = torch.zeros(len(rows), width, dtype=torch.int64)
        attention_mask = torch.zeros(len(rows), width, dtype=torch.int64)
        for r, i in enumerate(rows):
            input_ids[r, : lengths[r]] = torch.tensor(sequences[i])
            attention_mask[r, : lengths[r]] = 1
        positions = torch.arange(width)[None, :].expand(len(rows), width)
        hidden = model.hidden_states(input_ids, attention_mask, positions)
        logits = F.linear(hidden, head).squeeze(-1)  # [B, S]
        end = logits[torch.arange(len(rows)), lengths - 1]
        for r, i in enumerate(rows):
            scores[i] = end[r].item()
    return scores


def main():
    args, plan = parse_args(__doc__.split("\n\n")[0], ["score"])
    matmul = matmul_fields(plan)
    sequences = plan["score_sequences"]
    batch_size = plan["score_batch"]

    start = time.perf_counter()
    model = Llama(plan["score_model_dir"])
    head = model.weights["score.weight"]
    load_seconds = time.perf_counter() - start

    with torch.no_grad():
        start = time.perf_counter()
        scores = end_scores(model, head, sequences, batch_size)
        warmup_seconds = time.perf_counter() - start
        times = []
        for _ in range(plan["repeats"]):
            start = time.perf_counter()
            scores = end_scores(model, head, sequences, batch_size)
            times.append(time.perf_counter() - start)

    matmul = matmul_fields(plan, matmul)
    result = {
        "side": "pytorch",
        "bench": "score",
        "sequences": len(sequences),
        "tokens": sum(len(s) for s in sequences),
        "load_s": load_seconds,
        "session_create_s": 0.0,
        "warmup_s": warmup_seconds,
        "seconds": times,
        "scores": scores,
        "matmul": matmul,
        **process_fields(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
