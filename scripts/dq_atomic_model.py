# A numpy model of INSTILL_CUDA_NEXT `dq_atomic`'s fragment and shared-memory index math (native/cuda/
# attention_lean.cu: dkv_tile's a_from_c + store_ds_smem, dq_from_ds's ldmatrix.trans of the dSᵀ tile and its
# products with the key tile, and the rows and columns each lane adds into dQ). Each warp's dSᵀ C fragments (16 keys ×
# BQ queries, mma.sync's m16n8 layout) are stored as the kernel stores them, read back as the kernel reads them
# (ldmatrix .x4 .trans: lanes 8i..8i+7 give matrix i's row addresses, lane t gets its row pair 2(t%4), +1 at column
# t/4), multiplied with mma.sync m16n8k16's A / B / C layouts, and the lanes' additions summed into dQ, which must be
# dSᵀᵀ·K for the tile (D 64 with BQ 64, D 128 with BQ 32). Runs without a GPU: `python3 scripts/dq_atomic_model.py`.
# Its loops mirror the .cu file's: change them together. Index math only; test/cuda/next/dq_atomic.test.ts runs it.
import numpy as np

KROWS = 64  # keys a CTA (kRows)


def lds_b_nmajor(lane, S):  # attention_flash.cuh: element offset of lane's row address
    return ((lane & 7) + ((lane >> 4) << 3)) * S + ((lane >> 3) & 1) * 8


def lds_b_kmajor(lane, S):
    return ((lane & 7) + (((lane >> 3) & 1) << 3)) * S + (lane >> 4) * 8


def ldsm_x4(mem, base, offs, trans):
    """ldmatrix .x4 (.trans): r[lane][i] = the two 16-bit elements lane gets from matrix i (as a pair)."""
    r = [[None] * 4 for _ in range(32)]
    for i in range(4):
        rows = [base + offs(8 * i + k) for k in range(8)]  # lanes 8i..8i+7: row addresses of matrix i
        for t in range(32):
            if trans:  # elements (row 2(t%4), column t/4) and (row 2(t%4)+1, column t/4)
                r[t][i] = (mem[rows[2 * (t % 4)] + t // 4], mem[rows[2 * (t % 4) + 1] + t // 4])
            else:
                r[t][i] = (mem[rows[t // 4] + 2 * (t % 4)], mem[rows[t // 4] + 2 * (t % 4) + 1])
    return r


def mma(acc, a, b0, b1):
    """acc[lane] (4 floats) += A (16×16, lanes' a[4] pairs) · B (16×8, lanes' b0, b1 pairs): m16n8k16 row.col."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for t in range(32):
        g, q = t // 4, t % 4
        for reg, (r, c) in enumerate([(g, 2 * q), (g + 8, 2 * q), (g, 2 * q + 8), (g + 8, 2 * q + 8)]):
            A[r, c], A[r, c + 1] = a[t][reg]
        B[2 * q, g], B[2 * q + 1, g] = b0[t]
        B[2 * q + 8, g], B[2 * q + 9, g] = b1[t]
    C = A @ B
    for t in range(32):
        g, q = t // 4, t % 4
        acc[t][0] += C[g, 2 * q]; acc[t][1] += C[g, 2 * q + 1]
        acc[t][2] += C[g + 8, 2 * q]; acc[t][3] += C[g + 8, 2 * q + 1]


def run(D, BQ, rng):
    S = D + 8                  # key tile row stride (bf16 elements)
    W = BQ // 2 + 4            # ds_smem_words<BQ>()
    SD = 2 * W                 # dSᵀ tile row stride in bf16 elements
    dsT = rng.standard_normal((KROWS, BQ))  # dSᵀ: keys × queries (as the kernel holds it, before bf16)
    K = rng.standard_normal((KROWS, D))
    # --- dkv_tile: each warp's C fragments of dSᵀ (its 16 keys × BQ queries), n-tiles of 8 queries
    dss = [None] * (KROWS * SD)  # bf16 elements; stored as pairs into 32-bit words
    for warp in range(4):
        for kk in range(BQ // 16):
            for t in range(32):
                gid, tig = t >> 2, t & 3
                key_a, key_b = warp * 16 + gid, warp * 16 + gid + 8
                c = lambda n, key: (dsT[key, 8 * n + 2 * tig], dsT[key, 8 * n + 2 * tig + 1])
                # a_from_c(dp[2kk], dp[2kk+1]): r0 = lo[0..1] (key a), r1 = lo[2..3] (key b), r2, r3 the hi n-tile
                r = [c(2 * kk, key_a), c(2 * kk, key_b), c(2 * kk + 1, key_a), c(2 * kk + 1, key_b)]
                # store_ds_smem: ra = (warp·16 + gid)·W + 8kk + tig; ra[0] = r0, ra[8W] = r1, ra[4] = r2, ra[8W + 4] = r3
                ra = (warp * 16 + gid) * W + 8 * kk + tig
                for word, val in [(ra, r[0]), (ra + 8 * W, r[1]), (ra + 4, r[2]), (ra + 8 * W + 4, r[3])]:
                    dss[2 * word], dss[2 * word + 1] = val
    assert all(v is not None for i, v in enumerate(dss) if i % SD < BQ), 'every (key, query) of the tile written'
    # --- dq_from_ds
    kMT, kCols = BQ // 16, 64
    assert kMT * (D // kCols) == 4
    Kflat = [None] * (KROWS * S)
    for j in range(KROWS):
        for d in range(D):
            Kflat[j * S + d] = K[j, d]
    dq = np.zeros((BQ, D))
    hits = np.zeros((BQ, D), dtype=int)
    for warp in range(4):
        mt, c0 = warp % kMT, (warp // kMT) * kCols
        acc = [[[0.0] * 4 for _ in range(32)] for _ in range(kCols // 8)]
        for kk in range(KROWS // 16):
            a = ldsm_x4(dss, kk * 16 * SD + mt * 16, lambda l: lds_b_nmajor(l, SD), True)
            tile = kk * 16 * S + c0  # mma_kslice_kmajor<kCols, S>(acc, a, Ks + kk·16·S + c0)
            for dn in range(kCols // 16):
                b = ldsm_x4(Kflat, tile + dn * 16, lambda l: lds_b_kmajor(l, S), True)
                mma([acc[2 * dn][t] for t in range(32)], a, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
                mma([acc[2 * dn + 1][t] for t in range(32)], a, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
        for t in range(32):  # the lanes' red_add2: rows ia = mt·16 + gid and + 8, columns c0 + 8n + 2tig, + 1
            gid, tig = t >> 2, t & 3
            ia, ib = mt * 16 + gid, mt * 16 + gid + 8
            for n in range(kCols // 8):
                d = c0 + 8 * n + 2 * tig
                for row, e in [(ia, 0), (ib, 2)]:
                    dq[row, d] += acc[n][t][e]; dq[row, d + 1] += acc[n][t][e + 1]
                    hits[row, d] += 1; hits[row, d + 1] += 1
    assert (hits == 1).all(), 'each dQ element added by exactly one lane'
    want = dsT.T @ K
    err = np.abs(dq - want).max() / np.abs(want).max()
    assert err < 1e-12, err
    return err


if __name__ == '__main__':
    rng = np.random.default_rng(7)
    for D, BQ in [(64, 64), (128, 32)]:
        print(f'D {D}, BQ {BQ}: dQ = dS·K for the tile, relative error {run(D, BQ, rng):.1e}')
