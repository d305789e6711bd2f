#!/usr/bin/env python3
"""The SASS of a CUDA file's kernels, instruction counts of their inner loops: how lean a kernel's hot loop is,
read without a GPU (scripts/sass.sh makes the listing).

  python3 scripts/sass_loops.py LISTING.sass [SUBSTRING ...]

For each kernel whose mangled name contains every SUBSTRING: its instruction count, then each loop that holds
tensor-core instructions (HMMA), found as a backward branch (BRA to an earlier label) and counted from that
label to the branch, with its most frequent opcodes; a kernel without tensor-core loops (CUDA-core code) shows
its three largest loops instead. The counts are static: a loop body with branches inside counts both sides (the
number of BRA in it says so; scripts/sass.sh's listing shows the blocks)."""
import collections
import re
import sys


def kernels(text):
    for sec in text.split('//--------------------- ')[1:]:
        head = sec.split('\n', 1)[0].strip(' -')
        if head.startswith('.text.'):
            yield head[len('.text.'):], sec


def parse(sec):
    """The kernel's instructions as (opcode, operands), and its labels' indices. An instruction slot the
    disassembler left out (an older nvdisasm skips the sm_90 opcodes it cannot decode, VIADD among them, without a
    word: the addresses jump) counts as opcode '?', so that counts stay whole."""
    ins, labels = [], {}
    prev = None
    for line in sec.split('\n'):
        lm = re.match(r'^(\.L_x_\d+):', line)
        if lm:
            labels[lm.group(1)] = len(ins)
            continue
        m = re.match(r'\s*/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)(.*)', line)
        if m:
            addr = int(m.group(1), 16)
            if prev is not None and addr > prev + 16:
                ins.extend(('?', '') for _ in range((addr - prev) // 16 - 1))
            prev = addr
            ins.append((m.group(3).split('.')[0], m.group(4)))
    return ins, labels


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    text = open(sys.argv[1]).read()
    want = sys.argv[2:]
    for name, sec in kernels(text):
        if not all(w in name for w in want):
            continue
        ins, labels = parse(sec)
        missing = sum(1 for o, _ in ins if o == '?')
        print(f'{name}: {len(ins)} instructions' + (f' ({missing} not decoded by this nvdisasm, counted as ?)' if missing else ''))
        loops = []
        for i, (op, rest) in enumerate(ins):
            t = re.search(r'(\.L_x_\d+)', rest) if op == 'BRA' else None
            if t and labels.get(t.group(1), i + 1) <= i:
                loops.append(collections.Counter(o for o, _ in ins[labels[t.group(1)]:i + 1]))
        tensor = [c for c in loops if c['HMMA']]
        for c in tensor or sorted(loops, key=lambda c: -sum(c.values()))[:3]:
            top = ', '.join(f'{k} {v}' for k, v in c.most_common(14))
            print(f'  loop of {sum(c.values())} instructions, HMMA {c["HMMA"]}, MUFU {c["MUFU"]}, BRA {c["BRA"]}: {top}')


if __name__ == '__main__':
    main()
