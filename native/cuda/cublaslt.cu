// cuBLASLt for the backend's products, loaded at run time (never linked), so one
// binary runs with or without it and the build needs no cuBLAS.
//
// Loading (once): $INSTILL_CUBLASLT (a path; "off" disables), then
// libcublasLt.so.13 / .12 through the loader path, then the CUDA toolkit
// (/usr/local/cuda/lib64) and the pip nvidia-cublas layouts
// (…/site-packages/nvidia/{cu13,cublas}/lib). INSTILL_CUBLASLT_VERBOSE=1 prints
// where it was found (or what was tried) to stderr. The entry points and enum
// values are declared here by hand from cublasLt.h (CUDA 12/13; the epilogue,
// bias-type and alignment values as listed in public copies of that header):
// TRANSA = 3, TRANSB = 4, EPILOGUE = 7, BIAS_POINTER = 8,
// EPILOGUE_BIAS = 4, BIAS_DATA_TYPE = 26, PREF_MAX_WORKSPACE_BYTES = 1, PREF_MIN_ALIGNMENT_{A,B,C,D}
// _BYTES = 5..8 (uint32), CUBLAS_COMPUTE_32F = 68, CUBLAS_OP_N/T = 0/1;
// cudaDataType comes from the toolkit's library_types.h;
// cublasLtMatmulHeuristicResult_t is 96 bytes.
//
// What it takes: every product gemm.h describes. Operands that are bf16, single-
// segment and unscaled are passed as they are; the others (f32 activations,
// f16, the two-segment LoRA products, scaled operands) are first packed into
// one bf16 buffer per side by pack_bf16 (bf16_pack.cu), in their stored
// orientation, with the scale applied (the same rounding the WMMA kernel does)
// and the two K segments stacked along K, so LoRA's low-rank term still lands in
// the same product as the frozen one. lora_linear and linear_cross_entropy
// convert their activations once per call themselves, so their large products
// arrive here already bf16 and are not packed again. Row-major C (M, N) is
// computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ. bf16 × bf16 → f32 with f32
// compute (CUBLAS_COMPUTE_32F). A product whose operands are ALL f32 (gemm.h's
// all_f32: an f32 model) is instead f32 × f32 → f32 on the TF32 tensor cores
// (CUBLAS_COMPUTE_32F_FAST_TF32), its packs f32: precision follows the stored
// dtypes, as on the CPU. A bf16 C (gemm.h's c16; beta 0, no bias, bf16 operands)
// is a bf16 D layout: the f32 accumulators rounded once. Bias goes through the BIAS epilogue (a separate
// pass when no algorithm offers it). With beta = 0 cuBLASLt does not read C
// (the GPU tests NaN-poison outputs; they passed on an H200).
// Descriptors, layouts and the heuristic's algorithm are cached per product key
// (shape, transpositions, leading dimensions, alpha != 1, beta != 0, bias,
// pointer alignment), so a repeated shape costs one cublasLtMatmul call.
// Tuning (opt-in): the heuristic's first algorithm is often
// not the fastest for the narrow products of LoRA (N or M = r = 16, K up to
// 8192: split-K or not). With INSTILL_CUBLASLT_TUNE=N (1..32; "on" = 8), a key's
// first call times each of the heuristic's first N algorithms on the call's own
// operands, and split-K variants of its first two (add_split_k), writing into
// scratch (never C), and keeps the fastest (what PyTorch's TunableOp does for its
// GEMMs). That first call waits for the GPU once; later calls of the key do not.
// Off by default, because which algorithm wins differs between processes (timing
// noise), and with it the order of the f32 sums: a resumed training run then
// drifts from the uninterrupted one (7% in one LoRA factor after 28 steps of the
// stories260K CLI run, cuda run 13), where untuned runs are bit-identical across
// processes (test/cuda/train_cli.test.ts). Tuned, a 1B step was 1-2.5% faster
// (runs 11-13). INSTILL_CUBLASLT_VERBOSE=1 prints each tuned key's times.
// Any cuBLASLt failure (no algorithm, bad status) returns false and gemm.cu's
// WMMA kernel runs the product instead.
#include <dlfcn.h>
#include <glob.h>
#include <library_types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

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

