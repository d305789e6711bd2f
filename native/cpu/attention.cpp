// CPU causal GQA attention over packed segments (see ops/attention.h).
//
// Forward: one task per (segment, KV head, block of 64 query rows); the KV head's query
// heads run together. The block walks its keys in tiles of 64 with an online softmax:
// scores of the tile, new running max m per row, rescale of the running sum l and the
// accumulator by exp(m_old − m), then acc += P·V. Each K and V tile is packed once for
// the group's heads and each head's Q block once for all tiles (GemmPacked, cpu/gemm.h);
// the softmax rows run on the ISA's vector code (cpu/row_kernels.h). Extra memory per
// task: a 64 x 64 score tile and a 64 x D accumulator per head. Decode (KV cache) uses
// the same online softmax one query row at a time.
// Backward: one task per (segment, KV head); the task owns dk/dv rows of that KV head
// in that segment and the dq rows of its query heads, so no two tasks write the same
// memory. Probabilities are recomputed from the saved lse, in blocks of 64 queries x
// 64 keys whose five products run on packed tiles (flash-attention-2 style); every key
// block's Kᵀ, Vᵀ and K are packed once per task. N = 4096 (8 segments of 512, 9/3 heads
// x 64), 2 cores: forward 23–25 ms, backward 55–62 ms (2026-11-26; one row and key at a
// time, the first version, took 483 ms per layer at N = 2048).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/activations.h"
#include "cpu/gemm.h"
#include "cpu/model_ops.h"
#include "cpu/row_kernels.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyTile = 64;

// Eight independent partial sums: the compiler turns them into vector lanes
// without needing reassociation (-ffast-math), so the head-dim dot product runs
// at SIMD width even in the portable build.
inline float dot(const float* a, const float* b, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

struct Task {
  int64_t begin, end;  // segment
  int64_t head;        // the KV head: its group of query heads runs together
  int64_t q0, q1;      // query rows [q0, q1), inside the segment
};

// One query row against keys/values rows [j_begin, j_end) (row stride kvh·D, head kh), online
// softmax over tiles of kKeyTile; writes out_row (D) and returns the log-sum-exp.
float attend_row(const float* qi, const float* k, const float* v, int64_t kvh, int64_t kh, int64_t d, int64_t j_begin,
                 int64_t j_end, float scale, float* sc, float* acc, float* out_row) {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0;
  std::fill(acc, acc + d, 0.0f);
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kKeyTile) {
    const int64_t j1 = std::min<int64_t>(j0 + kKeyTile, j_end);
    float tmax = -std::numeric_limits<float>::infinity();
    for (int64_t j = j0; j < j1; ++j) {
      const float x = scale * dot(qi, k + (j * kvh + kh) * d, d);
      sc[j - j0] = x;
      tmax = std::max(tmax, x);
    }
    const float mnew = std::max(m, tmax);
    const float corr = std::exp(m - mnew);  // 0 on the first tile (m = -inf)
    l *= corr;
    for (int64_t c = 0; c < d; ++c) acc[c] *= corr;
    for (int64_t j = j0; j < j1; ++j) {
      const float pj = std::exp(sc[j - j0] - mnew);
      l += pj;
      const float* vj = v + (j * kvh + kh) * d;
      for (int64_t c = 0; c < d; ++c) acc[c] += pj * vj[c];
    }
    m = mnew;
  }
  const float inv = 1.0f / l;
  for (int64_t c = 0; c < d; ++c) out_row[c] = acc[c] * inv;
  return m + std::log(l);
}

}  // namespace

