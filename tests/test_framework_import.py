"""Loading the framework skips the integrations greenkd never uses, and forgets that it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import greenkd.framework as fw
loaded = {m: m in sys.modules for m in ("jax", "sklearn", "pandas", "tensorflow")}
import pandas, sklearn  # greenkd's own later imports load them as usual
print(json.dumps({"loaded": loaded, "backend": fw.keras.backend.backend(), "pandas": pandas.__name__}))
"""


@pytest.mark.parametrize("framework", ["tensorflow", "jax"])
def test_the_framework_loads_without_its_unused_integrations(framework):
    pytest.importorskip(framework)
    env = {**os.environ, "KERAS_BACKEND": framework}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # tf.lite's authoring tool would import JAX, Keras scikit-learn and pandas: none of them here
    assert out["loaded"] == {
        "jax": framework == "jax",
        "sklearn": False,
        "pandas": False,
        "tensorflow": framework == "tensorflow",
    }
    assert out["backend"] == framework and out["pandas"] == "pandas"
