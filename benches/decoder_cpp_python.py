#!/usr/bin/env python3
"""The llama-cpp-python side of the batched-decoder benchmark (actors/benches/decoder.rs runs it).

Same GGUF, threads, context, batch, prompts and sampling as the Rust side. llama-cpp-python serves one request
at a time, so "concurrent" requests run one after another; it keeps the KV cache of the previous prompt and
reuses the prefix it shares with the next one (as llama.cpp's own examples do).

usage: decoder_cpp_python.py MODEL THREADS N_CTX N_BATCH REQUESTS_JSON
REQUESTS_JSON: {"throughput": [[messages, max_tokens], ...], "ttft": [messages, ...]}
prints one JSON line: {"gen_tps": aggregate completion tokens/s over the throughput requests,
                       "ttft_ms": [time to first streamed token of each ttft request]}
"""
import json
import sys
import time

from llama_cpp import Llama


def main():
    model, threads, n_ctx, n_batch, path = sys.argv[1:6]
    threads, n_ctx, n_batch = int(threads), int(n_ctx), int(n_batch)
    reqs = json.load(open(path))
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                n_threads_batch=threads, verbose=False, seed=42)
    t = time.perf_counter()
    tokens = 0
    for messages, max_tokens in reqs["throughput"]:
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0)
        tokens += out["usage"]["completion_tokens"]
    gen_tps = tokens / (time.perf_counter() - t)
    ttft = []
    for messages in reqs["ttft"]:
        t = time.perf_counter()
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0, stream=True):
            if chunk["choices"][0].get("delta", {}).get("content"):
                ttft.append((time.perf_counter() - t) * 1000)
                break
    print(json.dumps({"gen_tps": gen_tps, "ttft_ms": ttft}))


if __name__ == "__main__":
    main()
