#!/usr/bin/env python3
"""PyTorch references for bench/gpu-check.sh (run on the GPU machine only).

  python3 bench/gpu/torch_bench.py lora  --out results.jsonl   fused-LoRA math: eager and torch.compile
  python3 bench/gpu/torch_bench.py ce    --out results.jsonl   logits + cross_entropy at V=128256
  python3 bench/gpu/torch_bench.py train --config llama-3.2-1b.json --out results.jsonl
                                                                transformers + peft (SDPA), one step

Each writes JSON lines {bench, impl, ms, peak_mib, ...}. Timing: CUDA events,
warm-up first, median of the repeats; inputs are random (never zeros). Shapes
match bench/gpu/instill_bench.mjs. Peak memory is torch.cuda.max_memory_allocated
over the timed call minus what was allocated before it (inputs and weights).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

PEAK_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16, datasheet; MFU denominator

LORA = dict(N=8192, IN=2048, OUT=8192, R=16, scale=2.0)
CE = dict(N=8192, C=2048, V=128256, ignored=0.25)


def emit(out, **rec):
    rec["device"] = torch.cuda.get_device_name(0)
    line = json.dumps(rec)
    print(line, flush=True)
    with open(out, "a") as f:
        f.write(line + "\n")


def time_ms(fn, warmup=3, repeats=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), min(times), max(times)


def bench_lora(out):
    N, IN, OUT, R, s = LORA["N"], LORA["IN"], LORA["OUT"], LORA["R"], LORA["scale"]
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(N, IN, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
    W = (torch.randn(OUT, IN, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02)
    A = (torch.randn(R, IN, device="cuda", generator=g) * 0.02).requires_grad_(True)   # fp32 LoRA params (peft)
    B = (torch.randn(OUT, R, device="cuda", generator=g) * 0.02).requires_grad_(True)
    dy = torch.randn(N, OUT, device="cuda", dtype=torch.bfloat16, generator=g)

    def lora(x, W, A, B):
        # peft's Linear.forward with a bf16 base layer and fp32 adapters
        return F.linear(x, W) + (F.linear(F.linear(x.to(A.dtype), A), B) * s).to(x.dtype)

    flops = 2 * N * IN * OUT * 2 + 2 * N * R * (IN + OUT) * 3  # fwd + dx (frozen W), LoRA terms fwd+bwd
    for impl, fn in (("torch eager", lora), ("torch.compile", torch.compile(lora))):
        def step():
            y = fn(x, W, A, B)
            torch.autograd.backward(y, dy)
            x.grad = A.grad = B.grad = None
        t0 = time.time()
        step()
        torch.cuda.synchronize()
        first = time.time() - t0
        med, lo, hi = time_ms(step)
        emit(out, bench="lora_linear fwd+bwd", impl=impl, ms=med, min_ms=lo, max_ms=hi,
             tflops=flops / med / 1e9, first_call_s=first, shape=LORA)


def bench_ce(out):
    N, C, V = CE["N"], CE["C"], CE["V"]
    g = torch.Generator(device="cuda").manual_seed(2)
    h = torch.randn(N, C, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
    W = torch.randn(V, C, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    t[torch.rand(N, device="cuda", generator=g) < CE["ignored"]] = -100

    def step():
        logits = h @ W.t()
        loss = F.cross_entropy(logits.float(), t, ignore_index=-100)
        loss.backward()
        h.grad = None

    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    med, lo, hi = time_ms(step, repeats=10)
    emit(out, bench="linear CE fwd+bwd V=128256", impl="torch logits+cross_entropy", ms=med, min_ms=lo, max_ms=hi,
         peak_mib=peak / 2**20, shape=CE)


def bench_train(out, config_path, batch=1):
    import transformers
    from peft import LoraConfig, get_peft_model

    with open(config_path) as f:
        d = json.load(f)
    cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **{k: v for k, v in d.items() if k != "architectures"})
    cfg._attn_implementation = "sdpa"
    T, B = 2048, batch  # --batch: rows of 2048 a step (instill_bench's --batch packs the same)
    torch.manual_seed(3)
    with torch.device("cuda"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:
            model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    med, lo, hi = time_ms(step, warmup=3, repeats=10)  # eager HF is host-bound: its spread is wide
    peak = torch.cuda.max_memory_allocated()
    n_emb = cfg.vocab_size * cfg.hidden_size  # tied: counted once, used as the LM head (a GEMM)
    # the frozen parameters less the embedding's lookup where it is a tensor of its own (untied)
    n_base = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad) - (0 if cfg.tie_word_embeddings else n_emb)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # FLOPs per token: frozen GEMMs fwd + input-grad (4·P, embedding lookup excluded, LM head included),
    # LoRA 6·P, causal attention 6·L·T·C (QKᵀ and PV, half the square, backward twice the forward): as
    # src/model/flops.ts counts them for instill (bench/gpu/instill_bench.mjs, `instill bench train`).
    flops_tok = 4 * n_base + 6 * n_lora + 6 * cfg.num_hidden_layers * T * cfg.hidden_size
    tok_s = B * T / (med / 1e3)
    name = "train step llama-3.2-1b seq2048 r16" if B == 1 else f"train step llama-3.2-1b {B}x2048 r16"
    emit(out, bench=name, impl="transformers+peft sdpa", ms=med, min_ms=lo, max_ms=hi,
         tokens_per_s=tok_s, peak_mib=peak / 2**20, mfu=tok_s * flops_tok / (PEAK_BF16_TFLOPS * 1e12),
         params_frozen=n_base, params_lora=n_lora, params_embedding=n_emb,
         versions=dict(torch=torch.__version__, transformers=transformers.__version__))


def bench_ops(out):
    """The same per-op shapes as instill_bench.mjs ops (a llama-3.2-1b step at T 2048), bf16 activations."""
    T, C, H, KVH, D, Fi, R, V = 2048, 2048, 32, 8, 64, 8192, 16, 128256
    g = torch.Generator(device="cuda").manual_seed(4)
    rn = lambda *s, dt=torch.bfloat16, sc=1.0: (torch.randn(*s, device="cuda", generator=g) * sc).to(dt)
    q = rn(1, H, T, D).requires_grad_(True)
    k = rn(1, KVH, T, D).requires_grad_(True)
    v = rn(1, KVH, T, D).requires_grad_(True)
    dout = rn(1, H, T, D)

    def att():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        o.backward(dout)
        q.grad = k.grad = v.grad = None

    med, lo, hi = time_ms(att, repeats=10)
    emit(out, bench="op attention fwd+bwd (T 2048, 32/8 heads, D 64)", impl="torch sdpa (bf16)", ms=med, min_ms=lo, max_ms=hi)

    def att_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    med, lo, hi = time_ms(att_fwd, repeats=10)
    emit(out, bench="op attention fwd (T 2048, 32/8 heads, D 64)", impl="torch sdpa (bf16)", ms=med, min_ms=lo, max_ms=hi)
    # Each of torch's attention kernels alone, where it takes these inputs: what FA2 (mma.sync, as instill's
    # flash kernels) and cuDNN (Hopper's own instructions) reach on this card, the bar for instill's kernels.
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        for name, be in (("flash (FA2)", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("mem-efficient", SDPBackend.EFFICIENT_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    med_f, lo_f, _ = time_ms(att_fwd, repeats=10)
                    med_b, lo_b, _ = time_ms(att, repeats=10)
            except Exception as e:  # this backend does not take GQA / this dtype / this card
                print(f"torch sdpa {name}: not run ({type(e).__name__}: {str(e)[:120]})")
                continue
            emit(out, bench="op attention fwd (T 2048, 32/8 heads, D 64)", impl=f"torch sdpa {name} (bf16)", ms=med_f, min_ms=lo_f)
            emit(out, bench="op attention fwd+bwd (T 2048, 32/8 heads, D 64)", impl=f"torch sdpa {name} (bf16)", ms=med_b, min_ms=lo_b)
    except ImportError as e:
        print(f"torch.nn.attention: {e}")
    for nm, IN, OUT in (("q/o 2048->2048", C, C), ("k/v 2048->512", C, KVH * D), ("gate/up 2048->8192", C, Fi), ("down 8192->2048", Fi, C)):
        x = rn(T, IN).requires_grad_(True)
        W = rn(OUT, IN, sc=0.02)
        A = rn(R, IN, dt=torch.float32, sc=0.02).requires_grad_(True)
        B = rn(OUT, R, dt=torch.float32, sc=0.02).requires_grad_(True)
        dy = rn(T, OUT)

        def lora():
            y = F.linear(x, W) + (F.linear(F.linear(x.to(A.dtype), A), B) * 2.0).to(x.dtype)
            y.backward(dy)
            x.grad = A.grad = B.grad = None

        med, lo, hi = time_ms(lora, repeats=10)
        emit(out, bench=f"op lora_linear fwd+bwd {nm}", impl="torch eager (bf16)", ms=med, min_ms=lo, max_ms=hi,
             tflops=6 * T * IN * OUT / med / 1e9)
    h = rn(T, C).requires_grad_(True)
    W = rn(V, C, sc=0.02)
    t = torch.randint(0, V, (T,), device="cuda", generator=g)

    def ce():
        F.cross_entropy((h @ W.t()).float(), t).backward()
        h.grad = None

    med, lo, hi = time_ms(ce, repeats=10)
    emit(out, bench="op linear CE fwd+bwd (T 2048, V 128256)", impl="torch logits+cross_entropy (bf16)", ms=med, min_ms=lo, max_ms=hi)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["lora", "ce", "train", "ops"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config")
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch sees no GPU")
    {"lora": lambda: bench_lora(a.out), "ce": lambda: bench_ce(a.out), "train": lambda: bench_train(a.out, a.config, a.batch), "ops": lambda: bench_ops(a.out)}[a.what]()


if __name__ == "__main__":
    main()
