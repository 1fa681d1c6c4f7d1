// grukit's binding to oneDNN's GRU primitives: lbr_gru (reset-after, PyTorch's GRU) and gru (reset-before),
// and a bf16 forward loop of oneDNN matmuls (forward_bf16_loop, below).
//
// One primitive runs L stacked layers in D directions (D = 2: bidirectional_concat) over full-length
// sequences; grukit picks L and D and handles variable lengths in Python (grukit/ops/onednn.py). Time-major:
//   x (T, B, I), h0 (L, D, B, H) or (B, H) -> y (T, B, D*H), h_n (L, D, B, H)
// Weights arrive in oneDNN's plain ldigo layout, gates in oneDNN's order u (update), r (reset), o (candidate):
//   w_layer (L, D, I, 3H) or (I, 3H), w_iter (L, D, H, 3H) or (H, 3H), bias (L, D, G, H) or (G, H) with G = 4 for
//   lbr_gru (b_u, b_r, b_o, b_u') and 3 for gru. oneDNN's stacked layers all read I features: L > 1 needs
//   I == H (and D = 1, since a bidirectional stack in oneDNN feeds each direction only its own outputs).
// Data types: float32, or bfloat16 (x, h0, weights, y, h_n in bf16, bias f32, float32 accumulation). In the
// backward every gradient is float32 (oneDNN's bf16 rule: all diff_* tensors are f32).
// The primitives pick their preferred weight formats (format_tag::any); each call reorders the weights into
// them (a read of the weights, ~1/(B·T) of the call's GEMM work).
//
// Safe from any thread, any number at once, and in forked children: every call owns everything it writes. The
// primitives run with a user scratchpad (a tensor of this call) rather than oneDNN's library scratchpad,
// which lives in thread-local storage of the thread that *created* the primitive: a primitive cached on
// one thread and run on another then wrote through a null or foreign scratchpad. Each call makes its own
// stream. Shared across threads are only the engine and the per-shape primitive cache (read-only once built,
// guarded by a mutex, entries handed out by value so that a cache reset cannot free a primitive in use);
// both are heap objects never destroyed, so nothing of oneDNN's is torn down during interpreter exit, after
// oneDNN's own globals. The GIL is released while a primitive runs.
#include <torch/extension.h>

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

const dnnl::engine& cpu_engine() {
  static const auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);  // never destroyed: see above
  return *engine;
}

struct Shape {
  int64_t steps, batch, input, hidden, layers, directions;
  bool lbr, training, bf16;
  bool operator<(const Shape& o) const {
    return std::tie(steps, batch, input, hidden, layers, directions, lbr, training, bf16) <
           std::tie(o.steps, o.batch, o.input, o.hidden, o.layers, o.directions, o.lbr, o.training, o.bf16);
  }
};

struct Descs {
  memory::desc src_layer, src_iter, weights_layer, weights_iter, bias, dst_layer, dst_iter;
};

// The plain layouts of one shape: `data` is the type of the activations and weights (f32 or bf16), the
// bias is always f32; `data` = f32 also gives the backward's gradient descriptors.
Descs plain_descs(const Shape& s, tag weights_tag, dt data) {
  const int64_t gates = 3, bias_gates = s.lbr ? 4 : 3, L = s.layers, D = s.directions;
  return {
      memory::desc({s.steps, s.batch, s.input}, data, tag::tnc),
      memory::desc({L, D, s.batch, s.hidden}, data, tag::ldnc),
      memory::desc({L, D, s.input, gates, s.hidden}, data, weights_tag),
      memory::desc({L, D, s.hidden, gates, s.hidden}, data, weights_tag),
      memory::desc({L, D, bias_gates, s.hidden}, dt::f32, tag::ldgo),
      memory::desc({s.steps, s.batch, D * s.hidden}, data, tag::tnc),
      memory::desc({L, D, s.batch, s.hidden}, data, tag::ldnc),
  };
}

dt data_type(const Shape& s) { return s.bf16 ? dt::bf16 : dt::f32; }

// Forward and backward primitive descriptors of one shape, for either GRU flavour. Copies share the
// underlying oneDNN objects (reference-counted handles).
struct Primitives {
  dnnl::primitive_desc fwd_pd, bwd_pd;
  dnnl::primitive fwd, bwd;
};

template <typename Fwd, typename Bwd>
Primitives make_primitives(const Shape& s) {
  const auto plain = plain_descs(s, tag::ldigo, data_type(s));
  const auto any = plain_descs(s, tag::any, data_type(s));  // only the weights' layout is left to oneDNN
  const auto prop = s.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto dir = s.directions == 2 ? dnnl::rnn_direction::bidirectional_concat
                                     : dnnl::rnn_direction::unidirectional_left2right;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  typename Fwd::primitive_desc fwd_pd(cpu_engine(), prop, dir, plain.src_layer, plain.src_iter, any.weights_layer,
                                      any.weights_iter, plain.bias, plain.dst_layer, plain.dst_iter, attr);
  Primitives p{fwd_pd, {}, typename Fwd::primitive(fwd_pd), {}};
  if (s.training) {
    const auto grad = plain_descs(s, tag::ldigo, dt::f32);
    typename Bwd::primitive_desc bwd_pd(cpu_engine(), dnnl::prop_kind::backward, dir, plain.src_layer,
                                        plain.src_iter, any.weights_layer, any.weights_iter, plain.bias,
                                        plain.dst_layer, plain.dst_iter, grad.src_layer, grad.src_iter,
                                        grad.weights_layer, grad.weights_iter, grad.bias, grad.dst_layer,
                                        grad.dst_iter, fwd_pd, attr);
    p.bwd_pd = bwd_pd;
    p.bwd = typename Bwd::primitive(bwd_pd);
  }
  return p;
}