constexpr int kComputeF32 = 68;      // CUBLAS_COMPUTE_32F: bf16 inputs, f32 accumulate
constexpr int kComputeTf32 = 77;     // CUBLAS_COMPUTE_32F_FAST_TF32: f32 inputs on the TF32 tensor cores
constexpr int kDescTransA = 3, kDescTransB = 4, kDescEpilogue = 7, kDescBiasPointer = 8, kDescBiasDataType = 26;
constexpr uint32_t kEpilogueBias = 4;  // CUBLASLT_EPILOGUE_BIAS
constexpr int kPrefMaxWorkspace = 1, kPrefMinAlignA = 5, kPrefMinAlignB = 6, kPrefMinAlignC = 7, kPrefMinAlignD = 8;
constexpr int kOpN = 0, kOpT = 1;
constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr int kTuneOn = 8;  // heuristic results timed on a key's first call with INSTILL_CUBLASLT_TUNE=on
constexpr int kTuneMax = 32;
constexpr int kTuneReps = 3;        // timed runs per candidate, after one untimed
// Split-K variants for tuning (cublasLtMatmulAlgoConfigAttributes_t, ...CapAttributes_t, cublasLtReductionScheme_t):
constexpr int kConfigSplitK = 2, kConfigReduction = 3;  // CUBLASLT_ALGO_CONFIG_SPLITK_NUM, _REDUCTION_SCHEME (4 bytes)
constexpr int kCapSplitK = 0, kCapReductionMask = 1;    // CUBLASLT_ALGO_CAP_SPLITK_SUPPORT (int32), _REDUCTION_SCHEME_MASK (uint32)
constexpr int kCapMinAlignA = 16;                       // CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_{A,B,C,D}_BYTES = 16..19 (uint32)
constexpr uint32_t kReductionComputeType = 2;           // CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE: f32 partials in the workspace
constexpr uint32_t kSplits[] = {2, 4, 8, 16};
constexpr int kSplitBases = 2;           // the heuristic's first this many algorithms get split-K variants
constexpr int64_t kMinSplitK = 256;      // no variant leaves a split with less K than this

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
  // Optional (tuning's split-K variants; null where the library lacks them):
  Status (*cap_get)(const Algo*, int, void*, size_t, size_t*) = nullptr;
  Status (*config_get)(const Algo*, int, void*, size_t, size_t*) = nullptr;
  Status (*config_set)(Algo*, int, const void*, size_t) = nullptr;
  Status (*check)(Handle, Desc, Layout, Layout, Layout, Layout, const Algo*, Heuristic*) = nullptr;
  Handle handle = nullptr;
  void* workspace = nullptr;  // the main stream's
  bool ok = false;
  std::string found;  // the library loaded, or (not ok) what was tried (gemm_library())
  std::once_flag side_once;
  void* side_workspace = nullptr;  // the side stream's (SideWork), made on its first product: the two run at once
};

void* open_lib(std::string& tried, std::string& loaded) {
  const char* env = std::getenv("INSTILL_CUBLASLT");
  if (env && std::strcmp(env, "off") == 0) {
    tried = "disabled by INSTILL_CUBLASLT=off";
    return nullptr;
  }
  auto attempt = [&](const std::string& name) -> void* {
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    tried += (tried.empty() ? "" : "; ") + name + (h ? " (loaded)" : std::string(": ") + dlerror());
    if (h) loaded = name;
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
    std::string tried, loaded;
    void* lib = open_lib(tried, loaded);
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
    if (ok) {  // optional entry points: their absence only means no split-K variants when tuning
      a.cap_get = reinterpret_cast<decltype(a.cap_get)>(dlsym(lib, "cublasLtMatmulAlgoCapGetAttribute"));
      a.config_get = reinterpret_cast<decltype(a.config_get)>(dlsym(lib, "cublasLtMatmulAlgoConfigGetAttribute"));
      a.config_set = reinterpret_cast<decltype(a.config_set)>(dlsym(lib, "cublasLtMatmulAlgoConfigSetAttribute"));
      a.check = reinterpret_cast<decltype(a.check)>(dlsym(lib, "cublasLtMatmulAlgoCheck"));
    }
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
    a.found = ok ? loaded : tried;
    if (verbose)
      std::fprintf(stderr, "instill: cuBLASLt %s (%s)%s\n", ok ? "in use" : "not used", tried.c_str(),
                   ok && !(a.cap_get && a.config_get && a.config_set && a.check) ? "; no split-K entry points" : "");
  });
  return a;
}

