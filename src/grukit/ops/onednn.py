r"""The ``onednn`` engine: GRU layers and directions through oneDNN's fused RNN primitives.

oneDNN's ``lbr_gru`` ("linear before reset") is exactly the reset-after GRU of PyTorch and cuDNN, and its
``gru`` primitive is the reset-before form (Cho et al. 2014). oneDNN orders the gates u (update), r (reset),
o (candidate) and wants the weights as ``ldigo`` ``(layers, directions, input, gates, hidden)``; torch stores
``(3H, I)`` with gates r, z, n. The biases fold as::

    lbr_gru: b_u = b_iz + b_hz,  b_r = b_ir + b_hr,  b_o = b_in,  b_u' = b_hn   (4, H)
    gru:     b_u = b_iz + b_hz,  b_r = b_ir + b_hr,  b_o = b_in + b_hn          (3, H)

Two ways in: :func:`gru_sequence` runs one layer and direction (what ``lengths`` and the per-direction stack
use), :func:`gru_layers` runs a whole stack without ``lengths`` in as few primitives as oneDNN allows: both
directions of a layer in one ``bidirectional_concat`` primitive, and consecutive unidirectional layers whose
input size equals the hidden size in one multi-layer primitive. bfloat16 inference at batch >= 2 runs neither:
oneDNN 3.2's bf16 GRU primitive is slow, so each layer and direction runs as a loop of oneDNN matmuls on weights
reordered once per call (:func:`_bf16_loop`). The same loop is the forward of the ``native`` engine's bf16
training (:func:`bf16_loop_forward`, which also saves the per-step values ``native``'s backward reads).

Data types: float32, and bfloat16 (bf16 weights and activations, float32 accumulation and bias, float32
gradients from oneDNN) when the input is bfloat16 or CPU autocast to bfloat16 is on (:func:`compute_dtype`).
Under autocast the float32 parameters are cast to bf16 per call, the output is bf16 (as autocast's matmuls
give) and the parameters' gradients come back in float32; a bf16 module gets bf16 gradients. Where the CPU
has neither AMX nor AVX-512 BF16 (:func:`has_bf16_hardware`) bf16 calls warn once and run in float32, the
output cast to bf16.

The weights are converted on every call: a cache keyed on the parameters' ``_version`` served stale weights
after fused optimizers (``Adam(fused=True)`` updates in place without bumping ``_version``) and ``.data``
writes, and conversion reads the weights once, ~1/(B·T) of the GEMM work of a call. The C++ side caches the
primitives per shape; each call owns its scratchpad, stream and reordered weights, so the engine runs from
any thread (a web server's request threads) and stays sound when a call is interrupted. The runtime comes
from the ``onednn-cpu-gomp`` wheel. Second derivatives go through the reference (:mod:`grukit.ops.recompute`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from grukit.ops import extensions, recompute, reference

Weights = tuple[Tensor, Tensor, "Tensor | None", "Tensor | None"]  # (w_ih, w_hh, b_ih, b_hh), torch's layout
BF16_ISAS = ("avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx", "avx512_core_amx_fp16")
_bf16_fallback_warned = False


def load() -> ModuleType | None:
    """The compiled binding, or ``None`` (with one warning) when oneDNN or a compiler is missing."""
    prefix = extensions.venv_prefix()
    lib = prefix / "lib"

    def missing() -> str | None:
        if (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists() and any(lib.glob("libdnnl.so*")):
            return None
        return f"grukit's onednn engine needs the oneDNN 3.2 runtime and headers under {prefix} (grukit[fast])"

    return extensions.load(
        "onednn_gru",
        ["onednn_gru.cpp"],
        cflags=["-O3", "-march=native", "-fopenmp"],  # -march: the bf16 loop's gate math in AVX-512
        ldflags=[f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-fopenmp"],
        include_dirs=[str(prefix / "include")],
        missing=missing,
    )


def available() -> bool:
    return load() is not None


def cpu_isa() -> str | None:
    """The instruction set oneDNN dispatches to on this CPU, in oneDNN's words (``"avx512_core_amx"``,
    ``"avx512_core_bf16"``, ``"avx2"``, ...); ``None`` when the binding is not available."""
    binding = load()
    return binding.cpu_isa() if binding is not None else None


def has_bf16_hardware() -> bool:
    """Whether oneDNN runs bfloat16 in hardware here: AMX or AVX-512 BF16 (:data:`BF16_ISAS`)."""
    return cpu_isa() in BF16_ISAS


def autocast_bf16(dtype: torch.dtype = torch.float32) -> bool:
    """Whether CPU autocast to bfloat16 is on and applies to ``dtype`` (float32 or bfloat16)."""
    on = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return on and dtype in (torch.float32, torch.bfloat16)


def wants_bf16(x: Tensor) -> bool:
    """Whether a GRU call on ``x`` computes in bfloat16: ``x`` is bfloat16, or CPU autocast to bfloat16 is on."""
    return x.dtype == torch.bfloat16 or autocast_bf16(x.dtype)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype oneDNN computes a call on ``x`` in: bfloat16 where :func:`wants_bf16` and the CPU has bf16
    instructions, else float32 (with one warning per process when bf16 was wanted)."""
    global _bf16_fallback_warned
    if not wants_bf16(x):
        return torch.float32
    if has_bf16_hardware():
        return torch.bfloat16
    if not _bf16_fallback_warned:
        _bf16_fallback_warned = True
        warnings.warn(
            f"this CPU ({cpu_isa()}) has neither AMX nor AVX-512 BF16: grukit's onednn engine runs bfloat16 GRUs "
            "in float32 and returns bfloat16",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.float32


def output_dtype(x: Tensor) -> torch.dtype:
    """The dtype of a call's output: bfloat16 when :func:`wants_bf16`, else float32."""
    return torch.bfloat16 if wants_bf16(x) else torch.float32


class _Prepared:
    """Weights of one or more layers and directions in oneDNN's order, layout and compute dtype: ``w_layer``
    ``(I, 3H)``, ``w_iter`` ``(H, 3H)``, ``bias`` ``(G, H)`` float32 for one, ``(L, D, ·)`` stacked for
    several."""

    def __init__(self, weights: Sequence[Sequence[Weights]], reset_after: bool, dtype: torch.dtype, stacked: bool):
        with torch.no_grad():
            w_layer, w_iter, bias = [], [], []  # per layer, per direction
            for layer in weights:
                w_layer.append([_to_ldigo(w_ih.to(dtype)) for w_ih, _, _, _ in layer])  # (I, 3H) each
                w_iter.append([_to_ldigo(w_hh.to(dtype)) for _, w_hh, _, _ in layer])  # (H, 3H) each
                bias.append([_fold_bias(w_ih, b_ih, b_hh, reset_after) for w_ih, _, b_ih, b_hh in layer])
        if stacked:
            self.w_layer = torch.stack([torch.stack(d) for d in w_layer])  # (L, D, I, 3H)
            self.w_iter = torch.stack([torch.stack(d) for d in w_iter])  # (L, D, H, 3H)
            self.bias = torch.stack([torch.stack(d) for d in bias])  # (L, D, G, H)
        else:
            self.w_layer, self.w_iter, self.bias = w_layer[0][0], w_iter[0][0], bias[0][0]
        self.dtype = dtype


def _fold_bias(w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, reset_after: bool) -> Tensor:
    """torch's two ``(3H,)`` biases as oneDNN's float32 ``(4, H)`` (``lbr_gru``) or ``(3, H)`` (``gru``)."""
    zeros = w_ih.new_zeros(w_ih.shape[0], dtype=torch.float32)
    b_ir, b_iz, b_in = (b_ih.float() if b_ih is not None else zeros).chunk(3)
    b_hr, b_hz, b_hn = (b_hh.float() if b_hh is not None else zeros).chunk(3)
    if reset_after:
        return torch.stack([b_iz + b_hz, b_ir + b_hr, b_in, b_hn]).contiguous()  # (4, H)
    return torch.stack([b_iz + b_hz, b_ir + b_hr, b_in + b_hn]).contiguous()  # (3, H)


def _to_ldigo(weight: Tensor) -> Tensor:
    """torch ``(3H, K)`` gates r, z, n -> oneDNN ``(K, 3H)`` gates u (= z), r, o (= n)."""
    r, z, n = weight.chunk(3, dim=0)
    return torch.cat([z, r, n], dim=0).t().contiguous()


def _from_ldigo(grad: Tensor) -> Tensor:
    """Inverse of :func:`_to_ldigo` for gradients: ``(K, 3H)`` u, r, o -> ``(3H, K)`` r, z, n."""
    u, r, o = grad.t().chunk(3, dim=0)
    return torch.cat([r, u, o], dim=0)


def prepare(
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    reset_after: bool,
    dtype: torch.dtype = torch.float32,
) -> _Prepared:
    """The weights of one layer and direction converted for oneDNN as they are now, ``w_layer`` and ``w_iter``
    cast to ``dtype`` (float32 or bfloat16; the bias stays float32)."""
    return _Prepared([[(w_ih, w_hh, b_ih, b_hh)]], reset_after, dtype, stacked=False)


def _bias_grads(dbias: Tensor, reset_after: bool) -> tuple[Tensor, Tensor]:
    """oneDNN's bias gradient ``(G, H)`` as torch's ``(db_ih, db_hh)``, each ``(3H,)`` gates r, z, n."""
    if reset_after:
        db_u, db_r, db_o, db_u2 = dbias.unbind(0)
        return torch.cat([db_r, db_u, db_o]), torch.cat([db_r, db_u, db_u2])
    db_u, db_r, db_o = dbias.unbind(0)
    db = torch.cat([db_r, db_u, db_o])
    return db, db


def _weight_grads(
    weights: Sequence[Tensor | None], dw_layer: Tensor, dw_iter: Tensor, dbias: Tensor, reset_after: bool
) -> list[Tensor | None]:
    """Gradients of one layer and direction's ``(w_ih, w_hh, b_ih, b_hh)`` from oneDNN's float32 ``ldigo``
    gradients, each in its parameter's dtype (``None`` for an absent bias)."""
    w_ih, w_hh, b_ih, b_hh = weights
    db_ih, db_hh = _bias_grads(dbias, reset_after)
    grads = (_from_ldigo(dw_layer), _from_ldigo(dw_iter), db_ih, db_hh)
    return [None if w is None else g.to(w.dtype) for w, g in zip(weights, grads)]


class _GRUFunction(torch.autograd.Function):
    """One layer and direction: ``x`` ``(T, B, I)``, ``h0`` ``(B, H)`` -> ``y`` ``(T, B, H)`` in ``out_dtype``."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, prepared, reset_after, out_dtype):
        x_c = x.to(prepared.dtype).contiguous()  # (T, B, I) in the compute dtype
        h0_c = h0.to(prepared.dtype).contiguous()  # (B, H)
        y, h_n, workspace = load().forward(
            x_c, h0_c, prepared.w_layer, prepared.w_iter, prepared.bias, reset_after, True
        )
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, x_c, h0_c, y, h_n, workspace)
        ctx.prepared, ctx.reset_after, ctx.autocast = prepared, reset_after, autocast_bf16()
        return y.to(out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, b_ih, b_hh, x_c, h0_c, y, h_n, workspace = ctx.saved_tensors
        if recompute.needs_reference(dy):  # create_graph=True or a vmapped dy, see grukit.ops.recompute
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx.autocast):  # as the forward ran
                grads = recompute.gru_sequence_grads(
                    (x, h0, w_ih, w_hh, b_ih, b_hh), ctx.reset_after, ctx.needs_input_grad[:6], dy
                )
            return (*grads, None, None, None)
        dx, dh0, dw_layer, dw_iter, dbias = _binding_backward(
            ctx.prepared, x_c, h0_c, y, h_n, dy, torch.empty(0), workspace, ctx.reset_after
        )
        weight_grads = _weight_grads((w_ih, w_hh, b_ih, b_hh), dw_layer, dw_iter, dbias, ctx.reset_after)
        return (dx.to(x.dtype), dh0.to(h0.dtype), *weight_grads, None, None, None)


def _binding_backward(
    prepared: _Prepared, x: Tensor, h0: Tensor, y: Tensor, h_n: Tensor, dy: Tensor, dh_n: Tensor,
    workspace: Tensor, reset_after: bool,
) -> list[Tensor]:
    """The binding's backward over the weights as the forward converted them: ``dy`` and ``dh_n`` (empty: none)
    in float32 -> ``[dx, dh0, dw_layer, dw_iter, dbias]`` in oneDNN's layouts."""
    return load().backward(
        x, h0, prepared.w_layer, prepared.w_iter, prepared.bias, y, h_n, dy.float().contiguous(),
        dh_n.contiguous(), workspace, reset_after,
    )


def gru_sequence(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    reset_after: bool,
) -> Tensor:
    """Run one left-to-right GRU layer over time-major ``x`` ``(T, B, I)`` from ``h0`` ``(B, H)``; returns every
    step's state ``(T, B, H)``, bfloat16 when :func:`wants_bf16` else float32. Differentiable in every argument;
    float32 or bfloat16 CPU tensors."""
    prepared = prepare(w_ih, w_hh, b_ih, b_hh, reset_after, compute_dtype(x))
    out_dtype = output_dtype(x)
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, prepared, reset_after, out_dtype)
    if _bf16_loop_applies(x, prepared.dtype):
        return _bf16_loop(x, h0, prepared, reset_after)[0]
    y, _, _ = load().forward(
        x.to(prepared.dtype).contiguous(),
        h0.to(prepared.dtype).contiguous(),
        prepared.w_layer,
        prepared.w_iter,
        prepared.bias,
        reset_after,
        False,
    )
    return y.to(out_dtype)