constexpr size_t kMaxPrimitives = 256;

// Built primitives per shape. Returned by value: the cache may be reset by another thread meanwhile.
Primitives primitives(const Shape& s) {
  static auto* mutex = new std::mutex();
  static auto* cache = new std::map<Shape, Primitives>();  // never destroyed: see the file comment
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = cache->find(s);
  if (it == cache->end()) {
    // Variable-length batches bring new shapes on every call: keep the cache bounded.
    if (cache->size() >= kMaxPrimitives) cache->clear();
    auto p = s.lbr ? make_primitives<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>(s)
                   : make_primitives<dnnl::gru_forward, dnnl::gru_backward>(s);
    it = cache->emplace(s, p).first;
  }
  return it->second;
}

// Primitive runs since the module was loaded, forward and backward: lets tests prove which kernel ran.
std::atomic<int64_t> forward_runs{0}, backward_runs{0};

// `user` as memory in the layout `want`: itself when they agree, else a reordered copy owned by the caller.
memory reordered_as(const memory& user, const memory::desc& want, const dnnl::stream& stream) {
  if (user.get_desc() == want) return user;
  memory reordered(want, cpu_engine());
  dnnl::reorder(user, reordered).execute(stream, const_cast<memory&>(user), reordered);
  return reordered;
}

memory wrap(const memory::desc& desc, const at::Tensor& t) {
  return memory(desc, cpu_engine(), t.data_ptr());
}

// A scratchpad for one run of a primitive, owned by the calling frame.
at::Tensor scratchpad_for(const dnnl::primitive_desc& pd, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(pd.scratchpad_desc().get_size())}, like.options().dtype(at::kByte));
}

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType type) {
  TORCH_CHECK(t.scalar_type() == type && t.is_contiguous() && t.device().is_cpu(), "onednn_gru: ", name,
              " must be a contiguous ", c10::toString(type), " CPU tensor, got ", c10::toString(t.scalar_type()),
              t.is_contiguous() ? "" : " (not contiguous)");
}

// The shape of a call from its tensors: weights (I, 3H) for one layer and direction, (L, D, I, 3H) for more.
Shape shape_of(const at::Tensor& x, const at::Tensor& w_layer, const at::Tensor& w_iter, bool lbr, bool training) {
  const bool stacked = w_layer.dim() == 4;
  TORCH_CHECK(w_layer.dim() == (stacked ? 4 : 2) && w_iter.dim() == w_layer.dim() && x.dim() == 3,
              "onednn_gru: expected x (T, B, I) and weights (I, 3H), (H, 3H) or (L, D, I, 3H), (L, D, H, 3H), got x ",
              x.sizes(), ", w_layer ", w_layer.sizes(), ", w_iter ", w_iter.sizes());
  const int64_t layers = stacked ? w_layer.size(0) : 1, directions = stacked ? w_layer.size(1) : 1;
  const int64_t hidden = w_iter.size(-2);
  TORCH_CHECK(w_layer.size(-2) == x.size(2) && w_layer.size(-1) == 3 * hidden && w_iter.size(-1) == 3 * hidden,
              "onednn_gru: weights ", w_layer.sizes(), " and ", w_iter.sizes(), " do not fit an input of ", x.size(2),
              " features");
  TORCH_CHECK(layers == 1 || x.size(2) == hidden, "onednn_gru: stacked layers in one primitive need input size ",
              x.size(2), " == hidden size ", hidden);
  return {x.size(0), x.size(1), x.size(2), hidden, layers, directions, lbr, training,
          x.scalar_type() == at::kBFloat16};
}

void check_state_shape(const at::Tensor& h, const Shape& s, const char* name) {
  TORCH_CHECK(h.numel() == s.layers * s.directions * s.batch * s.hidden, "onednn_gru: ", name, " of shape ",
              h.sizes(), " does not hold (", s.layers, ", ", s.directions, ", ", s.batch, ", ", s.hidden, ")");
}

// A forked child inherits the parent's OpenMP team as bookkeeping only (GNU OpenMP is not fork-safe): the
// first parallel region waits forever for worker threads that were not copied. Forked children run
// oneDNN on one thread, as torch's DataLoader workers run torch.
std::atomic<bool> forked_child{false};
const int fork_handler = pthread_atfork(nullptr, nullptr, [] { forked_child = true; });

// oneDNN (GNU OpenMP build) runs on the calling thread's OpenMP team: follow torch.set_num_threads.
void follow_torch_threads() { omp_set_num_threads(forked_child ? 1 : at::get_num_threads()); }

}  // namespace

