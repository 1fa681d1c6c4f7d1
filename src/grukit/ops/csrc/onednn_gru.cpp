// grukit's binding to oneDNN's GRU primitives: lbr_gru (reset-after, PyTorch's GRU) and gru (reset-before).
//
// One layer, one direction (left to right) per call; grukit stacks layers and directions and handles
// variable lengths in Python (grukit/ops/onednn.py). float32, time-major:
//   x (T, B, I), h0 (B, H) -> y (T, B, H)
// Weights arrive in oneDNN's plain ldigo layout, gates in oneDNN's order u (update), r (reset), o (candidate):
//   w_layer (I, 3H), w_iter (H, 3H), bias (4, H) for lbr_gru (b_u, b_r, b_o, b_u') or (3, H) for gru.
// The primitives pick their preferred weight formats (format_tag::any); the reordered copies are cached per
// weights token (Python hands out a new token whenever a parameter changes), so a reorder happens once per
// weight update, not per call. Primitive descriptors and primitives are cached per shape.
#include <torch/extension.h>

#include <omp.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

struct Shape {
  int64_t steps, batch, input, hidden;
  bool lbr, training;
  bool operator<(const Shape& o) const {
    return std::tie(steps, batch, input, hidden, lbr, training) <
           std::tie(o.steps, o.batch, o.input, o.hidden, o.lbr, o.training);
  }
};

struct Descs {
  memory::desc src_layer, src_iter, weights_layer, weights_iter, bias, dst_layer;
};

Descs plain_descs(const Shape& s, tag weights_tag) {
  const int64_t gates = 3, bias_gates = s.lbr ? 4 : 3;
  return {
      memory::desc({s.steps, s.batch, s.input}, dt::f32, tag::tnc),
      memory::desc({1, 1, s.batch, s.hidden}, dt::f32, tag::ldnc),
      memory::desc({1, 1, s.input, gates, s.hidden}, dt::f32, weights_tag),
      memory::desc({1, 1, s.hidden, gates, s.hidden}, dt::f32, weights_tag),
      memory::desc({1, 1, bias_gates, s.hidden}, dt::f32, tag::ldgo),
      memory::desc({s.steps, s.batch, s.hidden}, dt::f32, tag::tnc),
  };
}

// Forward and backward primitive descriptors of one shape, for either GRU flavour.
struct Primitives {
  dnnl::primitive_desc fwd_pd, bwd_pd;
  dnnl::primitive fwd, bwd;
};

template <typename Fwd, typename Bwd>
Primitives make_primitives(const Shape& s) {
  const auto any = plain_descs(s, tag::any);
  const auto prop = s.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto dir = dnnl::rnn_direction::unidirectional_left2right;
  typename Fwd::primitive_desc fwd_pd(cpu_engine(), prop, dir, any.src_layer, any.src_iter, any.weights_layer,
                                      any.weights_iter, any.bias, any.dst_layer, memory::desc());
  Primitives p{fwd_pd, {}, typename Fwd::primitive(fwd_pd), {}};
  if (s.training) {
    const auto plain = plain_descs(s, tag::ldigo);
    typename Bwd::primitive_desc bwd_pd(cpu_engine(), dnnl::prop_kind::backward, dir, any.src_layer, any.src_iter,
                                        any.weights_layer, any.weights_iter, any.bias, any.dst_layer, memory::desc(),
                                        any.src_layer, any.src_iter, plain.weights_layer, plain.weights_iter,
                                        any.bias, any.dst_layer, memory::desc(), fwd_pd);
    p.bwd_pd = bwd_pd;
    p.bwd = typename Bwd::primitive(bwd_pd);
  }
  return p;
}

constexpr size_t kMaxPrimitives = 256, kMaxWeightCopies = 512;
std::mutex cache_mutex;
std::map<Shape, Primitives> primitive_cache;
// (weights token, slot) -> reordered weights; slot names the primitive and argument the copy was made for.
std::map<std::pair<int64_t, std::string>, memory> weights_cache;

Primitives& primitives(const Shape& s) {
  auto it = primitive_cache.find(s);
  if (it == primitive_cache.end()) {
    // Variable-length batches bring new shapes on every call: keep the cache bounded.
    if (primitive_cache.size() >= kMaxPrimitives) primitive_cache.clear();
    auto p = s.lbr ? make_primitives<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>(s)
                   : make_primitives<dnnl::gru_forward, dnnl::gru_backward>(s);
    it = primitive_cache.emplace(s, p).first;
  }
  return it->second;
}

std::string slot_name(const char* what, const Shape& s, const memory::desc& desc) {
  return std::string(what) + ":" + std::to_string(s.steps) + "," + std::to_string(s.batch) + "," +
         std::to_string(s.input) + "," + std::to_string(s.hidden) + "," + std::to_string(s.lbr) + "," +
         std::to_string(s.training) + ":" + std::to_string(desc.get_size());
}

// `user` wrapped as oneDNN memory in the layout `want`, reordering (once per token) when they differ.
memory weights_as(const memory& user, const memory::desc& want, int64_t token, const std::string& slot) {
  if (user.get_desc() == want) return user;
  auto key = std::make_pair(token, slot);
  auto it = weights_cache.find(key);
  if (it != weights_cache.end() && it->second.get_desc() == want) return it->second;
  if (weights_cache.size() >= kMaxWeightCopies) weights_cache.clear();
  memory reordered(want, cpu_engine());
  dnnl::reorder(user, reordered).execute(cpu_stream(), const_cast<memory&>(user), reordered);
  cpu_stream().wait();
  weights_cache[key] = reordered;
  return reordered;
}

memory wrap(const memory::desc& desc, const at::Tensor& t) {
  return memory(desc, cpu_engine(), t.data_ptr());
}