// The workspace for a product queued on stream(): the main stream's, or the side stream's (SideWork), made once; where
// no memory is left for it, none (an algorithm that needs one then fails, and the WMMA kernel runs the product).
struct Workspace {
  void* p;
  size_t bytes;
};
Workspace workspace(Api& a) {
  if (stream() == main_stream()) return {a.workspace, kWorkspaceBytes};
  std::call_once(a.side_once, [&a] {
    if (cudaMalloc(&a.side_workspace, kWorkspaceBytes) != cudaSuccess) {  // held for the process's life
      cudaGetLastError();
      a.side_workspace = nullptr;
    }
  });
  return {a.side_workspace, a.side_workspace ? kWorkspaceBytes : 0};
}

// Each side of a product reaches cuBLASLt as one bf16 matrix (one f32 matrix
// for an all-f32 product). An unscaled single-segment operand of that type is passed as it is (lora_linear and
// linear_cross_entropy lay their activations out so that almost every product
// is of this kind). Anything else is packed by pack_bf16 into a fresh bf16
// matrix in the operand's STORED orientation (reads and writes stay coalesced;
// cuBLASLt's transposition flags absorb the orientation), the two K segments
// stacked along K, the scale applied. With r the side's row index (m for A, n
// for B):
//   k_contig:  dst[r·ld + k]   (rows × K, ld = K rounded up to 8: 16-byte rows)
//   otherwise: dst[k·ld + r]   (K × rows, ld = rows rounded up to 8)
// Padding is never read (the product's K, M, N are exact).
struct Side {
  bool f32 = false;         // the whole product is f32 (TF32): packs are f32, else bf16
  const void* p = nullptr;  // what cuBLASLt reads: the operand itself, or the packed copy once made
  int64_t ld = 0;
  bool k_contig = false;    // each row of the stored matrix runs along K
  bool pack = false;
  int64_t pack_rows = 0;    // rows of the packed buffer (ld columns each)
};

// A: k_contig = !trans (p[m·ld + k]);  B: k_contig = trans (p[n·ld + k]).
bool k_contig_of(const GemmOperand& o, bool b_side) { return b_side ? o.trans : !o.trans; }

// Decides how a side reaches cuBLASLt, without touching the GPU. False when the
// two segments are stored in different orientations (never the case in this
// backend; the WMMA kernel takes such products).
bool plan_side(const GemmArgs& g, bool b_side, Side& side) {
  const GemmOperand* s = b_side ? g.b : g.a;
  const int64_t rows = b_side ? g.N : g.M;
  side.k_contig = k_contig_of(s[0], b_side);
  side.f32 = all_f32(g);
  if (side_as_is(g, s)) {
    side.p = s[0].p;
    side.ld = s[0].ld;
    return true;
  }
  if (g.K[1] > 0 && k_contig_of(s[1], b_side) != side.k_contig) return false;
  const int64_t K = g.K[0] + g.K[1];
  side.pack = true;
  side.ld = round_up(side.k_contig ? K : rows, 8);
  side.pack_rows = side.k_contig ? rows : K;
  return true;
}

