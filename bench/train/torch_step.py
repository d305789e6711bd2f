"""The LoRA training step of `instill bench train`, written plainly in PyTorch eager (CPU, or --device cuda).

A Llama-family decoder from a Hugging Face config.json with random weights (std 0.02):
embedding, RMSNorm, rotate-half RoPE, causal GQA attention (matmul + softmax: PyTorch
1.13 has no scaled_dot_product_attention), SwiGLU MLP, tied or untied LM head, mean
cross-entropy over non-ignored targets. LoRA (r, alpha = 2r, B = 0.01) on all seven
projections; the base is frozen; AdamW (lr 1e-4) on the adapters. With --dtype bf16 the
frozen weights are stored in bf16 and the step runs under autocast(bfloat16) on the device.

The batch matches bench/train/index.ts: B rows of T random ids, the first half of each
row's labels masked (-100). Prints one JSON line: tokens/s, median step seconds, peak memory (RSS on the
CPU; torch.cuda.max_memory_allocated on a GPU, the same step as instill's device peak).

  /usr/bin/python3 bench/train/torch_step.py --config C.json [--layers L] --batch B --seq T --rank R [--dtype bf16] [--device cuda]
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F


class LoraLinear(torch.nn.Module):
    def __init__(self, inf, outf, r, dtype, g):
        super().__init__()
        self.weight = torch.nn.Parameter((torch.randn(outf, inf, generator=g) * 0.02).to(dtype), requires_grad=False)
        bound = 1 / math.sqrt(inf)
        self.lora_A = torch.nn.Parameter(torch.empty(r, inf).uniform_(-bound, bound, generator=g))
        self.lora_B = torch.nn.Parameter(torch.full((outf, r), 0.01))
        self.scale = 2.0  # alpha / r with alpha = 2r

    def forward(self, x):
        return x @ self.weight.t() + self.scale * ((x @ self.lora_A.t()) @ self.lora_B.t())


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(torch.nn.Module):
    def __init__(self, cfg, r, dtype, g):
        super().__init__()
        c, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.h, self.kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.d = cfg.get("head_dim") or c // self.h
        self.eps = cfg["rms_norm_eps"]
        self.n1 = torch.ones(c)
        self.n2 = torch.ones(c)
        self.q = LoraLinear(c, self.h * self.d, r, dtype, g)
        self.k = LoraLinear(c, self.kv * self.d, r, dtype, g)
        self.v = LoraLinear(c, self.kv * self.d, r, dtype, g)
        self.o = LoraLinear(self.h * self.d, c, r, dtype, g)
        self.gate = LoraLinear(c, f, r, dtype, g)
        self.up = LoraLinear(c, f, r, dtype, g)
        self.down = LoraLinear(f, c, r, dtype, g)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        y = rmsnorm(x, self.n1, self.eps)
        q = self.q(y).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d) + mask
        a = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, self.h * self.d)
        x = x + self.o(a)
        y = rmsnorm(x, self.n2, self.eps)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--layers", type=int)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dtype", default="f32")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    cfg = json.load(open(a.config))
    if a.layers is not None:
        cfg["num_hidden_layers"] = a.layers
    bf16 = a.dtype == "bf16"
    wdt = torch.bfloat16 if bf16 else torch.float32
    g = torch.Generator().manual_seed(0)
    c, vocab = cfg["hidden_size"], cfg["vocab_size"]
    emb = (torch.randn(vocab, c, generator=g) * 0.02).to(wdt)
    head = emb if cfg.get("tie_word_embeddings", False) else (torch.randn(vocab, c, generator=g) * 0.02).to(wdt)
    blocks = torch.nn.ModuleList([Block(cfg, a.rank, wdt, g) for _ in range(cfg["num_hidden_layers"])])
    norm = torch.ones(c)
    emb, head, norm = emb.to(dev), head.to(dev), norm.to(dev)
    blocks = blocks.to(dev)
    for blk in blocks:
        blk.n1, blk.n2 = blk.n1.to(dev), blk.n2.to(dev)
    params = [q for q in blocks.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    d = cfg.get("head_dim") or c // cfg["num_attention_heads"]
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (torch.arange(0, d, 2).float() / d))
    pos = torch.arange(a.seq).float()
    fr = torch.outer(pos, inv)
    cos, sin = torch.cat((fr, fr), -1).cos().to(dev), torch.cat((fr, fr), -1).sin().to(dev)
    mask = torch.full((a.seq, a.seq), float("-inf")).triu(1).to(dev)

    ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g)
    labels = ids.clone()
    labels[:, : a.seq // 2] = -100
    ids, labels = ids.to(dev), labels.to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            x = emb[ids].float()
            for blk in blocks:
                x = blk(x, cos, sin, mask)
            x = rmsnorm(x, norm, cfg["rms_norm_eps"])
            logits = x @ head.t()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        return loss.item()

    loss = step()  # warm-up (loss.item() waits for the device: each step is timed to its end)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    print(json.dumps({
        "torch": torch.__version__,
        "tokens_per_sec": a.batch * a.seq / med,
        "step_seconds": med,
        "peak_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss": loss,
    }))


if __name__ == "__main__":
    main()
