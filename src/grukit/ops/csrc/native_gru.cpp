// grukit's own fused GRU kernel: one layer, one direction (left to right), float32, float64 or bfloat16, any CPU.
//
//   x (T, B, I), h0 (B, H), torch-layout weights w_ih (3H, I), w_hh (3H, H), biases (3H,) (gates r, z, n)
//   -> y (T, B, H) and, when training, the per-step values the backward needs: (T, B, 4H) holding
//      r, z, n and g = W_hn h + b_hn (reset-after) or r ⊙ h (reset-before).
//
// Forward: the input projection for all steps is one GEMM; each step is one GEMM (two for reset-before) plus
// one fused loop over the gate math. Backward (BPTT) walks the steps back computing the gate gradients with one
// GEMM per step for dh; dW_ih, dW_hh and dx are each one large GEMM after the loop.
//
// bfloat16: every GEMM takes bf16 operands (ATen sends them to oneDNN's matmul: AMX or AVX-512 BF16, float32
// accumulation) and gives bf16; the gate math converts to float32 and runs there; states, outputs, the saved
// values and the gate gradients are stored in bf16, as oneDNN's bf16 RNN stores them. The bias gradients and
// dL/dh0 come back in float32. The step kernel (single steps) runs float32 and float64 only.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>
#include <cstring>

namespace {

// σ(v) = (1 + tanh(v / 2)) / 2: one tanh, which the compiler vectorizes (glibc's libmvec) where it cannot
// vectorize exp followed by a division as well.
template <typename T>
inline T sigmoid(T v) {
  return T(0.5) + T(0.5) * std::tanh(T(0.5) * v);
}

// Rows of the batch are independent: split them over torch's intra-op threads when the work is as large as
// torch itself asks before it goes parallel.
template <typename F>
void for_rows(int64_t rows, int64_t row_size, const F& f) {
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(row_size, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b);
  });
}

at::Tensor linear_all(const at::Tensor& input2d, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.defined() && bias.numel() ? at::addmm(bias, input2d, weight.t()) : at::mm(input2d, weight.t());
}

void check_dtypes(const char* what, const at::Tensor& x, std::initializer_list<at::Tensor> others) {
  for (const auto& t : others) {
    TORCH_CHECK(!t.defined() || !t.numel() || t.scalar_type() == x.scalar_type(), "native GRU ", what,
                " expected every tensor in ", x.scalar_type(), " (the input's dtype), got one in ", t.scalar_type());
  }
}

// How the gate loops read and write a storage type S: as itself, or bfloat16 as its 16 raw bits converted with
// integer shifts (round to nearest even), which the compiler vectorizes where c10::BFloat16's conversions stay
// scalar (5x slower at batch 32, hidden 256).
template <typename S>
struct Raw {
  using type = S;
};
template <>
struct Raw<at::BFloat16> {
  using type = uint16_t;
};

