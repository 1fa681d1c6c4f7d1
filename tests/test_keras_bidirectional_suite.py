# Ported from Keras 3 (keras/src/layers/rnn/bidirectional_test.py).
# Copyright The Keras Authors. Licensed under the Apache License, Version 2.0 (the "License"); you may not use
# this file except in compliance with the License. You may obtain a copy of the License at
# http://www.apache.org/licenses/LICENSE-2.0. Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
# either express or implied. See the License for the specific language governing permissions and limitations.
# Modified for grukit: each change is marked "grukit:".
"""Keras' own Bidirectional tests, with their inputs, assertions and expected numbers, run on
``grukit.layers.Bidirectional`` (over grukit's SimpleRNN, GRU and LSTM layers).

grukit: Keras' ``testing.TestCase`` helpers are replaced by those of tests/keras_port.py (``call`` returns a
grukit layer's output without its mask, as a Keras layer returns it).

Not applicable (Keras internals that grukit has no counterpart for):
- ``test_keeps_use_cudnn``: ``use_cudnn`` selects Keras' backend kernels; grukit's engine choice lives in
  ``grukit.nn`` (``engine=``), not on the Keras-style layers.
- ``test_fused_lstm_eligibility``, ``test_fused_gru_eligibility``: test Keras' private
  ``Bidirectional._can_attempt_fused_lstm`` / ``_can_attempt_fused_gru`` dispatch predicates.
- ``test_fused_lstm_matches_unfused``, ``test_fused_gru_matches_unfused``: compare Keras' fused cuDNN
  ``backend.bidirectional_*`` call with its two-call path (``use_cudnn`` True vs False); grukit's
  engine-against-reference agreement is tested in tests/test_ops_engines.py.
- ``test_torch_cudnn_bidirectional_gru_dispatch_fires``: spies on Keras' torch-backend ``torch._VF.gru`` dispatch.
"""

import numpy as np
from tests.keras_port import assert_all_close, call, run_layer_test

from grukit.layers import GRU, LSTM, Bidirectional, SimpleRNN, initializers


