// grukit's own fused GRU kernel: one layer, one direction (left to right), float32 or float64, any CPU.
//
//   x (T, B, I), h0 (B, H), torch-layout weights w_ih (3H, I), w_hh (3H, H), biases (3H,) (gates r, z, n)
//   -> y (T, B, H) and, when training, the per-step values the backward needs: (T, B, 4H) holding
//      r, z, n and g = W_hn h + b_hn (reset-after) or r ⊙ h (reset-before).
//
// Forward: the input projection for all steps is one GEMM; each step is one GEMM (two for reset-before) plus
// one fused loop over the gate math. Backward (BPTT) walks the steps back computing the gate gradients with one
// GEMM per step for dh; dW_ih, dW_hh and dx are each one large GEMM after the loop.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>

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

}  // namespace

// Returns (y (T, B, H), saved (T, B, 4H) or an empty tensor when not training).
std::vector<at::Tensor> forward(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                                bool reset_after, bool training) {
  const auto x = x_in.contiguous();
  const auto h0 = h0_in.contiguous();
  const int64_t steps = x.size(0), batch = x.size(1), input = x.size(2), hidden = h0.size(1);
  const auto gi = linear_all(x.view({steps * batch, input}), w_ih, b_ih).view({steps, batch, 3 * hidden});
  auto y = at::empty({steps, batch, hidden}, x.options());
  auto saved = training ? at::empty({steps, batch, 4 * hidden}, x.options()) : at::empty({0}, x.options());
  const bool has_bias = b_hh.defined() && b_hh.numel();
  const auto w_hh_t = w_hh.t();  // (H, 3H)
  const auto w_hrz_t = w_hh.narrow(0, 0, 2 * hidden).t(), w_hn_t = w_hh.narrow(0, 2 * hidden, hidden).t();
  const auto b_hrz = has_bias ? b_hh.narrow(0, 0, 2 * hidden) : at::Tensor();
  const auto b_hn = has_bias ? b_hh.narrow(0, 2 * hidden, hidden) : at::Tensor();
  auto gh = at::empty({batch, 3 * hidden}, x.options());  // W_h· h + b_h· for this step
  auto scratch = at::empty({batch, 4 * hidden}, x.options());  // per-step values when not training
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "native_gru_forward", [&] {
    const int64_t H = hidden;
    for (int64_t t = 0; t < steps; ++t) {
      const auto h = t == 0 ? h0 : y[t - 1];
      auto keep = training ? saved[t] : scratch;
      const scalar_t* gi_t = gi[t].data_ptr<scalar_t>();
      const scalar_t* h_p = h.data_ptr<scalar_t>();
      scalar_t* out = y[t].data_ptr<scalar_t>();
      scalar_t* kp = keep.data_ptr<scalar_t>();
      scalar_t* ghp = gh.data_ptr<scalar_t>();
      if (reset_after) {
        has_bias ? at::addmm_out(gh, b_hh, h, w_hh_t) : at::mm_out(gh, h, w_hh_t);
        for_rows(batch, 3 * H, [&](int64_t b) {
          const scalar_t *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
          scalar_t *k = kp + b * 4 * H, *o = out + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = sigmoid(a[j] + c[j]);
            const scalar_t z = sigmoid(a[H + j] + c[H + j]);
            const scalar_t n = std::tanh(a[2 * H + j] + r * c[2 * H + j]);
            o[j] = (scalar_t(1) - z) * n + z * hb[j];
            k[j] = r, k[H + j] = z, k[2 * H + j] = n, k[3 * H + j] = c[2 * H + j];
          }
        });
      } else {
        auto gh_rz = gh.narrow(1, 0, 2 * H), gh_n = gh.narrow(1, 2 * H, H);
        has_bias ? at::addmm_out(gh_rz, b_hrz, h, w_hrz_t) : at::mm_out(gh_rz, h, w_hrz_t);
        for_rows(batch, 2 * H, [&](int64_t b) {
          const scalar_t *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
          scalar_t* k = kp + b * 4 * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = sigmoid(a[j] + c[j]);
            k[j] = r, k[H + j] = sigmoid(a[H + j] + c[H + j]), k[3 * H + j] = r * hb[j];
          }
        });
        const auto rh = keep.narrow(1, 3 * H, H);
        has_bias ? at::addmm_out(gh_n, b_hn, rh, w_hn_t) : at::mm_out(gh_n, rh, w_hn_t);
        for_rows(batch, H, [&](int64_t b) {
          const scalar_t *a = gi_t + b * 3 * H, *c = ghp + b * 3 * H, *hb = h_p + b * H;
          scalar_t *k = kp + b * 4 * H, *o = out + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t z = k[H + j];
            const scalar_t n = std::tanh(a[2 * H + j] + c[2 * H + j]);
            k[2 * H + j] = n;
            o[j] = (scalar_t(1) - z) * n + z * hb[j];
          }
        });
      }
    }
  });
  return {y, saved};
}