template <typename C, typename R>
inline C load(R v) {
  return C(v);
}
template <>
inline float load<float, uint16_t>(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename R, typename C>
inline R store(C v) {
  return R(v);
}
template <>
inline uint16_t store<uint16_t, float>(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

template <typename S>
typename Raw<S>::type* raw(const at::Tensor& t) {
  return reinterpret_cast<typename Raw<S>::type*>(t.data_ptr<S>());
}

// The per-step loop of the forward, storage type S (the tensors' dtype: float, double or bfloat16), gate math in
// compute type C (float for bfloat16): GEMM outputs gi, gh are read as S and converted, y and saved written as S.
// b_hh (3H,) in C is added in the loop (a GEMM with a bias first copies it into the output: ~15 % of a step).
template <typename S, typename C, typename R = typename Raw<S>::type>
void forward_steps(const at::Tensor& gi, const at::Tensor& h0, const at::Tensor& w_hh, const at::Tensor& b_hh,
                   at::Tensor& y, at::Tensor& saved, bool reset_after, bool training) {
  const int64_t steps = y.size(0), batch = y.size(1), H = y.size(2);
  const auto w_hh_t = w_hh.t();  // (H, 3H)
  const auto w_hrz_t = w_hh.narrow(0, 0, 2 * H).t(), w_hn_t = w_hh.narrow(0, 2 * H, H).t();
  auto gh = at::empty({batch, 3 * H}, y.options());  // W_h· h for this step
  auto gh_rz = gh.narrow(1, 0, 2 * H), gh_n = gh.narrow(1, 2 * H, H);
  auto scratch = at::empty({batch, 4 * H}, y.options());  // per-step values when not training
  const C* bh = b_hh.data_ptr<C>();
  const R *gi_p = raw<S>(gi), *h0_p = raw<S>(h0);
  R *y_p = raw<S>(y), *ghp = raw<S>(gh);
  R* keep_p = raw<S>(training ? saved : scratch);
  for (int64_t t = 0; t < steps; ++t) {
    const auto h = t == 0 ? h0 : y[t - 1];
    const R* gi_t = gi_p + t * batch * 3 * H;
    const R* h_p = t == 0 ? h0_p : y_p + (t - 1) * batch * H;
    R* out = y_p + t * batch * H;
    R* kp = keep_p + (training ? t * batch * 4 * H : 0);
    if (reset_after) {
      at::mm_out(gh, h, w_hh_t);
      for_rows(batch, 3 * H, [&](int64_t b) {
        const R *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
        R *k = kp + b * 4 * H, *o = out + b * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C r = sigmoid(load<C>(a[j]) + load<C>(c[j]) + bh[j]);
          const C z = sigmoid(load<C>(a[H + j]) + load<C>(c[H + j]) + bh[H + j]);
          const C g = load<C>(c[2 * H + j]) + bh[2 * H + j];  // W_hn h + b_hn
          const C n = std::tanh(load<C>(a[2 * H + j]) + r * g);
          o[j] = store<R>((C(1) - z) * n + z * load<C>(hb[j]));
          k[j] = store<R>(r), k[H + j] = store<R>(z), k[2 * H + j] = store<R>(n), k[3 * H + j] = store<R>(g);
        }
      });
    } else {
      at::mm_out(gh_rz, h, w_hrz_t);
      for_rows(batch, 2 * H, [&](int64_t b) {
        const R *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
        R* k = kp + b * 4 * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C r = sigmoid(load<C>(a[j]) + load<C>(c[j]) + bh[j]);
          const C z = sigmoid(load<C>(a[H + j]) + load<C>(c[H + j]) + bh[H + j]);
          k[j] = store<R>(r), k[H + j] = store<R>(z), k[3 * H + j] = store<R>(r * load<C>(hb[j]));
        }
      });
      const auto rh = (training ? saved[t] : scratch).narrow(1, 3 * H, H);
      at::mm_out(gh_n, rh, w_hn_t);
      for_rows(batch, H, [&](int64_t b) {
        const R *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
        R *k = kp + b * 4 * H, *o = out + b * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C z = load<C>(k[H + j]);
          const C n = std::tanh(load<C>(a[2 * H + j]) + load<C>(c[2 * H + j]) + bh[2 * H + j]);
          k[2 * H + j] = store<R>(n);
          o[j] = store<R>((C(1) - z) * n + z * load<C>(hb[j]));
        }
      });
    }
  }
}