void attention_forward(const AttentionForwardArgs& p) {
  if (p.q->dtype() == DType::BF16) {  // bf16 activations: the f32 op on the widened inputs, outputs rounded once
    const Tensor q = f32_of(*p.q), k = f32_of(*p.k), v = f32_of(*p.v);
    Tensor out = p.out_packed ? Tensor::empty(p.q->shape(), DType::F32) : f32_out(*p.out, false);
    AttentionForwardArgs a = p;
    a.q = &q; a.k = &k; a.v = &v; a.out = &out; a.out_packed = nullptr;
    cpu::attention_forward(a);
    if (p.out_packed) store_f32_columns(out.reshape({q.dim(0), q.dim(1) * q.dim(2)}), *p.out_packed, 0);
    else store_f32(out, *p.out);
    return;
  }
  const int64_t h = p.q->dim(1), d = p.q->dim(2), kvh = p.k->dim(1);
  const int64_t group = h / kvh;
  const float* q = p.q->data_as<float>();
  const float* k = p.k->data_as<float>();
  const float* v = p.v->data_as<float>();
  float* out = p.out->data_as<float>();
  float* lse = p.lse->data_as<float>();
  const int32_t* cu = p.cu_seqlens->data_as<int32_t>();
  const int64_t s = p.cu_seqlens->dim(0) - 1;
  const float scale = p.scale;
  std::vector<Task> tasks;  // Task::head is the KV head: its group of query heads share each K and V tile
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t kh = 0; kh < kvh; ++kh) {
      for (int64_t r = cu[si]; r < cu[si + 1]; r += kQueryBlock) {
        tasks.push_back(Task{cu[si], cu[si + 1], kh, r, std::min<int64_t>(r + kQueryBlock, cu[si + 1])});
      }
    }
  }
  const int64_t ldq = h * d, ldk = kvh * d;
  const int64_t window = p.window;
  const RowKernels& rows = row_kernels_for_active_isa();
  parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t ti) {
    const Task& t = tasks[static_cast<size_t>(ti)];
    const int64_t kh = t.head, bq = t.q1 - t.q0;
    // First key any row of this block may see (tiles stay aligned to the segment start).
    int64_t kfirst = t.begin;
    if (window > 0 && t.q0 - window + 1 > t.begin) kfirst = t.begin + ((t.q0 - window + 1 - t.begin) / kKeyTile) * kKeyTile;
    auto F = [](const float* ptr, int64_t ld, bool trans) { return GemmOperand{ptr, DType::F32, ld, trans}; };
    // Per query head of the group: its Q block (packed once, scale folded in), the running max m
    // and sum l per row, and the output accumulator.
    std::vector<GemmPacked> qp(static_cast<size_t>(group));
    std::vector<float> acc(static_cast<size_t>(group * kQueryBlock * d), 0.0f);
    std::vector<float> m(static_cast<size_t>(group * kQueryBlock), -std::numeric_limits<float>::infinity());
    std::vector<float> l(static_cast<size_t>(group * kQueryBlock), 0.0f);
    for (int64_t g = 0; g < group; ++g)
      qp[static_cast<size_t>(g)].pack_a(bq, d, F(q + (t.q0 * h + kh * group + g) * d, ldq, false), scale);
    std::vector<float> sc(static_cast<size_t>(kQueryBlock * kKeyTile));
    GemmPacked kp, vp, pp;
    for (int64_t j0 = kfirst; j0 < t.q1; j0 += kKeyTile) {
      const int64_t bk = std::min<int64_t>(kKeyTile, t.q1 - j0);
      kp.pack_b(d, bk, F(k + (j0 * kvh + kh) * d, ldk, true));   // Kᵀ of the tile
      vp.pack_b(bk, d, F(v + (j0 * kvh + kh) * d, ldk, false));  // V of the tile
      for (int64_t g = 0; g < group; ++g) {
        float* mg = m.data() + g * kQueryBlock;
        float* lg = l.data() + g * kQueryBlock;
        float* ag = acc.data() + g * kQueryBlock * d;
        gemm_packed(qp[static_cast<size_t>(g)], kp, 0.0f, sc.data(), bk);  // S = scale · Q Kᵀ
        for (int64_t i = 0; i < bq; ++i) {
          float* sr = sc.data() + i * bk;
          const int64_t jmax = std::min<int64_t>(bk, t.q0 + i - j0 + 1);  // causal: keys j <= query i
          const int64_t jmin = window > 0 ? std::max<int64_t>(0, t.q0 + i - window + 1 - j0) : 0;  // i - j < W
          if (jmax <= jmin) {
            for (int64_t j = 0; j < bk; ++j) sr[j] = 0.0f;
            continue;
          }
          const float mnew = std::max(mg[i], rows.max(sr + jmin, jmax - jmin));
          const float corr = std::exp(mg[i] - mnew);  // 0 on the first tile (m = -inf)
          for (int64_t j = 0; j < jmin; ++j) sr[j] = 0.0f;
          const float sum = rows.exp(sr + jmin, sr + jmin, jmax - jmin, mnew);
          for (int64_t j = jmax; j < bk; ++j) sr[j] = 0.0f;
          lg[i] = lg[i] * corr + sum;
          mg[i] = mnew;
          float* ar = ag + i * d;
          for (int64_t c = 0; c < d; ++c) ar[c] *= corr;
        }
        pp.pack_a(bq, bk, F(sc.data(), bk, false));
        gemm_packed(pp, vp, 1.0f, ag, d);  // acc += P V
      }
    }
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = kh * group + g;
      for (int64_t i = 0; i < bq; ++i) {
        const size_t is = static_cast<size_t>(g * kQueryBlock + i);
        float* oi = out + ((t.q0 + i) * h + head) * d;
        const float inv = 1.0f / l[is];
        const float* ar = acc.data() + is * static_cast<size_t>(d);
        for (int64_t c = 0; c < d; ++c) oi[c] = ar[c] * inv;
        lse[(t.q0 + i) * h + head] = m[is] + std::log(l[is]);
      }
    }
  });
}

