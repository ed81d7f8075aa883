"""Input and models of the batch-scoring bench: ROWS rows of id + 32 float32 features in 16
Parquet files (no dictionary encoding), and two TorchScript MLPs (32-64-32-1 and
32-1024-1024-1024-1), traced with a fixed seed. Idempotent: existing files are kept.
    data.py OUT ROWS [FILES] [--no-models]   (--no-models: the input only, without torch)"""
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

args = [a for a in sys.argv[1:] if a != "--no-models"]
out, rows = args[0], int(args[1])
files = int(args[2]) if len(args) > 2 else 16
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
per = rows // files
for f in range(files):
    path = f"{out}/part-{f:02d}.parquet"
    if os.path.exists(path):
        continue
    n = per if f < files - 1 else rows - per * (files - 1)
    cols = {"id": pa.array(np.arange(f * per, f * per + n, dtype=np.int64))}
    for c in range(32):
        cols[f"f{c}"] = pa.array(rng.standard_normal(n, dtype=np.float32))
    pq.write_table(pa.table(cols), path + ".tmp", use_dictionary=False, compression="snappy", row_group_size=1 << 20)
    os.rename(path + ".tmp", path)

models = os.path.dirname(out.rstrip("/"))
if "--no-models" in sys.argv:
    print(f"data in {out}")
    sys.exit(0)
import torch  # noqa: E402 (only the models need it)

torch.manual_seed(0)
for name, widths in [("mlp_small", [32, 64, 32, 1]), ("mlp_heavy", [32, 1024, 1024, 1024, 1])]:
    path = f"{models}/{name}.pt"
    if os.path.exists(path):
        continue
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).eval()
    traced = torch.jit.trace(net, torch.zeros(2, 32))
    traced.save(path)
print(f"data in {out}, models in {models}")
