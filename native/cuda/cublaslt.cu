// cuBLASLt for the backend's products, loaded at run time (never linked), so one
// binary runs with or without it and the build needs no cuBLAS.
//
// Loading (once): $INSTILL_CUBLASLT (a path; "off" disables), then
// libcublasLt.so.13 / .12 through the loader path, then the CUDA toolkit
// (/usr/local/cuda/lib64) and the pip nvidia-cublas layouts
// (…/site-packages/nvidia/{cu13,cublas}/lib). INSTILL_CUBLASLT_VERBOSE=1 prints
// where it was found (or what was tried) to stderr. The entry points and enum
// values are declared here by hand from cublasLt.h (CUDA 12/13), as checked
// against the header: TRANSA = 3, TRANSB = 4, PREF_MAX_WORKSPACE_BYTES = 1,
// CUBLAS_COMPUTE_32F = 68, CUBLAS_OP_N/T = 0/1; cudaDataType comes from the
// toolkit's library_types.h; cublasLtMatmulHeuristicResult_t is 96 bytes.
//
// What it takes: every product gemm.h describes. Operands that are bf16, single-
// segment and unscaled are passed as they are; the others (f32 activations,
// f16, the two-segment LoRA products, scaled operands) are first packed into
// one bf16 buffer per side, in their stored orientation, with the scale applied
// (the same rounding the WMMA kernel does) and the two K segments stacked along
// K, so LoRA's low-rank term still lands in the same product as the frozen one. Row-major
// C (M, N) is computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ. bf16 × bf16 →
// f32 with f32 compute (CUBLAS_COMPUTE_32F). Bias is added by a separate pass.
// Assumption to confirm on a GPU: with beta = 0 cuBLASLt does not read C (test
// outputs are NaN-poisoned, so the GPU tests would show it).
// Any cuBLASLt failure (no algorithm, bad status) returns false and gemm.cu's
// WMMA kernel runs the product instead.
#include <dlfcn.h>
#include <glob.h>
#include <library_types.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda/gemm.h"