// Queues the packing of a side planned with pack = true; the returned tensor owns the copy.
Tensor pack_side(const GemmArgs& g, bool b_side, Side& side) {
  Tensor t = Tensor::empty({side.pack_rows, side.ld}, side.f32 ? DType::F32 : DType::BF16, Device::CUDA);
  const GemmOperand* s = b_side ? g.b : g.a;
  const int64_t rows = b_side ? g.N : g.M;
  for (int i = 0; i < 2; ++i) {
    if (g.K[i] == 0) continue;
    const int64_t k0 = i == 0 ? 0 : g.K[0];
    // stored (rows, K_i): a column block at k0; stored (K_i, rows): a row block at k0
    const int64_t off = side.k_contig ? k0 : k0 * side.ld;
    const int64_t pr = side.k_contig ? rows : g.K[i], pc = side.k_contig ? g.K[i] : rows;
    if (side.f32) {
      pack_f32(s[i].p, s[i].e, s[i].ld, s[i].scale, pr, pc, t.data_as<float>() + off, side.ld);
    } else {
      pack_bf16(s[i].p, s[i].e, s[i].ld, s[i].scale, pr, pc, t.data_as<__nv_bfloat16>() + off, side.ld);
    }
  }
  side.p = t.data();
  return t;
}

// Largest power of two (at most 256) dividing the address: the heuristic
// assumes 256-byte aligned matrices unless told otherwise, and a row offset
// into a packed buffer may be less aligned than a fresh allocation.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t v = 1;
  while (v < 256 && a % (2 * v) == 0) v *= 2;
  return v;
}
int log2_of(uint32_t v) {
  int l = 0;
  while ((1u << l) < v) ++l;
  return l;
}

// ---- plan cache ----
// Creating a matmul descriptor, three layouts and a preference and running the
// heuristic costs tens of microseconds of host time per call, repeated for the
// same few shapes every step. A plan holds all of that per product key; the
// descriptors are host objects, only read by cublasLtMatmul while it queues
// work, so one plan serves every later call of the same key.
struct PlanKey {
  int64_t m, n, k, lda, ldb, ldc;
  uint32_t flags;  // bit 0/1: A/B k_contig, 2: alpha != 1, 3: beta != 0, 4: bias, 5: TF32, 6: bf16 C; bytes 1..3: log2 alignment A, B, C
  bool operator==(const PlanKey& o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc && flags == o.flags;
  }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t v : {static_cast<uint64_t>(key.m), static_cast<uint64_t>(key.n), static_cast<uint64_t>(key.k),
                       static_cast<uint64_t>(key.lda), static_cast<uint64_t>(key.ldb), static_cast<uint64_t>(key.ldc),
                       static_cast<uint64_t>(key.flags)}) {
      h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    }
    return static_cast<size_t>(h);
  }
};

struct Plan {
  Desc desc = nullptr;
  Layout la = nullptr, lb = nullptr, lc = nullptr;
  Algo algo{};
  bool ok = false;             // false: no algorithm (cached too, so the WMMA kernel is chosen at once)
  bool bias_epilogue = false;  // bias added by cuBLASLt's epilogue, else by add_bias_kernel
  std::vector<Algo> candidates;  // the heuristic's first few, best first, then split-K variants; emptied once tuned
  std::vector<uint32_t> splits;  // each candidate's K splits (1: as the heuristic gave it)
};

constexpr size_t kMaxPlans = 512;  // distinct shapes of a run are a few dozen; past this the cache starts over

struct PlanCache {
  std::mutex mu;  // held from lookup to the queueing of the matmul (the bias pointer is set on a shared desc)
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
};
PlanCache& plan_cache() {
  static PlanCache* c = new PlanCache;  // never destroyed: no cuBLASLt calls from static destructors at exit
  return *c;
}

void destroy_plan(Api& a, Plan& p) {
  if (p.lc) a.layout_destroy(p.lc);
  if (p.lb) a.layout_destroy(p.lb);
  if (p.la) a.layout_destroy(p.la);
  if (p.desc) a.desc_destroy(p.desc);
  p = Plan{};
}

