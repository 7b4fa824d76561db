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


DEPTHWISE_PROBE = """
import json
import numpy as np
import jax
from greenkd.framework import ShiftedDepthwiseConv2D, depthwise_conv, fast_layers, keras

rng = np.random.default_rng(0)
cases = []
for kernel, strides, padding, dilation, multiplier, size in [
    (3, 2, "same", 1, 1, 8),  # odd total padding: the extra row and column at the end
    (5, 1, "valid", 1, 2, 9), (3, 1, "same", 2, 1, 10), ((1, 3), (2, 1), "valid", 1, 3, 7),
]:
    x = rng.normal(size=(4, size, size, 3)).astype("float32")
    plain = keras.layers.DepthwiseConv2D(kernel, strides, padding, depth_multiplier=multiplier,
                                         dilation_rate=dilation, use_bias=True, activation="relu")
    shifted = ShiftedDepthwiseConv2D.from_config(plain.get_config())
    plain.build(x.shape), shifted.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in plain.get_weights()]
    plain.set_weights(weights), shifted.set_weights(weights)

    def loss(layer, k, b, x):
        out, _ = layer.stateless_call([k, b], [], x)
        return (out ** 2).sum(), out

    grads = [jax.jit(jax.value_and_grad(lambda k, b, x, l=layer: loss(l, k, b, x),
                                        argnums=(0, 1, 2), has_aux=True))(*weights, x)
             for layer in (plain, shifted)]  # one compiled program each, not op by op
    (_, out_p), g_p = grads[0]
    (_, out_s), g_s = grads[1]
    cases.append({
        "shape_same": out_p.shape == out_s.shape,
        "out": float(np.max(np.abs(out_p - out_s)) / (np.max(np.abs(out_p)) + 1e-9)),
        "grads": max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-9))
                     for a, b in zip(g_p, g_s)),
        "fast": depthwise_conv(x, weights[0], plain.strides, plain.padding, plain.dilation_rate,
                               plain.data_format) is not None,
    })
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.DepthwiseConv2D(3)])
with fast_layers(model):
    inside = type(model.layers[0]).__name__
print(json.dumps({"cases": cases, "inside": inside, "after": type(model.layers[0]).__name__}))
"""


def test_jax_on_the_cpu_computes_depthwise_convolutions_as_keras_does_by_shifted_products():
    """The JAX CPU fast path (`framework.depthwise_conv`, XLA's grouped convolution being 8-30x
    slower there): outputs and the gradients of kernel, bias and input equal Keras's own layer's
    to float32 rounding, for strides, 'same' padding of odd and even sizes, 'valid', dilation,
    depth multipliers and non-square kernels; `fast_layers` swaps the layer in and back."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", DEPTHWISE_PROBE], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["cases"]) == 4
    for case in out["cases"]:
        assert case["fast"] and case["shape_same"], case  # the shifted path ran, same shape
        assert case["out"] < 1e-5 and case["grads"] < 1e-5, case
    assert out["inside"] == "ShiftedDepthwiseConv2D" and out["after"] == "DepthwiseConv2D"