// Returns (y (T, B, D*H), h_n (L, D, B, H), workspace bytes; empty when not training). x, h0 and the weights
// are all float32 or all bfloat16 (then y and h_n are bfloat16); the bias is float32.
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                const at::Tensor& w_iter, const at::Tensor& bias, bool lbr, bool training) {
  const auto data = x.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"}})
    check_tensor(*t, name, data);
  check_tensor(bias, "bias", at::kFloat);
  const Shape s = shape_of(x, w_layer, w_iter, lbr, training);
  check_state_shape(h0, s, "h0");
  pybind11::gil_scoped_release no_gil;  // the arguments stay referenced by the caller's frame
  follow_torch_threads();
  const auto p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo, data_type(s));
  dnnl::stream stream(cpu_engine());
  auto y = at::empty({s.steps, s.batch, s.directions * s.hidden}, x.options());
  auto h_n = at::empty({s.layers, s.directions, s.batch, s.hidden}, x.options());
  auto scratchpad = scratchpad_for(p.fwd_pd, x);
  const auto wl = reordered_as(wrap(plain.weights_layer, w_layer), p.fwd_pd.weights_desc(0), stream);
  const auto wi = reordered_as(wrap(plain.weights_iter, w_iter), p.fwd_pd.weights_desc(1), stream);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(plain.src_layer, x)}, {DNNL_ARG_SRC_ITER, wrap(plain.src_iter, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},  {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(plain.bias, bias)}, {DNNL_ARG_DST_LAYER, wrap(plain.dst_layer, y)},
      {DNNL_ARG_DST_ITER, wrap(plain.dst_iter, h_n)},
      {DNNL_ARG_SCRATCHPAD, wrap(p.fwd_pd.scratchpad_desc(), scratchpad)},
  };
  at::Tensor workspace = at::empty({0}, x.options().dtype(at::kByte));
  if (training) {
    const auto ws_desc = p.fwd_pd.workspace_desc();
    workspace = at::empty({static_cast<int64_t>(ws_desc.get_size())}, x.options().dtype(at::kByte));
    args.emplace(DNNL_ARG_WORKSPACE, wrap(ws_desc, workspace));
  }
  p.fwd.execute(stream, args);
  stream.wait();
  ++forward_runs;
  return {y, h_n, workspace};
}

// Returns float32 (dx (T, B, I), dh0 shaped as h0, dw_layer and dw_iter shaped as the weights (ldigo), dbias
// shaped as the bias). dy (T, B, D*H) and dh_n (L, D, B, H) are float32; dh_n may be empty (no gradient of
// h_n beyond the one through y).
std::vector<at::Tensor> backward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                 const at::Tensor& w_iter, const at::Tensor& bias, const at::Tensor& y,
                                 const at::Tensor& h_n, const at::Tensor& dy, const at::Tensor& dh_n,
                                 const at::Tensor& workspace, bool lbr) {
  const auto data = x.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"}, {&y, "y"},
                         {&h_n, "h_n"}})
    check_tensor(*t, name, data);
  check_tensor(bias, "bias", at::kFloat);
  check_tensor(dy, "dy", at::kFloat);
  const Shape s = shape_of(x, w_layer, w_iter, lbr, true);
  check_state_shape(h0, s, "h0");
  check_state_shape(h_n, s, "h_n");
  if (dh_n.numel()) {
    check_tensor(dh_n, "dh_n", at::kFloat);
    check_state_shape(dh_n, s, "dh_n");
  }
  pybind11::gil_scoped_release no_gil;
  follow_torch_threads();
  const auto p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo, data_type(s));
  const auto grad = plain_descs(s, tag::ldigo, dt::f32);
  const auto ws_desc = p.bwd_pd.workspace_desc();
  TORCH_CHECK(workspace.scalar_type() == at::kByte && workspace.is_contiguous() &&
                  static_cast<size_t>(workspace.numel()) == ws_desc.get_size(),
              "onednn_gru: the workspace does not come from a training forward of this shape");
  dnnl::stream stream(cpu_engine());
  auto scratchpad = scratchpad_for(p.bwd_pd, x);
  const auto wl = reordered_as(wrap(plain.weights_layer, w_layer), p.bwd_pd.weights_desc(0), stream);
  const auto wi = reordered_as(wrap(plain.weights_iter, w_iter), p.bwd_pd.weights_desc(1), stream);
  const auto f32 = x.options().dtype(at::kFloat);
  auto dx = at::empty(x.sizes(), f32);
  auto dh0 = at::empty(h0.sizes(), f32);
  const auto dh_last = dh_n.numel() ? dh_n : at::zeros(h_n.sizes(), f32);
  // oneDNN accumulates into the weight and bias gradients.
  auto dw_layer = at::zeros(w_layer.sizes(), f32);
  auto dw_iter = at::zeros(w_iter.sizes(), f32);
  auto dbias = at::zeros_like(bias);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(plain.src_layer, x)},
      {DNNL_ARG_SRC_ITER, wrap(plain.src_iter, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},
      {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(plain.bias, bias)},
      {DNNL_ARG_DST_LAYER, wrap(plain.dst_layer, y)},
      {DNNL_ARG_DST_ITER, wrap(plain.dst_iter, h_n)},
      {DNNL_ARG_DIFF_DST_LAYER, wrap(grad.dst_layer, dy)},
      {DNNL_ARG_DIFF_DST_ITER, wrap(grad.dst_iter, dh_last)},
      {DNNL_ARG_WORKSPACE, wrap(ws_desc, workspace)},
      {DNNL_ARG_DIFF_SRC_LAYER, wrap(grad.src_layer, dx)},
      {DNNL_ARG_DIFF_SRC_ITER, wrap(grad.src_iter, dh0)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, wrap(grad.weights_layer, dw_layer)},
      {DNNL_ARG_DIFF_WEIGHTS_ITER, wrap(grad.weights_iter, dw_iter)},
      {DNNL_ARG_DIFF_BIAS, wrap(grad.bias, dbias)},
      {DNNL_ARG_SCRATCHPAD, wrap(p.bwd_pd.scratchpad_desc(), scratchpad)},
  };
  p.bwd.execute(stream, args);
  stream.wait();
  ++backward_runs;
  return {dx, dh0, dw_layer, dw_iter, dbias};
}