namespace instill {
namespace cuda {

namespace {

using Status = int;  // cublasStatus_t; 0 = success
using Handle = void*;
using Desc = void*;
using Layout = void*;
using Pref = void*;
struct Algo {
  uint64_t data[8];
};
struct Heuristic {
  Algo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};
static_assert(sizeof(Heuristic) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes");

constexpr int kComputeF32 = 68;  // CUBLAS_COMPUTE_32F
constexpr int kDescTransA = 3, kDescTransB = 4, kPrefMaxWorkspace = 1;
constexpr int kOpN = 0, kOpT = 1;
constexpr size_t kWorkspaceBytes = 32u << 20;

struct Api {
  Status (*create)(Handle*);
  Status (*desc_create)(Desc*, int, cudaDataType_t);
  Status (*desc_set)(Desc, int, const void*, size_t);
  Status (*desc_destroy)(Desc);
  Status (*layout_create)(Layout*, cudaDataType_t, uint64_t, uint64_t, int64_t);
  Status (*layout_destroy)(Layout);
  Status (*pref_create)(Pref*);
  Status (*pref_set)(Pref, int, const void*, size_t);
  Status (*pref_destroy)(Pref);
  Status (*heuristic)(Handle, Desc, Layout, Layout, Layout, Layout, Pref, int, Heuristic*, int*);
  Status (*matmul)(Handle, Desc, const void*, const void*, Layout, const void*, Layout, const void*, const void*, Layout,
                   void*, Layout, const Algo*, void*, size_t, cudaStream_t);
  Handle handle = nullptr;
  void* workspace = nullptr;
  bool ok = false;
};

void* open_lib(std::string& tried) {
  const char* env = std::getenv("INSTILL_CUBLASLT");
  if (env && std::strcmp(env, "off") == 0) {
    tried = "disabled by INSTILL_CUBLASLT=off";
    return nullptr;
  }
  auto attempt = [&](const std::string& name) -> void* {
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    tried += (tried.empty() ? "" : "; ") + name + (h ? " (loaded)" : std::string(": ") + dlerror());
    return h;
  };
  if (env && *env) {
    if (void* h = attempt(env)) return h;
  }
  for (const char* n : {"libcublasLt.so.13", "libcublasLt.so.12"})
    if (void* h = attempt(n)) return h;
  for (const char* pattern : {"/usr/local/cuda/lib64/libcublasLt.so.1[23]",
                              "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib/libcublasLt.so.1[23]",
                              "/usr/local/lib/python3*/dist-packages/nvidia/*/lib/libcublasLt.so.1[23]",
                              "/usr/lib/python3/dist-packages/nvidia/*/lib/libcublasLt.so.1[23]"}) {
    glob_t g{};
    if (glob(pattern, 0, nullptr, &g) == 0) {
      for (size_t i = g.gl_pathc; i-- > 0;) {  // newest name last in glob order
        if (void* h = attempt(g.gl_pathv[i])) {
          globfree(&g);
          return h;
        }
      }
    }
    globfree(&g);
  }
  return nullptr;
}

Api& api() {
  static Api a{};
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    void* lib = open_lib(tried);
    const bool verbose = std::getenv("INSTILL_CUBLASLT_VERBOSE") != nullptr;
    bool ok = lib != nullptr;
    auto sym = [&](auto& fn, const char* name) {
      if (!ok) return;
      void* p = dlsym(lib, name);
      if (!p) {
        ok = false;
        tried += std::string("; missing ") + name;
        return;
      }
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    sym(a.create, "cublasLtCreate");
    sym(a.desc_create, "cublasLtMatmulDescCreate");
    sym(a.desc_set, "cublasLtMatmulDescSetAttribute");
    sym(a.desc_destroy, "cublasLtMatmulDescDestroy");
    sym(a.layout_create, "cublasLtMatrixLayoutCreate");
    sym(a.layout_destroy, "cublasLtMatrixLayoutDestroy");
    sym(a.pref_create, "cublasLtMatmulPreferenceCreate");
    sym(a.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    sym(a.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    sym(a.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(a.matmul, "cublasLtMatmul");
    if (ok && a.create(&a.handle) != 0) {
      ok = false;
      tried += "; cublasLtCreate failed";
    }
    if (ok && cudaMalloc(&a.workspace, kWorkspaceBytes) != cudaSuccess) {  // held for the process's life
      cudaGetLastError();
      ok = false;
      tried += "; no memory for the workspace";
    }
    a.ok = ok;
    if (verbose) std::fprintf(stderr, "instill: cuBLASLt %s (%s)\n", ok ? "in use" : "not used", tried.c_str());
  });
  return a;
}

// Packs one side's segments into a bf16 matrix in the SAME orientation as the
// operands are stored (so reads and writes are both coalesced; cuBLASLt's
// transposition flags absorb the orientation), the two K segments stacked
// along K, the scale applied. With r the side's row index (m for A, n for B):
//   k_contig:  dst[r·ld + k]   (rows × K, ld = K rounded up to 8: 16-byte rows)
//   otherwise: dst[k·ld + r]   (K × rows, ld = rows rounded up to 8)
// Padding is never read (the product's K, M, N are exact).
struct PackArgs {
  GemmOperand s0, s1;
  int64_t K0, K1, rows, ld;
  bool k_contig;
};

__global__ void pack_bf16_kernel(const PackArgs p, __nv_bfloat16* dst) {
  const int64_t K = p.K0 + p.K1, total = p.rows * K;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // the fastest-moving index is the contiguous one in both source and destination
    const int64_t r = p.k_contig ? idx / K : idx % p.rows;
    const int64_t kk = p.k_contig ? idx % K : idx / p.rows;
    const GemmOperand& o = kk < p.K0 ? p.s0 : p.s1;
    const int64_t k = kk < p.K0 ? kk : kk - p.K0;
    const int64_t src = p.k_contig ? r * o.ld + k : k * o.ld + r;
    const int64_t out = p.k_contig ? r * p.ld + kk : kk * p.ld + r;
    dst[out] = __float2bfloat16(load_f32(o.p, o.e, src) * o.scale);
  }
}

__global__ void add_bias_kernel(float* c, int64_t ldc, const float* bias, int64_t M, int64_t N) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < M * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    c[(idx / N) * ldc + idx % N] += bias[idx % N];
}

struct Side {
  const void* p;
  int64_t ld;
  bool k_contig;  // each row of the stored matrix runs along K
  Tensor packed;  // owns the packed copy, if any
};

// A: k_contig = !trans (p[m·ld + k]);  B: k_contig = trans (p[n·ld + k]).
bool k_contig_of(const GemmOperand& o, bool b_side) { return b_side ? o.trans : !o.trans; }

// False when the two segments of a side are stored in different orientations
// (never the case in lora_linear; the WMMA kernel takes such products).
bool prepare(const GemmArgs& g, bool b_side, Side& side) {
  const GemmOperand* s = b_side ? g.b : g.a;
  const int64_t rows = b_side ? g.N : g.M;
  const bool kc = k_contig_of(s[0], b_side);
  if (g.K[1] == 0 && s[0].e == Elem::BF16 && s[0].scale == 1.f) {
    side = {s[0].p, s[0].ld, kc, Tensor()};
    return true;
  }
  if (g.K[1] > 0 && k_contig_of(s[1], b_side) != kc) return false;
  const int64_t K = g.K[0] + g.K[1];
  const int64_t ld = ((kc ? K : rows) + 7) / 8 * 8;  // 16-byte rows
  side.packed = Tensor::empty({kc ? rows : K, ld}, DType::BF16, Device::CUDA);
  side.ld = ld;
  side.k_contig = kc;
  PackArgs pa{s[0], g.K[1] > 0 ? s[1] : s[0], g.K[0], g.K[1], rows, ld, kc};
  pack_bf16_kernel<<<grid_1d(rows * K, 256), 256, 0, stream()>>>(pa, side.packed.data_as<__nv_bfloat16>());
  check_launch("pack_bf16_kernel");
  side.p = side.packed.data();
  return true;
}

}  // namespace

bool gemm_cublaslt(const GemmArgs& g) {
  const int64_t K = g.K[0] + g.K[1];
  if (K == 0) return false;
  Api& a = api();
  if (!a.ok) return false;
  // A scaled or f32/f16 operand is packed (prepare() passes only unscaled single-segment bf16 as it is).
  Side A{}, B{};
  if (!prepare(g, false, A) || !prepare(g, true, B)) return false;

  // Column-major view: D (N × M, ld = ldc) = opA(cuA) · opB(cuB) with cuA = our B side, cuB = our A side.
  //   cuA: B side stored k-contiguous → (N rows of K) = col-major (K × N), needs T; else col-major (N × K), N.
  //   cuB: A side stored k-contiguous → (M rows of K) = col-major (K × M), N;   else col-major (M × K), T.
  const int opA = B.k_contig ? kOpT : kOpN, opB = A.k_contig ? kOpN : kOpT;
  const uint64_t a_rows = B.k_contig ? K : g.N, a_cols = B.k_contig ? g.N : K;
  const uint64_t b_rows = A.k_contig ? K : g.M, b_cols = A.k_contig ? g.M : K;

  Desc desc = nullptr;
  Layout la = nullptr, lb = nullptr, lc = nullptr;
  Pref pref = nullptr;
  bool ok = a.desc_create(&desc, kComputeF32, CUDA_R_32F) == 0;
  ok = ok && a.desc_set(desc, kDescTransA, &opA, sizeof(opA)) == 0;
  ok = ok && a.desc_set(desc, kDescTransB, &opB, sizeof(opB)) == 0;
  ok = ok && a.layout_create(&la, CUDA_R_16BF, a_rows, a_cols, B.ld) == 0;
  ok = ok && a.layout_create(&lb, CUDA_R_16BF, b_rows, b_cols, A.ld) == 0;
  ok = ok && a.layout_create(&lc, CUDA_R_32F, static_cast<uint64_t>(g.N), static_cast<uint64_t>(g.M), g.ldc) == 0;
  ok = ok && a.pref_create(&pref) == 0;
  const uint64_t ws = kWorkspaceBytes;
  ok = ok && a.pref_set(pref, kPrefMaxWorkspace, &ws, sizeof(ws)) == 0;
  Heuristic h{};
  int found = 0;
  ok = ok && a.heuristic(a.handle, desc, la, lb, lc, lc, pref, 1, &h, &found) == 0 && found > 0;
  if (ok) {
    const float alpha = g.alpha, beta = g.beta;
    ok = a.matmul(a.handle, desc, &alpha, B.p, la, A.p, lb, &beta, g.c, lc, g.c, lc, &h.algo, a.workspace,
                  kWorkspaceBytes, stream()) == 0;
  }
  if (pref) a.pref_destroy(pref);
  if (lc) a.layout_destroy(lc);
  if (lb) a.layout_destroy(lb);
  if (la) a.layout_destroy(la);
  if (desc) a.desc_destroy(desc);
  if (!ok) return false;  // WMMA runs it (the packed copies are simply dropped)
  check_launch("cublasLtMatmul");
  if (g.bias) {
    add_bias_kernel<<<grid_1d(g.M * g.N, 256), 256, 0, stream()>>>(g.c, g.ldc, g.bias, g.M, g.N);
    check_launch("add_bias_kernel");
  }
  return true;
}

}  // namespace cuda
}  // namespace instill