class TestBidirectional:  # grukit: Keras names this class SimpleRNNTest
    def test_basics(self):
        run_layer_test(
            Bidirectional,
            init_kwargs={"layer": SimpleRNN(4)},
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 8),
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )
        run_layer_test(
            Bidirectional,
            init_kwargs={
                "layer": SimpleRNN(4),
                "backward_layer": SimpleRNN(4, go_backwards=True),
                "merge_mode": "sum",
            },
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 4),
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )

    def test_correctness(self):
        sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
        forward_layer = SimpleRNN(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
        )
        layer = Bidirectional(
            layer=forward_layer,
        )
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array(
                [
                    [0.39687276, 0.39687276, 0.10004295, 0.10004295],
                    [0.7237238, 0.7237238, 0.53391594, 0.53391594],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )

        layer = Bidirectional(layer=forward_layer, merge_mode="ave")
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array([[0.24845785, 0.24845785], [0.6288199, 0.6288199]]),
            atol=1e-5,
            rtol=1e-5,
        )

        layer = Bidirectional(layer=forward_layer, merge_mode=None)
        output1, output2 = call(layer, sequence)
        assert_all_close(
            output1,
            np.array([[0.39687276, 0.39687276], [0.7237238, 0.7237238]]),
            atol=1e-5,
            rtol=1e-5,
        )
        assert_all_close(
            output2,
            np.array([[0.10004295, 0.10004295], [0.53391594, 0.53391594]]),
            atol=1e-5,
            rtol=1e-5,
        )

        backward_layer = SimpleRNN(
            2,
            kernel_initializer=initializers.Constant(0.03),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.01),
            go_backwards=True,
        )
        layer = Bidirectional(layer=forward_layer, backward_layer=backward_layer, merge_mode="mul")
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array([[0.08374989, 0.08374989], [0.6740834, 0.6740834]]),
            atol=1e-5,
            rtol=1e-5,
        )

        forward_layer = GRU(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
            return_sequences=True,
        )
        layer = Bidirectional(layer=forward_layer, merge_mode="sum")
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array(
                [
                    [
                        [0.20937867, 0.20937867],
                        [0.34462988, 0.34462988],
                        [0.40290534, 0.40290534],
                    ],
                    [
                        [0.59829646, 0.59829646],
                        [0.6734641, 0.6734641],
                        [0.6479671, 0.6479671],
                    ],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_statefulness(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        forward_layer = LSTM(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
            stateful=True,
        )
        layer = Bidirectional(layer=forward_layer)
        call(layer, sequence)
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array(
                [
                    [0.26234663, 0.26234663, 0.16959146, 0.16959146],
                    [0.6137073, 0.6137073, 0.5381646, 0.5381646],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )
        layer.reset_state()
        call(layer, sequence)
        output = call(layer, sequence)
        assert_all_close(
            output,
            np.array(
                [
                    [0.26234663, 0.26234663, 0.16959146, 0.16959146],
                    [0.6137073, 0.6137073, 0.5381646, 0.5381646],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_pass_initial_state(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        initial_state = [
            np.arange(4).reshape((2, 2)).astype("float32") * 1,
            np.arange(4).reshape((2, 2)).astype("float32") * 2,
            np.arange(4).reshape((2, 2)).astype("float32") * 3,
            np.arange(4).reshape((2, 2)).astype("float32") * 4,
        ]
        forward_layer = LSTM(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
        )
        layer = Bidirectional(
            layer=forward_layer,
        )
        output = call(layer, sequence, initial_state=initial_state)
        assert_all_close(
            output,
            np.array(
                [
                    [0.20794602, 0.4577124, 0.14046375, 0.48191673],
                    [0.6682636, 0.6711909, 0.60943645, 0.60950446],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_masking(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        forward_layer = GRU(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
        )
        layer = Bidirectional(layer=forward_layer)
        mask = np.array([[True, True, False, True], [True, False, False, True]])
        output = call(layer, sequence, mask=mask)
        assert_all_close(
            output,
            np.array(
                [
                    [0.19393763, 0.19393763, 0.11669192, 0.11669192],
                    [0.30818558, 0.30818558, 0.28380975, 0.28380975],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_return_state(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        forward_layer = LSTM(
            2,
            kernel_initializer=initializers.Constant(0.01),
            recurrent_initializer=initializers.Constant(0.02),
            bias_initializer=initializers.Constant(0.03),
            return_state=True,
        )
        layer = Bidirectional(layer=forward_layer)
        output, h1, c1, h2, c2 = call(layer, sequence)
        assert_all_close(
            output,
            np.array(
                [
                    [0.1990008, 0.1990008, 0.12659755, 0.12659755],
                    [0.52335435, 0.52335435, 0.44717982, 0.44717982],
                ]
            ),
            atol=1e-5,
            rtol=1e-5,
        )
        assert_all_close(
            h1,
            np.array([[0.1990008, 0.1990008], [0.52335435, 0.52335435]]),
            atol=1e-5,
            rtol=1e-5,
        )
        assert_all_close(
            c1,
            np.array([[0.35567185, 0.35567185], [1.0492687, 1.0492687]]),
            atol=1e-5,
            rtol=1e-5,
        )
        assert_all_close(
            h2,
            np.array([[0.12659755, 0.12659755], [0.44717982, 0.44717982]]),
            atol=1e-5,
            rtol=1e-5,
        )
        assert_all_close(
            c2,
            np.array([[0.2501858, 0.2501858], [0.941473, 0.941473]]),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_output_shape(self):
        x = np.array([[[101, 202], [303, 404]]])
        for merge_mode in ["ave", "concat", "mul", "sum", None]:
            sub_layer = LSTM(2, return_state=True)
            layer = Bidirectional(sub_layer, merge_mode=merge_mode)
            output = call(layer, x)
            output_shape = layer.compute_output_shape(x.shape)
            assert len(output) == len(output_shape)  # grukit: zip alone would pass on a length mismatch
            for out, shape in zip(output, output_shape):
                assert tuple(out.shape) == shape  # grukit: torch.Size against a tuple

        for merge_mode in ["concat", "ave", "mul", "sum"]:
            sub_layer = LSTM(2, return_state=False)
            layer = Bidirectional(sub_layer, merge_mode=merge_mode)
            output = call(layer, x)
            output_shape = layer.compute_output_shape(x.shape)
            assert tuple(output.shape) == output_shape

        # return_state=False & merge_mode=None
        sub_layer = LSTM(2, return_state=False)
        layer = Bidirectional(sub_layer, merge_mode=None)
        output = call(layer, x)
        output_shape = layer.compute_output_shape(x.shape)
        assert len(output) == len(output_shape)  # grukit: as above
        for out, shape in zip(output, output_shape):
            assert tuple(out.shape) == shape
