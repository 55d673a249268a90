"""Write the AdamW, gradient-clipping and cosine-schedule fixture.

Run from the repository root:

    /usr/bin/python3 scripts/reference/optimizer_reference.py

Needs torch (tested with 1.13). transformers is not used: the cosine-with-warmup
multiplier below is written out by hand from
transformers.optimization.get_cosine_schedule_with_warmup (num_cycles 0.5).

Two seeded float32 parameters are trained for NUM_STEPS steps on seeded
gradients. Before each step the gradients are clipped to a global L2 norm of
MAX_GRAD_NORM with torch.nn.utils.clip_grad_norm_, then torch.optim.AdamW
steps, then the LambdaLR scheduler steps. The gradient scales are chosen so
that some steps are clipped and some are not. The script writes

    test/fixtures/optimizer/adamw.json

with the inputs (each step's gradients as given, before clipping), each
step's learning rate and pre-clip norm, and the final
parameters and optimizer state. Every float is written with full round-trip
precision. Float32 values are stored as the float64 numbers they equal exactly.
"""

import json
import math
import os

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(REPO_ROOT, "test", "fixtures", "optimizer", "adamw.json")

SEED = 20250607
PARAM_SHAPES = {"weight": [3, 4], "bias": [5]}
# One scale per step. Gradients are N(0, 1) times the scale, so the global norm
# of 17 values is about 4 * scale. It is above MAX_GRAD_NORM for the scales
# from 0.5 up and below it for 0.05 and 0.1.
GRAD_SCALES = [2.0, 0.05, 0.5, 0.1, 1.0, 3.0]
NUM_STEPS = len(GRAD_SCALES)

BASE_LR = 0.05
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
WARMUP_STEPS = 2
TOTAL_STEPS = NUM_STEPS


def cosine_with_warmup(step, warmup_steps, total_steps, num_cycles=0.5):
    """Learning-rate multiplier of get_cosine_schedule_with_warmup at 0-based `step`."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def make_inputs():
    generator = torch.Generator().manual_seed(SEED)
    params = {
        name: torch.randn(shape, generator=generator, dtype=torch.float32)
        for name, shape in PARAM_SHAPES.items()
    }
    grads = [
        {
            name: torch.randn(shape, generator=generator, dtype=torch.float32) * scale
            for name, shape in PARAM_SHAPES.items()
        }
        for scale in GRAD_SCALES
    ]
    return params, grads


def train(initial_params, step_grads):
    params = {name: torch.nn.Parameter(value.clone()) for name, value in initial_params.items()}
    optimizer = torch.optim.AdamW(
        list(params.values()), lr=BASE_LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, WARMUP_STEPS, TOTAL_STEPS)
    )

    records = []
    for step, grads in enumerate(step_grads):
        for name, param in params.items():
            param.grad = grads[name].clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=MAX_GRAD_NORM)
        lr = optimizer.param_groups[0]["lr"]
        assert lr == BASE_LR * cosine_with_warmup(step, WARMUP_STEPS, TOTAL_STEPS), (step, lr)
        optimizer.step()
        scheduler.step()
        records.append({"lr": lr, "pre_clip_norm": float(norm)})
    return params, optimizer, records


def flat(tensor):
    assert tensor.dtype == torch.float32
    return tensor.detach().reshape(-1).tolist()


def main():
    torch.set_num_threads(1)
    initial_params, step_grads = make_inputs()
    params, optimizer, records = train(initial_params, step_grads)

    clipped = [record["pre_clip_norm"] > MAX_GRAD_NORM for record in records]
    assert any(clipped), clipped
    assert not all(clipped), clipped
    assert records[0]["lr"] == 0.0, "warmup must start at learning rate 0"

    names = list(PARAM_SHAPES)
    states = [optimizer.state[params[name]] for name in names]
    steps = {int(state["step"]) for state in states}
    assert steps == {NUM_STEPS}, steps

    fixture = {
        "description": (
            "torch.optim.AdamW with clip_grad_norm_ before each step and a "
            "cosine-with-warmup LambdaLR, on two float32 parameters"
        ),
        "torch_version": torch.__version__,
        "hyperparameters": {
            "base_lr": BASE_LR,
            "betas": list(BETAS),
            "eps": EPS,
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "schedule": "cosine",
            "warmup_steps": WARMUP_STEPS,
            "total_steps": TOTAL_STEPS,
        },
        "shapes": PARAM_SHAPES,
        "initial_params": {name: flat(initial_params[name]) for name in names},
        "steps": [
            {
                # Before clipping: clip_grad_norm_ scaled copies of these.
                "grads": {name: flat(grads[name]) for name in names},
                "lr": record["lr"],
                "pre_clip_norm": record["pre_clip_norm"],
            }
            for grads, record in zip(step_grads, records)
        ],
        "final": {
            "step": NUM_STEPS,
            "params": {name: flat(params[name]) for name in names},
            "exp_avg": {name: flat(state["exp_avg"]) for name, state in zip(names, states)},
            "exp_avg_sq": {name: flat(state["exp_avg_sq"]) for name, state in zip(names, states)},
        },
    }

    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as file:
        json.dump(fixture, file, indent=1)
        file.write("\n")
    print(f"wrote {os.path.relpath(OUT_PATH, REPO_ROOT)}")


if __name__ == "__main__":
    main()