std::string version() {
  const auto* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

// The instruction set oneDNN dispatches to on this CPU, as oneDNN names it ("avx512_core_amx", "avx2", ...).
std::string cpu_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2_vnni_2: return "avx2_vnni_2";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_fp16: return "avx512_core_fp16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_amx_fp16: return "avx512_core_amx_fp16";
    default: return "default";
  }
}

// The OpenMP team size oneDNN's next primitive will use on this thread.
int64_t openmp_threads() { return omp_get_max_threads(); }

std::tuple<int64_t, int64_t> runs() { return {forward_runs.load(), backward_runs.load()}; }

// int8 inference of the reset-before GRU, one layer and direction: oneDNN's `gru` with u8 activations and s8
// weights (oneDNN 3.2 has no int8 `lbr_gru`, the reset-after form). Activations are quantised with one scale
// and shift for the input and the states, x_u8 = round(data_scale · x + data_shift); weights with one scale per
// gate and output channel, w_s8 = round(weights_scales[g, o] · w), shared by w_layer and w_iter:
//   x_u8 (T, B, I) uint8, h0 (B, H) f32, w_layer (I, 3H) and w_iter (H, 3H) f32 ldigo (gates u, r, o),
//   bias (3, H) f32, weights_scales (3H,) f32 (or (1,): one scale) -> y (T, B, H) f32.
// The primitive depends on the scales, so the cache is keyed on them; the weights reorder to s8 on every call.
namespace {

struct Int8Key {
  int64_t steps, batch, input, hidden;
  float data_scale, data_shift;
  std::vector<float> weights_scales;
  bool operator<(const Int8Key& o) const {
    return std::tie(steps, batch, input, hidden, data_scale, data_shift, weights_scales) <
           std::tie(o.steps, o.batch, o.input, o.hidden, o.data_scale, o.data_shift, o.weights_scales);
  }
};

struct Int8Primitives {
  dnnl::gru_forward::primitive_desc pd;
  dnnl::gru_forward fwd;
  dnnl::reorder::primitive_desc layer_pd, iter_pd;  // f32 -> s8 weights, with user scratchpads as well
  dnnl::primitive to_weights_layer, to_weights_iter;
};

at::Tensor reorder_scratchpad(const dnnl::reorder::primitive_desc& pd, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(pd.scratchpad_desc().get_size())}, like.options().dtype(at::kByte));
}

Int8Primitives int8_primitives(const Int8Key& k) {
  static auto* mutex = new std::mutex();
  static auto* cache = new std::map<Int8Key, Int8Primitives>();  // never destroyed: see the file comment
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = cache->find(k);
  if (it != cache->end()) return it->second;
  if (cache->size() >= kMaxPrimitives) cache->clear();
  const memory::desc src({k.steps, k.batch, k.input}, dt::u8, tag::tnc),
      src_iter({1, 1, k.batch, k.hidden}, dt::f32, tag::ldnc),
      weights_layer({1, 1, k.input, 3, k.hidden}, dt::s8, tag::any),
      weights_iter({1, 1, k.hidden, 3, k.hidden}, dt::s8, tag::any),
      bias({1, 1, 3, k.hidden}, dt::f32, tag::ldgo), dst({k.steps, k.batch, k.hidden}, dt::f32, tag::tnc);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_rnn_data_qparams(k.data_scale, k.data_shift);
  // Mask bits of the weights' logical dims (l, d, i, g, o): 3 and 4 give one scale per gate and channel.
  attr.set_rnn_weights_qparams(k.weights_scales.size() == 1 ? 0 : (1 << 3) | (1 << 4), k.weights_scales);
  dnnl::gru_forward::primitive_desc pd(cpu_engine(), dnnl::prop_kind::forward_inference,
                                       dnnl::rnn_direction::unidirectional_left2right, src, src_iter, weights_layer,
                                       weights_iter, bias, dst, memory::desc(), attr);
  // The f32 -> s8 weights reorders quantise with the same scales and compute oneDNN's shift compensation.
  const memory::desc plain_layer({1, 1, k.input, 3, k.hidden}, dt::f32, tag::ldigo),
      plain_iter({1, 1, k.hidden, 3, k.hidden}, dt::f32, tag::ldigo);
  dnnl::reorder::primitive_desc layer_pd(cpu_engine(), plain_layer, cpu_engine(), pd.weights_desc(0), attr),
      iter_pd(cpu_engine(), plain_iter, cpu_engine(), pd.weights_desc(1), attr);
  Int8Primitives p{pd, dnnl::gru_forward(pd), layer_pd, iter_pd, dnnl::reorder(layer_pd), dnnl::reorder(iter_pd)};
  return cache->emplace(k, p).first->second;
}

}  // namespace

