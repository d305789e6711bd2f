# A Python model of native/cuda/lora_narrow.cu's index math (its CTAs, warps, lanes, staged chunks, splits
# and the fixed-order sums of the splits, in float64), checked against numpy on awkward shapes. It runs without a GPU:
# `python3 scripts/lora_narrow_model.py` (a few minutes). Its constants and loops mirror the .cu file's:
# change them together. It checks the index math only, not the device code itself (test/cuda does that).
import numpy as np
kWarps, kThreads, kRT, kChunkK, kChunkN, kPer = 8, 256, 16, 256, 128, 2
SMS = 132

def splits(ctas, chunks):
    want = max(1, (2 * SMS + ctas - 1) // ctas)
    s = min(want, max(chunks, 1))
    cps = max(1, (chunks + s - 1) // s)
    return max(1, (chunks + cps - 1) // cps), cps

def narrow_rows(x, ldx, N, K, f, ldf, f_trans, R, alpha, out16=None, ld16=0, scale16=1.0):
    # x: flat array (N*ldx), f: flat
    out = np.full(N * R, np.nan)
    rtiles = (R + kRT - 1) // kRT; row_blocks = (N + 32 * kPer - 1) // (32 * kPer)
    S, cps = splits(row_blocks * rtiles, (K + kChunkK - 1) // kChunkK)
    kps = cps * kChunkK
    part = np.full(S * N * R, np.nan) if S > 1 else None
    written = np.zeros(len(x), dtype=int)
    for bx in range(row_blocks):
      for by in range(S):
        for bz in range(rtiles):
          row0 = bx * 32 * kPer; r0 = bz * kRT
          kbeg = by * kps; kend = min(K, kbeg + kps)
          acc = np.zeros((kWarps, 32, kPer, kRT))
          c0 = kbeg
          while c0 < kend:
            fs = np.zeros((kChunkK, kRT))
            for i in range(kChunkK * kRT):
              kk = i % kChunkK if f_trans else i // kRT
              j = i // kChunkK if f_trans else i % kRT
              k = c0 + kk; r = r0 + j
              fs[kk, j] = (f[r * ldf + k] if f_trans else f[k * ldf + r]) if (k < kend and r < R) else 0
            for warp in range(kWarps):
              k0 = c0 + warp * 32; k1 = min(kend, k0 + 32)
              for lane in range(32):
                for p in range(kPer):
                  n = min(row0 + p * 32 + lane, N - 1)
                  for k in range(k0, k1):
                    acc[warp, lane, p] += x[n * ldx + k] * fs[k - c0]
                    # the f32-source variant writes X's rounded copy here, from the r tile 0 CTAs, real rows only
                    if bz == 0 and row0 + p * 32 + lane < N: written[n * ldx + k] += 1
            c0 += kChunkK
          red = {}
          for warp in range(kWarps):
            for lane in range(32):
              for p in range(kPer):
                red[(warp, p * 32 + lane)] = acc[warp, lane, p]
          for o in range(32 * kPer * kRT):
            row, j = o // kRT, o % kRT
            n = row0 + row; r = r0 + j
            if n >= N or r >= R: continue
            s = sum(red[(w, row)][j] for w in range(kWarps))
            if part is not None: part[(by * N + n) * R + r] = s
            else:
              out[n * R + r] = alpha * s
              if out16 is not None: out16[n * ld16 + r] = scale16 * alpha * s
    if S > 1:
      total = N * R
      for i in range(total):
        s = sum(part[k * total + i] for k in range(S))
        out[i] = alpha * s
        if out16 is not None: out16[(i // R) * ld16 + i % R] = scale16 * alpha * s
    cover = written.reshape(N, ldx)
    assert (cover[:, :K] == 1).all() and (cover[:, K:] == 0).all(), "every X element written once (f32 source)"
    return out, S

def narrow_cols(g, N, R, x, ldx, C, alpha, beta, out, out_cr):
    rtiles = (R + kRT - 1) // kRT; col_blocks = (C + 32 * kPer - 1) // (32 * kPer)
    S, cps = splits(col_blocks * rtiles, (N + kChunkN - 1) // kChunkN)
    nps = cps * kChunkN
    part = np.full(S * R * C, np.nan) if S > 1 else None
    rpw = kChunkN // kWarps
    for bx in range(col_blocks):
      for by in range(S):
        for bz in range(rtiles):
          col0 = bx * 32 * kPer; r0 = bz * kRT
          nbeg = by * nps; nend = min(N, nbeg + nps)
          acc = np.zeros((kWarps, 32, kPer, kRT))
          c0 = nbeg
          while c0 < nend:
            gs = np.zeros((kChunkN, kRT))
            for i in range(kChunkN * kRT):
              nn, j = i // kRT, i % kRT
              n = c0 + nn; r = r0 + j
              gs[nn, j] = g[n * R + r] if (n < nend and r < R) else 0
            for warp in range(kWarps):
              n0 = c0 + warp * rpw; n1 = min(nend, n0 + rpw)
              for lane in range(32):
                for p in range(kPer):
                  cc = min(col0 + p * 32 + lane, C - 1)
                  for n in range(n0, n1):
                    acc[warp, lane, p] += x[n * ldx + cc] * gs[n - c0]
            c0 += kChunkN
          red = {}
          for warp in range(kWarps):
            for lane in range(32):
              for p in range(kPer):
                red[(warp, p * 32 + lane)] = acc[warp, lane, p]
          kCols = 32 * kPer
          for o in range(kCols * kRT):
            col = o // kRT if out_cr else o % kCols
            j = o % kRT if out_cr else o // kCols
            cn = col0 + col; r = r0 + j
            if cn >= C or r >= R: continue
            s = sum(red[(w, col)][j] for w in range(kWarps))
            if part is not None: part[(by * R + r) * C + cn] = s
            else:
              idx = cn * R + r if out_cr else r * C + cn
              out[idx] = alpha * s + (beta * out[idx] if beta != 0 else 0)
    if S > 1:
      total = R * C
      for i in range(total):
        r = i % R if out_cr else i // C
        cn = i // R if out_cr else i % C
        s = sum(part[(k * R + r) * C + cn] for k in range(S))
        out[i] = alpha * s + (beta * out[i] if beta != 0 else 0)
    return out, S

rng = np.random.default_rng(1)
def check_rows(N, K, R, f_trans):
    ldx = ((K + R + 7) // 8) * 8
    X = rng.standard_normal((N, K))
    x = np.zeros(N * ldx); x.reshape(N, ldx)[:, :K] = X
    F = rng.standard_normal((K, R))
    if f_trans: f = F.T.copy().ravel(); ldf = K
    else: f = F.ravel().copy(); ldf = R
    # out16 is written at column K of each row (as s·u into [x | s·u]): a view with that offset
    o16 = np.zeros(N * ldx)
    class View:
        def __init__(s, a, off): s.a, s.off = a, off
        def __setitem__(s, i, v): s.a[s.off + i] = v
    out, S = narrow_rows(x, ldx, N, K, f, ldf, f_trans, R, 1.0, out16=View(o16, K), ld16=ldx, scale16=2.0)
    ref = X @ F
    err = np.abs(out.reshape(N, R) - ref).max()
    err16 = np.abs(o16.reshape(N, ldx)[:, K:K + R] - 2 * ref).max()
    print(f"rows N={N} K={K} R={R} trans={f_trans} S={S}: err {err:.2e} err16 {err16:.2e} nan {np.isnan(out).any()}")
    assert err < 1e-9 and err16 < 1e-9 and not np.isnan(out).any()

def check_cols(N, C, R, out_cr, beta, ldx_extra=0):
    ldx = C + ldx_extra
    X = rng.standard_normal((N, C)); x = np.zeros(N * ldx); x.reshape(N, ldx)[:, :C] = X
    G = rng.standard_normal((N, R))
    init = rng.standard_normal(R * C)
    out = init.copy()
    out, S = narrow_cols(G.ravel(), N, R, x, ldx, C, 0.5, beta, out, out_cr)
    ref = 0.5 * (G.T @ X)
    if out_cr: ref = ref.T
    ref = ref.ravel() + beta * init
    err = np.abs(out - ref).max()
    print(f"cols N={N} C={C} R={R} cr={out_cr} beta={beta} S={S}: err {err:.2e}")
    assert err < 1e-9

check_rows(5, 7, 3, True)
check_rows(70, 300, 16, True)
check_rows(130, 1100, 5, False)
check_rows(1, 1, 1, False)
check_rows(3, 600, 37, True)
check_cols(5, 7, 3, False, 0.0)
check_cols(70, 130, 16, True, 1.0, 6)
check_cols(300, 65, 37, False, 1.0)
check_cols(700, 40, 16, True, 0.0, 8)
check_cols(1, 1, 1, True, 0.0)
print("ok")
