#!/usr/bin/env python3
"""PyTorch + peft on the CPU, on the batos trainer bench's data and settings (issue 31): the yardstick.

Run the Rust bench first so it writes its sequences and settings:

    BATOS_BENCH_DUMP=/tmp/trainer-bench.json cargo bench --profile dev --workspace --bench unsloth

then, in a virtual environment with torch, transformers, peft and gguf (PyPI's torch is the CUDA build; it runs on
the CPU here; about 6 GB installed):

    python benches/trainer_torch.py /tmp/trainer-bench.json

It loads the same GGUF file through transformers (dequantized to float32), lays LoRA on the same projections with
the same rank, alpha and dropout, and trains with AdamW at the same rate on the same sequences in batches of the
same size, the loss on the same answer tokens; `threads` torch threads (the trainer's). It prints one markdown row:
training tokens/s (whole sequences per second of optimizer steps, the median of `runs` runs of `steps` steps, after
one warm-up step) and the process's peak RSS.
"""

import json
import os
import resource
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

# GGUF tensor names (batos's [trainer] targets) -> the Hugging Face llama module names.
TARGETS = {
    "attn_q": "q_proj",
    "attn_k": "k_proj",
    "attn_v": "v_proj",
    "attn_output": "o_proj",
    "ffn_gate": "gate_proj",
    "ffn_up": "up_proj",
    "ffn_down": "down_proj",
}


def main(path):
    spec = json.load(open(path))
    torch.manual_seed(1)
    torch.set_num_threads(max(1, int(spec["threads"])))
    model_path = spec["model"]
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model_path), gguf_file=os.path.basename(model_path), torch_dtype=torch.float32
    )
    lora = LoraConfig(
        r=spec["rank"],
        lora_alpha=spec["alpha"],
        lora_dropout=spec["dropout"],
        target_modules=[TARGETS[t] for t in spec["targets"]],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec["lr"], weight_decay=0.0)
    seqs = spec["sequences"]
    batch = max(1, int(spec["batch"]))

    def batch_at(step):
        picked = [seqs[(step * batch + i) % len(seqs)] for i in range(batch)]
        width = max(len(s["tokens"]) for s in picked)
        ids = torch.zeros((batch, width), dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        for row, s in enumerate(picked):
            n = len(s["tokens"])
            ids[row, :n] = torch.tensor(s["tokens"])
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor([t if learn else -100 for t, learn in zip(s["tokens"], s["learn"])])
        return ids, mask, labels, sum(len(s["tokens"]) for s in picked)

    def step(k):
        ids, mask, labels, tokens = batch_at(k)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return tokens

    step(0)  # warm-up: first-call allocations and kernel selection
    rates = []
    for run in range(int(spec["runs"])):
        started, tokens = time.perf_counter(), 0
        for k in range(int(spec["steps"])):
            tokens += step(1 + run * int(spec["steps"]) + k)
        rates.append(tokens / (time.perf_counter() - started))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    mean_tokens = sum(len(s["tokens"]) for s in seqs) // len(seqs)
    print("| trainer | sequences | tokens each (mean) | batch | training tok/s (median) | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(
        f"| PyTorch {torch.__version__} + peft, {torch.get_num_threads()} threads | {len(seqs)} | {mean_tokens} | "
        f"{batch} | {statistics.median(rates):.1f} | {peak_mib} MiB |"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
