#!/usr/bin/env python3
"""The llama-cpp-python side of the embedded-backend benchmark (actors/benches/llm.rs runs it).

Same GGUF, same thread count, same context/batch sizes, same prompts and sampling as the Rust side; prints one
JSON line: prompt tokens/s, generation tokens/s, time to first token, resident memory.

usage: llm_cpp_python.py MODEL THREADS N_CTX N_BATCH RUNS PROMPT_FILE
"""
import json
import sys
import time

from llama_cpp import Llama


def rss_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) // 1024
    return 0


def main():
    model, threads, n_ctx, n_batch, runs, prompt_file = sys.argv[1:7]
    threads, n_ctx, n_batch, runs = int(threads), int(n_ctx), int(n_batch), int(runs)
    long_prompt = open(prompt_file).read()
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                n_threads_batch=threads, verbose=False, seed=42)
    rss_loaded = rss_mib("VmRSS:")

    def messages(nonce, user):
        # The nonce leads, so no run reuses an earlier run's evaluated prefix.
        return [{"role": "system", "content": f"[{nonce}] You are a helpful assistant."},
                {"role": "user", "content": user}]

    prompt_tps, gen_tps, ttft = [], [], []
    for i in range(runs):
        # Prompt processing: a long prompt, one generated token.
        t = time.perf_counter()
        out = llm.create_chat_completion(messages=messages(f"p{i}", long_prompt), max_tokens=1,
                                         temperature=0.7, top_p=0.9, seed=42)
        dt = time.perf_counter() - t
        prompt_tps.append(out["usage"]["prompt_tokens"] / dt)
        # Generation: a short prompt, streamed, 128 tokens at most.
        t = time.perf_counter()
        first, n = None, 0
        for chunk in llm.create_chat_completion(
                messages=messages(f"g{i}", "Write a long story about a lighthouse keeper and a storm."),
                max_tokens=128, temperature=0.7, top_p=0.9, seed=42, stream=True):
            delta = chunk["choices"][0].get("delta", {})
            if delta.get("content"):
                n += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if first is not None and n > 1:
            ttft.append((first - t) * 1000)
            gen_tps.append((n - 1) / (end - first))

    med = lambda v: sorted(v)[len(v) // 2] if v else 0.0
    print(json.dumps({"prompt_tps": med(prompt_tps), "gen_tps": med(gen_tps), "ttft_ms": med(ttft),
                      "rss_loaded_mib": rss_loaded, "rss_peak_mib": rss_mib("VmHWM:"),
                      "prompt_tokens": out["usage"]["prompt_tokens"]}))


if __name__ == "__main__":
    main()