// How many of the heuristic's algorithms a key's first call times: unset, "off" or anything else → 1
// (its first, untimed: reproducible); "on" → 8; N → N (at most 32).
int tune_candidates() {
  static const int n = [] {
    const char* e = std::getenv("INSTILL_CUBLASLT_TUNE");
    if (!e || !*e || std::strcmp(e, "off") == 0) return 1;
    if (std::strcmp(e, "on") == 0) return kTuneOn;
    const int v = std::atoi(e);
    return v >= 1 ? std::min(v, kTuneMax) : 1;
  }();
  return n;
}

// Tuning also times split-K variants of the heuristic's first kSplitBases algorithms: the same algorithm with its K
// cut into 2, 4, 8 or 16 parts whose f32 partials cuBLASLt sums in its workspace (kept where cublasLtMatmulAlgoCheck
// accepts it within kWorkspaceBytes, and each part keeps K >= kMinSplitK). LoRA's narrow products have outputs of
// 2048 x 48 or 48 x 2048 over K = 2048..16384: a few tiles for 132 SMs unless K is split, and run 16 timed them at
// 13-30 us a call where their bytes take 2.5-20. Whether the heuristic's pick already splits (then its variants add
// nothing) is what INSTILL_CUBLASLT_VERBOSE=1 prints for each tuned key.

// base with its K cut into s parts (f32 partials reduced in the workspace) into out, where the algorithm can split
// K, sum in f32, and cublasLtMatmulAlgoCheck accepts it for this plan within kWorkspaceBytes. The check sees no
// pointers, so the variant's own minimum alignments (which the heuristic weighed for its picks, from the
// preferences) are compared here with the call's: align as in make_plan (our A, B, C sides).
bool split_variant(Api& a, const Plan& p, const Algo& base, uint32_t s, const uint32_t align[3], Algo& out) {
  if (!a.cap_get || !a.config_get || !a.config_set || !a.check) return false;
  int32_t support = 0;
  uint32_t schemes = 0;
  size_t n = 0;
  if (a.cap_get(&base, kCapSplitK, &support, sizeof(support), &n) != 0 || support == 0) return false;
  if (a.cap_get(&base, kCapReductionMask, &schemes, sizeof(schemes), &n) != 0 || (schemes & kReductionComputeType) == 0)
    return false;
  out = base;
  const uint32_t scheme = kReductionComputeType;
  if (a.config_set(&out, kConfigSplitK, &s, sizeof(s)) != 0 || a.config_set(&out, kConfigReduction, &scheme, sizeof(scheme)) != 0)
    return false;
  Heuristic r{};
  if (a.check(a.handle, p.desc, p.la, p.lb, p.lc, p.lc, &out, &r) != 0 || r.state != 0 || r.workspace_size > kWorkspaceBytes)
    return false;
  // cuBLASLt's A is our B side, its B our A side; C and D are our C
  const uint32_t have[4] = {align[1], align[0], align[2], align[2]};
  for (int i = 0; i < 4; ++i) {
    uint32_t need = 0;
    if (a.cap_get(&out, kCapMinAlignA + i, &need, sizeof(need), &n) != 0 || need > have[i]) return false;
  }
  return true;
}

// An algorithm's split of K (1 where it does not say).
uint32_t split_of(Api& a, const Algo& algo) {
  uint32_t s = 1;
  size_t n = 0;
  if (!a.config_get || a.config_get(&algo, kConfigSplitK, &s, sizeof(s), &n) != 0 || s == 0) return 1;
  return s;
}

void add_split_k(Api& a, Plan& p, const Heuristic* h, int found, int64_t K, const uint32_t align[3]) {
  for (int i = 0; i < std::min(found, kSplitBases); ++i) {
    const uint32_t have = split_of(a, h[i].algo);
    for (uint32_t s : kSplits) {
      Algo v;
      if (s == have || K / s < kMinSplitK || !split_variant(a, p, h[i].algo, s, align, v)) continue;
      p.candidates.push_back(v);
      p.splits.push_back(s);
    }
  }
}