void attention_decode(const AttentionDecodeArgs& p) {
  const int64_t n = p.q->dim(0), h = p.q->dim(1), d = p.q->dim(2), kvh = p.k->dim(1);
  const int64_t group = h / kvh;
  float* kc = p.k_cache->data_as<float>();
  float* vc = p.v_cache->data_as<float>();
  const size_t row = static_cast<size_t>(kvh * d);
  std::memcpy(kc + p.start * kvh * d, p.k->data(), static_cast<size_t>(n) * row * sizeof(float));
  std::memcpy(vc + p.start * kvh * d, p.v->data(), static_cast<size_t>(n) * row * sizeof(float));
  const float* q = p.q->data_as<float>();
  float* out = p.out->data_as<float>();
  const float scale = p.scale;
  parallel_for(n * h, [&](int64_t ti) {
    const int64_t i = ti / h, hh = ti % h;
    std::vector<float> sc(kKeyTile), acc(static_cast<size_t>(d));
    const int64_t pos = p.start + i;
    const int64_t first = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
    attend_row(q + (i * h + hh) * d, kc, vc, kvh, hh / group, d, first, pos + 1, scale, sc.data(), acc.data(),
               out + (i * h + hh) * d);
  });
}

void attention_backward(const AttentionBackwardArgs& p) {
  if (p.q->dtype() == DType::BF16) {  // as the forward
    const Tensor dout = f32_of(*p.dout), q = f32_of(*p.q), k = f32_of(*p.k), v = f32_of(*p.v);
    const Tensor out = p.out_packed ? load_f32_columns(*p.out_packed, 0, q.dim(1) * q.dim(2)).reshape(q.shape()) : f32_of(*p.out);
    Tensor dq = f32_out(*p.dq, false), dk = f32_out(*p.dk, false);
    Tensor dv = p.dv_packed ? Tensor::empty(p.k->shape(), DType::F32) : f32_out(*p.dv, false);
    AttentionBackwardArgs a = p;
    a.dout = &dout; a.q = &q; a.k = &k; a.v = &v; a.out = &out; a.dq = &dq; a.dk = &dk; a.dv = &dv;
    a.out_packed = nullptr;
    a.dv_packed = nullptr;
    cpu::attention_backward(a);
    store_f32(dq, *p.dq);
    store_f32(dk, *p.dk);
    if (p.dv_packed) store_f32_columns(dv.reshape({k.dim(0), k.dim(1) * k.dim(2)}), *p.dv_packed, p.dv_col);
    else store_f32(dv, *p.dv);
    return;
  }
  const int64_t n = p.q->dim(0), h = p.q->dim(1), d = p.q->dim(2), kvh = p.k->dim(1);
  const int64_t group = h / kvh;
  const float* dout = p.dout->data_as<float>();
  const float* q = p.q->data_as<float>();
  const float* k = p.k->data_as<float>();
  const float* v = p.v->data_as<float>();
  const float* out = p.out->data_as<float>();
  const float* lse = p.lse->data_as<float>();
  float* dq = p.dq->data_as<float>();
  float* dk = p.dk->data_as<float>();
  float* dv = p.dv->data_as<float>();
  const int32_t* cu = p.cu_seqlens->data_as<int32_t>();
  const int64_t s = p.cu_seqlens->dim(0) - 1;
  const float scale = p.scale;
  std::memset(dq, 0, static_cast<size_t>(n * h * d) * sizeof(float));
  std::memset(dk, 0, static_cast<size_t>(n * kvh * d) * sizeof(float));
  std::memset(dv, 0, static_cast<size_t>(n * kvh * d) * sizeof(float));
  const int64_t ldq = h * d, ldk = kvh * d;
  const int64_t window = p.window;
  const RowKernels& rows = row_kernels_for_active_isa();
  // Blocks of kBlock queries x kBlock keys; the five products of a block are GEMMs
  // (calls from inside a pool task run on the calling thread).
  constexpr int64_t kBlock = 64;
  parallel_for(s * kvh, [&](int64_t ti) {
    const int64_t si = ti / kvh, kh = ti % kvh;
    const int64_t b = cu[si], e = cu[si + 1];
    if (e == b) return;
    std::vector<float> pm(kBlock * kBlock), dpm(kBlock * kBlock), delta(kBlock);
    auto F = [](const float* ptr, int64_t ld, bool trans) { return GemmOperand{ptr, DType::F32, ld, trans}; };
    // Every key block of the segment packed once for all query heads and query blocks:
    // Kᵀ (for S = Q Kᵀ), Vᵀ (for dP = dO Vᵀ) and K (for dQ += dS K).
    const int64_t nblocks = (e - b + kBlock - 1) / kBlock;
    std::vector<GemmPacked> kt(static_cast<size_t>(nblocks)), vt(static_cast<size_t>(nblocks)), kn(static_cast<size_t>(nblocks));
    for (int64_t jb = 0; jb < nblocks; ++jb) {
      const int64_t j0 = b + jb * kBlock, bk = std::min<int64_t>(kBlock, e - j0);
      const float* kb = k + (j0 * kvh + kh) * d;
      kt[static_cast<size_t>(jb)].pack_b(d, bk, F(kb, ldk, true));
      vt[static_cast<size_t>(jb)].pack_b(d, bk, F(v + (j0 * kvh + kh) * d, ldk, true));
      kn[static_cast<size_t>(jb)].pack_b(bk, d, F(kb, ldk, false));
    }
    GemmPacked qa, doa, qb_, dob_, pt, dst, ds;  // per query block: Q, dO (left and right); per pair: Pᵀ, dSᵀ, dS
    for (int64_t hh = kh * group; hh < (kh + 1) * group; ++hh) {
      for (int64_t i0 = b; i0 < e; i0 += kBlock) {
        const int64_t bq = std::min<int64_t>(kBlock, e - i0);
        const float* qb = q + (i0 * h + hh) * d;
        const float* dob = dout + (i0 * h + hh) * d;
        for (int64_t i = 0; i < bq; ++i) delta[static_cast<size_t>(i)] = dot(dob + i * ldq, out + ((i0 + i) * h + hh) * d, d);
        qa.pack_a(bq, d, F(qb, ldq, false), scale);
        doa.pack_a(bq, d, F(dob, ldq, false));
        qb_.pack_b(bq, d, F(qb, ldq, false));
        dob_.pack_b(bq, d, F(dob, ldq, false));
        for (int64_t j0 = b; j0 < i0 + bq; j0 += kBlock) {
          const int64_t bk = std::min<int64_t>(kBlock, e - j0);
          const size_t jb = static_cast<size_t>((j0 - b) / kBlock);
          if (window > 0 && j0 + bk - 1 <= i0 - window) continue;  // every key of the block is out of every row's window
          gemm_packed(qa, kt[jb], 0.0f, pm.data(), bk);    // S = scale · Q Kᵀ  ->  P = exp(S − lse), causal
          gemm_packed(doa, vt[jb], 0.0f, dpm.data(), bk);  // dP = dO Vᵀ
          for (int64_t i = 0; i < bq; ++i) {
            float* pr = pm.data() + i * bk;
            float* dr = dpm.data() + i * bk;
            // keys j of this row: causal (j <= i) and inside the window (i - j < W)
            const int64_t jmax = std::min<int64_t>(bk, i0 + i - j0 + 1);
            const int64_t jmin = window > 0 ? std::min<int64_t>(jmax, std::max<int64_t>(0, i0 + i - window + 1 - j0)) : 0;
            for (int64_t j = 0; j < jmin; ++j) pr[j] = 0.0f;
            if (jmax > jmin) rows.exp(pr + jmin, pr + jmin, jmax - jmin, lse[(i0 + i) * h + hh]);
            for (int64_t j = std::max<int64_t>(jmax, 0); j < bk; ++j) pr[j] = 0.0f;
            const float di = delta[static_cast<size_t>(i)];
            for (int64_t j = 0; j < bk; ++j) dr[j] = pr[j] * (dr[j] - di) * scale;  // dS
          }
          // dV += Pᵀ dO,  dK += dSᵀ Q,  dQ += dS K
          pt.pack_a(bk, bq, F(pm.data(), bk, true));
          gemm_packed(pt, dob_, 1.0f, dv + (j0 * kvh + kh) * d, ldk);
          dst.pack_a(bk, bq, F(dpm.data(), bk, true));
          gemm_packed(dst, qb_, 1.0f, dk + (j0 * kvh + kh) * d, ldk);
          ds.pack_a(bq, bk, F(dpm.data(), bk, false));
          gemm_packed(ds, kn[jb], 1.0f, dq + (i0 * h + hh) * d, ldq);
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace instill
