// native/cuda/lora_group.cu's host code, run on the fake device (fake_device.cpp), against native/cuda/
// lora_linear.cu's member by member (the path GPU runs verified, bench/RESULTS.md) and against the LoRA math in
// double. Both CUDA paths run here through the same products and packs, so where they differ the difference is
// the host code's: an operand at the wrong offset, a leading dimension, a transposition, a missed scale or beta.
// First, the CPU backend's lora_group with packed operands against itself on plain ones (cpu_packed_operands).
// Prints one line a case; exits 1 on any failure.
//
// Tolerances: y, u, dA, dB: the same sums of the same rounded operands (the zero blocks add exact zeros), so
// 1e-6 of the largest element (double sums in both; only f32 rounding of the outputs is shared). dx: the member
// by member path rounds dx after each member (beta 1), lora_group once: 1e-5 relative in f32, a bf16 step (1e-2)
// in bf16. Against the double-precision math (no bf16 rounding at all): 3e-2 of the largest element.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cuda/gemm.h"
#include "ops/lora_group.h"
#include "ops/lora_linear.h"
#include "runtime/dtype.h"
#include "test/cuda_host/fake_device.h"

namespace instill {
namespace cuda {
void lora_linear_forward(const LoraLinearForwardArgs& p);
void lora_linear_backward(const LoraLinearBackwardArgs& p);
void lora_group_forward(const LoraGroupForwardArgs& p);
void lora_group_backward(const LoraGroupBackwardArgs& p);
extern std::atomic<int> fake_side_work;  // fake_device.cpp: products and packs queued in SideWorks
extern std::atomic<int> fake_products;   // fake_device.cpp: gemm() calls
}  // namespace cuda
}  // namespace instill

using namespace instill;

namespace {

uint64_t rng_state = 0x9e3779b97f4a7c15ull;
float uniform() {  // [-1, 1)
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return static_cast<float>((rng_state >> 40) * (1.0 / (1ull << 24)) * 2.0 - 1.0);
}


// A "device" tensor of random values (scale), and the values it holds as floats (bf16-rounded where bf16).
struct T {
  Tensor t;
  std::vector<float> v;
};
T make(Shape shape, DType dt, float scale) {
  T r;
  r.t = Tensor::empty(shape, dt, Device::CUDA);
  r.v.resize(static_cast<size_t>(r.t.numel()));
  for (size_t i = 0; i < r.v.size(); ++i) {
    const float x = uniform() * scale;
    if (dt == DType::BF16) {
      const uint16_t b = f32_to_bf16(x);
      r.v[i] = bf16_to_f32(b);
      r.t.data_as<uint16_t>()[i] = b;
    } else {
      r.v[i] = x;
      r.t.data_as<float>()[i] = x;
    }
  }
  return r;
}
T copy_of(const T& a) {
  T r;
  r.t = Tensor::empty(a.t.shape(), a.t.dtype(), Device::CUDA);
  std::memcpy(r.t.data(), a.t.data(), a.t.nbytes());
  r.v = a.v;
  return r;
}
std::vector<float> values(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype() == DType::BF16) {
      out[i] = bf16_to_f32(t.data_as<uint16_t>()[i]);
    } else {
      out[i] = t.data_as<float>()[i];
    }
  }
  return out;
}

int failures = 0;
// max |got − want| / max |want| (NaN anywhere: a failure)
void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double tol) {
  double diff = 0, scale = 0;
  bool nan = got.size() != want.size();
  for (size_t i = 0; i < got.size() && !nan; ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) nan = true;
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  const double rel = scale > 0 ? diff / scale : diff;
  if (nan || rel > tol) {
    std::printf("    FAIL %s: %s (tolerance %.1e)\n", what.c_str(), nan ? "NaN, or sizes differ" : std::to_string(rel).c_str(), tol);
    ++failures;
  }
}