// The per-step loop of BPTT, storage type S and compute type C as in forward_steps. dL/dh_{t-1} has two parts:
// `carry` (C), the elementwise part (z ⊙ dL/dh_t, + r ⊙ dL/d(r ⊙ h) reset-before), and `rec` (S), the GEMM's
// dG_h[t] W_hh; the next step adds them in C. Returns dL/dh0 (B, H) in C.
template <typename S, typename C, typename R = typename Raw<S>::type>
at::Tensor backward_steps(const at::Tensor& h0, const at::Tensor& w_hh, const at::Tensor& y, const at::Tensor& saved,
                          const at::Tensor& dy, at::Tensor& d_gi, at::Tensor& d_gh, bool reset_after) {
  const int64_t steps = y.size(0), batch = y.size(1), H = y.size(2);
  const at::TensorOptions compute = y.options().dtype(c10::CppTypeToScalarType<C>::value);
  at::Tensor carry = at::zeros({batch, H}, compute);
  at::Tensor total = at::empty({batch, H}, compute);  // reset-before: dL/dh_t kept for the second pass
  auto rec = at::zeros({batch, H}, y.options());
  auto d_rh = at::empty({batch, H}, y.options());
  const auto w_hrz = w_hh.narrow(0, 0, 2 * H), w_hn = w_hh.narrow(0, 2 * H, H);
  C *carry_p = carry.data_ptr<C>(), *total_p = total.data_ptr<C>();
  const R* rec_p = raw<S>(rec);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const auto h = t == 0 ? h0 : y[t - 1];
    const R *h_p = raw<S>(h), *k_p = raw<S>(saved[t]), *dy_p = raw<S>(dy[t]);
    R *dgi = raw<S>(d_gi[t]), *dgh = raw<S>(d_gh[t]);
    if (reset_after) {
      for_rows(batch, 3 * H, [&](int64_t b) {
        const R *k = k_p + b * 4 * H, *hb = h_p + b * H, *dyb = dy_p + b * H, *rb = rec_p + b * H;
        R *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H;
        C* cb = carry_p + b * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C r = load<C>(k[j]), z = load<C>(k[H + j]), n = load<C>(k[2 * H + j]), ghn = load<C>(k[3 * H + j]);
          const C g = cb[j] + load<C>(rb[j]) + load<C>(dyb[j]);
          const C da_n = g * (C(1) - z) * (C(1) - n * n);
          const C da_z = g * (load<C>(hb[j]) - n) * z * (C(1) - z);
          const R da_r = store<R>(da_n * ghn * r * (C(1) - r));
          gi[j] = gh[j] = da_r, gi[H + j] = gh[H + j] = store<R>(da_z);
          gi[2 * H + j] = store<R>(da_n), gh[2 * H + j] = store<R>(da_n * r);
          cb[j] = g * z;
        }
      });
      at::mm_out(rec, d_gh[t], w_hh);
    } else {
      for_rows(batch, H, [&](int64_t b) {
        const R *k = k_p + b * 4 * H, *hb = h_p + b * H, *dyb = dy_p + b * H, *rb = rec_p + b * H;
        R *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H;
        const C* cb = carry_p + b * H;
        C* tb = total_p + b * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C z = load<C>(k[H + j]), n = load<C>(k[2 * H + j]);
          const C g = cb[j] + load<C>(rb[j]) + load<C>(dyb[j]);
          const C da_n = g * (C(1) - z) * (C(1) - n * n);
          gi[H + j] = gh[H + j] = store<R>(g * (load<C>(hb[j]) - n) * z * (C(1) - z));
          gi[2 * H + j] = gh[2 * H + j] = store<R>(da_n);
          tb[j] = g;
        }
      });
      at::mm_out(d_rh, d_gh[t].narrow(1, 2 * H, H), w_hn);
      const R* drh_p = raw<S>(d_rh);
      for_rows(batch, H, [&](int64_t b) {
        const R *k = k_p + b * 4 * H, *hb = h_p + b * H, *drh = drh_p + b * H;
        R *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H;
        const C* tb = total_p + b * H;
        C* cb = carry_p + b * H;
        _Pragma("omp simd")
        for (int64_t j = 0; j < H; ++j) {
          const C r = load<C>(k[j]), z = load<C>(k[H + j]), d = load<C>(drh[j]);
          gi[j] = gh[j] = store<R>(d * load<C>(hb[j]) * r * (C(1) - r));
          cb[j] = tb[j] * z + d * r;
        }
      });
      at::mm_out(rec, d_gh[t].narrow(1, 0, 2 * H), w_hrz);
    }
  }
  return carry.add_(rec);
}

}  // namespace

// Returns (y (T, B, H), saved (T, B, 4H) or an empty tensor when not training), in the input's dtype: float32,
// float64, or bfloat16 (GEMMs in bf16 with float32 accumulation, gate math in float32, as oneDNN's bf16 RNN).
std::vector<at::Tensor> forward(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                                bool reset_after, bool training) {
  // The caller chose the dtype: CPU autocast must not recast these GEMMs (it would turn float32 ones to bf16).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_dtypes("forward", x_in, {h0_in, w_ih, w_hh, b_ih});
  const auto x = x_in.contiguous();
  const auto h0 = h0_in.contiguous();
  const int64_t steps = x.size(0), batch = x.size(1), input = x.size(2), hidden = h0.size(1);
  const auto gi = linear_all(x.view({steps * batch, input}), w_ih, b_ih).view({steps, batch, 3 * hidden});
  auto y = at::empty({steps, batch, hidden}, x.options());
  auto saved = training ? at::empty({steps, batch, 4 * hidden}, x.options()) : at::empty({0}, x.options());
  const auto compute = x.options().dtype(at::toOpMathType(x.scalar_type()));
  const auto bias_h =  // (3H,) in the compute dtype, zeros without a bias
      b_hh.defined() && b_hh.numel() ? b_hh.to(compute).contiguous() : at::zeros({3 * hidden}, compute);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "native_gru_forward", [&] {
    forward_steps<scalar_t, at::opmath_type<scalar_t>>(gi, h0, w_hh, bias_h, y, saved, reset_after, training);
  });
  return {y, saved};
}

