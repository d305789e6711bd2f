#!/usr/bin/env python3
"""Checks, in the compute_90a PTX of native/cuda (scripts/check-cuda.sh makes it), that every kernel waits
(griddepcontrol.wait, from common.cuh's pdl_enter()) before its first access to global memory. Under
INSTILL_CUDA_NEXT=pdl a kernel may start before the kernel ahead of it on the stream has finished; only that wait
keeps it from reading what the other has not written yet. test/cuda_host/launch_rules.test.ts checks that every kernel's
source begins with pdl_enter(); this checks what the compiler made of it (that the wait is there, and that nothing
that reads or writes global memory was scheduled above it).

  python3 scripts/pdl_ptx_check.py FILE.ptx ...    exit 1 and a line per kernel that breaks the rule
  python3 scripts/pdl_ptx_check.py --self-test     the check on made-up kernels (one of each kind of break)
"""
import re
import sys

ENTRY = re.compile(r"^\s*(?:\.(?:visible|weak)\s+)?\.entry\s+([\w$.]+)")
OPCODE = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.:]*)")
WAIT = re.compile(r"^\s*griddepcontrol\.wait\s*;")
PRIVATE = {"param", "shared", "local", "const"}  # state spaces no other grid writes (shared::cta and ::cluster too)


def touches_global(line):
    """Whether an instruction may read or write global memory: a load or store, atomic or reduction outside the
    private state spaces (generic addressing counts), any cp.* copy (async, bulk, reduce), a texture or surface access,
    a prefetch, or a call (whatever the callee does)."""
    m = OPCODE.match(line)
    if not m:
        return False
    parts = m.group(1).split(".")
    base, quals = parts[0], {q.split("::")[0] for q in parts[1:]}
    if base in ("ld", "ldu", "st", "atom", "red"):
        return not (quals & PRIVATE)
    return base in ("cp", "tex", "tld4", "suld", "sust", "sured", "prefetch", "prefetchu", "call")


def kernels(ptx):
    """(name, body lines) of each .entry: the lines between its opening brace and the matching closing one."""
    lines = ptx.splitlines()
    i = 0
    while i < len(lines):
        m = ENTRY.match(lines[i])
        if not m:
            i += 1
            continue
        while i < len(lines) and "{" not in lines[i]:
            i += 1
        depth, body = 0, []
        for j in range(i, len(lines)):
            depth += lines[j].count("{") - lines[j].count("}")
            body.append(lines[j])
            if depth == 0:
                i = j + 1
                break
        else:
            i = len(lines)
        yield m.group(1), body


def breaks(ptx, where):
    out = []
    for name, body in kernels(ptx):
        wait = next((k for k, l in enumerate(body) if WAIT.match(l)), None)
        access = next((k for k, l in enumerate(body) if touches_global(l)), None)
        if wait is None:
            out.append(f"{where}: {name}: no griddepcontrol.wait")
        elif access is not None and access < wait:
            out.append(f"{where}: {name}: '{body[access].strip()}' before griddepcontrol.wait")
    return out


def self_test():
    ok = ".visible .entry good(\n.param .u64 p\n)\n{\nld.param.u64 %rd1, [p];\ngriddepcontrol.launch_dependents;\n" \
         "griddepcontrol.wait;\nld.global.f32 %f1, [%rd1];\n}\n"
    none = ".entry nowait(\n)\n{\nld.param.u64 %rd1, [p];\nst.global.f32 [%rd1], %f1;\n}\n"
    early = ".visible .entry early(\n)\n{\n@%p1 ld.f32 %f1, [%rd1];\ngriddepcontrol.wait;\n}\n"
    shared = ".visible .entry sh(\n)\n{\nst.shared.f32 [%r1], %f1;\nld.volatile.shared.u32 %r2, [%r1];\n" \
             "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r3, %r4, %r5, %r6}, [%r1];\ngriddepcontrol.wait;\n" \
             "atom.global.add.f32 %f2, [%rd1], %f1;\n}\n"
    bulk = ".visible .entry bulk(\n)\n{\ncp.reduce.async.bulk.global.shared::cta.add.f32 [%rd1], [%r1], 64;\n" \
           "griddepcontrol.wait;\n}\n"
    called = ".visible .entry called(\n)\n{\ncall.uni f, (%rd1);\ngriddepcontrol.wait;\n}\n"
    src = ok + none + early + shared + bulk + called
    got = breaks(src, "t.ptx")
    want = ["t.ptx: nowait: no griddepcontrol.wait", "t.ptx: early: '@%p1 ld.f32 %f1, [%rd1];' before griddepcontrol.wait",
            "t.ptx: bulk: 'cp.reduce.async.bulk.global.shared::cta.add.f32 [%rd1], [%r1], 64;' before griddepcontrol.wait",
            "t.ptx: called: 'call.uni f, (%rd1);' before griddepcontrol.wait"]
    if got != want or len(list(kernels(src))) != 6:
        print(f"pdl_ptx_check self-test: got {got}")
        return 1
    print("pdl_ptx_check self-test: ok")
    return 0


def main(paths):
    if paths == ["--self-test"]:
        return self_test()
    found, bad = 0, []
    for p in paths:
        ptx = open(p).read()
        found += sum(1 for _ in kernels(ptx))
        bad += breaks(ptx, p.rsplit("/", 1)[-1])
    for b in bad:
        print(f"  {b}")
    print(f"pdl_ptx_check: {found} kernels, {len(bad)} without the wait first")
    return 1 if bad or found == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