struct Case {
  const char* name;
  int64_t n, in, r;
  std::vector<int64_t> out;  // per member
  DType w = DType::BF16, x = DType::F32, y = DType::F32, dx = DType::F32;
  bool bias = false, kept = true, reuse_kept = false, accumulate = false, accumulate_dx = false;
  bool x_packed = false;  // x given in the first IN columns of a wider bf16 buffer (x bf16)
  float s = 1.75f;        // LoRA's scale (1.75: no power of two, so `fewer_packs` packs as before)
  // INSTILL_CUDA_NEXT `fewer_packs`: the case runs twice from the same inputs, with the piece and without, and every
  // output of both paths must have the same bits (on the fake device a product's sums are in double: where the
  // piece reads bf16(s·g) with alpha 1 instead of bf16(g) with alpha s, s a power of two, nothing else differs)
  bool fewer = false;
  // x_packed's s·u columns overwritten with NaN between the forward and the backward, which is told so (su_packed
  // false: a model whose layers share their packed x): nothing may read them
  bool su_gone = false;
  // the forward told u_unused (with x_packed): u's product writes s·u into x_packed itself under fewer_packs (s a power
  // of two), u left as allocated (NaN on the fake device: checked), so u is not compared
  bool u_unused = false;
};

// Every output of a run, in order, for the fewer_packs cases' comparison of bits.
using Record = std::vector<std::vector<float>>;