// Column-major view: D (N × M, ld = ldc) = opA(cuA) · opB(cuB) with cuA = our B side, cuB = our A side.
//   cuA: B side stored k-contiguous → (N rows of K) = col-major (K × N), needs T; else col-major (N × K), N.
//   cuB: A side stored k-contiguous → (M rows of K) = col-major (K × M), N;   else col-major (M × K), T.
// bias (per column n of our C) is per row of D: what CUBLASLT_EPILOGUE_BIAS adds.
Plan make_plan(Api& a, const GemmArgs& g, const Side& A, const Side& B, const uint32_t align[3], bool bias_epilogue) {
  const int64_t K = g.K[0] + g.K[1];
  const int opA = B.k_contig ? kOpT : kOpN, opB = A.k_contig ? kOpN : kOpT;
  const uint64_t a_rows = B.k_contig ? K : g.N, a_cols = B.k_contig ? g.N : K;
  const uint64_t b_rows = A.k_contig ? K : g.M, b_cols = A.k_contig ? g.M : K;
  Plan p;
  p.bias_epilogue = bias_epilogue;
  bool ok = a.desc_create(&p.desc, A.f32 ? kComputeTf32 : kComputeF32, CUDA_R_32F) == 0;
  ok = ok && a.desc_set(p.desc, kDescTransA, &opA, sizeof(opA)) == 0;
  ok = ok && a.desc_set(p.desc, kDescTransB, &opB, sizeof(opB)) == 0;
  if (bias_epilogue) {
    const uint32_t epilogue = kEpilogueBias;
    const void* bias = g.bias;  // set again on every call
    ok = ok && a.desc_set(p.desc, kDescEpilogue, &epilogue, sizeof(epilogue)) == 0;
    ok = ok && a.desc_set(p.desc, kDescBiasPointer, &bias, sizeof(bias)) == 0;
    const int32_t bias_type = CUDA_R_32F;  // said, not left to the default (which follows D's type)
    ok = ok && a.desc_set(p.desc, kDescBiasDataType, &bias_type, sizeof(bias_type)) == 0;
  }
  const cudaDataType_t in_type = A.f32 ? CUDA_R_32F : CUDA_R_16BF;
  ok = ok && a.layout_create(&p.la, in_type, a_rows, a_cols, B.ld) == 0;
  ok = ok && a.layout_create(&p.lb, in_type, b_rows, b_cols, A.ld) == 0;
  ok = ok && a.layout_create(&p.lc, g.c16 ? CUDA_R_16BF : CUDA_R_32F, static_cast<uint64_t>(g.N), static_cast<uint64_t>(g.M),
                             g.ldc) == 0;
  Pref pref = nullptr;
  ok = ok && a.pref_create(&pref) == 0;
  const uint64_t ws = kWorkspaceBytes;
  ok = ok && a.pref_set(pref, kPrefMaxWorkspace, &ws, sizeof(ws)) == 0;
  // cuA is our B side, cuB our A side; C and D are the same buffer.
  ok = ok && a.pref_set(pref, kPrefMinAlignA, &align[1], sizeof(uint32_t)) == 0;
  ok = ok && a.pref_set(pref, kPrefMinAlignB, &align[0], sizeof(uint32_t)) == 0;
  ok = ok && a.pref_set(pref, kPrefMinAlignC, &align[2], sizeof(uint32_t)) == 0;
  ok = ok && a.pref_set(pref, kPrefMinAlignD, &align[2], sizeof(uint32_t)) == 0;
  Heuristic h[kTuneMax]{};
  int found = 0;
  const int asked = tune_candidates();
  ok = ok && a.heuristic(a.handle, p.desc, p.la, p.lb, p.lc, p.lc, pref, asked, h, &found) == 0 && found > 0;
  if (pref) a.pref_destroy(pref);
  if (!ok) {
    destroy_plan(a, p);
    return p;
  }
  p.algo = h[0].algo;  // untuned: the heuristic's first as it is (run 17: split_k's rule splitting it, 2.9% slower a step)
  if (asked > 1) {
    for (int i = 0; i < found; ++i) {
      p.candidates.push_back(h[i].algo);
      p.splits.push_back(split_of(a, h[i].algo));
    }
    add_split_k(a, p, h, found, K, align);
    if (p.candidates.size() < 2) {  // one candidate: nothing to time
      p.candidates.clear();
      p.splits.clear();
    }
  }
  p.ok = true;
  return p;
}

