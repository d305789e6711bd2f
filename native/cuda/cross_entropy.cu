// masked_cross_entropy and linear_cross_entropy on CUDA (ops/cross_entropy.h).
//
// Targets are copied to the host once per call (N int32s): there they are
// range-checked (E_RANGE, as on the CPU), counted (the default normalizer), and,
// for the fused op, turned into the list of rows that reach the LM head.
// ce_rows_kernel: one block per row, two passes over it: (1) a running max and
// Σexp(x − max) per thread (rescaled when the max grows; one read instead of a
// max pass and a sum pass), combined across the block in f32, the row's loss
// added in double to one accumulator; (2) dlogits = (softmax − onehot) /
// normalizer, written as f32 (in place for masked_cross_entropy: each thread
// writes only what it has just read, and the target's logit is read before the
// first reduction) or straight as bf16 (linear CE: the dh/dW products read
// bf16 anyway, so the f32 copy and its pack are skipped). float4 loads when rows
// are 16-byte aligned.
// linear_cross_entropy: ignored rows never reach the head. Kept rows go through
// in chunks; per chunk their h rows are gathered and converted to bf16 once,
// the f32 logits are computed in sub-chunks (logits = hc·Wᵀ, then the softmax
// kernel writes that sub-chunk's bf16 dlogits into the chunk's buffer), and
// then dh rows = dlogits·W (scattered back) and dW += dlogitsᵀ·hc run once per
// chunk. Why two levels: the dh product has a small output (rows × C) and a
// huge K (V), so it needs many rows to fill an H100/H200 (thousands, not the
// ~520 that 256 MiB of f32 logits allow at V = 128256), while the f32 logits
// need 4 bytes per element and the bf16 gradient 2. Defaults: a chunk is up to
// 1 GiB of bf16 dlogits (4186 rows at V = 128256; chunks balanced, rows a
// multiple of 64), a sub-chunk up to 256 MiB of f32 logits (512 rows; 512 MiB with
// INSTILL_CUDA_NEXT=ce_wide, below). Peak
// scratch at N = 8192 (6144 kept), C = 2048, V = 128256: ~1.07 GB, never N·V.
// A caller's chunk_rows sets both (about chunk_rows·V·6 bytes).
// INSTILL_CUDA_NEXT=ce_bf16 (a bf16 head, waiting for a GPU run): the logits are
// bf16, and with gradients the product writes them into the chunk's dlogits rows,
// which the softmax kernel turns into dlogits in place: one sub-chunk a chunk, no
// f32 logits buffer (peak ~0.8 GB at the shape above, about chunk_rows·V·2 bytes
// plus h's rows).
#include <algorithm>
#include <cmath>

#include "cuda/gemm.h"
#include "ops/cross_entropy.h"