namespace {

// The sum over rows of d (N, K) contiguous, in `compute`. bfloat16 runs its own loop, float32 accumulators per
// block of columns: at::sum with a dtype first converts all of d, a (N, K) float32 copy that cost ~4x the sum
// (at batch 32, T 128, H 256).
at::Tensor sum_rows(const at::Tensor& d, at::ScalarType compute) {
  if (d.scalar_type() != at::kBFloat16) return at::sum(d, {0}, false, compute);
  constexpr int64_t kColumns = 64;
  const int64_t rows = d.size(0), cols = d.size(1);
  auto total = at::empty({cols}, d.options().dtype(at::kFloat));
  const uint16_t* d_p = raw<at::BFloat16>(d);
  float* total_p = total.data_ptr<float>();
  at::parallel_for(0, (cols + kColumns - 1) / kColumns, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kColumns, width = std::min(kColumns, cols - first);
      float acc[kColumns] = {};
      for (int64_t row = 0; row < rows; ++row) {
        const uint16_t* v = d_p + row * cols + first;
        _Pragma("omp simd")
        for (int64_t j = 0; j < width; ++j) acc[j] += load<float>(v[j]);
      }
      std::memcpy(total_p + first, acc, sizeof(float) * width);
    }
  });
  return total;
}

}  // namespace

// Returns (dx (T, B, I), dh0 (B, H), dw_ih (3H, I), dw_hh (3H, H), db_ih (3H,), db_hh (3H,)): dx and the weight
// gradients in the input's dtype, dh0 and the bias gradients in its compute dtype (float32 for bfloat16).
std::vector<at::Tensor> backward(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const at::Tensor& y, const at::Tensor& saved,
                                 const at::Tensor& dy_in, bool reset_after) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_dtypes("backward", x_in, {h0_in, w_ih, w_hh, y, saved, dy_in});
  const auto x = x_in.contiguous();
  const auto h0 = h0_in.contiguous();
  const auto dy = dy_in.contiguous();
  const int64_t steps = x.size(0), batch = x.size(1), input = x.size(2), H = h0.size(1);
  auto d_gi = at::empty({steps, batch, 3 * H}, x.options());  // dL/d(W_i· x + b_i·)
  auto d_gh = at::empty({steps, batch, 3 * H}, x.options());  // dL/d(W_h· h + b_h·) (n part: of W_hn (r ⊙ h))
  at::Tensor dh0;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "native_gru_backward", [&] {
    dh0 = backward_steps<scalar_t, at::opmath_type<scalar_t>>(h0, w_hh, y, saved, dy, d_gi, d_gh, reset_after);
  });
  const auto d_gi2 = d_gi.view({steps * batch, 3 * H});
  const auto d_gh2 = d_gh.view({steps * batch, 3 * H});
  const auto dx = at::mm(d_gi2, w_ih).view({steps, batch, input});
  const auto dw_ih = at::mm(d_gi2.t(), x.view({steps * batch, input}));
  const auto h_prev = at::cat({h0.unsqueeze(0), y.narrow(0, 0, steps - 1)}, 0).view({steps * batch, H});
  at::Tensor dw_hh;
  if (reset_after) {
    dw_hh = at::mm(d_gh2.t(), h_prev);
  } else {
    const auto rh = saved.narrow(2, 3 * H, H).reshape({steps * batch, H});
    dw_hh = at::cat({at::mm(d_gh2.narrow(1, 0, 2 * H).t(), h_prev), at::mm(d_gh2.narrow(1, 2 * H, H).t(), rh)}, 0);
  }
  const auto compute = dh0.scalar_type();
  return {dx, dh0, dw_ih, dw_hh, sum_rows(d_gi2, compute), sum_rows(d_gh2, compute)};
}

