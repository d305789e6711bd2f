#!/usr/bin/env python3
"""The next pieces (INSTILL_CUDA_NEXT, native/runtime/next.cpp) that failed GPU tests name.

A test of a piece lives in test/cuda/next/NAME.test.ts, or names it as "kernels: NAME" or
"INSTILL_CUDA_NEXT=NAME[,NAME]"; "kernels: verified" (the default path), "kernels: next", "=1" and
test/cuda/next/all.test.ts (every piece at once) name none.

  python3 bench/gpu/pieces.py VITEST_LOG   prints "piece: why" for each piece to leave out of the A/Bs: named by a
                                           failed test, or whose test file never finished (a run cut short)
  python3 bench/gpu/pieces.py --list       prints the pieces it knows, one a line (test/bench/gpu_check.test.ts
                                           compares them with the engine's own list)
  python3 bench/gpu/pieces.py --failed LOG prints the failed tests' names, one a line (gpu-check.sh notes them)
table.py imports named() for the closing table; gpu-check.sh leaves those pieces out of the step's A/Bs."""
import os
import re
import sys

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "native", "runtime", "next.cpp")) as f:
    PIECES = re.findall(r'\{Next::\w+,\s*"(\w+)"', f.read())  # next.cpp's kAll, the one list of them

_NAMING = re.compile(r"kernels: (\w+)|INSTILL_CUDA_NEXT=([\w,]+)|test/cuda/next/(\w+)\.test\.ts")


def named(test):
    """The pieces one test's name names (a set, empty for the default path or all pieces at once)."""
    out = set()
    for kernels, env, path in _NAMING.findall(test):
        out.update(n for n in (kernels or env or path).split(",") if n in PIECES)
    return out


def _lines(log_text):
    """A vitest log's lines, colors stripped."""
    return re.sub(r"\x1b\[[0-9;]*m", "", log_text).splitlines()


def failed_tests(log_text):
    """The names of the failed tests in a vitest log, once each: its closing summary's 'FAIL test/...' lines
    ("FILE > describe > title"); or, where there is no summary (a run its timeout killed never prints one), the
    '× title' lines under each file's line as the run went ("FILE > title"; the describe is not in them)."""
    summary, progress = [], []
    file = None
    for line in _lines(log_text):
        m = re.match(r"^ *FAIL +(test/.*)$", line)
        if m:
            summary.append(m.group(1))
            continue
        f = re.match(r"^ *[\u2713\u276f\u00d7\u2193] +(test/\S+\.test\.ts) +\(", line)
        if f:
            file = f.group(1)
            continue
        t = re.match(r"^ {3,}\u00d7 +(.*?)(?: +\d+(?:\.\d+)?m?s)?$", line)
        if t and file:
            progress.append(f"{file} > {t.group(1)}")
        elif line.strip() and not line.startswith(" "):
            file = None  # past the files' list
    return list(dict.fromkeys(summary or progress))


# The file a piece's GPU tests live in: its own (test/cuda/next/NAME.test.ts), or these.
_OTHER_FILES = {"wb_cache": "test/cuda/lora_reference.test.ts"}
_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_file(piece):
    own = f"test/cuda/next/{piece}.test.ts"
    return own if os.path.exists(os.path.join(_ROOT, own)) else _OTHER_FILES.get(piece)


def completed_files(log_text):
    """The test files vitest reported as done (passed, failed or skipped) in a log: a run cut short by its
    timeout leaves out the files it never finished."""
    done = set()
    for line in _lines(log_text):
        m = re.match(r"^ *[\u2713\u276f\u00d7\u2193] +(test/\S+\.test\.ts) +\(", line)
        if m:
            done.add(m.group(1))
    return done


def left_out(log_text):
    """{piece: why} for the pieces a step A/B must leave out: named by a failed test, or whose test file never
    finished (or that has none)."""
    out = {}
    for t in failed_tests(log_text):
        for p in named(t):
            out.setdefault(p, "a failed test names it")
    done = completed_files(log_text)
    for p in PIECES:
        f = test_file(p)
        if p not in out and (f is None or f not in done):
            out[p] = f"its tests ({f or 'none'}) did not finish"
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(PIECES))
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--failed":
        with open(sys.argv[2], errors="replace") as f:
            print("\n".join(failed_tests(f.read())))
        sys.exit(0)
    # python3 bench/gpu/pieces.py VITEST_LOG: "piece: why" a line, for each piece to leave out of the A/Bs
    with open(sys.argv[1], errors="replace") as f:
        for p, why in sorted(left_out(f.read()).items()):
            print(f"{p}: {why}")
