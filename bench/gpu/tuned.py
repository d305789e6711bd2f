#!/usr/bin/env python3
"""What cuBLASLt tuning found, per product key, from a log of INSTILL_CUBLASLT_TUNE=on INSTILL_CUBLASLT_VERBOSE=1.

native/cuda/cublaslt.cu prints one line per tuned key (its first call):
  instill: cuBLASLt tuned M 2048 N 48 K 2048: 11 algorithms, heuristic's first 9.1 us (split-K 1), chose #7 3.2 us (split-K 8)
This prints those keys as a markdown table, the largest gain per call first, and a last line with how many keys
kept a split of K other than the heuristic's first algorithm's, and the summed gain per call of every key (a key runs several times a step: the step A/B
says what it adds up to). Lines of an older binary (no split-K fields) count as split-K 1.

  python3 bench/gpu/tuned.py bench.log [--top N]
"""
import re
import sys

LINE = re.compile(
    r"cuBLASLt tuned M (\d+) N (\d+) K (\d+)( \(tf32\))?: (\d+) algorithms, heuristic's first ([\d.]+) us"
    r"(?: \(split-K (\d+)\))?, chose #(-?\d+) ([\d.]+) us(?: \(split-K (\d+)\))?"
)


def parse(text):
    keys = {}
    for m in LINE.finditer(text):
        M, N, K = int(m[1]), int(m[2]), int(m[3])
        key = (M, N, K, bool(m[4]))
        keys[key] = {  # a key is tuned once per process: the last process's line stands
            "algorithms": int(m[5]),
            "first_us": float(m[6]),
            "first_split": int(m[7] or 1),
            "chosen": int(m[8]),
            "chosen_us": float(m[9]),
            "chosen_split": int(m[10] or 1),
        }
    return keys


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 0
    with open(argv[1], encoding="utf-8", errors="replace") as f:
        keys = parse(f.read())
    if not keys:
        print("no tuned keys in the log (INSTILL_CUBLASLT_TUNE=on INSTILL_CUBLASLT_VERBOSE=1 not set, or cuBLASLt not in use)")
        return 1
    rows = sorted(keys.items(), key=lambda kv: kv[1]["first_us"] - kv[1]["chosen_us"], reverse=True)
    if top:
        rows = rows[:top]
    print("| M | N | K | algorithms | heuristic's first us (split-K) | chosen us (split-K) | gain us |")
    print("|---|---|---|---|---|---|---|")
    for (M, N, K, tf32), v in rows:
        print(f"| {M} | {N} | {K}{' tf32' if tf32 else ''} | {v['algorithms']} | {v['first_us']:.1f} ({v['first_split']}) | "
              f"{v['chosen_us']:.1f} ({v['chosen_split']}) | {v['first_us'] - v['chosen_us']:.1f} |")
    split = sum(1 for v in keys.values() if v["chosen_split"] != v["first_split"])
    gain = sum(v["first_us"] - v["chosen_us"] for v in keys.values())
    print(f"{len(keys)} keys; {split} kept a split of K other than the heuristic's first; "
          f"summed gain per call of each key {gain:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