namespace {

// Single steps (generation, serving): at batch 1 a step reads 3H(I + H) weights for 6BH(I + H) flops, so it is
// bound by reading the weights. The small-batch kernel reads each weight row once, in torch's layout, straight
// into dot products with every row of the batch (the row stays in L1 across the batch), and applies the gate
// math to a block of hidden units at a time so the loop over units vectorizes (tanh included).
constexpr int64_t kMaxStepBatch = 8;  // larger batches are GEMMs: the sequence kernel at T = 1
constexpr int64_t kUnitBlock = 32;
// Weights below this many bytes (about a quarter of one core's L2) take less time to read than waking a second
// thread costs: one thread runs them.
constexpr int64_t kParallelBytes = 512 * 1024;
// Above this many bytes of the stack's weights (about one core's L2) they stream from L3 or memory on every
// step, where MKL's GEMV reads faster than the dot products below (measured at hidden 512 and 1024, and two
// layers of 256, on 1 and 2 threads): such stacks run the sequence kernel at T = 1.
constexpr int64_t kStreamBytes = 2 * 1024 * 1024;

// s[r] = w[r] · v for rows w[0 .. R), R <= 6, each of length n. Several rows at once give the FMA units
// independent chains of additions: one row alone is bound by the latency of its single accumulator.
template <typename T, int R>
inline void dots(const T* const* w, const T* v, int64_t n, T* s) {
  static_assert(R >= 1 && R <= 6, "dots takes 1 to 6 rows");
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0;
  const T *w0 = w[0], *w1 = w[R > 1 ? 1 : 0], *w2 = w[R > 2 ? 2 : 0], *w3 = w[R > 3 ? 3 : 0],
          *w4 = w[R > 4 ? 4 : 0], *w5 = w[R > 5 ? 5 : 0];
  _Pragma("omp simd reduction(+ : s0, s1, s2, s3, s4, s5)")
  for (int64_t k = 0; k < n; ++k) {
    s0 += w0[k] * v[k];
    if (R > 1) s1 += w1[k] * v[k];
    if (R > 2) s2 += w2[k] * v[k];
    if (R > 3) s3 += w3[k] * v[k];
    if (R > 4) s4 += w4[k] * v[k];
    if (R > 5) s5 += w5[k] * v[k];
  }
  const T all[6] = {s0, s1, s2, s3, s4, s5};
  for (int r = 0; r < R; ++r) s[r] = all[r];
}

int64_t step_grain(int64_t hidden, int64_t weight_bytes) {
  return weight_bytes < kParallelBytes ? hidden : std::max<int64_t>(kUnitBlock, hidden / 64);
}

// acc[(b G + g) kUnitBlock + u + p] = w[(gate0 + g) H + j + p] · v_b (+ bias), g < G, p < P, b < batch, where
// w is (gates H, n) row-major: the G·P rows are read once for the whole batch.
template <typename T, int G, int P>
inline void project(const T* w, const T* bias, int64_t gate0, int64_t n, int64_t H, int64_t j, int64_t u,
                    const T* v, int64_t batch, T* acc) {
  const T* rows[G * P];
  for (int g = 0; g < G; ++g)
    for (int p = 0; p < P; ++p) rows[g * P + p] = w + ((gate0 + g) * H + j + p) * n;
  for (int64_t b = 0; b < batch; ++b) {
    T s[G * P];
    dots<T, G * P>(rows, v + b * n, n, s);
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < P; ++p)
        acc[(b * G + g) * kUnitBlock + u + p] = s[g * P + p] + (bias ? bias[(gate0 + g) * H + j + p] : T(0));
  }
}

// project over the units [j0, j0 + units) of one block, P units at a time (then one at a time).
template <typename T, int G, int P>
inline void project_block(const T* w, const T* bias, int64_t gate0, int64_t n, int64_t H, int64_t j0,
                          int64_t units, const T* v, int64_t batch, T* acc) {
  int64_t u = 0;
  for (; u + P <= units; u += P) project<T, G, P>(w, bias, gate0, n, H, j0 + u, u, v, batch, acc);
  for (; u < units; ++u) project<T, G, 1>(w, bias, gate0, n, H, j0 + u, u, v, batch, acc);
}

