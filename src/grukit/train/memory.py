r"""What training a model will hold in memory, estimated before the first step.

For ``P`` parameters (``P_t`` of them trainable) of ``s`` bytes each::

    parameters   P · s
    gradients    P_t · s
    optimizer    P_t · s · m          m = 2 for Adam-like (first and second moments), 1 for SGD with momentum, …
    activations  A(b) · B / b         A(b): bytes autograd saves for the backward pass over a probe of b rows

``A(b)`` is measured, not guessed: one forward pass (and loss) over the first ``b`` rows of a real batch,
counting every tensor that autograd saves (each storage once, parameters excluded), then scaled linearly to
the batch of ``B`` rows, so it holds for the batch's sequence (BPTT) length and the chosen precision. Tensors
an extension keeps outside autograd's saved-tensor hooks and the allocator's own slack are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from grukit.train.distributed import autocast

ADAM_LIKE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax)


def optimizer_slots(optimizer: torch.optim.Optimizer | None) -> int:
    """Tensors the size of the parameters that ``optimizer`` keeps per trainable parameter."""
    if optimizer is None:
        return 0
    if isinstance(optimizer, ADAM_LIKE):
        return 2 + int(any(group.get("amsgrad", False) for group in optimizer.param_groups))
    if isinstance(optimizer, torch.optim.RMSprop):
        group = optimizer.param_groups[0]
        return 1 + int(group.get("momentum", 0) > 0) + int(group.get("centered", False))
    if isinstance(optimizer, torch.optim.Adagrad):
        return 1
    return int(any(group.get("momentum", 0) > 0 for group in optimizer.param_groups))


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"


@dataclass
class MemoryEstimate:
    """Bytes of each part of training memory (see the module docstring), for a batch of ``batch_size`` rows of
    ``seq_len`` steps (``None`` when the inputs have no time axis)."""

    parameters: int
    trainable: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    batch_size: int
    seq_len: int | None

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    def line(self) -> str:
        """One line for people, e.g. ``memory estimate: 1.2M parameters 4.8 MB, gradients …``."""
        shape = f"{self.batch_size} × {self.seq_len} steps" if self.seq_len else f"{self.batch_size}"
        return (
            f"memory estimate: {self.parameters / 1e6:.3g}M parameters {_human(self.parameter_bytes)}, gradients "
            f"{_human(self.gradient_bytes)}, optimizer state {_human(self.optimizer_bytes)}, activations "
            f"{_human(self.activation_bytes)} for a batch of {shape}; about {_human(self.total_bytes)} in all"
        )


def _rows(value, count: int, batch: int):
    """The first ``count`` rows of every tensor in ``value`` whose dim 0 is the batch."""
    if isinstance(value, Tensor):
        return value[:count] if value.dim() and value.shape[0] == batch else value
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(item, count, batch) for item in value)
    return value


def estimate_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    inputs: tuple,
    targets: object = None,
    mask: Tensor | None = None,
    loss_fn=None,
    stateful: bool = False,
    precision: str = "32",
    probe_rows: int = 2,
) -> MemoryEstimate:
    """Estimate training memory for one batch ``(inputs, targets, mask)`` (see the module docstring).

    The probe pass leaves the model as it was: it runs under a forked RNG and restores the buffers (e.g. batch
    norm's running statistics); no gradient is taken.
    """
    first = inputs[0]
    batch = int(first.shape[0])
    rows = min(probe_rows, batch)
    seq_len = int(first.shape[1]) if first.dim() >= 2 and not first.is_floating_point() or first.dim() >= 3 else None
    parameters = {id(p): p for p in model.parameters()}.values()
    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameter_storages:
            saved[pointer] = max(saved.get(pointer, 0), tensor.untyped_storage().nbytes())
        return tensor

    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    device = first.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(precision, device):
            probe = _rows(inputs, rows, batch)
            outputs = model(*probe, None) if stateful else model(*probe)
            outputs = outputs[0] if stateful else outputs
            if loss_fn is not None:
                loss_fn(outputs, _rows(targets, rows, batch), _rows(mask, rows, batch))
        del outputs
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    size = max((p.element_size() for p in parameters), default=4)
    count = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return MemoryEstimate(
        parameters=count,
        trainable=trainable,
        parameter_bytes=sum(p.numel() * p.element_size() for p in parameters),
        gradient_bytes=trainable * size,
        optimizer_bytes=trainable * size * optimizer_slots(optimizer),
        activation_bytes=round(sum(saved.values()) * batch / rows),
        batch_size=batch,
        seq_len=seq_len,
    )
