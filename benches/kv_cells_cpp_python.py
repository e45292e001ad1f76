#!/usr/bin/env python3
"""What other sequences' KV cells cost a prompt in llama.cpp's unified KV cache (issue 19, BENCHMARKS.md).

The batched decoder keeps every request and every prefix-cache entry in one unified KV cache. llama.cpp's CPU
attention scans every cell up to the highest one in use for every query row, skipping other sequences' cells
by their mask, so a prompt's prefill gets slower with what else the cache holds. This measures it directly,
through llama.cpp's own C API (llama-cpp-python's low-level bindings), on the GGUF the daemon serves:

- alone: a 400-token prompt prefilled into an empty 20,480-cell cache (the shipped decoder's size);
- beside others: the same prompt after three sequences of 400 prompt + 400 generated tokens (decoded together,
  so their cells interleave, as running requests' do) and ten cached 400-token prompts: 6,400 other cells.

usage: kv_cells_cpp_python.py MODEL [THREADS]   (prints the best of three prefills for each)
"""
import sys
import time

import llama_cpp as L

CELLS = 20480
PROMPT = 400
N_BATCH = 512


def main():
    model_path = sys.argv[1].encode()
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    L.llama_backend_init()
    model = L.llama_model_load_from_file(model_path, L.llama_model_default_params())
    batch = L.llama_batch_init(N_BATCH, 0, 1)

    def decode(ctx, toks):
        batch.n_tokens = len(toks)
        for i, (tok, pos, seq, logits) in enumerate(toks):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def prefill(ctx, seq, n):
        t = time.perf_counter()
        for c in range(0, n, N_BATCH):
            decode(ctx, [(100 + (i * 7) % 1000, i, seq, i == n - 1) for i in range(c, min(n, c + N_BATCH))])
        return time.perf_counter() - t

    for label, others in (("alone", False), ("beside 6,400 other cells", True)):
        p = L.llama_context_default_params()
        p.n_ctx = CELLS
        p.n_batch = p.n_ubatch = N_BATCH
        p.n_seq_max = 16
        p.n_threads = p.n_threads_batch = threads
        p.flash_attn_type = 1
        p.kv_unified = True
        ctx = L.llama_init_from_model(model, p)
        if others:
            for seq in (1, 2, 3):
                prefill(ctx, seq, PROMPT)
            for k in range(PROMPT):
                decode(ctx, [(200 + k, PROMPT + k, seq, True) for seq in (1, 2, 3)])
            for seq in range(4, 14):
                prefill(ctx, seq, PROMPT)
        best = float("inf")
        for _ in range(3):
            best = min(best, prefill(ctx, 0, PROMPT))
            L.llama_memory_seq_rm(L.llama_get_memory(ctx), 0, -1, -1)
        print(f"{label}: {PROMPT}-token prefill {best * 1000:.0f} ms ({PROMPT / best:.0f} tok/s)")
        L.llama_free(ctx)


if __name__ == "__main__":
    main()
