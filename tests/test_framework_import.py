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


WEIGHTS_PROBE = """
import json, sys
import numpy as np
from jax._src import compiler
import greenkd.framework as fw
from greenkd.models import load_file
keras = fw.keras
compiled = []
original = compiler.backend_compile_and_load
def counting(*args, **kwargs):
    compiled.append(1)
    return original(*args, **kwargs)
compiler.backend_compile_and_load = counting
path = sys.argv[1]
start = len(compiled)
model = load_file(path)
loaded_compiles = len(compiled) - start
with fw.weights_set_afterwards():
    dropout = keras.layers.Dropout(0.5, seed=7)  # a seed generator: its state is its seed
state = np.asarray(dropout.seed_generator.state).tolist()
plain = np.asarray(keras.layers.Dropout(0.5, seed=7).seed_generator.state).tolist()
saved = np.load(sys.argv[2])
dense = keras.layers.Dense(3)
dense.build((1, 4))  # after the block: glorot-uniform again, not zeros
print(json.dumps({
    "compiles": loaded_compiles,
    "same": all(np.array_equal(a, saved[f"w{i}"]) for i, a in enumerate(model.get_weights())),
    "n": len(model.get_weights()),
    "seed_state": state == plain,
    "initializer_back": bool(np.abs(np.asarray(dense.kernel)).sum() > 0),
}))
"""


def test_a_models_file_loads_under_jax_without_compiling_its_initializers(tmp_path):
    """Under JAX every random initialiser of a new shape is an XLA program compiled on the spot
    (0.5-3 s each on one core): a model read from its file skips them (its weights are then the
    file's), a seed generator still starts from its seed, and initialisers work again after."""
    pytest.importorskip("jax")
    import numpy as np

    from greenkd.framework import keras

    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
         keras.layers.Conv2D(6, 3), keras.layers.Flatten(), keras.layers.Dense(5)]
    )  # fmt: skip
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "w.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    env = {**os.environ, "KERAS_BACKEND": "jax", "GREENKD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", WEIGHTS_PROBE, str(tmp_path / "m.keras"), str(tmp_path / "w.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["same"] and out["n"] == 10  # convs, batch norm (4) and dense
    assert out["compiles"] == 0  # reading the file compiles no initialiser (nor anything else)
    assert out["seed_state"] and out["initializer_back"]
