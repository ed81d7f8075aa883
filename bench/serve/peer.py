"""The peer of the online-inference bench: what a user would write instead of Sluice's endpoint,
a FastAPI app (served by uvicorn) that runs the same TorchScript model with PyTorch.

  python peer.py model PATH      writes the bench's 32-64-32-1 MLP (seeded) as TorchScript
  MODEL=PATH uvicorn peer:app    serves POST /v1/models/{name}/predict with {"rows": [{f0: ..}]}
"""
import os
import sys

import torch

FEATURES = [f"f{i}" for i in range(32)]

if __name__ == "__main__" and sys.argv[1:2] == ["model"]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    ).eval()
    torch.jit.trace(net, torch.zeros(2, 32)).save(sys.argv[2])
    sys.exit(0)

from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

# One thread per forward pass: the workers are the parallelism, as in a tuned deployment.
torch.set_num_threads(1)
model = torch.jit.load(os.environ["MODEL"]).eval()
app = FastAPI()


class Rows(BaseModel):
    rows: list[dict[str, float]]


@app.post("/v1/models/{name}/predict")
def predict(name: str, body: Rows):
    x = torch.tensor([[row[f] for f in FEATURES] for row in body.rows], dtype=torch.float32)
    with torch.inference_mode():
        y = model(x)
    return {"model": name, "predictions": y[:, 0].tolist()}
