#!/usr/bin/env python3
"""PyTorch references for test/cuda/torch.test.ts (GPU machine; PyTorch there).

  python3 bench/gpu/torch_ops_ref.py DIR

DIR/cases.json lists cases {name, op, params, inputs: {tensor: shape}}; each input
tensor is DIR/<case>.<tensor>.bin (little-endian f32, or i32 for ids/targets/
positions/cu_seqlens). For each case this writes DIR/<case>.<output>.bin (f32),
computed in float64 (on the GPU when there is one) with torch's own ops and
autograd, from exactly the inputs instill sees. Independent of instill's CPU
backend: a second reference for every CUDA op.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

INT_INPUTS = {"ids", "targets", "positions", "cu_seqlens"}
dev = "cuda" if torch.cuda.is_available() else "cpu"


def load(d, case, name, shape):
    dt = np.int32 if name in INT_INPUTS else np.float32
    a = np.fromfile(os.path.join(d, f"{case}.{name}.bin"), dtype=dt).reshape(shape)
    t = torch.from_numpy(a).to(dev)
    return t.long() if name in INT_INPUTS else t.double()


def save(d, case, name, t):
    t.detach().to("cpu", torch.float32).contiguous().numpy().tofile(os.path.join(d, f"{case}.{name}.bin"))


def leaf(t):
    return t.clone().requires_grad_(True)


def run(d, c):
    p, n = c["params"], c["name"]
    x = {k: load(d, n, k, s) for k, s in c["inputs"].items()}
    op = c["op"]
    out = {}
    if op == "matmul":
        a = x["a"].t() if p["transA"] else x["a"]
        b = x["b"].t() if p["transB"] else x["b"]
        out["c"] = a @ b
    elif op == "lora_linear":
        xx, A, B = leaf(x["x"]), leaf(x["a"]), leaf(x["b"])
        u = xx @ A.t()
        y = xx @ x["w"].t() + p["scale"] * (u @ B.t())
        if "bias" in x:
            y = y + x["bias"]
        y.backward(x["dy"])
        out.update(y=y, u=u, dx=xx.grad, da=A.grad, db=B.grad)
    elif op == "linear_ce":
        h = leaf(x["h"])
        logits = h @ x["w"].t()
        t = x["targets"]
        loss = F.cross_entropy(logits, t, ignore_index=-100, reduction="sum") / p["normalizer"]
        loss.backward()
        out.update(loss=loss.reshape(1), dh=h.grad)
    elif op == "rmsnorm":
        xx, w = leaf(x["x"]), leaf(x["w"])
        y = xx * torch.rsqrt((xx * xx).mean(-1, keepdim=True) + p["eps"]) * w
        y.backward(x["dy"])
        out.update(y=y, dx=xx.grad, dw=w.grad)
    elif op == "rope":
        xx, pos, inv = x["x"], x["positions"], x["inv_freq"]
        th = pos.double()[:, None] * inv[None, :]  # (N, D/2)
        c_, s_ = torch.cos(th)[:, None, :], torch.sin(th)[:, None, :]
        h = xx.shape[-1] // 2
        x1, x2 = xx[..., :h], xx[..., h:]
        out["y"] = torch.cat([x1 * c_ - x2 * s_, x2 * c_ + x1 * s_], -1)
    elif op == "swiglu":
        g, u = leaf(x["gate"]), leaf(x["up"])
        y = F.silu(g) * u
        y.backward(x["dout"])
        out.update(out=y, dgate=g.grad, dup=u.grad)
    elif op == "attention":
        q, k, v = leaf(x["q"]), leaf(x["k"]), leaf(x["v"])
        N, H, D = q.shape
        KVH = k.shape[1]
        cu = x["cu_seqlens"].tolist()
        seg = torch.empty(N, dtype=torch.long, device=dev)
        for s in range(len(cu) - 1):
            seg[cu[s]:cu[s + 1]] = s
        i = torch.arange(N, device=dev)
        mask = (seg[:, None] == seg[None, :]) & (i[None, :] <= i[:, None])
        if p["window"] > 0:
            mask &= (i[:, None] - i[None, :]) < p["window"]
        kk = k.repeat_interleave(H // KVH, dim=1)
        vv = v.repeat_interleave(H // KVH, dim=1)
        s = torch.einsum("ihd,jhd->hij", q, kk) * p["scale"]
        s = s.masked_fill(~mask[None], float("-inf"))
        lse = torch.logsumexp(s, -1)  # (H, N)
        o = torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), vv)
        o.backward(x["dout"])
        out.update(out=o, lse=lse.t(), dq=q.grad, dk=k.grad, dv=v.grad)
    elif op == "embedding":
        out["out"] = x["w"][x["ids"]]
    elif op == "adamw":
        prm = torch.nn.Parameter(x["param"].clone())
        opt = torch.optim.AdamW([prm], lr=p["lr"], betas=(p["beta1"], p["beta2"]), eps=p["eps"], weight_decay=p["wd"])
        for t in range(p["steps"]):
            prm.grad = x[f"grad{t}"].clone()
            opt.step()
        st = opt.state[prm]
        out.update(param=prm, m=st["exp_avg"], v=st["exp_avg_sq"])
    else:
        raise SystemExit(f"unknown op {op}")
    for k, t in out.items():
        save(d, n, k, t)


def main():
    d = sys.argv[1]
    torch.backends.cuda.matmul.allow_tf32 = False
    with open(os.path.join(d, "cases.json")) as f:
        cases = json.load(f)
    for c in cases:
        run(d, c)
    print(f"torch_ops_ref: {len(cases)} cases on {dev} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
