# A Python model of INSTILL_CUDA_NEXT `stored_ds`'s index math (native/cuda/attention_flash.cu: store_ds_tile in
# flash_dkv_kernel, flash_dq_ds_kernel; native/cuda/attention.cu: ds_blocks): which warp of which dK/dV CTA writes
# which (key, query) of which scratch slot, against the pairs the dQ kernel reads unmasked, for random packed
# segments (empty ones too), sliding windows and N, with the dK/dV kernel's query tiles of 64 (D = 64) and 32.
# It checks that every slot is within the host's bound, that every pair a query sees is written before it is
# read, and that the reads cover every visible pair once. It runs without a GPU: `python3 scripts/stored_ds_model.py`.
# Its loops mirror the .cu files': change them together. Index math only; test/cuda/next/stored_ds.test.ts runs the kernels.
import random
def run(N, cu, window, BQ):
    seg_begin = [0]*N; seg_end = [0]*N
    for s in range(len(cu)-1):
        for i in range(cu[s], cu[s+1]): seg_begin[i] = cu[s]; seg_end[i] = cu[s+1]
    key_lo = lambda i: max(seg_begin[i], i - window + 1) if window > 0 else seg_begin[i]
    query_hi = lambda j: min(seg_end[j] - 1, j + window - 1) if window > 0 else seg_end[j] - 1
    vis = lambda i, j: key_lo(i) <= j <= i
    # host bound (attention.cu ds_blocks)
    W = 0; s = 0
    for i0 in range(0, N, 64):
        while s + 2 < len(cu) and cu[s+1] <= i0: s += 1
        lo = cu[s]
        if window > 0: lo = max(lo, i0 - window + 1)
        W = max(W, min(i0+63, N-1)//64 - lo//64 + 1)
    written = set()
    for kbi in range((N+63)//64):
        j0 = kbi*64; last_j = min(j0+63, N-1); qhi = query_hi(last_j)
        for warp in range(4):
            wj0 = j0 + warp*16
            live = wj0 < N
            if not live: continue
            wlast = min(wj0+15, N-1); whi = query_hi(wlast)
            ts = j0
            while ts <= qhi:
                if not (ts > whi or ts + BQ - 1 < wj0):
                    qt = ts // 64
                    slot = j0//64 - key_lo(qt*64)//64
                    assert 0 <= slot < W, ('slot', slot, W)
                    for g in range(8):
                        for ja in (wj0+g, wj0+g+8):
                            for c in range(BQ):
                                written.add((qt, slot, ja - j0, ts % 64 + c))
                ts += BQ
    # reader (flash_dq_ds_kernel)
    reads = 0
    for qt in range((N+63)//64):
        i0 = qt*64; last_i = min(i0+63, N-1)
        kb_first = key_lo(i0)//64; kb_last = last_i//64
        assert kb_last - kb_first < W
        for kb in range(kb_first, kb_last+1):
            ts = kb*64
            for warp in range(4):
                wi0 = i0 + warp*16
                if wi0 >= N: continue
                wlast = min(wi0+15, N-1); wlo = key_lo(wi0)
                if ts > wlast or ts + 63 < wlo: continue
                for i in range(wi0, min(wi0+16, N)):
                    for j in range(ts, min(ts+64, N)):
                        if vis(i, j):
                            reads += 1
                            assert (qt, kb - kb_first, j - ts, i - i0) in written, ('unwritten', qt, kb, i, j)
    # every visible pair is read by exactly the tiles above
    total = sum(1 for i in range(N) for j in range(N) if vis(i, j))
    assert reads == total, (reads, total)
    return W
random.seed(1)
for trial in range(300):
    N = random.choice([1, 5, 63, 64, 65, 130, 333, 700])
    cuts = sorted(random.sample(range(1, N), min(N-1, random.randint(0, 5)))) if N > 1 else []
    cu = [0] + cuts + [N]
    if random.random() < 0.3 and N > 3:  # an empty segment
        k = random.randrange(1, len(cu)); cu.insert(k, cu[k-1])
    window = random.choice([0, 0, 1, 17, 40, 64, 100])
    for BQ in (64, 32):
        run(N, cu, window, BQ)
print('stored_ds index model: 300 random layouts x BQ 64/32 OK')
