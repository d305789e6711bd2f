#!/usr/bin/env python3
"""The closing table of bench/gpu-check.sh: reads results.jsonl (one JSON object
per measurement) and status.txt (one 'step: result' per line), prints a markdown
block ready to paste into bench/RESULTS.md, and checks the issue's targets."""
import json
import os
import re
import sys
from datetime import date

res_path, status_path = sys.argv[1], sys.argv[2]
rows = []
try:
    with open(res_path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
except FileNotFoundError:
    pass
status = open(status_path).read().strip().splitlines() if status_path else []
card = next((r["device"] for r in rows if "device" in r), "unknown card")


def get(bench, impl_prefix):
    """The first row of a bench whose impl starts so, not an A/B variant's (those are compared with it below): the
    targets are judged on the default path only."""
    return next((r for r in rows if r["bench"] == bench and r["impl"].startswith(impl_prefix) and not r.get("variant")), None)


def fmt(v, nd=2):
    return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


print(f"\n### GPU check {date.today().isoformat()}, {card}\n")
for s in status:
    print(f"- {s}")
print("\n| bench | impl | median ms | min ms | peak MiB | tokens/s | MFU |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("share") is not None:  # an op of the profiled train step: its share of that step
        r = {**r, "impl": f"{r['impl']} ({100 * r['share']:.1f}% of the step)"}
    print(f"| {r['bench']} | {r['impl']} | {fmt(r.get('ms'))} | {fmt(r.get('min_ms'))} | {fmt(r.get('peak_mib'), 0)} | "
          f"{fmt(r.get('tokens_per_s'), 0)} | {fmt(r.get('mfu') and 100 * r['mfu'], 1)}{'%' if r.get('mfu') else ''} |")

print("\ntargets:")
lb, le = "lora_linear fwd+bwd", get("lora_linear fwd+bwd", "torch eager")
li = get(lb, "instill cuda (cuBLASLt") or get(lb, "instill")
if li and le:
    sp = le["ms"] / li["ms"]
    print(f"- fused LoRA linear vs torch eager: {sp:.2f}x (target >= 1.3x): {'MET' if sp >= 1.3 else 'NOT MET'}")
else:
    print("- fused LoRA linear vs torch eager: not measured")
cb = "linear CE fwd+bwd V=128256"
ci, ct = get(cb, "instill"), get(cb, "torch")
if ci and ct:
    mem, tm = ci["peak_mib"] / ct["peak_mib"], ci["ms"] / ct["ms"]
    ok = mem <= 1 / 8 and tm <= 1.0
    print(f"- linear CE: peak memory {mem:.3f} of torch (target <= 0.125), time {tm:.2f}x torch (target <= 1): {'MET' if ok else 'NOT MET'}")
else:
    print("- linear CE: not measured")
tt = get("train step llama-3.2-1b seq2048 r16", "transformers")
ti = get("train step llama-3.2-1b seq2048 r16", "instill")
if tt and ti:
    sp = ti["tokens_per_s"] / tt["tokens_per_s"]
    best = tt["min_ms"] / ti["min_ms"] if tt.get("min_ms") and ti.get("min_ms") else float("nan")
    print(f"- training step: {sp:.2f}x transformers+peft tokens/s (medians; {best:.2f}x by each side's fastest step) "
          f"at {100 * ti['mfu']:.1f}% MFU (target >= 2x at >= 45%); "
          f"instill forward only {fmt(ti.get('forward_only_ms'))} ms of {ti['ms']:.2f} ms")
elif tt:
    print(f"- training step: instill's default not measured (its bench failed or timed out); transformers+peft "
          f"{tt['tokens_per_s']:.0f} tok/s, {100 * tt['mfu']:.1f}% MFU")
elif ti:
    print(f"- training step: transformers+peft not measured (its bench failed or timed out); instill "
          f"{ti['tokens_per_s']:.0f} tok/s at {100 * ti['mfu']:.1f}% MFU (target >= 45%), {ti['ms']:.2f} ms")
else:
    print("- training step: not measured")

# Batches above 1 (gpu-check's BATCHES), each with transformers+peft at the same batch where it was measured
batches = sorted({int(m.group(1)) for r in rows for m in [re.match(r"train step llama-3\.2-1b (\d+)x2048 r16$", r["bench"])] if m})
for b in batches:
    name = f"train step llama-3.2-1b {b}x2048 r16"
    ttb, tib = get(name, "transformers"), get(name, "instill")
    vs = lambda r: f"{r['tokens_per_s'] / ttb['tokens_per_s']:.2f}x transformers+peft tokens/s, " if ttb else ""
    if tib:
        print(f"- training step at batch {b} ({b} x 2048 tokens a step; batch 1 above): {vs(tib)}"
              f"{100 * tib['mfu']:.1f}% MFU, {tib['ms']:.2f} ms" + (f" (transformers+peft {100 * ttb['mfu']:.1f}% MFU)" if ttb else ""))
    tnb = next((r for r in rows if r["bench"] == name and r["impl"].startswith("instill")
                and (r.get("variant") or "").startswith("next kernels") and r.get("mfu")), None)
    if tnb:
        print(f"- training step at batch {b} with the next kernels ({tnb['variant']}): {vs(tnb)}{100 * tnb['mfu']:.1f}% MFU, {tnb['ms']:.2f} ms")

# A/B variants (INSTILL_BENCH_VARIANT, recorded as "variant" since stop 12): each against the default
# instill row of the same bench in the same call
def default_row(bench):
    return next((b for b in rows if b["bench"] == bench and b["impl"].startswith("instill") and not b.get("variant")
                 and "wmma" not in b["impl"] and b.get("ms")), None)


def extended_row(r):
    """The A/B'd set that r's set extends by its last piece (gpu-check's PIECE_AB chain, "default,a" then
    "default,a,b"), or None."""
    parts = r["variant"].split(",")
    return next((b for b in rows if b["bench"] == r["bench"] and b.get("ms") and b.get("variant") == ",".join(parts[:-1])),
                None) if len(parts) > 2 else None


for r in rows:
    if not r.get("variant") or not r.get("ms") or not (r["bench"].startswith("train step llama-3.2-1b ")
                                                       or r["bench"] in ("lora_linear fwd+bwd", cb)):
        continue
    base = default_row(r["bench"])
    if base is None:
        continue
    med = r["ms"] / base["ms"]
    mins = r["min_ms"] / base["min_ms"] if r.get("min_ms") and base.get("min_ms") else float("nan")
    # the loss's peak memory too (its target: at most 1/8 of torch's)
    mem = (f"; peak {r['peak_mib']:.0f} MiB against {base['peak_mib']:.0f}" if r["bench"] == cb and r.get("peak_mib")
           and base.get("peak_mib") else "")
    print(f"- A/B {r['bench']}, {r['variant']}: {r['ms']:.2f} ms against {base['ms']:.2f} ms by default "
          f"({med:.3f}x by medians, {mins:.3f}x by mins){mem}")
    # a set that extends another A/B'd set: against it too, so each piece's own step shows
    prev = extended_row(r)
    if prev is not None:
        print(f"  - {r['variant'].split(',')[-1]} on top of {prev['variant']}: {r['ms']:.2f} ms against {prev['ms']:.2f} ms "
              f"({r['ms'] / prev['ms']:.3f}x by medians)")

# INSTILL_CUDA_NEXT=pdl at the kernel level (instill_bench.mjs ops: the same chain of kernels with and without it)
chain = {r["bench"].rsplit("[", 1)[1].rstrip("]"): r for r in rows
         if r["bench"].startswith("op kernel chain") and r.get("ms") is not None and "[" in r["bench"]}
if "default" in chain and "default,pdl" in chain:
    a, b = chain["default"], chain["default,pdl"]
    print(f"- kernel chain ({b.get('boundaries', '?')} elementwise kernels behind 2 products): {a['ms']:.3f} ms, "
          f"{b['ms']:.3f} with pdl ({b.get('us_saved_per_boundary', 0):+.2f} us saved a kernel boundary; "
          f"{b.get('programmatic_launches', 0)} programmatic launches; pdl {b.get('pdl', '?')})")

# Where each A/B's step time went: the profiled step's ops (top level, not "op/part" rows) against the
# default's, the changes of 0.1 ms or more, largest first.
ops = {}
for r in rows:
    b = r["bench"]
    if b.startswith("train step op ") and "/" not in b and r.get("ms") is not None:
        ops.setdefault(r.get("variant"), {})[b[len("train step op "):]] = r["ms"]
for v, vo in ops.items():
    if v is None or None not in ops:
        continue
    d = sorted(((vo.get(k, 0.0) - ops[None].get(k, 0.0), k) for k in set(vo) | set(ops[None])), key=lambda t: -abs(t[0]))
    moved = [f"{k} {x:+.2f}" for x, k in d if abs(x) >= 0.1]
    print(f"- ops, {v} against the default (ms): {', '.join(moved) if moved else 'nothing moved by 0.1 ms'}")

# The next pieces (INSTILL_CUDA_NEXT, runtime/next.h) named by failed GPU tests (gpu-check notes "  failed: <test>"):
# left out of this call's step A/Bs (gpu-check.sh) and out of the defaults; the others are promoted on their A/Bs.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import pieces  # noqa: E402  (bench/gpu/pieces.py: which test names which piece)
except BaseException as e:  # the table above is printed; this line is all it costs
    pieces = None
    print(f"- which next pieces the failed GPU tests name: unknown (bench/gpu/pieces.py failed: {e!r})")

failed = [s.split("failed:", 1)[1].strip() for s in status if s.strip().startswith("failed:")]
failed_named = {p for t in failed for p in pieces.named(t)} if failed and pieces else set()
if failed and pieces:
    generic = [t for t in failed if not pieces.named(t)]
    print(f"- failed GPU tests name these next pieces: {', '.join(sorted(failed_named)) if failed_named else 'none'}"
          + (f"; {len(generic)} failed test(s) name none (the default path, or every piece at once)" if generic else ""))

# What a session would promote from this call (runtime/next.cpp's kAll `promoted`), so that a second call can check
# it at once: each piece of a batch-1 step A/B set (gpu-check's PIECE_AB, "default,a,b") whose tests did not fail,
# where the set's step is at least 1% faster than the default's by medians and faster by mins too; a piece that
# extends another A/B'd set ("default,a" then "default,a,b") counts only if it is faster on top of that one as well.
# A reading of the numbers, not a decision: the lines above are the evidence.
STEP = "train step llama-3.2-1b seq2048 r16"
step_base = default_row(STEP)
winners = []
for r in rows:
    v = r.get("variant") or ""
    if r["bench"] != STEP or not r.get("ms") or step_base is None or not v.startswith("default,"):
        continue
    parts = v.split(",")
    if any(p in failed_named for p in parts[1:]):
        continue
    fast = r["ms"] <= 0.99 * step_base["ms"] and r.get("min_ms") and step_base.get("min_ms") and r["min_ms"] < step_base["min_ms"]
    if not fast:
        continue
    prev = extended_row(r)
    mine = parts[1:] if prev is None else ([parts[-1]] if r["ms"] < prev["ms"] else [])
    winners += [p for p in mine if p not in winners]
if step_base is not None and any((r.get("variant") or "").startswith("default,") for r in rows if r["bench"] == STEP):
    if winners:
        print(f"- to promote, by these A/Bs: {', '.join(winners)} (check them together: INSTILL_CUDA_NEXT=default,"
              f"{','.join(winners)} SKIP_BENCH=1 SKIP_WMMA=1 bash bench/gpu-check.sh)")
    else:
        print("- to promote, by these A/Bs: none (no set of passing pieces made the step 1% faster)")