at::Tensor forward_int8(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                        const at::Tensor& w_iter, const at::Tensor& bias, const at::Tensor& weights_scales,
                        double data_scale, double data_shift) {
  check_tensor(x, "x", at::kByte);
  for (auto [t, name] : {std::pair{&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"}, {&bias, "bias"},
                         {&weights_scales, "weights_scales"}})
    check_tensor(*t, name, at::kFloat);
  TORCH_CHECK(x.dim() == 3 && h0.dim() == 2 && w_layer.dim() == 2 && w_iter.dim() == 2 &&
                  w_layer.size(0) == x.size(2) && w_layer.size(1) == 3 * h0.size(1) &&
                  w_iter.size(0) == h0.size(1) && w_iter.size(1) == 3 * h0.size(1) && h0.size(0) == x.size(1) &&
                  bias.numel() == 3 * h0.size(1) &&
                  (weights_scales.numel() == 1 || weights_scales.numel() == 3 * h0.size(1)),
              "onednn_gru.forward_int8: expected x (T, B, I), h0 (B, H), w_layer (I, 3H), w_iter (H, 3H), ",
              "bias (3, H), weights_scales (3H,) or (1,), got x ", x.sizes(), ", h0 ", h0.sizes(), ", w_layer ",
              w_layer.sizes(), ", w_iter ", w_iter.sizes(), ", bias ", bias.sizes(), ", weights_scales ",
              weights_scales.sizes());
  const float* scales = weights_scales.data_ptr<float>();
  const Int8Key k{x.size(0), x.size(1), x.size(2), h0.size(1), static_cast<float>(data_scale),
                  static_cast<float>(data_shift), std::vector<float>(scales, scales + weights_scales.numel())};
  pybind11::gil_scoped_release no_gil;
  follow_torch_threads();
  const auto p = int8_primitives(k);
  dnnl::stream stream(cpu_engine());
  const memory::desc plain_layer({1, 1, k.input, 3, k.hidden}, dt::f32, tag::ldigo),
      plain_iter({1, 1, k.hidden, 3, k.hidden}, dt::f32, tag::ldigo);
  memory weights_layer(p.pd.weights_desc(0), cpu_engine()), weights_iter(p.pd.weights_desc(1), cpu_engine());
  auto layer_scratchpad = reorder_scratchpad(p.layer_pd, h0), iter_scratchpad = reorder_scratchpad(p.iter_pd, h0);
  p.to_weights_layer.execute(stream, {{DNNL_ARG_FROM, wrap(plain_layer, w_layer)}, {DNNL_ARG_TO, weights_layer},
                                      {DNNL_ARG_SCRATCHPAD, wrap(p.layer_pd.scratchpad_desc(), layer_scratchpad)}});
  p.to_weights_iter.execute(stream, {{DNNL_ARG_FROM, wrap(plain_iter, w_iter)}, {DNNL_ARG_TO, weights_iter},
                                     {DNNL_ARG_SCRATCHPAD, wrap(p.iter_pd.scratchpad_desc(), iter_scratchpad)}});
  auto y = at::empty({k.steps, k.batch, k.hidden}, h0.options());
  auto scratchpad = scratchpad_for(p.pd, h0);
  p.fwd.execute(stream, {{DNNL_ARG_SRC_LAYER, wrap(p.pd.src_desc(0), x)},
                         {DNNL_ARG_SRC_ITER, wrap(p.pd.src_desc(1), h0)},
                         {DNNL_ARG_WEIGHTS_LAYER, weights_layer},
                         {DNNL_ARG_WEIGHTS_ITER, weights_iter},
                         {DNNL_ARG_BIAS, wrap(p.pd.weights_desc(2), bias)},
                         {DNNL_ARG_DST_LAYER, wrap(p.pd.dst_desc(0), y)},
                         {DNNL_ARG_SCRATCHPAD, wrap(p.pd.scratchpad_desc(), scratchpad)}});
  stream.wait();
  ++forward_runs;
  return y;
}

// bfloat16 forward of one layer and direction (inference, and the forward of bf16 training, whose backward is the
// native engine's) as a loop of oneDNN matmuls, where the bf16 RNN primitives are
// slow (oneDNN 3.2's bf16 GRU runs c1 only 1.55x its float32): the weights are reordered once per call into the
// layout the matmul picks (AMX tiles where the CPU has them), each step is one matmul h W_iter (two reset-before)
// and one vectorized loop of gate math in float32. Weights and bias as for `forward` (ldigo, gates u, r, o):
//   x (T, B, I) bf16, h0 (B, H) bf16, w_layer (I, 3H) bf16, w_iter (H, 3H) bf16, bias (4, H) lbr or (3, H) f32
//   gi = x W_layer + b[:3]                                           (B, 3H) f32, one matmul per 16 steps
//   reset-after:  gh = h W_iter                                       (B, 3H) f32
//                 z = σ(gi_u + gh_u), r = σ(gi_r + gh_r), n = tanh(gi_o + r ⊙ (gh_o + b_u'))
//   reset-before: [gh_u, gh_r] = h W_iter[:, :2H], z, r as above, n = tanh(gi_o + (r ⊙ h) W_iter[:, 2H:])
//   h' = (1 - z) ⊙ n + z ⊙ h  -> y (T, B, H) bf16
// The state carried to the next step's z ⊙ h is float32; the matmuls read it rounded to bf16 (y[t - 1]).
namespace {

struct MatmulKey {
  int64_t rows, inner, cols, weights_stride;  // (rows, inner) bf16 x (inner, cols) bf16 -> (rows, cols) f32
  bool bias;                                   // + a (1, cols) f32 bias row
  int threads;                                 // the OpenMP team it is planned for
  bool operator<(const MatmulKey& o) const {
    return std::tie(rows, inner, cols, weights_stride, bias, threads) <
           std::tie(o.rows, o.inner, o.cols, o.weights_stride, o.bias, o.threads);
  }
  memory::desc weights() const { return memory::desc({inner, cols}, dt::bf16, memory::dims{weights_stride, 1}); }
};

struct Matmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul run;
};

Matmul matmul(const MatmulKey& k) {
  static auto* mutex = new std::mutex();
  static auto* cache = new std::map<MatmulKey, Matmul>();  // never destroyed: see the file comment
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = cache->find(k);
  if (it != cache->end()) return it->second;
  if (cache->size() >= kMaxPrimitives) cache->clear();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const memory::desc src({k.rows, k.inner}, dt::bf16, tag::ab), weights({k.inner, k.cols}, dt::bf16, tag::any),
      dst({k.rows, k.cols}, dt::f32, tag::ab);
  const auto pd = k.bias ? dnnl::matmul::primitive_desc(cpu_engine(), src, weights,
                                                        memory::desc({1, k.cols}, dt::f32, tag::ab), dst, attr)
                         : dnnl::matmul::primitive_desc(cpu_engine(), src, weights, dst, attr);
  return cache->emplace(k, Matmul{pd, dnnl::matmul(pd)}).first->second;
}

// One matmul of a call: its weights reordered once, its scratchpad, and memory objects re-pointed per run.
struct BoundMatmul {
  Matmul m;
  memory weights, src, dst, scratchpad_memory;
  at::Tensor scratchpad;
  BoundMatmul(const MatmulKey& k, const void* plain_weights, const at::Tensor& like, const dnnl::stream& stream)
      : m(matmul(k)),
        weights(reordered_as(memory(k.weights(), cpu_engine(), const_cast<void*>(plain_weights)),
                             m.pd.weights_desc(), stream)),
        src(m.pd.src_desc(), cpu_engine(), nullptr),
        dst(m.pd.dst_desc(), cpu_engine(), nullptr),
        scratchpad(scratchpad_for(m.pd, like)) {
    scratchpad_memory = wrap(m.pd.scratchpad_desc(), scratchpad);
  }
  void operator()(dnnl::stream& stream, const void* a, float* out, const float* bias = nullptr) {
    src.set_data_handle(const_cast<void*>(a));
    dst.set_data_handle(out);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst},
                                         {DNNL_ARG_SCRATCHPAD, scratchpad_memory}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(m.pd.query_md(dnnl::query::weights_md, 1), cpu_engine(), const_cast<float*>(bias)));
    m.run.execute(stream, args);
    stream.wait();
  }
};

