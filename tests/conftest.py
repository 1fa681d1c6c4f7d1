import os

# Keras 3 is a test dependency, run on its torch backend (no TensorFlow here).
os.environ.setdefault("KERAS_BACKEND", "torch")
