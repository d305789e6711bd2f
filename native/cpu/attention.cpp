// CPU causal GQA attention over packed segments (see ops/attention.h).
//
// Forward: one task per (segment, query head, block of 32 query rows). Each query
// row walks its keys in tiles of 64 with an online softmax: scores of the tile,
// new running max m, rescale of the running sum l and accumulator by exp(m_old − m),
// then accumulate. Extra memory per task: one tile of scores and one D-vector.
// Backward: one task per (segment, KV head); the task owns dk/dv rows of that KV head
// in that segment and the dq rows of its query heads, so no two tasks write the same
// memory. Probabilities are recomputed from the saved lse. Dot products in f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {

constexpr int64_t kQueryBlock = 32;
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
  int64_t head;
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
  const int64_t n = p.q->dim(0), h = p.q->dim(1), d = p.q->dim(2), kvh = p.k->dim(1);
  const int64_t group = h / kvh;
  const float* q = p.q->data_as<float>();
  const float* k = p.k->data_as<float>();
  const float* v = p.v->data_as<float>();
  float* out = p.out->data_as<float>();
  float* lse = p.lse->data_as<float>();
  const int32_t* cu = p.cu_seqlens->data_as<int32_t>();
  const int64_t s = p.cu_seqlens->dim(0) - 1;
  const float scale = p.scale;
  (void)n;
  std::vector<Task> tasks;
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t r = cu[si]; r < cu[si + 1]; r += kQueryBlock) {
        tasks.push_back(Task{cu[si], cu[si + 1], hh, r, std::min<int64_t>(r + kQueryBlock, cu[si + 1])});
      }
    }
  }
  parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t ti) {
    const Task& t = tasks[static_cast<size_t>(ti)];
    const int64_t kh = t.head / group;
    std::vector<float> sc(kKeyTile), acc(static_cast<size_t>(d));
    for (int64_t i = t.q0; i < t.q1; ++i) {
      lse[i * h + t.head] = attend_row(q + (i * h + t.head) * d, k, v, kvh, kh, d, t.begin, i + 1, scale, sc.data(),
                                       acc.data(), out + (i * h + t.head) * d);
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
    attend_row(q + (i * h + hh) * d, kc, vc, kvh, hh / group, d, 0, p.start + i + 1, scale, sc.data(), acc.data(),
               out + (i * h + hh) * d);
  });
}

void attention_backward(const AttentionBackwardArgs& p) {
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
  parallel_for(s * kvh, [&](int64_t ti) {
    const int64_t si = ti / kvh, kh = ti % kvh;
    const int64_t b = cu[si], e = cu[si + 1];
    for (int64_t hh = kh * group; hh < (kh + 1) * group; ++hh) {
      for (int64_t i = b; i < e; ++i) {
        const float* qi = q + (i * h + hh) * d;
        const float* doi = dout + (i * h + hh) * d;
        float* dqi = dq + (i * h + hh) * d;
        const float delta = dot(doi, out + (i * h + hh) * d, d);
        const float li = lse[i * h + hh];
        for (int64_t j = b; j <= i; ++j) {
          const float* kj = k + (j * kvh + kh) * d;
          const float* vj = v + (j * kvh + kh) * d;
          const float pij = std::exp(scale * dot(qi, kj, d) - li);
          const float ds = pij * (dot(doi, vj, d) - delta) * scale;
          float* dkj = dk + (j * kvh + kh) * d;
          float* dvj = dv + (j * kvh + kh) * d;
          for (int64_t c = 0; c < d; ++c) {
            dqi[c] += ds * kj[c];
            dkj[c] += ds * qi[c];
            dvj[c] += pij * doi[c];
          }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace instill