inline float bf16_to_float(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t float_to_bf16(float v) {  // round to nearest even; integer ops, so the loops vectorize
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// tanh as Eigen's rational approximation (13/6 polynomials, float32 accuracy): plain arithmetic that vectorizes
// inline, ~2x faster here than glibc's vector tanhf.
inline float fast_tanh(float v) {
  const float x = std::min(std::max(v, -7.90531110763549805f), 7.90531110763549805f), x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

// σ(v) = (1 + tanh(v / 2)) / 2.
inline float sigmoid(float v) { return 0.5f + 0.5f * fast_tanh(0.5f * v); }

std::atomic<int64_t> bf16_loop_runs{0};

}  // namespace

namespace {

constexpr int64_t kProjectedSteps = 16;  // steps whose input projection one matmul computes

// The steps of rows [first, first + rows) of the batch, on the calling thread alone: batch rows never meet, so
// each thread of a call runs its own rows through all steps with its own single-threaded matmuls (a (32, 256)
// matmul split over two threads ran slower than on one). The input projection x W_layer + b[:3] runs every
// kProjectedSteps steps for the next ones, into a buffer that stays in L2 (all steps at once took a 12 MB
// buffer at batch 32, T 128, H 256, whose fresh pages faulted on some calls).
// When `saved` is given (training), each step also writes its rows of saved[t] (B, 4H) bf16 in the native
// engine's layout, torch's gate order: r, z, n and g = W_hn h + b_hn (reset-after) or r ⊙ h (reset-before),
// and carries the bf16 state y[t] rather than float32 (what the native backward differentiates, and what a
// call continuing from h_n starts from).
void bf16_rows(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer, const at::Tensor& w_iter,
               const at::Tensor& bias, at::Tensor& y, at::Tensor& saved, bool lbr, int64_t first, int64_t rows) {
  const int64_t T = y.size(0), B = y.size(1), H = y.size(2), I = x.size(2), gh_cols = lbr ? 3 * H : 2 * H;
  const int64_t chunk = std::min(T, kProjectedSteps);
  dnnl::stream stream(cpu_engine());
  BoundMatmul project(MatmulKey{chunk * rows, I, 3 * H, 3 * H, true, 1}, w_layer.data_ptr(), y, stream);
  std::optional<BoundMatmul> project_rest;  // the last, shorter chunk of steps
  if (T % chunk)
    project_rest.emplace(MatmulKey{(T % chunk) * rows, I, 3 * H, 3 * H, true, 1}, w_layer.data_ptr(), y, stream);
  auto x_rows = at::empty({chunk, rows, I}, x.options());  // this thread's rows of x for the chunk
  auto gi = at::empty({chunk, rows, 3 * H}, y.options().dtype(at::kFloat));
  BoundMatmul recurrent(MatmulKey{rows, H, gh_cols, 3 * H, false, 1}, w_iter.data_ptr(), y, stream);
  std::optional<BoundMatmul> candidate;  // reset-before: (r ⊙ h) W_iter[:, 2H:]
  if (!lbr)
    candidate.emplace(MatmulKey{rows, H, H, 3 * H, false, 1}, w_iter.data_ptr<at::BFloat16>() + 2 * H, y, stream);
  const auto f32 = y.options().dtype(at::kFloat);
  auto gh = at::empty({rows, 3 * H}, f32);
  auto state = h0.narrow(0, first, rows).to(at::kFloat);  // (rows, H) h_{t-1} in float32
  auto update = at::empty({rows, H}, f32);                // reset-before: z between the two matmuls
  auto reset_state = at::empty({rows, H}, y.options());   // reset-before: r ⊙ h in bf16, the second matmul's input
  const float* b_last = bias.data_ptr<float>() + 3 * H;   // lbr: b_u' (= torch's b_hn)
  float *gh_p = gh.data_ptr<float>(), *h_p = state.data_ptr<float>(), *z_p = update.data_ptr<float>();
  const float* gi_p = gi.data_ptr<float>();
  auto* y_p = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>()) + first * H;
  auto* rh_p = reinterpret_cast<uint16_t*>(reset_state.data_ptr<at::BFloat16>());
  const auto* h0_p = reinterpret_cast<const uint16_t*>(h0.data_ptr<at::BFloat16>()) + first * H;
  const bool training = saved.numel() > 0;
  auto* saved_p = training ? reinterpret_cast<uint16_t*>(saved.data_ptr<at::BFloat16>()) + first * 4 * H : nullptr;
  for (int64_t t = 0; t < T; ++t) {
    const uint16_t* h_in = t == 0 ? h0_p : y_p + (t - 1) * B * H;  // (rows, H) rows of y[t - 1]
    if (t % chunk == 0) {  // x[t : t + chunk, first : first + rows] W_layer + b[:3]
      const int64_t steps = std::min(chunk, T - t);
      x_rows.narrow(0, 0, steps).copy_(x.narrow(0, t, steps).narrow(1, first, rows));
      (steps == chunk ? project : project_rest.value())(stream, x_rows.data_ptr(), gi.data_ptr<float>(),
                                                        bias.data_ptr<float>());
    }
    const float* gi_t = gi_p + (t % chunk) * rows * 3 * H;
    uint16_t* out = y_p + t * B * H;
    uint16_t* keep = training ? saved_p + t * B * 4 * H : nullptr;  // (rows, 4H) rows of saved[t]
    recurrent(stream, h_in, gh_p);
    for (int64_t b = 0; b < rows; ++b) {
      const float *a = gi_t + b * 3 * H, *c = gh_p + b * gh_cols;
      float* hb = h_p + b * H;
      uint16_t* o = out + b * H;
      if (lbr && training) {
        uint16_t* k = keep + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float z = sigmoid(a[j] + c[j]), r = sigmoid(a[H + j] + c[H + j]);
          const float g = c[2 * H + j] + b_last[j];
          const float n = fast_tanh(a[2 * H + j] + r * g);
          const uint16_t h = float_to_bf16((1.0f - z) * n + z * hb[j]);
          hb[j] = bf16_to_float(h);  // training carries y[t], the state the native backward differentiates
          o[j] = h;
          k[j] = float_to_bf16(r), k[H + j] = float_to_bf16(z), k[2 * H + j] = float_to_bf16(n);
          k[3 * H + j] = float_to_bf16(g);
        }
      } else if (lbr) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float z = sigmoid(a[j] + c[j]), r = sigmoid(a[H + j] + c[H + j]);
          const float n = fast_tanh(a[2 * H + j] + r * (c[2 * H + j] + b_last[j]));
          const float h = (1.0f - z) * n + z * hb[j];
          hb[j] = h;
          o[j] = float_to_bf16(h);
        }
      } else if (training) {
        float* zb = z_p + b * H;
        uint16_t *rh = rh_p + b * H, *k = keep + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float z = sigmoid(a[j] + c[j]), r = sigmoid(a[H + j] + c[H + j]);
          const uint16_t r_h = float_to_bf16(r * hb[j]);
          zb[j] = z;
          rh[j] = r_h;
          k[j] = float_to_bf16(r), k[H + j] = float_to_bf16(z), k[3 * H + j] = r_h;
        }
      } else {
        float* zb = z_p + b * H;
        uint16_t* rh = rh_p + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          zb[j] = sigmoid(a[j] + c[j]);
          rh[j] = float_to_bf16(sigmoid(a[H + j] + c[H + j]) * hb[j]);
        }
      }
    }
    if (lbr) continue;
    candidate.value()(stream, rh_p, gh_p);  // (rows, H) into gh's first rows·H values
    for (int64_t b = 0; b < rows; ++b) {
      const float *a = gi_t + b * 3 * H, *c = gh_p + b * H, *zb = z_p + b * H;
      float* hb = h_p + b * H;
      uint16_t* o = out + b * H;
      uint16_t* k = training ? keep + b * 4 * H : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float n = fast_tanh(a[2 * H + j] + c[j]);
        const float h = (1.0f - zb[j]) * n + zb[j] * hb[j];
        o[j] = float_to_bf16(h);
        hb[j] = training ? bf16_to_float(o[j]) : h;  // training carries y[t], as above
        if (training) k[2 * H + j] = float_to_bf16(n);
      }
    }
  }
}

}  // namespace

