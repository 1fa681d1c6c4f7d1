import os

import torch

# Keras 3 is a test dependency, run on its torch backend (no TensorFlow here).
os.environ.setdefault("KERAS_BACKEND", "torch")

# `make test` runs two pytest workers on two cores: one intra-op thread each avoids oversubscription
# (measured: 55 s of CPU with torch's default threads against 13 s for the same parity tests).
torch.set_num_threads(1)

# engine="auto" decides by the cost model in tests (no calibration, no cache file), so the engine a test runs
# never depends on timings; tests/test_ops_autotune.py switches calibration on with a temporary cache.
os.environ["GRUKIT_AUTOTUNE"] = "0"