// On a plan's first call: times each candidate on the call's operands into a scratch C
// (zeroed, so beta != 0 reads numbers) and keeps the fastest as plan.algo. A candidate that
// fails to run is skipped. Waits for the GPU (once per key).
void tune(Api& a, Plan& plan, const GemmArgs& g, const void* pa, const void* pb) {
  std::vector<Algo> cands;
  std::vector<uint32_t> splits;
  cands.swap(plan.candidates);
  splits.swap(plan.splits);
  Tensor scratch = Tensor::empty({(g.M - 1) * g.ldc + g.N}, g.c16 ? DType::BF16 : DType::F32, Device::CUDA);
  fill_bytes(scratch.data(), Device::CUDA, 0, scratch.nbytes());
  void* c = scratch.data();
  const float alpha = g.alpha, beta = g.beta;
  cudaEvent_t ev[2];
  INSTILL_CUDA_CHECK(cudaEventCreate(&ev[0]));
  INSTILL_CUDA_CHECK(cudaEventCreate(&ev[1]));
  const Workspace ws = workspace(a);
  auto run = [&](const Algo& algo) {
    return a.matmul(a.handle, plan.desc, &alpha, pb, plan.la, pa, plan.lb, &beta, c, plan.lc, c, plan.lc, &algo,
                    ws.p, ws.bytes, stream()) == 0;
  };
  int best = -1;
  float best_ms = 0.f, first_ms = 0.f;
  for (size_t i = 0; i < cands.size(); ++i) {
    if (!run(cands[i])) continue;  // untimed: the first run of an algorithm can be slower
    bool ok = cudaEventRecord(ev[0], stream()) == cudaSuccess;
    for (int r = 0; ok && r < kTuneReps; ++r) ok = run(cands[i]);
    ok = ok && cudaEventRecord(ev[1], stream()) == cudaSuccess && cudaEventSynchronize(ev[1]) == cudaSuccess;
    float ms = 0.f;
    if (!ok || cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (i == 0) first_ms = ms;
    if (best < 0 || ms < best_ms) {
      best = static_cast<int>(i);
      best_ms = ms;
    }
  }
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  if (best >= 0) plan.algo = cands[static_cast<size_t>(best)];
  if (std::getenv("INSTILL_CUBLASLT_VERBOSE"))
    std::fprintf(stderr,
                 "instill: cuBLASLt tuned M %lld N %lld K %lld%s: %zu algorithms, heuristic's first %.1f us (split-K %u), "
                 "chose #%d %.1f us (split-K %u)\n",
                 static_cast<long long>(g.M), static_cast<long long>(g.N), static_cast<long long>(g.K[0] + g.K[1]),
                 all_f32(g) ? " (tf32)" : "", cands.size(), 1e3 * first_ms / kTuneReps, splits.empty() ? 1u : splits[0],
                 best, 1e3 * best_ms / kTuneReps, best >= 0 && static_cast<size_t>(best) < splits.size() ? splits[best] : 1u);
}

// C[m·ldc + n] += bias[n]: rows on grid.y, columns on threads (no per-element division).
__global__ void add_bias_kernel(float* c, int64_t ldc, const float* bias, int64_t M, int64_t N) {
  pdl_enter();
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    float* row = c + m * ldc;
    for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < N;
         n += static_cast<int64_t>(gridDim.x) * blockDim.x)
      row[n] += bias[n];
  }
}

}  // namespace

// What runs the products (runtime.info().cuda.gemm): cuBLASLt and where it was found, or the fallback and why.
std::string gemm_library() {
  Api& a = api();
  if (a.ok) return "cuBLASLt (" + a.found + ")";
  return "instill's WMMA kernel: cuBLASLt not used (" + a.found +
         "); products run several times slower. INSTILL_CUBLASLT=/path/to/libcublasLt.so.13 names the library "
         "(pip install nvidia-cublas puts one under site-packages/nvidia/cu13/lib)";
}

