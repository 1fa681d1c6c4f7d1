r"""A GRU language model: embedding → stacked GRU → output head, with AWD-style regularisation, a
readable checkpoint folder, and sampling.

For ids ``x`` ``(B, T)`` and layers ``l = 1 … L``::

    e      = E[x] · m_E                  (B, T, D)   m_E: embedding dropout, whole rows of E (one word type)
    h⁰     = e ⊙ m_in                    (B, T, D)   m_in: variational (locked) dropout, one mask for all t
    hˡ, sˡ = GRUˡ(hˡ⁻¹ ⊙ m_l, sˡ₀)       (B, T, Hˡ)  W_hh of each layer under DropConnect (Wan et al. 2013)
    logits = (hᴸ ⊙ m_out) W_outᵀ + b     (B, T, V)   W_out = E when tied (then Hᴸ = D)

as in Merity et al. 2017 (AWD-LSTM), here on GRUs. DropConnect draws one mask on ``W_hh`` per forward pass
and passes the dropped matrix to the layer functionally, so the parameters themselves never change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from grukit.lm import lora
from grukit.lm.sampling import sample_next
from grukit.nn import GRU, drop_connect
from grukit.nn.recurrent import reset_rows
from grukit.text.tokenizer import BPETokenizer, CharTokenizer, tokenizer_from_files
from grukit.train.checkpoint import (
    CheckpointError,
    check_weights_fit,
    config_values_behind,
    load_checkpoint,
    save_checkpoint,
)

ARCHITECTURE = "grukit.GRULanguageModel"
OLD_ARCHITECTURES = ("grukit-gru-lm",)  # still read
State = tuple[Tensor, ...]  # one (1, B, H_l) tensor per layer


def config_from_dict(cls: type, values: dict, ignored: tuple[str, ...] = ()):
    """Build the config dataclass ``cls`` from a JSON dict, refusing keys it does not know (``ignored`` ones are
    dropped), so a typo in a config file is an error rather than a silent default."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known - set(ignored))
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown keys {unknown}; expected keys among {sorted(known)}")
    return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class LMConfig:
    """What :class:`GRULanguageModel` builds.

    Args:
        vocab_size: ``V``.
        embedding_size: ``D``.
        hidden_size: ``H`` of every GRU layer (the last one is ``D`` when ``tie_weights``).
        num_layers: ``L``.
        tie_weights: share the embedding matrix with the output head (Press & Wolf 2017).
        embedding_dropout: probability of dropping a whole word type from the embedding matrix.
        input_dropout: variational dropout on the embedded input.
        hidden_dropout: variational dropout between GRU layers.
        output_dropout: variational dropout on the last layer's output.
        weight_dropout: DropConnect probability on each layer's ``W_hh``.
    """

    vocab_size: int
    embedding_size: int = 128
    hidden_size: int = 512
    num_layers: int = 2
    tie_weights: bool = False
    embedding_dropout: float = 0.0
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    output_dropout: float = 0.0
    weight_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LMConfig expected {name} to be a positive integer, got {value!r}")
        for name in ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout", "weight_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"LMConfig expected {name} in [0, 1), got {value!r}")
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"LMConfig expected tie_weights to be true or false, got {self.tie_weights!r}")

    def check_memory(self) -> None:
        """Refuse sizes whose float32 weights alone exceed this machine's memory, before anything is allocated."""
        memory = machine_memory()
        if memory is not None and 4 * self.parameter_count() > memory:
            raise ValueError(
                f"LMConfig with embedding_size={self.embedding_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers} and vocab_size={self.vocab_size} has {self.parameter_count():,} "
                f"parameters ({4 * self.parameter_count() / 2**30:,.0f} GiB in float32), more than this machine's "
                f"{memory / 2**30:,.0f} GiB of memory; use smaller sizes"
            )

    @classmethod
    def from_dict(cls, values: dict) -> LMConfig:
        return config_from_dict(cls, values, ignored=("architecture",))

    def to_dict(self) -> dict:
        return {"architecture": ARCHITECTURE, **asdict(self)}

    def parameter_count(self) -> int:
        """The number of weights, from the sizes alone: ``V·D`` (embedding), ``3H(I + H) + 6H`` per GRU layer of
        input ``I`` and hidden ``H``, ``V·H_L + V`` (head; ``V`` alone when tied)."""
        inputs = self.embedding_size
        last = self.embedding_size if self.tie_weights else self.hidden_size
        count = self.vocab_size * self.embedding_size + self.vocab_size * (1 if self.tie_weights else 1 + last)
        if self.num_layers > 1:
            h = self.hidden_size
            count += 3 * h * (inputs + h) + 6 * h + (self.num_layers - 2) * (3 * h * (h + h) + 6 * h)
            inputs = h
        return count + 3 * last * (inputs + last) + 6 * last

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each weight :meth:`GRULanguageModel.base_state_dict` holds, from the sizes alone (so a
        saved folder's weights are checked against its config before any model is built)."""
        shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (self.vocab_size, self.embedding_size)}
        for index, (inputs, hidden) in enumerate(self.layer_sizes()):
            shapes.update({
                f"layers.{index}.weight_ih_l0": (3 * hidden, inputs),
                f"layers.{index}.weight_hh_l0": (3 * hidden, hidden),
                f"layers.{index}.bias_ih_l0": (3 * hidden,),
                f"layers.{index}.bias_hh_l0": (3 * hidden,),
            })
        if not self.tie_weights:
            shapes["decoder.weight"] = (self.vocab_size, self.layer_sizes()[-1][1])
        shapes["decoder.bias"] = (self.vocab_size,)
        return shapes

    def layer_sizes(self) -> list[tuple[int, int]]:
        """``(input_size, hidden_size)`` of each GRU layer."""
        sizes = []
        for layer in range(self.num_layers):
            inputs = self.embedding_size if layer == 0 else self.hidden_size
            last = layer == self.num_layers - 1
            sizes.append((inputs, self.embedding_size if last and self.tie_weights else self.hidden_size))
        return sizes


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout on ``x`` ``(B, T, C)``: one mask per sequence and channel, shared by all steps."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # (B, 1, C)
    return x * mask


