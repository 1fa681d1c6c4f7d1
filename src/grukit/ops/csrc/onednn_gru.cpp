// grukit's binding to oneDNN's GRU primitives: lbr_gru (reset-after, PyTorch's GRU) and gru (reset-before).
//
// One layer, one direction (left to right) per call; grukit stacks layers and directions and handles
// variable lengths in Python (grukit/ops/onednn.py). float32, time-major:
//   x (T, B, I), h0 (B, H) -> y (T, B, H)
// Weights arrive in oneDNN's plain ldigo layout, gates in oneDNN's order u (update), r (reset), o (candidate):
//   w_layer (I, 3H), w_iter (H, 3H), bias (4, H) for lbr_gru (b_u, b_r, b_o, b_u') or (3, H) for gru.
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

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

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

// Forward and backward primitive descriptors of one shape, for either GRU flavour. Copies share the
// underlying oneDNN objects (reference-counted handles).
struct Primitives {
  dnnl::primitive_desc fwd_pd, bwd_pd;
  dnnl::primitive fwd, bwd;
};

template <typename Fwd, typename Bwd>
Primitives make_primitives(const Shape& s) {
  const auto plain = plain_descs(s, tag::ldigo);
  const auto any = plain_descs(s, tag::any);  // only the weights' layout is left to oneDNN
  const auto prop = s.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto dir = dnnl::rnn_direction::unidirectional_left2right;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  typename Fwd::primitive_desc fwd_pd(cpu_engine(), prop, dir, plain.src_layer, plain.src_iter, any.weights_layer,
                                      any.weights_iter, plain.bias, plain.dst_layer, memory::desc(), attr);
  Primitives p{fwd_pd, {}, typename Fwd::primitive(fwd_pd), {}};
  if (s.training) {
    typename Bwd::primitive_desc bwd_pd(cpu_engine(), dnnl::prop_kind::backward, dir, plain.src_layer,
                                        plain.src_iter, any.weights_layer, any.weights_iter, plain.bias,
                                        plain.dst_layer, memory::desc(), plain.src_layer, plain.src_iter,
                                        plain.weights_layer, plain.weights_iter, plain.bias, plain.dst_layer,
                                        memory::desc(), fwd_pd, attr);
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
memory weights_as(const memory& user, const memory::desc& want, const dnnl::stream& stream) {
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

void check_f32_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), "onednn_gru: ", name,
              " must be a contiguous float32 CPU tensor");
}

// A forked child inherits the parent's OpenMP team as bookkeeping only (GNU OpenMP is not fork-safe): the
// first parallel region waits forever for worker threads that were not copied. Forked children run
// oneDNN on one thread, as torch's DataLoader workers run torch.
std::atomic<bool> forked_child{false};
const int fork_handler = pthread_atfork(nullptr, nullptr, [] { forked_child = true; });

// oneDNN (GNU OpenMP build) runs on the calling thread's OpenMP team: follow torch.set_num_threads.
void follow_torch_threads() { omp_set_num_threads(forked_child ? 1 : at::get_num_threads()); }

}  // namespace

// Returns (y (T, B, H), workspace bytes; empty when not training).
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                const at::Tensor& w_iter, const at::Tensor& bias, bool lbr, bool training) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"},
                         {&bias, "bias"}})
    check_f32_contiguous(*t, name);
  pybind11::gil_scoped_release no_gil;  // the arguments stay referenced by the caller's frame
  follow_torch_threads();
  const Shape s{x.size(0), x.size(1), x.size(2), h0.size(1), lbr, training};
  const auto p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo);
  dnnl::stream stream(cpu_engine());
  auto y = at::empty({s.steps, s.batch, s.hidden}, x.options());
  auto scratchpad = scratchpad_for(p.fwd_pd, x);
  const auto wl = weights_as(wrap(plain.weights_layer, w_layer), p.fwd_pd.weights_desc(0), stream);
  const auto wi = weights_as(wrap(plain.weights_iter, w_iter), p.fwd_pd.weights_desc(1), stream);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(plain.src_layer, x)}, {DNNL_ARG_SRC_ITER, wrap(plain.src_iter, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},  {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(plain.bias, bias)}, {DNNL_ARG_DST_LAYER, wrap(plain.dst_layer, y)},
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
  return {y, workspace};
}

// Returns (dx (T, B, I), dh0 (B, H), dw_layer (I, 3H) ldigo, dw_iter (H, 3H) ldigo, dbias (G, H)).
std::vector<at::Tensor> backward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_layer,
                                 const at::Tensor& w_iter, const at::Tensor& bias, const at::Tensor& y,
                                 const at::Tensor& dy, const at::Tensor& workspace, bool lbr) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&h0, "h0"}, {&w_layer, "w_layer"}, {&w_iter, "w_iter"},
                         {&bias, "bias"}, {&y, "y"}, {&dy, "dy"}})
    check_f32_contiguous(*t, name);
  pybind11::gil_scoped_release no_gil;
  follow_torch_threads();
  const Shape s{x.size(0), x.size(1), x.size(2), h0.size(1), lbr, true};
  const auto p = primitives(s);
  const auto plain = plain_descs(s, tag::ldigo);
  const auto ws_desc = p.bwd_pd.workspace_desc();
  TORCH_CHECK(workspace.scalar_type() == at::kByte && workspace.is_contiguous() &&
                  static_cast<size_t>(workspace.numel()) == ws_desc.get_size(),
              "onednn_gru: the workspace does not come from a training forward of this shape");
  dnnl::stream stream(cpu_engine());
  auto scratchpad = scratchpad_for(p.bwd_pd, x);
  const auto wl = weights_as(wrap(plain.weights_layer, w_layer), p.bwd_pd.weights_desc(0), stream);
  const auto wi = weights_as(wrap(plain.weights_iter, w_iter), p.bwd_pd.weights_desc(1), stream);
  auto dx = at::empty_like(x);
  auto dh0 = at::empty_like(h0);
  // oneDNN accumulates into the weight and bias gradients.
  auto dw_layer = at::zeros_like(w_layer);
  auto dw_iter = at::zeros_like(w_iter);
  auto dbias = at::zeros_like(bias);
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

// The OpenMP team size oneDNN's next primitive will use on this thread.
int64_t openmp_threads() { return omp_get_max_threads(); }

std::tuple<int64_t, int64_t> runs() { return {forward_runs.load(), backward_runs.load()}; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU forward over one layer and direction");
  m.def("backward", &backward, "GRU backward over one layer and direction");
  m.def("version", &version, "the oneDNN runtime's version");
  m.def("openmp_threads", &openmp_threads, "OpenMP threads oneDNN runs on from this thread");
  m.def("runs", &runs, "(forward, backward) primitive runs in this process");
}