// Returns y (T, B, H) bf16; with training, also saved (T, B, 4H) bf16 in the native engine's layout (see
// bf16_rows), which native_gru.cpp's backward reads; an empty tensor otherwise.
std::vector<at::Tensor> forward_bf16_loop(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                          const at::Tensor& w_iter, const at::Tensor& bias, bool lbr,
                                          bool training) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"}})
    check_tensor(*t, name, at::kBFloat16);
  check_tensor(bias, "bias", at::kFloat);
  const Shape s = shape_of(x, w_layer, w_iter, lbr, false);
  TORCH_CHECK(w_layer.dim() == 2 && bias.numel() == (lbr ? 4 : 3) * s.hidden,
              "onednn_gru.forward_bf16_loop: expected one layer and direction, weights (I, 3H), (H, 3H) and bias (",
              lbr ? 4 : 3, ", H), got ", w_layer.sizes(), ", ", w_iter.sizes(), " and ", bias.sizes());
  check_state_shape(h0, s, "h0");
  const int64_t T = s.steps, B = s.batch, H = s.hidden;
  pybind11::gil_scoped_release no_gil;
  follow_torch_threads();
  auto y = at::empty({T, B, H}, x.options());
  auto saved = at::empty({training ? T : 0, B, 4 * H}, x.options());
  if (T == 0 || B == 0) return {y, saved};
  const int64_t parts = std::min<int64_t>(omp_get_max_threads(), B);
  std::vector<std::exception_ptr> errors(parts);