def _as_text_list(prompt: object) -> list[str] | None:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return None


class GRULanguageModel(nn.Module):
    """Embedding, stacked GRU, output head (see the module docstring for the equations).

    Args:
        config: an :class:`LMConfig`.
        tokenizer: optional; saved with the model and used when text is given to :meth:`generate`.

    Shapes: ``ids`` ``(B, T)`` int64; ``state`` a tuple of ``L`` tensors ``(1, B, H_l)`` (zeros when omitted);
    ``lengths`` ``(B,)`` for right-padded batches; logits ``(B, T, V)``.
    """

    def __init__(self, config: LMConfig, tokenizer: CharTokenizer | BPETokenizer | None = None) -> None:
        super().__init__()
        config.check_memory()
        if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"GRULanguageModel: the tokenizer has {tokenizer.vocab_size} symbols, the config says "
                f"vocab_size={config.vocab_size}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(GRU(inputs, hidden) for inputs, hidden in config.layer_sizes())
        last = config.layer_sizes()[-1][1]
        self.decoder = nn.Linear(last, config.vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    # Forward ------------------------------------------------------------------------------------------------
    def _check_ids(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            got = f"{tuple(ids.shape)} {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"GRULanguageModel expected integer ids of shape (batch, time), got {got}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"GRULanguageModel expected ids in [0, {self.config.vocab_size}), "
                f"got min {int(ids.min())} and max {int(ids.max())}"
            )
        return ids.long()

    def _embed(self, ids: Tensor) -> Tensor:
        weight = self.embedding.weight  # (V, D)
        p = self.config.embedding_dropout
        if self.training and p > 0:
            weight = weight * weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        return nn.functional.embedding(ids, weight)  # (B, T, D)

    def _run_layer(self, index: int, x: Tensor, h0: Tensor | None, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        layer = self.layers[index]
        if h0 is not None and h0.dtype != x.dtype and torch.is_autocast_enabled(x.device.type):
            h0 = h0.to(x.dtype)  # a float32 state carried between windows into a layer that computes in bf16
        p = self.config.weight_dropout
        if self.training and p > 0:
            # With LoRA attached the mask falls on the base matrix W_hh and the low-rank update is added after.
            if parametrize.is_parametrized(layer, "weight_hh_l0"):
                key, weight = "parametrizations.weight_hh_l0.original", layer.parametrizations.weight_hh_l0.original
            else:
                key, weight = "weight_hh_l0", layer.weight_hh_l0
            dropped = drop_connect(weight, p)  # (3H, H), same draws as nn.functional.dropout
            return functional_call(layer, {key: dropped}, (x, h0), {"lengths": lengths})
        return layer(x, h0, lengths=lengths)

    def encode(self, ids: Tensor, state: State | None = None, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """The last layer's outputs ``(B, T, H_L)`` (after output dropout) and the new state."""
        ids = self._check_ids(ids)
        if state is not None and len(state) != len(self.layers):
            raise ValueError(f"GRULanguageModel expected a state of {len(self.layers)} tensors, got {len(state)}")
        x = locked_dropout(self._embed(ids), self.config.input_dropout, self.training)  # (B, T, D)
        new_state = []
        for index in range(len(self.layers)):
            if index > 0:
                x = locked_dropout(x, self.config.hidden_dropout, self.training)
            x, h_n = self._run_layer(index, x, None if state is None else state[index], lengths)  # (B, T, H_l)
            new_state.append(h_n)  # (1, B, H_l)
        return locked_dropout(x, self.config.output_dropout, self.training), tuple(new_state)

    def forward(self, ids: Tensor, state: State | None = None, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """Returns ``(logits (B, T, V), state)``."""
        output, state = self.encode(ids, state, lengths)
        return self.decoder(output), state

    # Generation ---------------------------------------------------------------------------------------------
    def _prompt_ids(self, prompt: object) -> tuple[Tensor, Tensor]:
        texts = _as_text_list(prompt)
        if texts is not None:
            if self.tokenizer is None:
                raise ValueError("GRULanguageModel.generate got text but the model has no tokenizer; pass ids")
            rows = [self.tokenizer.encode(text) for text in texts]
        elif isinstance(prompt, Tensor):
            if (
                prompt.is_floating_point()
                or prompt.is_complex()
                or prompt.dtype == torch.bool
                or prompt.dim() not in (1, 2)
            ):
                raise ValueError(
                    f"generate expected integer token ids of shape (T,) or (B, T), got {tuple(prompt.shape)} "
                    f"{prompt.dtype}; ids are never rounded"
                )
            rows = [prompt.tolist()] if prompt.dim() == 1 else prompt.tolist()
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(i, (int, float)) for i in prompt):
            rows = [list(prompt)]
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(r, (list, tuple)) for r in prompt):
            rows = [list(r) for r in prompt]
        else:
            raise ValueError(
                "generate expected a prompt as text, a list of texts, a list of ids, a list of id lists or "
                f"a (T,) / (B, T) tensor, got {type(prompt).__name__}"
            )
        if any(len(row) == 0 for row in rows):
            raise ValueError("generate expected every prompt to hold at least one token, got an empty one")
        for row in rows:
            for token in row:
                if isinstance(token, bool) or not isinstance(token, int):
                    raise ValueError(f"generate expected integer token ids, got {token!r}; ids are never rounded")
        lengths = torch.tensor([len(row) for row in rows])
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)  # (B, T) right-padded
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        return ids, lengths

    @torch.no_grad()
    def stream(
        self,
        prompt: object,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[Tensor]:
        """Yield the next token of every prompt, ``(B,)`` int64, one step at a time.

        Only the hidden state is kept between steps, so memory does not grow with ``max_new_tokens``.
        Prompts of different lengths run as one right-padded batch with ``lengths``. Arguments as
        :meth:`generate`.
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ValueError(f"generate expected seed to be an integer in [0, 2**63) or None, got {seed!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"generate expected max_new_tokens to be a non-negative integer, got {max_new_tokens!r}")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not (math.isfinite(temperature) and temperature >= 0)
        ):
            raise ValueError(f"generate expected temperature to be a finite number >= 0, got {temperature!r}")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        ids, lengths = self._prompt_ids(prompt)
        ids = self._check_ids(ids)
        was_training = self.training
        self.eval()
        try:
            uniform = bool((lengths == lengths[0]).all())
            logits, state = self(ids, None, None if uniform else lengths)  # (B, T, V)
            logits = logits[torch.arange(len(lengths)), lengths - 1]  # (B, V) at each prompt's last token
            for _ in range(max_new_tokens):
                token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
                yield token
                logits, state = self(token.unsqueeze(1), state)  # (B, 1, V)
                logits = logits[:, -1]
        finally:
            self.train(was_training)

    def stream_text(self, prompt: str, max_new_tokens: int, **sampling) -> Iterator[str]:
        """Yield the text of a single prompt's continuation as it is made (needs a tokenizer)."""
        if not isinstance(prompt, str):
            raise TypeError(f"stream_text expected one prompt as a str, got {type(prompt).__name__}")
        if self.tokenizer is None:
            raise ValueError("stream_text needs a tokenizer: load the model with from_pretrained or pass one")
        decode = self.tokenizer.stream_decoder()
        for token in self.stream(prompt, max_new_tokens, **sampling):
            piece = decode(int(token[0]))
            if piece:
                yield piece

    def generate(
        self,
        prompt: object,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Tensor | str | list[str]:
        """Continue ``prompt`` by ``max_new_tokens`` tokens.

        Args:
            prompt: text, a list of texts (a batch), ids as a list, a list of id lists, or a ``(T,)`` /
                ``(B, T)`` tensor.
            max_new_tokens: how many tokens to add.
            temperature: divides the logits; ``0`` takes the argmax (greedy), small values approach it.
            top_k: sample among the ``k`` most likely tokens only.
            top_p: sample among the smallest set of tokens whose probability reaches ``p`` (nucleus).
            seed: makes sampling repeatable, without touching torch's global generator.

        Returns:
            the continuation only: a ``str`` for a text prompt, a list of ``str`` for a list of texts,
            otherwise ids ``(B, max_new_tokens)``.
        """
        tokens = list(self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed))
        new = torch.stack(tokens, 1) if tokens else torch.zeros(self._prompt_ids(prompt)[0].shape[0], 0).long()
        texts = _as_text_list(prompt)
        if texts is None:
            return new
        decoded = [self.tokenizer.decode(row.tolist()) for row in new]
        return decoded[0] if isinstance(prompt, str) else decoded

    # Vocabulary ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extend_vocabulary(self, texts_or_chars: str | Iterable[str]) -> list[str]:
        """Add the characters of ``texts_or_chars`` (a text, or texts) that the character tokenizer lacks, so
        fine-tuning text with new characters learns them instead of reading them as the unknown token.

        The new characters get ids ``V … V' − 1`` (sorted by code point); old ids keep their meaning. The
        embedding ``E`` ``(V, D)`` grows to ``(V', D)`` and the head ``W_out`` ``(V, H_L)``, ``b`` ``(V,)`` to
        ``(V', H_L)``, ``(V',)``; each new row starts at the mean of the old rows (``E_new = mean_v E_v``,
        ``W_new = mean_v W_v``, ``b_new = mean_v b_v``), so a new character is first embedded as the average
        character and predicted with the average logit (Hewitt 2021). Tied weights stay tied. Old weights are
        copied unchanged, so the logits of the old ids are exactly the same on text of old characters. LoRA
        adapters live on the recurrent layers only and are kept; ``requires_grad`` of each weight is kept. Build
        the optimizer after calling this.

        Returns:
            the added characters, in id order (empty when nothing was missing).
        """
        if not isinstance(self.tokenizer, CharTokenizer):
            kind = "no tokenizer" if self.tokenizer is None else f"a {type(self.tokenizer).__name__}"
            raise ValueError(
                f"extend_vocabulary needs a model with a character tokenizer, this one has {kind}; a byte-level BPE "
                "encodes every string through its 256 byte tokens, and other BPE vocabularies are fixed by their merges"
            )
        texts = [texts_or_chars] if isinstance(texts_or_chars, str) else list(texts_or_chars)
        bad = next((text for text in texts if not isinstance(text, str)), None)
        if bad is not None:
            raise TypeError(f"extend_vocabulary expected a text or texts (str), got {type(bad).__name__}")
        known = set(self.tokenizer.chars)
        added = sorted({char for text in texts for char in text} - known)
        if not added:
            return []
        tokenizer = self.tokenizer.extended(added)
        old, new = self.config.vocab_size, tokenizer.vocab_size
        config = LMConfig(**{**asdict(self.config), "vocab_size": new})
        config.check_memory()

        def grown(weight: Tensor) -> nn.Parameter:
            rows = weight.mean(0, keepdim=True).expand(new - old, *weight.shape[1:])  # (V' − V, …)
            return nn.Parameter(torch.cat([weight, rows]), requires_grad=weight.requires_grad)  # (V', …)

        self.embedding.weight = grown(self.embedding.weight)  # (V', D)
        self.embedding.num_embeddings = new
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            self.decoder.weight = grown(self.decoder.weight)  # (V', H_L)
        self.decoder.bias = grown(self.decoder.bias)  # (V',)
        self.decoder.out_features = new
        self.config, self.tokenizer = config, tokenizer
        return added

    # Saving -------------------------------------------------------------------------------------------------
    def base_state_dict(self) -> dict[str, Tensor]:
        """Weights without adapters and without the tied output matrix (it is the embedding)."""
        base, _ = lora.split_state_dict(self)
        if self.config.tie_weights:
            base.pop("decoder.weight")
        return base

    def load_base_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load weights written by :meth:`base_state_dict`, checking that none is missing."""
        missing = lora.load_base_state_dict(self, state)
        missing = [name for name in missing if not (self.config.tie_weights and name == "decoder.weight")]
        if missing:
            raise ValueError(f"GRULanguageModel weights lack {missing[:5]}")

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint folder ``path``: ``config.json``, ``model.safetensors`` (base weights), the
        tokenizer files and, when LoRA is attached, ``adapter_config.json`` + ``adapter_model.safetensors``."""
        extra = dict(self.tokenizer.files()) if self.tokenizer is not None else {}
        extra.update(lora.adapter_files(self))
        return save_checkpoint(path, self.config.to_dict(), self.base_state_dict(), extra_files=extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GRULanguageModel:
        """Load a folder written by :meth:`save_pretrained` (checksums verified), tokenizer and adapters too.
        The weights' shapes are checked against ``config.json`` before the model is allocated."""
        where = os.fspath(path)
        checkpoint = load_checkpoint(path, architecture=(ARCHITECTURE, *OLD_ARCHITECTURES))
        try:
            config = LMConfig.from_dict(checkpoint.config)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{where!r}: config.json does not describe a GRULanguageModel: {error}") from error
        saved_layers = {name.split(".")[1] for name in checkpoint.weights if name.startswith("layers.")}
        if len(saved_layers) != config.num_layers:  # before listing the shapes of a million layers
            raise CheckpointError(
                f"checkpoint {where!r}: config.json does not fit model.safetensors: the config says num_layers="
                f"{config.num_layers}, the weights hold {len(saved_layers)} layer(s)"
            )
        expected = config.weight_shapes()
        settings = asdict(config)

        def describe(name: str) -> str:
            values = config_values_behind(settings, expected[name], tuple(checkpoint.weights[name].shape))
            return f"the GRULanguageModel with {', '.join(values) or settings}"

        check_weights_fit(where, expected, checkpoint.weights, describe)
        broken = [name for name, tensor in checkpoint.weights.items() if not bool(torch.isfinite(tensor).all())]
        if broken:
            raise CheckpointError(
                f"{where!r}: the weights {broken[:3]} hold NaN or inf, so the model cannot predict; the training "
                "that wrote them diverged (train again with a lower learning rate)"
            )
        try:
            tokenizer = tokenizer_from_files(checkpoint.extra_files)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{where!r}: the tokenizer files cannot be read: {error}") from error
        model = cls(config, tokenizer)
        model.load_base_state_dict(checkpoint.weights)
        lora.load_adapter_files(model, checkpoint.extra_files, where)
        return model

    def initial_state(self, batch_size: int) -> State:
        """Zeros, one ``(1, B, H_l)`` tensor per layer."""
        weight = self.embedding.weight
        return tuple(weight.new_zeros(1, batch_size, hidden) for _, hidden in self.config.layer_sizes())

    def step(self, ids: Tensor, state: State | None = None, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Advance every stream by one token: ``ids`` ``(B,)`` → ``(logits (B, V), new state)``; ``state`` as
        :meth:`initial_state` (zeros when omitted). Stepping through a sequence gives ``forward``'s logits and
        state. ``reset`` ``(B,)`` bool restarts the streams where it is true before this token."""
        if not isinstance(ids, Tensor) or ids.dim() != 1:
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"GRULanguageModel.step expected one token per stream, ids of shape (batch,), got {got}")
        if state is None:
            state = self.initial_state(ids.shape[0])
        if reset is not None:
            state = self.reset_state(state, reset)
        logits, state = self(ids.unsqueeze(1), state)  # (B, 1, V)
        return logits[:, 0], state

    def reset_state(self, state: State, mask: Tensor) -> State:
        """``state`` with the streams where ``mask`` ``(B,)`` (bool) is true set back to zeros."""
        return reset_rows("GRULanguageModel", state, mask, batch_dim=1)


def detach_state(state: Sequence[Tensor]) -> State:
    """Cut the graph between truncated-BPTT windows; the values carry over."""
    return tuple(s.detach() for s in state)