def _bf16_loop_applies(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether an inference call on ``x`` ``(T, B, I)`` in ``dtype`` runs the bf16 matmul loop
    (:func:`_bf16_loop`): bfloat16, batch >= 2 (at batch 1 a step's fixed cost favours the RNN primitive), at
    least one step, outside ``torch.func`` transforms."""
    return (
        dtype == torch.bfloat16
        and x.shape[1] >= 2
        and x.shape[0] >= 1
        and torch._C._functorch.peek_interpreter_stack() is None
    )


def _bf16_loop(x: Tensor, h0: Tensor, prepared: _Prepared, reset_after: bool, training: bool = False) -> list[Tensor]:
    r"""bfloat16 inference of one layer and direction as a loop of oneDNN matmuls: ``x`` ``(T, B, I)``, ``h0``
    ``(B, H)`` -> ``y`` ``(T, B, H)`` bfloat16.

    oneDNN 3.2's bf16 GRU primitive runs only ~1.5x its float32 one. Here the input projection of all steps is one
    matmul, and each step one matmul :math:`h W_{hh}^T` on weights reordered once per call into the AMX layout
    oneDNN picks (two reset-before: :math:`W_{hr,hz}` on ``h``, :math:`W_{hn}` on :math:`r \odot h`), followed
    by the gate math in float32; each thread runs its own rows of the batch through all steps. ``training``
    adds ``saved`` (see :func:`bf16_loop_forward`): returns ``[y]`` or ``[y, saved]``."""
    return load().forward_bf16_loop(
        x.to(torch.bfloat16).contiguous(),
        h0.to(torch.bfloat16).contiguous(),
        prepared.w_layer,
        prepared.w_iter,
        prepared.bias,
        reset_after,
        training,
    )


def bf16_loop_applies(x: Tensor) -> bool:
    """Whether a bfloat16 training forward on ``x`` ``(T, B, I)`` can run :func:`bf16_loop_forward`: the binding
    is available, the CPU has bf16 instructions, and :func:`_bf16_loop_applies` holds."""
    return available() and has_bf16_hardware() and _bf16_loop_applies(x, torch.bfloat16)


def bf16_loop_forward(
    x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, reset_after: bool
) -> tuple[Tensor, Tensor]:
    """The forward of bfloat16 training through the loop of :func:`_bf16_loop` (weights in torch's layout, cast
    and reordered here): ``x`` ``(T, B, I)``, ``h0`` ``(B, H)`` -> ``(y (T, B, H), saved (T, B, 4H))`` bfloat16,
    ``saved`` per step holding ``r, z, n`` and ``g = W_hn h + b_hn`` (reset-after) or ``r ⊙ h`` (reset-before)
    in torch's gate order: the layout :mod:`grukit.ops.native`'s backward reads."""
    prepared = prepare(w_ih, w_hh, b_ih, b_hh, reset_after, torch.bfloat16)
    y, saved = _bf16_loop(x, h0, prepared, reset_after, training=True)
    return y, saved


def layer_groups(num_layers: int, directions: int, input_size: int, hidden_size: int) -> list[range]:
    """The layers :func:`gru_layers` runs together, one oneDNN primitive per group.

    oneDNN's multi-layer primitive feeds every layer ``I`` features (its ``weights_layer`` is
    ``(L, D, I, 3H)``), so only layers whose input size equals the hidden size stack; and its bidirectional
    stack feeds each direction only its own outputs, where a bidirectional GRU's next layer reads both
    directions concatenated. Hence: bidirectional, one group per layer (both directions in one primitive);
    unidirectional, layer 0 alone when ``input_size != hidden_size``, all other layers in one group."""
    if directions == 2:
        return [range(layer, layer + 1) for layer in range(num_layers)]
    first = 1 if input_size != hidden_size else 0
    return ([range(0, 1)] if first else []) + ([range(first, num_layers)] if first < num_layers else [])


def _reference_stack(
    x: Tensor, h0: Tensor, flat: Sequence[Tensor | None], layers: int, directions: int, reset_after: bool
) -> tuple[Tensor, Tensor]:
    """The reference cells over ``layers`` stacked layers of ``directions`` directions: ``x`` ``(T, B, I)``,
    ``h0`` ``(L*D, B, H)``, ``flat`` the weights ``(w_ih, w_hh, b_ih, b_hh)`` of each layer and direction in
    order -> ``(y (T, B, D*H), h_n (L*D, B, H))``."""
    finals = []
    for layer in range(layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh = flat[4 * index : 4 * index + 4]

            def cell(x_t: Tensor, h: Tensor, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh) -> Tensor:
                return reference.gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, reset_after)

            output, h_n = reference.scan(cell, x, h0[index], reverse=direction == 1)  # (T, B, H), (B, H)
            outputs.append(output)
            finals.append(h_n)
        x = torch.cat(outputs, dim=-1)  # (T, B, D*H)
    return x, torch.stack(finals)


class _StackFunction(torch.autograd.Function):
    """``L`` layers of ``D`` directions in one primitive: ``x`` ``(T, B, I)``, ``h0`` ``(L*D, B, H)`` ->
    ``(y (T, B, D*H), h_n (L*D, B, H))`` in ``out_dtype``; ``flat`` holds ``(w_ih, w_hh, b_ih, b_hh)`` per layer
    and direction."""

    @staticmethod
    def forward(ctx, x, h0, prepared, reset_after, out_dtype, layers, directions, *flat):
        batch, hidden = x.shape[1], h0.shape[-1]
        x_c = x.to(prepared.dtype).contiguous()  # (T, B, I)
        h0_c = h0.to(prepared.dtype).reshape(layers, directions, batch, hidden).contiguous()  # (L, D, B, H)
        y, h_n, workspace = load().forward(
            x_c, h0_c, prepared.w_layer, prepared.w_iter, prepared.bias, reset_after, True
        )  # (T, B, D*H), (L, D, B, H)
        ctx.save_for_backward(x, h0, x_c, h0_c, y, h_n, workspace, *flat)
        ctx.prepared, ctx.reset_after, ctx.layers, ctx.directions = prepared, reset_after, layers, directions
        ctx.autocast = autocast_bf16()
        return y.to(out_dtype), h_n.reshape(layers * directions, batch, hidden).to(out_dtype)

    @staticmethod
    def backward(ctx, dy, dh_n):
        x, h0, x_c, h0_c, y, h_n, workspace, *flat = ctx.saved_tensors
        layers, directions, reset_after = ctx.layers, ctx.directions, ctx.reset_after
        if recompute.needs_reference(dy) or recompute.needs_reference(dh_n):

            def stacked(x, h0, *flat) -> Tensor:  # y and h_n as one flat tensor, for one autograd.grad call
                y_ref, h_n_ref = _reference_stack(x, h0, flat, layers, directions, reset_after)
                return torch.cat([y_ref.reshape(-1), h_n_ref.reshape(-1)])

            inputs = (x, h0, *flat)
            needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], *ctx.needs_input_grad[7:])
            upstream = torch.cat([dy.reshape(-1), dh_n.reshape(-1)])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx.autocast):  # as the forward ran
                grads = recompute.grads_through(stacked, inputs, needs, upstream)
            return (grads[0], grads[1], None, None, None, None, None, *grads[2:])
        dx, dh0, dw_layer, dw_iter, dbias = _binding_backward(
            ctx.prepared, x_c, h0_c, y, h_n, dy, dh_n.float().reshape(h_n.shape), workspace, reset_after
        )  # float32: (T, B, I), (L, D, B, H), (L, D, I, 3H), (L, D, H, 3H), (L, D, G, H)
        weight_grads = []
        for layer in range(layers):
            for direction in range(directions):
                index = layer * directions + direction
                weight_grads += _weight_grads(
                    flat[4 * index : 4 * index + 4],
                    dw_layer[layer, direction],
                    dw_iter[layer, direction],
                    dbias[layer, direction],
                    reset_after,
                )
        dh0 = dh0.reshape(h0.shape).to(h0.dtype)
        return (dx.to(x.dtype), dh0, None, None, None, None, None, *weight_grads)


def gru_layers(x: Tensor, h0: Tensor, weights: Sequence[Sequence[Weights]], reset_after: bool) -> tuple[Tensor, Tensor]:
    """A stack of GRU layers over full-length sequences in as few oneDNN primitives as it allows
    (:func:`layer_groups`): both directions of a layer in one, stackable layers in one.

    Args:
        x: ``(T, B, I)`` time-major input.
        h0: ``(L*D, B, H)`` initial states, layer-major as ``torch.nn.GRU``'s.
        weights: ``weights[layer][direction] = (w_ih, w_hh, b_ih, b_hh)`` in torch's layout.
        reset_after: ``lbr_gru`` (True) or ``gru`` (False).

    Returns:
        ``(output (T, B, D*H), h_n (L*D, B, H))``, bfloat16 when :func:`wants_bf16` else float32; layer ``l``
        reads layer ``l - 1``'s output with both directions concatenated, as :class:`grukit.nn.GRU`.
    """
    directions, hidden = len(weights[0]), weights[0][0][1].shape[1]
    dtype, out_dtype = compute_dtype(x), output_dtype(x)
    flat_all = [w for layer in weights for direction in layer for w in direction]
    inference = not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, h0, *flat_all)))
    if inference and _bf16_loop_applies(x, dtype):
        return _bf16_loop_layers(x, h0, weights, reset_after)
    finals = []
    for group in layer_groups(len(weights), directions, x.shape[-1], hidden):
        group_weights = [weights[layer] for layer in group]
        prepared = _Prepared(group_weights, reset_after, dtype, stacked=True)
        h0_group = h0[group.start * directions : group.stop * directions]  # (L*D, B, H)
        flat = [w for layer in group_weights for direction in layer for w in direction]
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, h0_group, *flat)):
            x, h_n = _StackFunction.apply(x, h0_group, prepared, reset_after, out_dtype, len(group), directions, *flat)
        else:
            x, h_n, _ = load().forward(
                x.to(dtype).contiguous(),
                h0_group.to(dtype).reshape(len(group), directions, -1, hidden).contiguous(),
                prepared.w_layer,
                prepared.w_iter,
                prepared.bias,
                reset_after,
                False,
            )  # (T, B, D*H), (L, D, B, H)
            x, h_n = x.to(out_dtype), h_n.reshape(h0_group.shape).to(out_dtype)
        finals.append(h_n)
    return x, torch.cat(finals)


def _bf16_loop_layers(
    x: Tensor, h0: Tensor, weights: Sequence[Sequence[Weights]], reset_after: bool
) -> tuple[Tensor, Tensor]:
    """:func:`gru_layers` in bfloat16 inference through :func:`_bf16_loop`, one call per layer and direction
    (the reverse direction on the time-reversed sequence): ``x`` ``(T, B, I)``, ``h0`` ``(L*D, B, H)`` ->
    ``(output (T, B, D*H), h_n (L*D, B, H))`` bfloat16."""
    finals = []
    for layer, layer_weights in enumerate(weights):
        outputs = []
        for direction, (w_ih, w_hh, b_ih, b_hh) in enumerate(layer_weights):
            prepared = prepare(w_ih, w_hh, b_ih, b_hh, reset_after, torch.bfloat16)
            x_dir = x.flip(0) if direction == 1 else x  # (T, B, I)
            y = _bf16_loop(x_dir, h0[layer * len(layer_weights) + direction], prepared, reset_after)[0]  # (T, B, H)
            finals.append(y[-1])
            outputs.append(y.flip(0) if direction == 1 else y)
        x = torch.cat(outputs, dim=-1)  # (T, B, D*H)
    return x, torch.stack(finals)
