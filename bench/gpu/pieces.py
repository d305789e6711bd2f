#!/usr/bin/env python3
"""The next pieces (INSTILL_CUDA_NEXT, native/runtime/next.cpp) that failed GPU tests name.

A test of a piece lives in test/cuda/next/NAME.test.ts, or names it as "kernels: NAME" or
"INSTILL_CUDA_NEXT=NAME[,NAME]"; "kernels: verified" (the default path), "kernels: next", "=1" and
test/cuda/next/all.test.ts (every piece at once) name none.

  python3 bench/gpu/pieces.py VITEST_LOG   prints the pieces its FAIL lines name, one a line
table.py imports named() for the closing table; gpu-check.sh leaves those pieces out of the step's A/Bs."""
import os
import re
import sys

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "native", "runtime", "next.cpp")) as f:
    PIECES = re.findall(r'\{Next::\w+, "(\w+)"\}', f.read())  # next.cpp's kAll, the one list of them

_NAMING = re.compile(r"kernels: (\w+)|INSTILL_CUDA_NEXT=([\w,]+)|test/cuda/next/(\w+)\.test\.ts")


def named(test):
    """The pieces one test's name names (a set, empty for the default path or all pieces at once)."""
    out = set()
    for kernels, env, path in _NAMING.findall(test):
        out.update(n for n in (kernels or env or path).split(",") if n in PIECES)
    return out


def failed_tests(log_text):
    """The names of the failed tests in a vitest log (its 'FAIL test/...' lines, colors stripped), once each."""
    seen = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log_text).splitlines():
        m = re.match(r"^ *FAIL +(test/.*)$", line)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as f:
        tests = failed_tests(f.read())
    for p in sorted({p for t in tests for p in named(t)}):
        print(p)