// Returns (dx (T, B, I), dh0 (B, H), dw_ih (3H, I), dw_hh (3H, H), db_ih (3H,), db_hh (3H,)).
std::vector<at::Tensor> backward(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const at::Tensor& y, const at::Tensor& saved,
                                 const at::Tensor& dy_in, bool reset_after) {
  const auto x = x_in.contiguous();
  const auto h0 = h0_in.contiguous();
  const auto dy = dy_in.contiguous();
  const int64_t steps = x.size(0), batch = x.size(1), input = x.size(2), hidden = h0.size(1);
  const int64_t H = hidden;
  auto d_gi = at::empty({steps, batch, 3 * H}, x.options());  // dL/d(W_i· x + b_i·)
  auto d_gh = at::empty({steps, batch, 3 * H}, x.options());  // dL/d(W_h· h + b_h·) (n part: of W_hn (r ⊙ h))
  auto dh = at::zeros({batch, H}, x.options());
  auto dh_next = at::empty({batch, H}, x.options());
  auto d_rh = at::empty({batch, H}, x.options());
  const auto w_hrz = w_hh.narrow(0, 0, 2 * H), w_hn = w_hh.narrow(0, 2 * H, H);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "native_gru_backward", [&] {
    for (int64_t t = steps - 1; t >= 0; --t) {
      const auto h = t == 0 ? h0 : y[t - 1];
      const scalar_t *h_p = h.data_ptr<scalar_t>(), *k_p = saved[t].data_ptr<scalar_t>();
      const scalar_t* dy_p = dy[t].data_ptr<scalar_t>();
      scalar_t *dh_p = dh.data_ptr<scalar_t>(), *dn_p = dh_next.data_ptr<scalar_t>();
      scalar_t *dgi = d_gi[t].data_ptr<scalar_t>(), *dgh = d_gh[t].data_ptr<scalar_t>();
      if (reset_after) {
        for_rows(batch, 3 * H, [&](int64_t b) {
          const scalar_t *k = k_p + b * 4 * H, *hb = h_p + b * H, *dyb = dy_p + b * H;
          scalar_t *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H, *dhb = dh_p + b * H, *dnb = dn_p + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = k[j], z = k[H + j], n = k[2 * H + j], ghn = k[3 * H + j];
            const scalar_t g = dhb[j] + dyb[j];
            const scalar_t da_n = g * (scalar_t(1) - z) * (scalar_t(1) - n * n);
            const scalar_t da_z = g * (hb[j] - n) * z * (scalar_t(1) - z);
            const scalar_t da_r = da_n * ghn * r * (scalar_t(1) - r);
            gi[j] = gh[j] = da_r, gi[H + j] = gh[H + j] = da_z, gi[2 * H + j] = da_n, gh[2 * H + j] = da_n * r;
            dnb[j] = g * z;
          }
        });
        dh_next.addmm_(d_gh[t], w_hh);
      } else {
        for_rows(batch, H, [&](int64_t b) {
          const scalar_t *k = k_p + b * 4 * H, *hb = h_p + b * H, *dyb = dy_p + b * H;
          scalar_t *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H, *dhb = dh_p + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t z = k[H + j], n = k[2 * H + j];
            const scalar_t g = dhb[j] + dyb[j];
            const scalar_t da_n = g * (scalar_t(1) - z) * (scalar_t(1) - n * n);
            gi[H + j] = gh[H + j] = g * (hb[j] - n) * z * (scalar_t(1) - z);
            gi[2 * H + j] = gh[2 * H + j] = da_n;
            dhb[j] = g;  // keep the total dL/dh_t for the second pass
          }
        });
        at::mm_out(d_rh, d_gh[t].narrow(1, 2 * H, H), w_hn);
        const scalar_t* drh_p = d_rh.data_ptr<scalar_t>();
        for_rows(batch, H, [&](int64_t b) {
          const scalar_t *k = k_p + b * 4 * H, *hb = h_p + b * H, *drh = drh_p + b * H, *dhb = dh_p + b * H;
          scalar_t *gi = dgi + b * 3 * H, *gh = dgh + b * 3 * H, *dnb = dn_p + b * H;
          _Pragma("omp simd")
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = k[j], z = k[H + j];
            gi[j] = gh[j] = drh[j] * hb[j] * r * (scalar_t(1) - r);
            dnb[j] = dhb[j] * z + drh[j] * r;
          }
        });
        dh_next.addmm_(d_gh[t].narrow(1, 0, 2 * H), w_hrz);
      }
      std::swap(dh, dh_next);
    }
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
  return {dx, dh, dw_ih, dw_hh, d_gi2.sum(0), d_gh2.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU forward over one layer and direction");
  m.def("backward", &backward, "GRU backward (BPTT) over one layer and direction");
}