void run_once(const Case& c, Record* record) {
  const int m = static_cast<int>(c.out.size());
  const float s = c.s;
  const T x = make({c.n, c.in}, c.x, 1.f);
  std::vector<T> w, a, b, bias, dy, da0, db0;
  for (int i = 0; i < m; ++i) {
    w.push_back(make({c.out[i], c.in}, c.w, 0.3f));
    a.push_back(make({c.r, c.in}, DType::F32, 0.3f));
    b.push_back(make({c.out[i], c.r}, DType::F32, 0.3f));
    bias.push_back(make({c.out[i]}, DType::F32, 0.5f));
    dy.push_back(make({c.n, c.out[i]}, c.dx, 1.f));  // dy in the activations' dtype, as the model has it
    da0.push_back(make({c.r, c.in}, DType::F32, 0.1f));
    db0.push_back(make({c.out[i], c.r}, DType::F32, 0.1f));
  }
  const T dx0 = make({c.n, c.in}, c.dx, 0.5f);

  // member by member (lora_linear.cu), each with its own u; dx written by the first, added by the others
  std::vector<Tensor> y_ref, u_ref;
  std::vector<T> da_ref, db_ref;
  T dx_ref = copy_of(dx0);
  for (int i = 0; i < m; ++i) {
    y_ref.push_back(Tensor::empty({c.n, c.out[i]}, c.y, Device::CUDA));
    u_ref.push_back(Tensor::empty({c.n, c.r}, DType::F32, Device::CUDA));
    cuda::lora_linear_forward(LoraLinearForwardArgs{&x.t, &w[i].t, c.bias ? &bias[i].t : nullptr, &a[i].t, &b[i].t, s,
                                                    &y_ref[i], &u_ref[i]});
    da_ref.push_back(copy_of(da0[i]));
    db_ref.push_back(copy_of(db0[i]));
    cuda::lora_linear_backward(LoraLinearBackwardArgs{&dy[i].t, &x.t, &w[i].t, &a[i].t, &b[i].t, &u_ref[i], s, &dx_ref.t,
                                                      &da_ref[i].t, &db_ref[i].t, c.accumulate, i > 0 || c.accumulate_dx});
  }

  // lora_group.cu
  int64_t sum_out = 0;
  for (int64_t o : c.out) sum_out += o;
  const int64_t ldk = (c.in + m * c.r + 7) / 8 * 8 + (c.reuse_kept ? 8 : 0);  // wider than needed: ld is the kept's own
  Tensor kept = c.kept ? Tensor::empty({sum_out + m * c.r, ldk}, DType::BF16, Device::CUDA) : Tensor();
  std::vector<Tensor> y(static_cast<size_t>(m));
  Tensor u = Tensor::empty({c.n, m * c.r}, DType::F32, Device::CUDA);
  LoraGroupForwardArgs f;
  // x_packed: x's bf16 values in the first IN columns of a buffer wider than the op needs (its own ld), poisoned
  Tensor xp;
  if (c.x_packed) {
    const int64_t ld = (c.in + m * c.r + 7) / 8 * 8 + 16;
    xp = Tensor::empty({c.n, ld}, DType::BF16, Device::CUDA);
    for (int64_t t = 0; t < c.n; ++t)
      std::memcpy(xp.data_as<uint16_t>() + t * ld, x.t.data_as<uint16_t>() + t * c.in, sizeof(uint16_t) * static_cast<size_t>(c.in));
  }
  f.x = c.x_packed ? nullptr : &x.t;
  f.x_packed = c.x_packed ? &xp : nullptr;
  f.u_unused = c.u_unused;
  f.m = m;
  f.scale = s;
  f.u = &u;
  for (int i = 0; i < m; ++i) {
    y[static_cast<size_t>(i)] = Tensor::empty({c.n, c.out[i]}, c.y, Device::CUDA);
    f.w[i] = &w[i].t;
    f.bias[i] = c.bias ? &bias[i].t : nullptr;
    f.a[i] = &a[i].t;
    f.b[i] = &b[i].t;
    f.y[i] = &y[static_cast<size_t>(i)];
  }
  if (c.kept) f.kept = &kept;
  if (c.reuse_kept) {  // an earlier pass with other adapters wrote W in; this one writes only B and A
    std::vector<T> a2, b2;
    for (int i = 0; i < m; ++i) {
      a2.push_back(make({c.r, c.in}, DType::F32, 0.3f));
      b2.push_back(make({c.out[i], c.r}, DType::F32, 0.3f));
    }
    LoraGroupForwardArgs f2 = f;
    for (int i = 0; i < m; ++i) {
      f2.a[i] = &a2[static_cast<size_t>(i)].t;
      f2.b[i] = &b2[static_cast<size_t>(i)].t;
    }
    cuda::lora_group_forward(f2);
    f.kept_has_w = true;
  }
  cuda::lora_group_forward(f);
  std::vector<T> da, db;
  T dx = copy_of(dx0);
  LoraGroupBackwardArgs bw;
  bw.x = c.x_packed ? nullptr : &x.t;
  bw.x_packed = c.x_packed ? &xp : nullptr;
  bw.su_packed = c.x_packed && !c.su_gone;  // (the forward just wrote s·u into xp's columns IN..)
  if (c.su_gone) {
    const int64_t ld = xp.dim(1);
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t j = c.in; j < ld; ++j) xp.data_as<uint16_t>()[t * ld + j] = 0x7FC0;  // bf16 NaN
  }
  bw.m = m;
  bw.scale = s;
  bw.u = &u;
  bw.dx = &dx.t;
  bw.accumulate = c.accumulate;
  bw.accumulate_dx = c.accumulate_dx;
  if (c.kept) bw.kept = &kept;
  for (int i = 0; i < m; ++i) {
    da.push_back(copy_of(da0[i]));
    db.push_back(copy_of(db0[i]));
  }
  for (int i = 0; i < m; ++i) {
    bw.dy[i] = &dy[i].t;
    bw.w[i] = &w[i].t;
    bw.a[i] = &a[i].t;
    bw.b[i] = &b[i].t;
    bw.da[i] = &da[i].t;
    bw.db[i] = &db[i].t;
  }
  const int products_before = cuda::fake_products;
  cuda::lora_group_backward(bw);
  const int products = cuda::fake_products - products_before;
  // again without dx (the model's first layer, without full fine-tuning): the same dA and dB, bit for bit, and fewer
  // products (no dx product)
  if (!c.accumulate_dx) {
    std::vector<T> da2, db2;
    for (int i = 0; i < m; ++i) {
      da2.push_back(copy_of(da0[i]));
      db2.push_back(copy_of(db0[i]));
    }
    LoraGroupBackwardArgs bw2 = bw;
    bw2.dx = nullptr;
    for (int i = 0; i < m; ++i) {
      bw2.da[i] = &da2[i].t;
      bw2.db[i] = &db2[i].t;
    }
    const int before2 = cuda::fake_products;
    cuda::lora_group_backward(bw2);
    if (products > 0 && cuda::fake_products - before2 >= products) {  // (none at all with no rows)
      std::printf("    FAIL without dx: %d products, as many as with it (%d)\n", cuda::fake_products - before2, products);
      ++failures;
    }
    for (int i = 0; i < m; ++i) {
      const std::string mi = "member " + std::to_string(i) + " without dx";
      const auto same_bits = [](const Tensor& p, const Tensor& q) {
        const std::vector<float> pv = values(p), qv = values(q);
        return pv.size() == qv.size() && std::memcmp(pv.data(), qv.data(), pv.size() * sizeof(float)) == 0;
      };
      if (!same_bits(da2[i].t, da[i].t) || !same_bits(db2[i].t, db[i].t)) {
        std::printf("    FAIL %s: dA or dB differs from the backward with dx\n", mi.c_str());
        ++failures;
      }
    }
  }

  const double same = 1e-6, dx_tol = c.dx == DType::BF16 ? 1e-2 : 1e-5;
  const std::vector<float> uv = values(u);
  for (int i = 0; i < m; ++i) {
    const std::string mi = "member " + std::to_string(i);
    expect_close(mi + " y", values(y[static_cast<size_t>(i)]), values(y_ref[static_cast<size_t>(i)]), c.y == DType::BF16 ? 1e-2 : same);
    std::vector<float> ui(static_cast<size_t>(c.n * c.r));
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t j = 0; j < c.r; ++j) ui[static_cast<size_t>(t * c.r + j)] = uv[static_cast<size_t>(t * m * c.r + i * c.r + j)];
    if (!c.u_unused) expect_close(mi + " u (its columns)", ui, values(u_ref[static_cast<size_t>(i)]), same);
    expect_close(mi + " dA", values(da[i].t), values(da_ref[i].t), same);
    expect_close(mi + " dB", values(db[i].t), values(db_ref[i].t), same);
  }
  expect_close("dx", values(dx.t), values(dx_ref.t), dx_tol);

  // the LoRA math in double, nothing rounded: y_i = x W_iᵀ + bias_i + s (x A_iᵀ) B_iᵀ, dx = Σ dy_i W_i + s g_i A_i
  std::vector<float> dx_math = c.accumulate_dx ? dx0.v : std::vector<float>(dx0.v.size(), 0.f);
  for (int i = 0; i < m; ++i) {
    const int64_t o = c.out[i];
    std::vector<double> uu(static_cast<size_t>(c.n * c.r), 0.0), g(static_cast<size_t>(c.n * c.r), 0.0);
    std::vector<float> yv(static_cast<size_t>(c.n * o)), dav(static_cast<size_t>(c.r * c.in)), dbv(static_cast<size_t>(o * c.r));
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t j = 0; j < c.r; ++j)
        for (int64_t k = 0; k < c.in; ++k) uu[static_cast<size_t>(t * c.r + j)] += double(x.v[static_cast<size_t>(t * c.in + k)]) * a[i].v[static_cast<size_t>(j * c.in + k)];
    for (int64_t t = 0; t < c.n; ++t) {
      for (int64_t oo = 0; oo < o; ++oo) {
        double acc = c.bias ? bias[i].v[static_cast<size_t>(oo)] : 0.0;
        for (int64_t k = 0; k < c.in; ++k) acc += double(x.v[static_cast<size_t>(t * c.in + k)]) * w[i].v[static_cast<size_t>(oo * c.in + k)];
        for (int64_t j = 0; j < c.r; ++j) acc += s * uu[static_cast<size_t>(t * c.r + j)] * b[i].v[static_cast<size_t>(oo * c.r + j)];
        yv[static_cast<size_t>(t * o + oo)] = static_cast<float>(acc);
        for (int64_t j = 0; j < c.r; ++j) g[static_cast<size_t>(t * c.r + j)] += double(dy[i].v[static_cast<size_t>(t * o + oo)]) * b[i].v[static_cast<size_t>(oo * c.r + j)];
      }
    }
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t k = 0; k < c.in; ++k) {
        double acc = 0;
        for (int64_t oo = 0; oo < o; ++oo) acc += double(dy[i].v[static_cast<size_t>(t * o + oo)]) * w[i].v[static_cast<size_t>(oo * c.in + k)];
        for (int64_t j = 0; j < c.r; ++j) acc += s * g[static_cast<size_t>(t * c.r + j)] * a[i].v[static_cast<size_t>(j * c.in + k)];
        dx_math[static_cast<size_t>(t * c.in + k)] += static_cast<float>(acc);
      }
    for (int64_t j = 0; j < c.r; ++j)
      for (int64_t k = 0; k < c.in; ++k) {
        double acc = c.accumulate ? da0[i].v[static_cast<size_t>(j * c.in + k)] : 0.0;
        for (int64_t t = 0; t < c.n; ++t) acc += s * g[static_cast<size_t>(t * c.r + j)] * x.v[static_cast<size_t>(t * c.in + k)];
        dav[static_cast<size_t>(j * c.in + k)] = static_cast<float>(acc);
      }
    for (int64_t oo = 0; oo < o; ++oo)
      for (int64_t j = 0; j < c.r; ++j) {
        double acc = c.accumulate ? db0[i].v[static_cast<size_t>(oo * c.r + j)] : 0.0;
        for (int64_t t = 0; t < c.n; ++t) acc += s * double(dy[i].v[static_cast<size_t>(t * o + oo)]) * uu[static_cast<size_t>(t * c.r + j)];
        dbv[static_cast<size_t>(oo * c.r + j)] = static_cast<float>(acc);
      }
    const std::string mi = "member " + std::to_string(i) + " (against the math)";
    expect_close(mi + " y", values(y[static_cast<size_t>(i)]), yv, 3e-2);
    expect_close(mi + " dA", values(da[i].t), dav, 3e-2);
    expect_close(mi + " dB", values(db[i].t), dbv, 3e-2);
  }
  expect_close("dx (against the math)", values(dx.t), dx_math, 3e-2);
  if (!record) return;
  for (int i = 0; i < m; ++i) {
    for (const Tensor* t : {&y[static_cast<size_t>(i)], &y_ref[static_cast<size_t>(i)], &u_ref[static_cast<size_t>(i)],
                            &da[i].t, &db[i].t, &da_ref[i].t, &db_ref[i].t})
      record->push_back(values(*t));
  }
  for (const Tensor* t : {&u, &dx.t, &dx_ref.t})
    if (t != &u || !c.u_unused) record->push_back(values(*t));
  if (c.u_unused) {  // whether u was written: NaN (the fake's poison) where the product wrote s·u into x_packed instead
    size_t nan = 0;
    for (float v : uv) nan += std::isnan(v) ? 1 : 0;
    record->push_back({static_cast<float>(nan == uv.size() ? 1 : nan == 0 ? 0 : -1)});
  }
}