namespace instill {
namespace cuda {

namespace {

constexpr int64_t kCudaDlogitsBytes = 1ll << 30;   // softmax gradient of one chunk (bf16; f32 for an f32 head)
constexpr int64_t kCudaLogitsBytes = 256ll << 20;  // f32 logits of one sub-chunk
// INSTILL_CUDA_NEXT `ce_wide`: sub-chunks of up to 512 MiB. Each sub-chunk's logits product streams all of W (525 MB
// at V = 128256, C = 2048) besides writing its logits, so the 1B step's 2047 rows in 4 sub-chunks read W 4 times, in
// 2 twice: ~1 GB less a step (run 18's loss: 4.3 ms; its logits products ~1.8). The peak grows by one sub-chunk's
// extra 256 MiB (the linear CE benchmark: ~1.09 → ~1.36 GiB, against torch's 13.7).
constexpr int64_t kCudaLogitsBytesWide = 512ll << 20;
constexpr int kThreads = 512;


// Folds x into a thread's running (max m, Σexp(· − m) s).
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
  if (x > m) {
    s *= expf(m - x);
    m = x;
  }
  s += expf(x - m);
}

// Elements 4j..4j+3 of a logits row as f32 (an f32 row read as float4s, as the kernel did before it took bf16 rows:
// the same machine code for it).
__device__ __forceinline__ float4 row4(const float* x, int64_t j) { return reinterpret_cast<const float4*>(x)[j]; }
__device__ __forceinline__ float4 row4(const __nv_bfloat16* x, int64_t j) { return load4(x + 4 * j); }

// logits (M, ldl) InT (f32, or bf16 with ce_bf16), dlogits (M, ldd) OutT or null (may alias logits when OutT is
// InT and ldd == ldl), targets (M). kVec: every row of both is 4-element aligned, checked on the host.
template <typename InT, typename OutT, bool kVec>
__device__ __forceinline__ void ce_row(int64_t row, const InT* logits, int64_t ldl, const int32_t* targets, int64_t V,
                                       int32_t ignore_index, float inv_norm, OutT* dlogits, int64_t ldd,
                                       double* loss_sum, float* red) {
  const InT* x = logits + row * ldl;
  const int32_t t = targets[row];
  const bool ignored = t == ignore_index || t < 0 || t >= V;
  const float xt = (!ignored && threadIdx.x == 0) ? load1(x + t) : 0.f;  // before any write (in place)
  const int64_t V4 = kVec ? (V & ~int64_t{3}) : 0;
  float m = -INFINITY, s = 0.f;
  if (kVec) {
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < V4 / 4; j += blockDim.x) {
      const float4 v = row4(x, j);
      const float mv = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
      if (mv > m) {
        s *= expf(m - mv);
        m = mv;
      }
      s += expf(v.x - m) + expf(v.y - m) + expf(v.z - m) + expf(v.w - m);
    }
  }
  for (int64_t j = V4 + threadIdx.x; j < V; j += blockDim.x) online_add(m, s, load1(x + j));
  const float mx = block_max(m, red);
  s = m == -INFINITY ? 0.f : s * expf(m - mx);  // a thread that saw nothing adds 0, not 0·exp(NaN)
  s = block_sum(s, red);
  const float lse = mx + logf(s);
  if (threadIdx.x == 0 && !ignored) atomicAdd(loss_sum, static_cast<double>(lse) - static_cast<double>(xt));
  if (!dlogits) return;
  OutT* d = dlogits + row * ldd;
  if (kVec) {
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < V4 / 4; j += blockDim.x) {
      const int64_t c = 4 * j;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (!ignored) {
        v = row4(x, j);
        v.x = (expf(v.x - lse) - (c == t ? 1.f : 0.f)) * inv_norm;
        v.y = (expf(v.y - lse) - (c + 1 == t ? 1.f : 0.f)) * inv_norm;
        v.z = (expf(v.z - lse) - (c + 2 == t ? 1.f : 0.f)) * inv_norm;
        v.w = (expf(v.w - lse) - (c + 3 == t ? 1.f : 0.f)) * inv_norm;
      }
      store4(d + c, v);
    }
  }
  for (int64_t j = V4 + threadIdx.x; j < V; j += blockDim.x)
    store1(d + j, ignored ? 0.f : (expf(load1(x + j) - lse) - (j == t ? 1.f : 0.f)) * inv_norm);
}

// Rows blockIdx.x, blockIdx.x + gridDim.x, …: one block a row at a time (a grid of M blocks: one row each).
template <typename InT, typename OutT, bool kVec>
__global__ void __launch_bounds__(kThreads) ce_rows_kernel(int64_t M, const InT* logits, int64_t ldl,
                                                           const int32_t* targets, int64_t V, int32_t ignore_index,
                                                           float inv_norm, OutT* dlogits, int64_t ldd, double* loss_sum) {
  pdl_enter();
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    ce_row<InT, OutT, kVec>(row, logits, ldl, targets, V, ignore_index, inv_norm, dlogits, ldd, loss_sum, red);
    __syncthreads();  // red is the next row's
  }
}