// One layer, batch <= kMaxStepBatch: x (B, I), h (B, H) -> out (B, H). Biases may be null (no bias).
//   reset-after:  one pass over blocks of units: gi = W_i· x + b_i·, gh = W_h· h + b_h· for the block's rows
//                 (gates r, z, n), then r, z, n, h' for the block.
//   reset-before: pass 1 as above for gi and the r, z rows of gh; rh = r ⊙ h; pass 2: W_hn rh + b_hn, n, h'.
template <typename T>
void step_layer(const T* x, const T* h, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* out,
                int64_t batch, int64_t input, int64_t H, bool reset_after, T* scratch /* (3, B, H) */) {
  const int64_t grain = step_grain(H, int64_t(sizeof(T)) * 3 * H * (input + H));
  constexpr int64_t kAcc = kMaxStepBatch * 3 * kUnitBlock;
  if (reset_after) {
    at::parallel_for(0, H, grain, [&](int64_t begin, int64_t end) {
      T gi[kAcc], gh[kAcc];  // [b][gate][unit]
      for (int64_t j0 = begin; j0 < end; j0 += kUnitBlock) {
        const int64_t units = std::min(kUnitBlock, end - j0);
        project_block<T, 3, 2>(w_ih, b_ih, 0, input, H, j0, units, x, batch, gi);
        project_block<T, 3, 2>(w_hh, b_hh, 0, H, H, j0, units, h, batch, gh);
        for (int64_t b = 0; b < batch; ++b) {
          const T *a = gi + b * 3 * kUnitBlock, *c = gh + b * 3 * kUnitBlock, *hb = h + b * H + j0;
          T* o = out + b * H + j0;
          _Pragma("omp simd")
          for (int64_t u = 0; u < units; ++u) {
            const T r = sigmoid(a[u] + c[u]);
            const T z = sigmoid(a[kUnitBlock + u] + c[kUnitBlock + u]);
            const T n = std::tanh(a[2 * kUnitBlock + u] + r * c[2 * kUnitBlock + u]);
            o[u] = (T(1) - z) * n + z * hb[u];
          }
        }
      }
    });
    return;
  }
  T *z_all = scratch, *gin_all = scratch + batch * H, *rh_all = scratch + 2 * batch * H;  // (B, H) each
  at::parallel_for(0, H, grain, [&](int64_t begin, int64_t end) {
    T gi[kAcc], gh[kAcc];  // [b][gate][unit]; gh holds gates r, z only
    for (int64_t j0 = begin; j0 < end; j0 += kUnitBlock) {
      const int64_t units = std::min(kUnitBlock, end - j0);
      project_block<T, 3, 2>(w_ih, b_ih, 0, input, H, j0, units, x, batch, gi);
      project_block<T, 2, 3>(w_hh, b_hh, 0, H, H, j0, units, h, batch, gh);
      for (int64_t b = 0; b < batch; ++b) {
        const T *a = gi + b * 3 * kUnitBlock, *c = gh + b * 2 * kUnitBlock, *hb = h + b * H + j0;
        T *zb = z_all + b * H + j0, *gn = gin_all + b * H + j0, *rh = rh_all + b * H + j0;
        _Pragma("omp simd")
        for (int64_t u = 0; u < units; ++u) {
          rh[u] = sigmoid(a[u] + c[u]) * hb[u];
          zb[u] = sigmoid(a[kUnitBlock + u] + c[kUnitBlock + u]);
          gn[u] = a[2 * kUnitBlock + u];
        }
      }
    }
  });
  const int64_t grain_n = step_grain(H, int64_t(sizeof(T)) * H * H);
  at::parallel_for(0, H, grain_n, [&](int64_t begin, int64_t end) {
    T ghn[kAcc];  // [b][unit]
    for (int64_t j0 = begin; j0 < end; j0 += kUnitBlock) {
      const int64_t units = std::min(kUnitBlock, end - j0);
      project_block<T, 1, 6>(w_hh, b_hh, 2, H, H, j0, units, rh_all, batch, ghn);
      for (int64_t b = 0; b < batch; ++b) {
        const T *c = ghn + b * kUnitBlock, *hb = h + b * H + j0, *zb = z_all + b * H + j0;
        const T* gn = gin_all + b * H + j0;
        T* o = out + b * H + j0;
        _Pragma("omp simd")
        for (int64_t u = 0; u < units; ++u) {
          const T n = std::tanh(gn[u] + c[u]);
          o[u] = (T(1) - zb[u]) * n + zb[u] * hb[u];
        }
      }
    }
  });
}

template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined() || !t->numel()) return nullptr;
  TORCH_CHECK(t->is_contiguous(), "GRU step expected contiguous biases");
  return t->data_ptr<T>();
}

}  // namespace

