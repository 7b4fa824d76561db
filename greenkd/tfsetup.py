"""Quiet, predictable TensorFlow start-up; import this before TensorFlow."""

import os

# TensorFlow's C++ start-up logs (oneDNN notice, "could not find cuda drivers")
# are noise on CPU machines; a user who wants them sets the variable first.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