// Every output of a run without a piece and with it: the same bits.
void expect_same_bits(const char* piece, const Record& without, const Record& with) {
  size_t differ = 0;
  for (size_t k = 0; k < without.size() && k < with.size(); ++k)
    if (without[k].size() != with[k].size() ||
        std::memcmp(without[k].data(), with[k].data(), without[k].size() * sizeof(float)) != 0)
      ++differ;
  if (differ || without.size() != with.size()) {
    std::printf("    FAIL %s: %zu of %zu outputs differ in bits from the run without it\n", piece, differ, without.size());
    ++failures;
  }
}

void run(const Case& c) {
  if (!c.fewer) return run_once(c, nullptr);
  const uint64_t seed = rng_state;  // the same inputs for both runs
  Record without, with;
  setenv("INSTILL_CUDA_NEXT", "default,-fewer_packs", 1);
  run_once(c, &without);
  rng_state = seed;
  setenv("INSTILL_CUDA_NEXT", "default,fewer_packs", 1);
  run_once(c, &with);
  unsetenv("INSTILL_CUDA_NEXT");
  if (c.u_unused) {  // u written without the piece (0: no NaN), left unwritten with it where s is a power of two (1)
    int e = 0;
    const float want = std::fabs(std::frexp(c.s, &e)) == 0.5f ? 1.f : 0.f;
    if (without.back()[0] != 0.f || with.back()[0] != want) {
      std::printf("    FAIL u_unused: u %s without fewer_packs, %s with it (expected %s)\n", without.back()[0] == 0.f ? "written" : "not all written",
                  with.back()[0] == 1.f ? "unwritten" : with.back()[0] == 0.f ? "written" : "partly written", want == 1.f ? "unwritten" : "written");
      ++failures;
    }
    without.pop_back();
    with.pop_back();
  }
  expect_same_bits("fewer_packs", without, with);
}