void check_f32_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), "onednn_gru: ", name,
              " must be a contiguous float32 CPU tensor");
}

// oneDNN (GNU OpenMP build) runs on the calling thread's OpenMP team: follow torch.set_num_threads.
void follow_torch_threads() { omp_set_num_threads(at::get_num_threads()); }

}  // namespace

// Returns (y (T, B, H), workspace bytes; empty when not training).
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                const at::Tensor& w_iter, const at::Tensor& bias, bool lbr, bool training,
                                int64_t token) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"},
                         {&bias, "bias"}})
    check_f32_contiguous(*t, name);
  std::lock_guard<std::mutex> lock(cache_mutex);
  follow_torch_threads();
  const Shape s{x.size(0), x.size(1), x.size(2), h0.size(1), lbr, training};
  auto& p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo);
  auto y = at::empty({s.steps, s.batch, s.hidden}, x.options());
  const auto wl_desc = p.fwd_pd.query_md(dnnl::query::weights_md, 0);
  const auto wi_desc = p.fwd_pd.query_md(dnnl::query::weights_md, 1);
  auto wl = weights_as(wrap(plain.weights_layer, w_layer), wl_desc, token, slot_name("fwd_layer", s, wl_desc));
  auto wi = weights_as(wrap(plain.weights_iter, w_iter), wi_desc, token, slot_name("fwd_iter", s, wi_desc));
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(plain.src_layer, x)}, {DNNL_ARG_SRC_ITER, wrap(plain.src_iter, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},  {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(plain.bias, bias)}, {DNNL_ARG_DST_LAYER, wrap(plain.dst_layer, y)},
  };
  at::Tensor workspace = at::empty({0}, x.options().dtype(at::kByte));
  if (training) {
    const auto ws_desc = p.fwd_pd.query_md(dnnl::query::workspace_md, 0);
    workspace = at::empty({static_cast<int64_t>(ws_desc.get_size())}, x.options().dtype(at::kByte));
    args.emplace(DNNL_ARG_WORKSPACE, wrap(ws_desc, workspace));
  }
  p.fwd.execute(cpu_stream(), args);
  cpu_stream().wait();
  return {y, workspace};
}

// Returns (dx (T, B, I), dh0 (B, H), dw_layer (I, 3H) ldigo, dw_iter (H, 3H) ldigo, dbias (G, H)).
std::vector<at::Tensor> backward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                 const at::Tensor& w_iter, const at::Tensor& bias, const at::Tensor& y,
                                 const at::Tensor& dy, const at::Tensor& workspace, bool lbr, int64_t token) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"},
                         {&bias, "bias"}, {&y, "y"}, {&dy, "dy"}})
    check_f32_contiguous(*t, name);
  std::lock_guard<std::mutex> lock(cache_mutex);
  follow_torch_threads();
  const Shape s{x.size(0), x.size(1), x.size(2), h0.size(1), lbr, true};
  auto& p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo);
  const auto wl_desc = p.bwd_pd.query_md(dnnl::query::weights_md, 0);
  const auto wi_desc = p.bwd_pd.query_md(dnnl::query::weights_md, 1);
  auto wl = weights_as(wrap(plain.weights_layer, w_layer), wl_desc, token, slot_name("bwd_layer", s, wl_desc));
  auto wi = weights_as(wrap(plain.weights_iter, w_iter), wi_desc, token, slot_name("bwd_iter", s, wi_desc));
  auto dx = at::empty_like(x);
  auto dh0 = at::empty_like(h0);
  // oneDNN accumulates into the weight and bias gradients.
  auto dw_layer = at::zeros_like(w_layer);
  auto dw_iter = at::zeros_like(w_iter);
  auto dbias = at::zeros_like(bias);
  const auto ws_desc = p.bwd_pd.query_md(dnnl::query::workspace_md, 0);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(plain.src_layer, x)},
      {DNNL_ARG_SRC_ITER, wrap(plain.src_iter, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},
      {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(plain.bias, bias)},
      {DNNL_ARG_DST_LAYER, wrap(plain.dst_layer, y)},
      {DNNL_ARG_DIFF_DST_LAYER, wrap(plain.dst_layer, dy)},
      {DNNL_ARG_WORKSPACE, wrap(ws_desc, workspace)},
      {DNNL_ARG_DIFF_SRC_LAYER, wrap(plain.src_layer, dx)},
      {DNNL_ARG_DIFF_SRC_ITER, wrap(plain.src_iter, dh0)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, wrap(plain.weights_layer, dw_layer)},
      {DNNL_ARG_DIFF_WEIGHTS_ITER, wrap(plain.weights_iter, dw_iter)},
      {DNNL_ARG_DIFF_BIAS, wrap(plain.bias, dbias)},
  };
  p.bwd.execute(cpu_stream(), args);
  cpu_stream().wait();
  return {dx, dh0, dw_layer, dw_iter, dbias};
}

// Forget the reordered weights of a token (its parameters changed or were freed).
void release(int64_t token) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  for (auto it = weights_cache.begin(); it != weights_cache.end();)
    it = it->first.first == token ? weights_cache.erase(it) : std::next(it);
}

int64_t cached_weights() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  return static_cast<int64_t>(weights_cache.size());
}

std::string version() {
  const auto* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

// The OpenMP team size oneDNN's next primitive will use on this thread.
int64_t openmp_threads() { return omp_get_max_threads(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU forward over one layer and direction");
  m.def("backward", &backward, "GRU backward over one layer and direction");
  m.def("release", &release, "drop the reordered weights of a token");
  m.def("cached_weights", &cached_weights, "number of reordered weight copies held");
  m.def("version", &version, "the oneDNN runtime's version");
  m.def("openmp_threads", &openmp_threads, "OpenMP threads oneDNN runs on from this thread");
}