template <typename InT, typename OutT>
void launch_ce_rows(int64_t M, const InT* logits, int64_t ldl, const int32_t* targets, int64_t V,
                    int32_t ignore_index, float inv_norm, OutT* dlogits, int64_t ldd, double* loss_sum) {
  if (M <= 0) return;
  const bool vec = aligned(logits, 4 * sizeof(InT)) && ldl % 4 == 0 &&
                   (!dlogits || (aligned(dlogits, 4 * sizeof(OutT)) && ldd % 4 == 0));
  // A block a row, M blocks (run 17: fewer blocks looping over rows, so that a row's second pass finds it in L2,
  // made the 1B step's loss 1.0 ms slower)
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(M, 0x7fffffff));
  if (vec) {
    launch("ce_rows_kernel", ce_rows_kernel<InT, OutT, true>, grid, kThreads, 0, stream(), M, logits, ldl, targets, V,
           ignore_index, inv_norm, dlogits, ldd, loss_sum);
  } else {
    launch("ce_rows_kernel", ce_rows_kernel<InT, OutT, false>, grid, kThreads, 0, stream(), M, logits, ldl, targets, V,
           ignore_index, inv_norm, dlogits, ldd, loss_sum);
  }
}

// dst[rows[r]·C + c] = src[r·C + c]: rows on grid.y, columns on threads.
__global__ void scatter_rows_kernel(const float* src, const int32_t* rows, int64_t M, int64_t C, float* dst) {
  pdl_enter();
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const float* s = src + r * C;
    float* d = dst + static_cast<int64_t>(rows[r]) * C;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x)
      d[c] = s[c];
  }
}

void check_targets(const std::vector<int32_t>& t, int64_t V, int32_t ignore_index) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == ignore_index) continue;
    if (t[i] < 0 || t[i] >= V) {
      fail(ErrorCode::Range, "targets[", i, "] = ", t[i], " is outside the vocabulary [0, ", V,
           ") and is not the ignore index ", ignore_index);
    }
  }
}

double read_loss(const Tensor& acc) {
  double v = 0;
  copy_bytes(&v, Device::CPU, acc.data(), Device::CUDA, sizeof(double));
  return v;
}

}  // namespace

CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& p) {
  const int64_t N = p.logits->dim(0), V = p.logits->dim(1);
  const std::vector<int32_t> t = to_host_i32(*p.targets);
  check_targets(t, V, p.ignore_index);
  const int64_t count = static_cast<int64_t>(std::count_if(t.begin(), t.end(), [&](int32_t x) { return x != p.ignore_index; }));
  if (count == 0 || N == 0) {
    if (p.dlogits) fill_bytes(p.dlogits->data(), Device::CUDA, 0, p.dlogits->nbytes());
    return {0.0, 0};
  }
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);
  Tensor acc64 = Tensor::zeros({2}, DType::F32, Device::CUDA);  // 8 bytes: one double
  launch_ce_rows<float, float>(N, p.logits->data_as<float>(), V, p.targets->data_as<int32_t>(), V, p.ignore_index,
                               static_cast<float>(1.0 / norm), p.dlogits ? p.dlogits->data_as<float>() : nullptr, V,
                               static_cast<double*>(acc64.data()));
  return {read_loss(acc64) / norm, count};
}

CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& p) {
  const Tensor &h = *p.h, &w = *p.w;
  const int64_t N = h.dim(0), C = h.dim(1), V = w.dim(0);
  const std::vector<int32_t> t = to_host_i32(p.targets_host ? *p.targets_host : *p.targets);  // host: no wait
  check_targets(t, V, p.ignore_index);
  std::vector<int32_t> rows, kept_targets;
  for (int64_t i = 0; i < N; ++i) {
    if (t[static_cast<size_t>(i)] == p.ignore_index) continue;
    rows.push_back(static_cast<int32_t>(i));
    kept_targets.push_back(t[static_cast<size_t>(i)]);
  }
  const int64_t count = static_cast<int64_t>(rows.size());
  if (p.dh) fill_bytes(p.dh->data(), Device::CUDA, 0, p.dh->nbytes());
  if (p.dw && !p.accumulate_dw) fill_bytes(p.dw->data(), Device::CUDA, 0, p.dw->nbytes());
  if (count == 0) return {0.0, 0};
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);

  const bool grads = p.dh || p.dw;
  // Precision follows the head's dtype (gemm.h): an f32 head (an f32 model) keeps h,
  // the dlogits and the products in f32 (TF32 tensor cores); otherwise bf16.
  const bool exact = elem_of(w) == Elem::F32;
  const Elem ce = exact ? Elem::F32 : Elem::BF16;  // dtype of the packed h rows and dlogits
  const int64_t esz = exact ? 4 : 2;
  const int64_t ldv = round_up(V, 8), ldh = round_up(C, 8);  // 16-byte rows for cuBLASLt and float4
  // INSTILL_CUDA_NEXT `ce_bf16` (a bf16 head): the logits in bf16, rounded once from the product's f32 sums as
  // transformers' bf16 head rounds them, the softmax still in f32. With gradients they are written straight into the
  // chunk's dlogits rows, which the softmax kernel then overwrites in place (each thread writes only what it has just
  // read): no f32 sub-chunks, one logits product a chunk (W streamed once, not once per 256 MiB of f32 logits), and
  // ~2 GB less traffic a 1B step. Without gradients, bf16 sub-chunks (twice the rows in the same bytes).
  const bool logits16 = !exact && next_kernels(Next::CeBf16);
  const bool in_place = logits16 && grads;
  const int64_t lsz = logits16 ? 2 : 4;  // bytes a logit
  int64_t chunk = 0, sub = 0;  // rows per chunk (dh/dW products), per sub-chunk (logits)
  if (p.chunk_rows > 0) {
    chunk = sub = std::min(p.chunk_rows, count);
  } else {
    const int64_t logits_bytes = next_kernels(Next::CeWide) ? kCudaLogitsBytesWide : kCudaLogitsBytes;
    int64_t sub_max = std::max<int64_t>(1, logits_bytes / (lsz * std::max<int64_t>(ldv, 1)));
    if (sub_max >= 128) sub_max = sub_max / 64 * 64;
    const int64_t chunk_max =
        grads ? std::max<int64_t>(sub_max, kCudaDlogitsBytes / (esz * std::max<int64_t>(ldv, 1))) : sub_max;
    const int64_t chunks = (count + chunk_max - 1) / chunk_max;  // balanced: no small last chunk
    chunk = std::min({round_up((count + chunks - 1) / chunks, 64), chunk_max, count});
    const int64_t subs = (chunk + sub_max - 1) / sub_max;
    sub = in_place ? chunk : std::min({round_up((chunk + subs - 1) / subs, 64), sub_max, chunk});
  }
  // The kept rows and their targets in one upload (an upload waits for the queued work: once, not twice).
  std::vector<int32_t> both(rows);
  both.insert(both.end(), kept_targets.begin(), kept_targets.end());
  const Tensor both_d = to_device_i32(both);
  const int32_t* const rows_dp = both_d.data_as<int32_t>();
  const int32_t* const targets_dp = rows_dp + count;
  // The head as bf16 once per call when it is stored as f16 (each product would pack it again);
  // bf16 and f32 heads are read as they are.
  Tensor w16;
  const void* wp = w.data();
  int64_t ldw = C;
  if (elem_of(w) == Elem::F16) {
    w16 = Tensor::empty({V, ldh}, DType::BF16, Device::CUDA);
    pack_bf16(w.data(), elem_of(w), C, 1.f, V, C, w16.data_as<__nv_bfloat16>(), ldh);
    wp = w16.data();
    ldw = ldh;
  }
  const Elem we = exact ? Elem::F32 : Elem::BF16;
  const DType cdt = exact ? DType::F32 : DType::BF16;
  Tensor hb = Tensor::empty({chunk, ldh}, cdt, Device::CUDA);                // kept h rows
  Tensor logits = in_place ? Tensor() : Tensor::empty({sub, ldv}, logits16 ? DType::BF16 : DType::F32, Device::CUDA);
  Tensor dl = grads ? Tensor::empty({chunk, ldv}, cdt, Device::CUDA) : Tensor();  // softmax gradient
  Tensor dhc = p.dh ? Tensor::empty({chunk, C}, DType::F32, Device::CUDA) : Tensor();
  Tensor acc64 = Tensor::zeros({2}, DType::F32, Device::CUDA);  // one double
  auto view = [](const void* ptr, Elem e, int64_t ld, bool trans) {
    GemmOperand o;
    o.p = ptr;
    o.e = e;
    o.ld = ld;
    o.trans = trans;
    return o;
  };
  // Element offsets into the packed buffers, whichever their dtype.
  auto at = [esz](const Tensor& t, int64_t elems) { return static_cast<const char*>(t.data()) + elems * esz; };
  const float inv_norm = static_cast<float>(1.0 / norm);

  for (int64_t r0 = 0; r0 < count; r0 += chunk) {
    const int64_t m = std::min(chunk, count - r0);
    const int32_t* rows_c = rows_dp + r0;
    if (exact) gather_f32(h.data(), Elem::F32, C, 1.f, rows_c, m, C, hb.data_as<float>(), ldh);
    else gather_bf16(h.data(), Elem::F32, C, 1.f, rows_c, m, C, hb.data_as<__nv_bfloat16>(), ldh);
    for (int64_t s0 = 0; s0 < m; s0 += sub) {
      const int64_t ms = std::min(sub, m - s0);
      // this sub-chunk's logits: f32 or bf16 in their own buffer, or (in_place) bf16 in its dlogits rows
      void* const lg = in_place ? static_cast<void*>(bf16_ptr(dl) + s0 * ldv) : logits.data();
      {  // logits (ms, V) = hc (ms, C) · Wᵀ,  W stored (V, C)
        const OpPart part("logits = h W^T (a sub-chunk)", Device::CUDA);
        GemmArgs g;
        g.M = ms; g.N = V; g.K[0] = C;
        g.a[0] = view(at(hb, s0 * ldh), ce, ldh, false);
        g.b[0] = view(wp, we, ldw, true);
        if (logits16) g.c16 = static_cast<__nv_bfloat16*>(lg);
        else g.c = static_cast<float*>(lg);
        g.ldc = ldv;
        if (C == 0) {
          fill_bytes(lg, Device::CUDA, 0, static_cast<size_t>(ms * ldv * lsz));
        } else {
          gemm(g);
        }
      }
      const int32_t* tg = targets_dp + r0 + s0;
      double* acc = static_cast<double*>(acc64.data());
      const OpPart part("softmax, loss and dlogits (a sub-chunk)", Device::CUDA);
      if (logits16) {  // (in place: the logits rows are these dlogits rows)
        launch_ce_rows<__nv_bfloat16, __nv_bfloat16>(ms, static_cast<const __nv_bfloat16*>(lg), ldv, tg, V,
                                                     p.ignore_index, inv_norm,
                                                     grads ? bf16_ptr(dl) + s0 * ldv : nullptr, ldv, acc);
      } else if (exact) {
        launch_ce_rows<float, float>(ms, logits.data_as<float>(), ldv, tg, V, p.ignore_index, inv_norm,
                                     grads ? dl.data_as<float>() + s0 * ldv : nullptr, ldv, acc);
      } else {
        launch_ce_rows<float, __nv_bfloat16>(ms, logits.data_as<float>(), ldv, tg, V, p.ignore_index, inv_norm,
                                             grads ? dl.data_as<__nv_bfloat16>() + s0 * ldv : nullptr, ldv, acc);
      }
    }
    if (p.dh && C > 0) {  // dh rows (m, C) = dlogits (m, V) · W (V, C)
      const OpPart part("dh = dlogits W, scattered to its rows", Device::CUDA);
      GemmArgs g;
      g.M = m; g.N = C; g.K[0] = V;
      g.a[0] = view(dl.data(), ce, ldv, false);
      g.b[0] = view(wp, we, ldw, false);
      g.c = dhc.data_as<float>(); g.ldc = C;
      gemm(g);
      const unsigned gx = static_cast<unsigned>(std::min<int64_t>((C + 255) / 256, 64));
      const unsigned gy = static_cast<unsigned>(std::min<int64_t>(m, 65535));
      launch("scatter_rows_kernel", scatter_rows_kernel, dim3(gx, gy), 256, 0, stream(), dhc.data_as<float>(), rows_c,
             m, C, p.dh->data_as<float>());
    }
    if (p.dw && C > 0) {  // dW (V, C) += dlogitsᵀ (V, m) · hc (m, C)
      GemmArgs g;
      g.M = V; g.N = C; g.K[0] = m;
      g.a[0] = view(dl.data(), ce, ldv, true);  // stored (m, V) = (K, M)
      g.b[0] = view(hb.data(), ce, ldh, false);
      g.beta = 1.f;
      g.c = p.dw->data_as<float>(); g.ldc = C;
      gemm(g);
    }
  }
  return {read_loss(acc64) / norm, count};
}

}  // namespace cuda
}  // namespace instill