// The CPU backend's lora_group with its packed operands (ops/lora_group.h: x in the first IN columns of x_packed,
// member i's dy in its columns of dy_packed; the model hands them over only on a GPU, so nothing else runs this):
// the bits of the same op on the plain operands, the packed buffers' other columns NaN-poisoned (never read).
void cpu_packed_operands() {
  const int m = 3;
  const int64_t n = 19, in = 28, r = 3, outs[m] = {12, 6, 6}, sum_out = 24;
  const float s = 1.25f;
  auto cpu_tensor = [](Shape shape, DType dt, float scale) {
    Tensor t = Tensor::empty(shape, dt, Device::CPU);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float v = uniform() * scale;
      if (dt == DType::BF16) t.data_as<uint16_t>()[i] = f32_to_bf16(v);
      else t.data_as<float>()[i] = v;
    }
    return t;
  };
  auto copy = [](const Tensor& t) {
    Tensor c = Tensor::empty(t.shape(), t.dtype(), Device::CPU);
    std::memcpy(c.data(), t.data(), t.nbytes());
    return c;
  };
  const Tensor x = cpu_tensor({n, in}, DType::BF16, 1.f);
  Tensor w[m], a[m], b[m], dy[m], da0[m], db0[m];
  for (int i = 0; i < m; ++i) {
    w[i] = cpu_tensor({outs[i], in}, DType::BF16, 0.3f);
    a[i] = cpu_tensor({r, in}, DType::F32, 0.3f);
    b[i] = cpu_tensor({outs[i], r}, DType::F32, 0.3f);
    dy[i] = cpu_tensor({n, outs[i]}, DType::BF16, 1.f);
    da0[i] = cpu_tensor({r, in}, DType::F32, 0.1f);
    db0[i] = cpu_tensor({outs[i], r}, DType::F32, 0.1f);
  }
  const Tensor dx0 = cpu_tensor({n, in}, DType::BF16, 0.5f);
  // the packed buffers: x (dy_1 | dy_2 | dy_3) in their first columns, NaN after
  const int64_t ldx = in + m * r + 5, ldd = sum_out + m * r + 3;
  Tensor xp = Tensor::empty({n, ldx}, DType::BF16, Device::CPU), dyp = Tensor::empty({n, ldd}, DType::BF16, Device::CPU);
  for (int64_t i = 0; i < xp.numel(); ++i) xp.data_as<uint16_t>()[i] = 0x7FC0;
  for (int64_t i = 0; i < dyp.numel(); ++i) dyp.data_as<uint16_t>()[i] = 0x7FC0;
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(xp.data_as<uint16_t>() + t * ldx, x.data_as<uint16_t>() + t * in, sizeof(uint16_t) * static_cast<size_t>(in));
    int64_t off = 0;
    for (int i = 0; i < m; ++i) {
      std::memcpy(dyp.data_as<uint16_t>() + t * ldd + off, dy[i].data_as<uint16_t>() + t * outs[i],
                  sizeof(uint16_t) * static_cast<size_t>(outs[i]));
      off += outs[i];
    }
  }
  struct Out {
    Tensor y[m], u, dx, da[m], db[m];
  };
  auto pass = [&](bool packed, bool accumulate) {
    Out o;
    o.u = Tensor::empty({n, m * r}, DType::F32, Device::CPU);
    LoraGroupForwardArgs f;
    f.x = packed ? nullptr : &x;
    f.x_packed = packed ? &xp : nullptr;
    f.m = m;
    f.scale = s;
    f.u = &o.u;
    LoraGroupBackwardArgs bw;
    bw.x = f.x;
    bw.x_packed = f.x_packed;
    bw.m = m;
    bw.scale = s;
    bw.u = &o.u;
    o.dx = copy(dx0);
    bw.dx = &o.dx;
    bw.accumulate = accumulate;
    bw.accumulate_dx = accumulate;
    bw.dy_packed = packed ? &dyp : nullptr;
    for (int i = 0; i < m; ++i) {
      o.y[i] = Tensor::empty({n, outs[i]}, DType::BF16, Device::CPU);
      o.da[i] = copy(da0[i]);
      o.db[i] = copy(db0[i]);
      f.w[i] = bw.w[i] = &w[i];
      f.bias[i] = nullptr;
      f.a[i] = bw.a[i] = &a[i];
      f.b[i] = bw.b[i] = &b[i];
      f.y[i] = &o.y[i];
      bw.dy[i] = packed ? nullptr : &dy[i];
      bw.da[i] = &o.da[i];
      bw.db[i] = &o.db[i];
    }
    cpu::lora_group_forward(f);
    cpu::lora_group_backward(bw);
    return o;
  };
  const auto same = [](const std::string& what, const Tensor& got, const Tensor& want) {
    if (got.nbytes() != want.nbytes() || std::memcmp(got.data(), want.data(), got.nbytes()) != 0) {
      std::printf("    FAIL the CPU's lora_group, packed operands: %s differs from the plain operands' bits\n", what.c_str());
      ++failures;
    }
  };
  const int before = failures;
  for (bool accumulate : {false, true}) {
    const Out plain = pass(false, accumulate), packed = pass(true, accumulate);
    const std::string how = accumulate ? " (accumulating)" : "";
    same("u" + how, packed.u, plain.u);
    same("dx" + how, packed.dx, plain.dx);
    for (int i = 0; i < m; ++i) {
      const std::string mi = "member " + std::to_string(i) + " ";
      same(mi + "y" + how, packed.y[i], plain.y[i]);
      same(mi + "dA" + how, packed.da[i], plain.da[i]);
      same(mi + "dB" + how, packed.db[i], plain.db[i]);
    }
  }
  std::printf("%s the CPU's lora_group: x_packed and dy_packed give the plain operands' bits\n", failures == before ? "ok  " : "FAIL");
}

}  // namespace