// One step of a stack of L left-to-right GRU layers, inference only (no autograd graph):
//   x (B, I), h (L, B, H), weights = [w_ih, w_hh, b_ih, b_hh] per layer (biases None when absent)
//   -> (output (B, H), h_n (L, B, H)); layer l reads layer l - 1's new state, output equals h_n[L - 1].
// Batches up to kMaxStepBatch of stacks whose weights fit in L2 (kStreamBytes) run the weight-streaming kernel
// above, the others the sequence kernel at T = 1.
std::tuple<at::Tensor, at::Tensor> step(const at::Tensor& x_in, const at::Tensor& h_in,
                                        const std::vector<c10::optional<at::Tensor>>& weights, bool reset_after) {
  const auto h = h_in.contiguous();
  const auto x = x_in.contiguous();
  const int64_t layers = h.size(0), batch = h.size(1), hidden = h.size(2);
  TORCH_CHECK(int64_t(weights.size()) == 4 * layers && x.dim() == 2 && x.size(0) == batch,
              "GRU step expected x (", batch, ", I) and 4 weights per layer for ", layers, " layers, got x ",
              x.sizes(), " and ", weights.size(), " weights");
  auto h_n = at::empty_like(h);
  auto output = at::empty({batch, hidden}, h.options());
  auto scratch = reset_after || batch > kMaxStepBatch ? at::Tensor() : at::empty({3 * batch * hidden}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "native_gru_step", [&] {
    const scalar_t* layer_input = x.data_ptr<scalar_t>();
    int64_t input = x.size(1);
    int64_t stack_bytes = 0;
    for (int64_t l = 0; l < layers; ++l) {
      TORCH_CHECK(weights[4 * l].has_value() && weights[4 * l + 1].has_value(), "GRU step layer ", l,
                  " has no weights");
      stack_bytes += int64_t(sizeof(scalar_t)) * (weights[4 * l]->numel() + weights[4 * l + 1]->numel());
    }
    for (int64_t l = 0; l < layers; ++l) {
      const auto w_ih = weights[4 * l]->contiguous(), w_hh = weights[4 * l + 1]->contiguous();
      TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 3 * hidden && w_ih.size(1) == input && w_hh.dim() == 2 &&
                      w_hh.size(0) == 3 * hidden && w_hh.size(1) == hidden,
                  "GRU step layer ", l, " expected w_ih (", 3 * hidden, ", ", input, ") and w_hh (", 3 * hidden,
                  ", ", hidden, "), got ", w_ih.sizes(), " and ", w_hh.sizes());
      scalar_t* out = (l == layers - 1 ? output : h_n).data_ptr<scalar_t>() + (l == layers - 1 ? 0 : l * batch * hidden);
      const scalar_t* h_l = h.data_ptr<scalar_t>() + l * batch * hidden;
      if (batch > kMaxStepBatch || stack_bytes > kStreamBytes) {
        const auto bias = [&](int64_t k) { return weights[k].has_value() ? *weights[k] : at::Tensor(); };
        const auto x_l = at::from_blob(const_cast<scalar_t*>(layer_input), {1, batch, input}, h.options());
        const auto y = forward(x_l, h[l], w_ih, w_hh, bias(4 * l + 2), bias(4 * l + 3), reset_after, false)[0];
        std::memcpy(out, y.data_ptr<scalar_t>(), sizeof(scalar_t) * batch * hidden);
      } else {
        step_layer<scalar_t>(layer_input, h_l, w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
                             data_or_null<scalar_t>(weights[4 * l + 2]), data_or_null<scalar_t>(weights[4 * l + 3]),
                             out, batch, input, hidden, reset_after,
                             scratch.defined() ? scratch.data_ptr<scalar_t>() : nullptr);
      }
      layer_input = out;
      input = hidden;
    }
    std::memcpy(h_n.data_ptr<scalar_t>() + (layers - 1) * batch * hidden, output.data_ptr<scalar_t>(),
                sizeof(scalar_t) * batch * hidden);
  });
  return {output, h_n};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU forward over one layer and direction");
  m.def("backward", &backward, "GRU backward (BPTT) over one layer and direction");
  m.def("step", &step, "One inference step of a stack of GRU layers", py::call_guard<py::gil_scoped_release>());
}
