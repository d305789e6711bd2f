#!/usr/bin/env python3
# Checks native/cuda/cublaslt.cu's layout mapping without a GPU: emulates cuBLASLt's column-major
# product with numpy over the same pack / transpose / leading-dimension choices, for every
# transposition, direct and packed operands, one and two K segments. Run: python3 scripts/cublaslt-layout-emulation.py
# Emulates gemm_cublaslt's layout mapping with column-major semantics (numpy), for every trans combo,
# direct and packed sides, one and two segments; compares to the row-major definition in gemm.h.
import numpy as np, itertools
rng = np.random.default_rng(0)

def colmajor(buf, rows, cols, ld):  # X(i,j) = buf[j*ld + i]
    return np.array([[buf[j*ld + i] for j in range(cols)] for i in range(rows)])

def elemA(o, m, k): return o['p'][k*o['ld'] + m] if o['trans'] else o['p'][m*o['ld'] + k]
def elemB(o, k, n): return o['p'][n*o['ld'] + k] if o['trans'] else o['p'][k*o['ld'] + n]

def make_op(rows_logical, cols_logical, trans, scale):  # logical (rows, cols); stored transposed if trans
    sr, sc = (cols_logical, rows_logical) if trans else (rows_logical, cols_logical)
    ld = sc + 3
    return dict(p=rng.standard_normal(sr*ld), ld=ld, trans=trans, scale=scale)

def pack(segs, K0, K1, rows, kc):  # mirrors pack_bf16_kernel
    K = K0 + K1
    ld = ((K if kc else rows) + 7)//8*8
    dst = np.zeros((rows if kc else K) * ld)
    for idx in range(rows*K):
        r = idx // K if kc else idx % rows
        kk = idx % K if kc else idx // rows
        o = segs[0] if kk < K0 else segs[1]
        k = kk if kk < K0 else kk - K0
        src = r*o['ld'] + k if kc else k*o['ld'] + r
        out = r*ld + kk if kc else kk*ld + r
        dst[out] = o['p'][src] * o['scale']
    return dict(p=dst, ld=ld, kc=kc)

M, N, K0, K1 = 5, 7, 4, 3
bad = 0
for ta, tb, two, direct in itertools.product([False, True], repeat=4):
    if two and direct: continue
    K1_ = K1 if two else 0
    a = [make_op(M, K0, ta, 1.0 if direct else 0.5), make_op(M, K1, ta, 2.0)]
    b = [make_op(K0, N, tb, 1.0), make_op(K1, N, tb, 1.0)]
    ref = np.zeros((M, N))
    for m in range(M):
        for n in range(N):
            s = sum(elemA(a[0], m, k)*a[0]['scale']*elemB(b[0], k, n)*b[0]['scale'] for k in range(K0))
            s += sum(elemA(a[1], m, k)*a[1]['scale']*elemB(b[1], k, n)*b[1]['scale'] for k in range(K1_))
            ref[m, n] = s
    K = K0 + K1_
    if direct:
        A = dict(p=a[0]['p'], ld=a[0]['ld'], kc=not ta); B = dict(p=b[0]['p'], ld=b[0]['ld'], kc=tb)
    else:
        A = pack(a, K0, K1_, M, not ta); B = pack(b, K0, K1_, N, tb)
    opA = 'T' if B['kc'] else 'N'; opB = 'N' if A['kc'] else 'T'
    a_rows, a_cols = (K, N) if B['kc'] else (N, K)
    b_rows, b_cols = (K, M) if A['kc'] else (M, K)
    XA = colmajor(B['p'], a_rows, a_cols, B['ld']); XA = XA.T if opA == 'T' else XA
    XB = colmajor(A['p'], b_rows, b_cols, A['ld']); XB = XB.T if opB == 'T' else XB
    D = XA @ XB  # (N, M) col-major; C[m][n] = D[n][m]
    ldc = N + 2
    c = np.zeros(M*ldc)
    for i in range(N):
        for j in range(M): c[j*ldc + i] = D[i, j]
    got = np.array([[c[m*ldc + n] for n in range(N)] for m in range(M)])
    err = np.abs(got - ref).max()
    print(f"transA={ta} transB={tb} two={two} direct={direct}: max err {err:.2e}")
    bad += err > 1e-9
print("FAIL" if bad else "ALL OK")