int main() {
  cpu_packed_operands();
  const std::vector<Case> cases = {
      {"q, k, v: three members, widths not a multiple of 8", 37, 52, 4, {44, 20, 20}},
      {"gate, up: two members, bias, bf16 x, y and dy/dx", 29, 40, 3, {66, 66}, DType::BF16, DType::BF16, DType::BF16, DType::BF16, true},
      {"one member", 13, 24, 5, {31}},
      {"accumulating dA, dB and dx (+=)", 21, 33, 4, {17, 9, 12}, DType::BF16, DType::F32, DType::F32, DType::F32, false, true, false, true, true},
      {"bf16 dx added to (accumulate_dx), f32 y", 19, 48, 4, {24, 8}, DType::BF16, DType::BF16, DType::F32, DType::BF16, false, true, false, false, true},
      {"a kept matrix from an earlier pass (kept_has_w): W stays, B and A rewritten; a wider ld", 23, 30, 2, {14, 10, 6}, DType::BF16, DType::F32, DType::F32, DType::F32, true, true, true},
      {"no kept matrix (the op makes its own, forward and backward)", 17, 26, 3, {12, 12}, DType::BF16, DType::F32, DType::F32, DType::F32, false, false},
      {"f32 weights (TF32 products: the members one by one)", 15, 20, 3, {10, 6, 6}, DType::F32, DType::F32, DType::F32, DType::F32, true, false},
      {"no rows (N = 0)", 0, 16, 2, {8, 8}},
      {"x_packed: x in a wider packed buffer (the norm wrote it), bf16", 27, 36, 3, {20, 12, 12}, DType::BF16, DType::BF16,
       DType::BF16, DType::BF16, true, true, false, false, false, true},
      {"x_packed without a kept matrix, accumulating", 21, 44, 2, {16, 16}, DType::BF16, DType::BF16, DType::F32,
       DType::F32, false, false, false, true, true, true},
      {"fewer_packs, s = 2: bf16 x, three members, s·g written by g's product", 37, 52, 4, {44, 20, 20}, DType::BF16,
       DType::BF16, DType::BF16, DType::BF16, true, true, false, false, false, false, 2.f, true},
      {"fewer_packs, s = 0.5: x_packed, accumulating (dA per member from s·g's columns)", 21, 44, 3, {16, 16}, DType::BF16,
       DType::BF16, DType::F32, DType::F32, false, true, false, true, true, true, 0.5f, true},
      {"fewer_packs, s = 4: x_packed without a kept matrix", 19, 36, 2, {12, 20}, DType::BF16, DType::BF16, DType::BF16,
       DType::BF16, false, false, false, false, false, true, 4.f, true},
      {"fewer_packs, s = 1.75 (no power of two): g packed as before", 23, 40, 3, {18, 10}, DType::BF16, DType::BF16,
       DType::F32, DType::F32, false, true, false, false, false, false, 1.75f, true},
      {"fewer_packs, s = 2, f32 x: dA stays a TF32 product on f32 g", 17, 28, 4, {12, 8, 8}, DType::BF16, DType::F32,
       DType::F32, DType::F32, false, true, false, false, false, false, 2.f, true},
      {"fewer_packs, s = 2: x_packed's s·u overwritten after the forward (su_packed false): dB reads u", 25, 32, 3,
       {20, 12, 12}, DType::BF16, DType::BF16, DType::F32, DType::F32, false, true, false, false, false, true, 2.f, true, true},
      {"fewer_packs, s = 2: u_unused, x_packed: s·u written by u's product, u left unwritten", 27, 40, 3, {16, 8, 8},
       DType::BF16, DType::BF16, DType::BF16, DType::BF16, false, true, false, false, false, true, 2.f, true, false, true},
      {"fewer_packs, s = 1.5: u_unused, x_packed: u written (no power of two)", 19, 32, 2, {12, 12}, DType::BF16,
       DType::BF16, DType::F32, DType::F32, false, true, false, true, false, true, 1.5f, true, false, true},
  };
  return cuda::fake::run_cases(cases, failures, run);
}
