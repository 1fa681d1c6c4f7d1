"""Stand-ins for Keras' ``testing.TestCase`` helpers, for the Keras test suites ported to grukit
(tests/test_keras_*_suite.py)."""

import numpy as np
import torch

from grukit.layers.base import layer_from_config, layer_to_config


def call(layer, *args, **kwargs):
    """grukit: a grukit layer returns ``(output, mask)``; Keras' returns the output."""
    output, _ = layer(*args, **kwargs)
    return output


def assert_all_close(actual, expected, atol=1e-6, rtol=1e-6):
    """grukit: Keras' ``assertAllClose`` (default tolerances 1e-6; the TPU tolerances do not apply)."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    call_kwargs=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_losses=None,
    supports_masking=None,
):
    """grukit: the checks of Keras' ``run_layer_test`` that apply here: a config round trip, the output shape
    (from a call and from ``compute_output_shape``), the weight count (Keras counts variables; grukit counts the
    Keras-layout arrays of ``get_weights()``, and ``non_trainable`` as parameters without gradients), the number of
    ``losses``, a call with a mask, and one training step (finite gradients, the weights move)."""
    call_kwargs = call_kwargs or {}
    torch.manual_seed(0)
    layer = layer_cls(**init_kwargs)
    rebuilt = layer_from_config(layer_to_config(layer))
    assert rebuilt.get_config() == layer.get_config()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(input_shape).astype("float32"))
    training = call_kwargs.pop("training", None)
    output = call(layer, x, training=training, **call_kwargs)
    assert tuple(output.shape) == expected_output_shape
    assert layer.compute_output_shape((None, *input_shape[1:])) == (None, *expected_output_shape[1:])
    if expected_num_trainable_weights is not None:
        assert len(layer.get_weights()) == expected_num_trainable_weights
        assert all(p.requires_grad for p in layer.parameters())
    if expected_num_non_trainable_weights is not None:
        assert sum(not p.requires_grad for p in layer.parameters()) == expected_num_non_trainable_weights
    if expected_num_losses is not None:
        assert len(layer.losses) == expected_num_losses
    if supports_masking:
        mask = torch.ones(input_shape[:2], dtype=torch.bool)
        mask[0, -1] = False
        masked = call(layer, x, mask=mask, training=training)
        assert tuple(masked.shape) == expected_output_shape
    # Keras' training check: one optimizer step on the layer's output plus its losses. With dropout a whole weight
    # array may draw no gradient, so the check is that the gradients are finite and the weights move.
    before = [w.copy() for w in layer.get_weights()]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = call(layer, x, training=training).square().mean() + sum(layer.losses)
    loss.backward()
    optimizer.step()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert any(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights()))
