"""Writes a small, valid LoRA adapter GGUF shaped for a base model's tensors (used by the embedded-backend tests).

Usage: make_lora.py BASE.gguf OUT.gguf [RANK] [SCALE]
The adapter touches the attention query/value projections of every block with random low-rank updates, so
it visibly changes the model's logits. Shapes are read from the base file, so it fits any llama-family GGUF.
"""
import sys

import gguf
import numpy as np

base_path, out_path = sys.argv[1], sys.argv[2]
rank = int(sys.argv[3]) if len(sys.argv) > 3 else 8
scale = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05

reader = gguf.GGUFReader(base_path)
arch_field = reader.fields["general.architecture"]
arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
rng = np.random.default_rng(1234)

writer = gguf.GGUFWriter(out_path, arch=arch)
writer.add_type(gguf.GGUFType.ADAPTER)
writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
count = 0
for t in reader.tensors:
    if not (t.name.endswith("attn_q.weight") or t.name.endswith("attn_v.weight")):
        continue
    n_in, n_out = int(t.shape[0]), int(t.shape[1])  # ggml ne order
    a = (rng.standard_normal((rank, n_in)) * scale).astype(np.float32)
    b = (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
    writer.add_tensor(t.name + ".lora_a", a)
    writer.add_tensor(t.name + ".lora_b", b)
    count += 1
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print(f"{out_path}: {count} adapted tensors, rank {rank}, arch {arch}")
