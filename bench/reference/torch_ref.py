"""PyTorch reference for `instill bench kernels --torch`: a JSON-lines server.

The benchmark (bench/reference/torch.ts) starts this with Debian's python3 (CPU
PyTorch), sets up each workload once, then asks for single timed runs between
its own, so instill and PyTorch alternate on the same cores. Each request is one
JSON object per line on stdin; each answer one JSON object per line on stdout.

  {"cmd": "threads", "n": 2}
  {"cmd": "setup", "id": "k1", "op": "matmul", "M":..,"N":..,"K":.., "transA": false, "transB": true, "dtype": "f32"|"bf16"}
  {"cmd": "setup", "id": "k2", "op": "lora", "N":..,"IN":..,"OUT":..,"R":.., "scale": 2.0, "dtype": "f32"|"bf16"}
  {"cmd": "setup", "id": "k3", "op": "linear_ce", "N":..,"C":..,"V":.., "dtype": "f32"}
  {"cmd": "run", "id": "k1"}            -> {"seconds": ...}
  {"cmd": "free", "id": "k1"}

lora is the same math as kernels.loraLinear + loraLinearBackward, written plainly
in eager mode (W frozen; grads of x, A and B); bf16 runs it under CPU autocast
with W stored in bf16, as a user would. linear_ce is logits = h @ W.T, then
F.cross_entropy(ignore_index=-100) forward and backward (grad of h), with half
the targets ignored.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

work = {}


def make(req):
    op = req["op"]
    g = torch.Generator().manual_seed(0)
    if op == "matmul":
        dt = torch.bfloat16 if req["dtype"] == "bf16" else torch.float32
        m, n, k = req["M"], req["N"], req["K"]
        a = torch.randn(k, m, generator=g).to(dt) if req["transA"] else torch.randn(m, k, generator=g).to(dt)
        b = torch.randn(n, k, generator=g).to(dt) if req["transB"] else torch.randn(k, n, generator=g).to(dt)
        ta, tb = req["transA"], req["transB"]
        c = torch.empty(m, n, dtype=dt)  # preallocated, as instill's and OpenBLAS's outputs are

        def run():
            torch.matmul(a.t() if ta else a, b.t() if tb else b, out=c)

        return run
    if op == "lora":
        n, i, o, r, s = req["N"], req["IN"], req["OUT"], req["R"], req["scale"]
        bf16 = req["dtype"] == "bf16"
        x = torch.randn(n, i, generator=g).requires_grad_(True)
        w = torch.randn(o, i, generator=g) * 0.05
        if bf16:
            w = w.to(torch.bfloat16)
        a = (torch.randn(r, i, generator=g) * 0.05).requires_grad_(True)
        b = (torch.randn(o, r, generator=g) * 0.05).requires_grad_(True)
        dy = torch.randn(n, o, generator=g)

        def run():
            x.grad = a.grad = b.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = x @ w.t() + s * ((x @ a.t()) @ b.t())
            y.backward(dy.to(y.dtype))

        return run
    if op == "linear_ce":
        n, c, v = req["N"], req["C"], req["V"]
        h = torch.randn(n, c, generator=g).requires_grad_(True)
        w = torch.randn(v, c, generator=g) * 0.05
        t = torch.randint(0, v, (n,), generator=g)
        t[1::2] = -100

        def run():
            h.grad = None
            loss = F.cross_entropy(h @ w.t(), t, ignore_index=-100)
            loss.backward()

        return run
    raise ValueError(f"unknown op {op}")


def main():
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            cmd = req["cmd"]
            if cmd == "threads":
                torch.set_num_threads(int(req["n"]))
                out = {"ok": True}
            elif cmd == "setup":
                work[req["id"]] = make(req)
                work[req["id"]]()  # warm-up
                out = {"ok": True}
            elif cmd == "run":
                fn = work[req["id"]]
                t0 = time.perf_counter()
                fn()
                out = {"seconds": time.perf_counter() - t0}
                # let OpenMP's idle threads finish spinning before instill's next timed run
                time.sleep(0.005)
            elif cmd == "free":
                work.pop(req["id"], None)
                out = {"ok": True}
            else:
                out = {"error": f"unknown cmd {cmd}"}
        except Exception as e:  # report, keep serving
            out = {"error": repr(e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