bool gemm_cublaslt(const GemmArgs& g) {
  const int64_t K = g.K[0] + g.K[1];
  if (K == 0) return false;
  // bf16 C only without bias and beta (gemm() sends the rest through f32 scratch): its D, C and bias types need
  // not be worked out here.
  if (g.c16 && (g.bias || g.beta != 0.f)) return false;
  void* const c = g.c16 ? static_cast<void*>(g.c16) : static_cast<void*>(g.c);
  Api& a = api();
  if (!a.ok) return false;
  Side A{}, B{};
  if (!plan_side(g, false, A) || !plan_side(g, true, B)) return false;
  if (g.c16 && A.f32) return false;  // TF32 products write f32 D only (the f32 scratch path does the rest)
  // Packed copies are fresh allocations (256-byte aligned); operands passed as they are may be views.
  // C as read (beta != 0): c, or the residual in c_in (same layout; its alignment counts too)
  const void* const c_read = g.c_in && !g.c16 ? static_cast<const void*>(g.c_in) : c;
  const uint32_t align[3] = {A.pack ? 256u : alignment_of(A.p), B.pack ? 256u : alignment_of(B.p),
                             std::min(alignment_of(c), alignment_of(c_read))};
  PlanKey key{g.M, g.N, K, A.ld, B.ld, g.ldc,
              (A.k_contig ? 1u : 0u) | (B.k_contig ? 2u : 0u) | (g.alpha != 1.f ? 4u : 0u) | (g.beta != 0.f ? 8u : 0u) |
                  (g.bias ? 16u : 0u) | (A.f32 ? 32u : 0u) | (g.c16 ? 64u : 0u) |
                  static_cast<uint32_t>(log2_of(align[0])) << 8 |
                  static_cast<uint32_t>(log2_of(align[1])) << 16 | static_cast<uint32_t>(log2_of(align[2])) << 24};

  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  auto it = cache.plans.find(key);
  if (it == cache.plans.end()) {
    if (cache.plans.size() >= kMaxPlans) {
      for (auto& kv : cache.plans) destroy_plan(a, kv.second);
      cache.plans.clear();
    }
    Plan p;
    if (g.bias) p = make_plan(a, g, A, B, align, true);
    if (!p.ok) p = make_plan(a, g, A, B, align, false);  // no bias, or no algorithm with the bias epilogue
    it = cache.plans.emplace(key, p).first;
  }
  Plan& plan = it->second;
  if (!plan.ok) return false;  // WMMA runs it

  Tensor packed_a = A.pack ? pack_side(g, false, A) : Tensor();
  Tensor packed_b = B.pack ? pack_side(g, true, B) : Tensor();
  if (plan.bias_epilogue) {
    const void* bias = g.bias;
    if (a.desc_set(plan.desc, kDescBiasPointer, &bias, sizeof(bias)) != 0) return false;
  }
  if (!plan.candidates.empty()) tune(a, plan, g, A.p, B.p);
  const float alpha = g.alpha, beta = g.beta;
  const Workspace ws = workspace(a);
  if (a.matmul(a.handle, plan.desc, &alpha, B.p, plan.la, A.p, plan.lb, &beta, c_read, plan.lc, c, plan.lc, &plan.algo,
               ws.p, ws.bytes, stream()) != 0) {
    return false;  // WMMA runs it (the packed copies are simply dropped)
  }
  check_launch("cublasLtMatmul");
  if (g.bias && !plan.bias_epilogue) {
    const unsigned gx = static_cast<unsigned>(std::min<int64_t>((g.N + 255) / 256, 64));
    const unsigned gy = static_cast<unsigned>(std::min<int64_t>(g.M, 65535));
    launch("add_bias_kernel", add_bias_kernel, dim3(gx, gy), 256, 0, stream(), g.c, g.ldc, g.bias, g.M, g.N);
  }
  return true;
}

}  // namespace cuda
}  // namespace instill