#pragma omp parallel num_threads(parts)
  {
    const int64_t part = omp_get_thread_num(), count = omp_get_num_threads();
    omp_set_num_threads(1);  // this thread's matmuls run on it alone
    const int64_t first = B * part / count, last = B * (part + 1) / count;
    try {
      bf16_rows(x, h0, w_layer, w_iter, bias, y, saved, lbr, first, last - first);
    } catch (...) {
      errors[part] = std::current_exception();
    }
  }
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
  ++bf16_loop_runs;
  return {y, saved};
}

int64_t bf16_loop_runs_count() { return bf16_loop_runs.load(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU forward over L layers and D directions in one primitive");
  m.def("backward", &backward, "GRU backward over L layers and D directions in one primitive");
  m.def("version", &version, "the oneDNN runtime's version");
  m.def("cpu_isa", &cpu_isa, "the instruction set oneDNN dispatches to on this CPU");
  m.def("openmp_threads", &openmp_threads, "OpenMP threads oneDNN runs on from this thread");
  m.def("runs", &runs, "(forward, backward) primitive runs in this process");
  m.def("forward_bf16_loop", &forward_bf16_loop, "bfloat16 forward of one layer and direction, matmul per step");
  m.def("bf16_loop_runs", &bf16_loop_runs_count, "forward_bf16_loop calls in this process");
  m.def("forward_int8", &forward_int8, "int8 inference of a reset-before GRU layer and direction");
}
