"""The framework seam: import Keras through this module, never TensorFlow or JAX directly.

greenkd's distillation is Keras 3 code (`keras.ops`, layers, fit/evaluate/predict); the
framework under Keras is chosen per process by `KERAS_BACKEND`, which every process greenkd
starts gets from its run's `--framework` before Keras loads (`greenkd.devices`: Device.env(),
bind_run_process). What is specific to a framework sits here and nowhere else:

- start-up: TensorFlow 2.21 writes C++ notices to stderr while it loads ("oneDNN custom
  operations are on", "could not find cuda drivers", a cuInit error without a GPU), whatever
  TF_CPP_MIN_LOG_LEVEL says; the import and the first device query run with file
  descriptor 2 pointed at /dev/null (GREENKD_TF_VERBOSE=1 shows them). JAX says nothing.
- threads and memory (`configure`): TensorFlow's intra-/inter-op pools through tf.config and
  memory growth; JAX's through the XLA flags and `XLA_PYTHON_CLIENT_PREALLOCATE` that
  Device.env() sets before it loads (JAX reads them once, at its first computation).
- host work (`on_host`): a whole split resized once at load time runs on the CPU, never on
  GPU 0.
- fast kernels (`fused_batch_norm` and `depthwise_conv`, the `TrainingBatchNorm` and
  `ShiftedDepthwiseConv2D` layers that use them, and `fast_layers` that puts them in a whole
  model while it trains or is evaluated): TensorFlow's fused batch-norm training kernel, and
  under JAX on the CPU a depthwise convolution as a sum of shifted products (XLA's CPU
  grouped convolution is 8-30x slower); None elsewhere, and the layers fall back to Keras's
  own ops.
- one trace per step (`build_before_tracing`): Keras on TensorFlow without a distribution
  strategy creates the optimizer's and metrics' variables inside the first traced step, and a
  `tf.function` that creates variables is traced twice.

Nothing here imports TensorFlow unless the framework is TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from greenkd.errors import GreenkdError

if TYPE_CHECKING:
    from greenkd.devices import Device

FRAMEWORKS = ("tensorflow", "jax")  # Keras 3 backends greenkd runs on; tensorflow is the default

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NAME = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if NAME not in FRAMEWORKS:
    raise GreenkdError(
        f"KERAS_BACKEND={NAME!r} is not a framework greenkd runs on: use one of "
        f"{', '.join(FRAMEWORKS)} (greenkd distill --framework sets it)"
    )


@contextlib.contextmanager
def _stderr_to_devnull():
    if os.environ.get("GREENKD_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _record_environment() -> None:
    """Test hook: with GREENKD_FRAMEWORK_ENV_LOG set, append this process's device environment,
    as it is when the framework loads, to that file (one JSON line per process). The tests of
    device binding read it to check that every process of a run saw only its own GPU."""
    log = os.environ.get("GREENKD_FRAMEWORK_ENV_LOG")
    if not log:
        return
    import json

    keys = (
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
        "TF_NUM_INTRAOP_THREADS",
        "OMP_NUM_THREADS",
        "XLA_FLAGS",
        "KERAS_BACKEND",
    )
    record = {
        "pid": os.getpid(),
        "argv": sys.argv,
        "framework": NAME,
        "env": {k: os.environ.get(k) for k in keys},
        "cores": sorted(os.sched_getaffinity(0)),
    }
    with open(log, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if "keras" in sys.modules and sys.modules["keras"].backend.backend() != NAME:
    raise GreenkdError(
        f"Keras was already loaded with the {sys.modules['keras'].backend.backend()} backend in "
        f"this process, not {NAME}: set KERAS_BACKEND before anything imports keras"
    )

# Optional integrations TensorFlow and Keras import when they are installed, for features
# greenkd never uses: tf.lite's authoring tool imports JAX (and loads its native library), Keras
# imports scikit-learn for its estimator wrappers and pandas to recognise DataFrames. In this
# project's environment (JAX for --framework jax, scikit-learn for the digits dataset, pandas for
# the analysis) that was 1.2-1.3 s of `import tensorflow, keras`'s 3.7 s (median of 3, Intel Xeon,
# 2 vCPUs), paid by the run's process, every worker and every test that starts one. Each import
# of the framework here treats them as absent (their try/except ImportError paths), then forgets
# that, so greenkd's own later imports of them load them as usual.
_SKIPPED_INTEGRATIONS = {"tensorflow": ("jax", "jaxlib", "sklearn", "pandas"),
                         "jax": ("sklearn", "pandas")}  # fmt: skip


@contextlib.contextmanager
def _without_unused_integrations() -> Iterator[None]:
    skipped = [m for m in _SKIPPED_INTEGRATIONS[NAME] if m not in sys.modules]
    for module in skipped:
        sys.modules[module] = None  # type: ignore[assignment]  # "import x" raises ImportError
    try:
        yield
    finally:
        for module in skipped:
            if sys.modules.get(module, 0) is None:
                del sys.modules[module]


tf: Any = None
if NAME == "tensorflow":
    if "tensorflow" not in sys.modules:
        _record_environment()
        with _stderr_to_devnull(), _without_unused_integrations():
            import tensorflow as _tf  # which imports Keras too

            _tf.config.list_physical_devices()
    import tensorflow as tf

    if os.environ.get("GREENKD_TF_VERBOSE") != "1":
        # tf.function's "N of the last M calls triggered retracing" fires when a
        # validation split ends in a smaller batch; harmless, and greenkd traces
        # each task's functions on purpose
        import logging

        tf.get_logger().setLevel(logging.ERROR)
else:
    if "jax" not in sys.modules:
        _record_environment()
    try:
        import jax
    except ImportError:
        raise GreenkdError(
            "--framework jax needs JAX in this environment: pip install 'greenkd[jax]' "
            "(on a GPU: pip install 'jax[cuda12]')"
        ) from None

    # JAX compiles every step with XLA, and every new weight shape's initialiser too (about a
    # second each on a busy 2-core CPU): keep the compiled programs in greenkd's cache, so that
    # a run's workers, its later runs and a sweep's runs compile each program once
    from greenkd.paths import cache_dir

    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax-compile"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

with _without_unused_integrations():  # loaded above under TensorFlow, here under JAX
    import keras

if NAME != "tensorflow":
    # Keras probes for TensorFlow while it serialises a layer (module_utils.LazyModule), which
    # imports all of TensorFlow into this process where it is installed (seconds, and the
    # memory of a framework nobody uses here): tell the probe TensorFlow is absent
    from keras.src.utils import module_utils as _keras_modules

    with contextlib.suppress(AttributeError):
        _keras_modules.tensorflow._available = False

__all__ = [
    "FRAMEWORKS",
    "NAME",
    "ShiftedDepthwiseConv2D",
    "TrainingBatchNorm",
    "configure",
    "configure_tensorflow",
    "depthwise_conv",
    "fast_layers",
    "keras",
    "tf",
]


def configure(device: Device) -> None:
    """Set this process's framework threads and memory for `device`, before its first op."""
    if NAME == "tensorflow":
        configure_tensorflow(device)
    # JAX: its threads and memory come from the environment Device.env() set before it loaded
    # (XLA_FLAGS, XLA_PYTHON_CLIENT_PREALLOCATE, CUDA_VISIBLE_DEVICES); nothing to call


def configure_tensorflow(device: Device) -> None:
    """Set TensorFlow's thread counts for `device` (before any op runs in this process): a CPU
    device's cores, or a GPU worker's share of the node's cores (its input pipeline and host
    ops), never the whole machine per worker; and memory growth on its GPU."""
    if device.kind == "remote":
        return  # an external Dask cluster's worker: bound by whoever started it
    if device.kind == "gpu":
        for gpu in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):  # already initialised: the env var held
                tf.config.experimental.set_memory_growth(gpu, True)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(device.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        if tf.config.threading.get_intra_op_parallelism_threads() != device.threads:
            raise GreenkdError(
                f"cannot give TensorFlow {device.threads} thread(s) for {device.label}: it "
                "already ran an op in this process"
            ) from None


@contextlib.contextmanager
def on_host() -> Iterator[None]:
    """Run the block's framework ops on the CPU (one-off host work such as resizing a split)."""
    if NAME == "tensorflow":
        with tf.device("/CPU:0"):
            yield
    else:
        import jax

        with jax.default_device(jax.devices("cpu")[0]):
            yield


@contextlib.contextmanager
def weights_set_afterwards() -> Iterator[None]:
    """Create Keras variables as zeros made on the host instead of running their random
    initializers, for models whose weights are all set right after (a model read from its file,
    a trained block rebuilt for its weights, a teacher layer cloned and copied) or never read (a
    block built to count its parameters and FLOPs). Only Keras's initializer objects are
    skipped: any other callable (a seed generator's state) still gives the variable its value.

    Only JAX needs it: each initializer of a new shape there is a `jax.random` program that
    XLA compiles, 0.5-3 s each on one core, so a cold process spent 8.4 s reading an 11-layer
    CNN and the run's set-up 29 s reading the teacher and counting its blocks (the persistent
    compilation cache saves them only for the next process). TensorFlow runs initializers as
    eager ops and needs nothing. A Keras without the method initialises as usual.
    """
    if NAME != "jax":
        yield
        return
    from keras.src.backend.jax.core import JaxVariable

    original = JaxVariable.__dict__.get("_initialize_with_initializer")
    if original is None:
        yield
        return

    import numpy as np

    def zeros(variable, initializer) -> None:
        if not isinstance(initializer, keras.initializers.Initializer):
            return original(variable, initializer)  # e.g. a seed generator's state: its seed
        variable._initialize(np.zeros(variable._shape, variable._dtype))

    JaxVariable._initialize_with_initializer = zeros
    try:
        yield
    finally:
        JaxVariable._initialize_with_initializer = original


def fused_batch_norm(inputs, gamma, beta, epsilon: float):
    """TensorFlow's fused training-mode batch norm: (y, batch mean, biased batch variance) of a
    4-D float32 NHWC batch in one kernel, or None where the framework has none (Keras's own
    ops then do the same arithmetic)."""
    if NAME != "tensorflow":
        return None
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, epsilon=epsilon, is_training=True
    )
    # the kernel reports the unbiased variance; Keras keeps the biased one
    n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
    return y, mean, variance * (n - 1.0) / n


def build_before_tracing(model: Any, data: Any) -> None:
    """Create a compiled model's optimizer and metric variables now, before its first traced step.

    Keras 3 on TensorFlow, without a distribution strategy, creates them inside the first traced
    train (or test) step, and a `tf.function` whose first call creates variables is traced a second
    time without them (tensorflow/tensorflow#48851). Keras's own symbolic build, which it runs
    before tracing on JAX and under a strategy, creates them from the shapes of `data` (a batch,
    or a `tf.data.Dataset`, whose `element_spec` is used): the first `train_on_batch` of a small
    block took 1.59 s, 0.93 s built first (benchmarks/first_steps.py). It changes no weight and
    no step. With a Keras that lacks the method, the optimizer alone is built.

    On JAX Keras builds first itself, but `fit` takes that batch from the stream and, from a
    `PyDataset` with workers, does not give it back (keras-team/keras#20394): training started
    at the stream's second batch (a fine-tuned student 0.85 off in a weight; `evaluate` was
    found unaffected). Built here from the stream's first batch read by its index, which moves
    no stream, `fit` takes none.
    """
    symbolic = getattr(model, "_symbolic_build", None)
    if NAME != "tensorflow":
        if symbolic is not None:
            is_stream = isinstance(data, keras.utils.PyDataset)
            symbolic(data_batch=data[0] if is_stream else data)
        return
    if symbolic is not None:
        symbolic(data_batch=getattr(data, "element_spec", data))
    elif getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


class TrainingBatchNorm(keras.layers.BatchNormalization):
    """Keras batch norm whose training step runs TensorFlow's fused kernel.

    Keras 3 builds training-mode batch norm from separate moment, normalise and
    scale ops; TensorFlow's FusedBatchNormV3 does the same in one kernel and
    takes a block's training step at 32x32x32 from about 53 to 31 ms on the
    CPU (benchmarks/BENCHMARKS.md). Same variables, same formula (biased batch
    variance to normalise, Keras's momentum for the moving statistics), so its
    weights load into a plain BatchNormalization. Anything else (inference, other
    frameworks: `fused_batch_norm`, other ranks or axes) takes Keras's own path.
    """

    def call(self, inputs, training=None, mask=None):
        fast = (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == "float32"
        )
        fused = fused_batch_norm(inputs, self.gamma, self.beta, self.epsilon) if fast else None
        if fused is None:  # not this case, or no fused kernel in this framework
            return super().call(inputs, training=training, mask=mask)
        y, mean, variance = fused
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return y


def depthwise_conv(inputs, kernel, strides, padding: str, dilation_rate, data_format: str):
    """A 2-D depthwise convolution (Keras's `ops.depthwise_conv`, kernel [kh, kw, C, M]) as a
    sum of kh x kw shifted, strided slices of the input, each times its kernel row; or None
    where the framework's own op is the fast one.

    Only JAX on the CPU: XLA's CPU backend runs a grouped convolution
    (`feature_group_count` = channels) as a generic loop, so a 3x3 depthwise layer on 64
    images of 32x32x8 took 62 ms forward and 132 ms with its gradients on one core, against
    2.1 and 12.7 ms as nine shifted products (8-10x with gradients, about 30x forward, at the
    blocks' shapes; a whole block's step took 0.41x the time, its forward pass 0.06x, its first
    step, which compiles it, 1.76x: benchmarks/jax_depthwise.py). The same sums in another
    order: equal to float32 rounding.
    TensorFlow's and the GPUs' depthwise kernels are already fast. Channels last, 'same' or
    'valid' padding (TensorFlow's split of odd padding: the extra row and column at the end).
    """
    if NAME != "jax" or data_format != "channels_last" or padding not in ("same", "valid"):
        return None
    import jax

    if jax.default_backend() != "cpu" or len(inputs.shape) != 4:
        return None
    import jax.numpy as jnp

    kh, kw, channels, multiplier = kernel.shape
    if multiplier > 1:  # output channel c * M + m reads input channel c
        inputs = jnp.repeat(inputs, multiplier, axis=-1)
    kernel = jnp.reshape(kernel, (kh, kw, channels * multiplier))
    (sh, sw), (dh, dw) = strides, dilation_rate
    h, w = inputs.shape[1], inputs.shape[2]
    extent_h, extent_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        out_h, out_w = -(-h // sh), -(-w // sw)
        pad_h = max((out_h - 1) * sh + extent_h - h, 0)
        pad_w = max((out_w - 1) * sw + extent_w - w, 0)
        inputs = jnp.pad(
            inputs,
            ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        )
    else:
        out_h, out_w = (h - extent_h) // sh + 1, (w - extent_w) // sw + 1
    total = None
    for i in range(kh):
        for j in range(kw):
            y, x = i * dh, j * dw
            window = inputs[
                :, y : y + (out_h - 1) * sh + 1 : sh, x : x + (out_w - 1) * sw + 1 : sw, :
            ]
            term = window * kernel[i, j]
            total = term if total is None else total + term
    return total


class ShiftedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Keras's depthwise convolution layer computed by `depthwise_conv` where that applies
    (JAX on the CPU); Keras's own op everywhere else. Same variables, same result up to
    float32 rounding, so its weights load into a plain DepthwiseConv2D."""

    def call(self, inputs):
        kernel = keras.ops.convert_to_tensor(self.kernel)
        outputs = depthwise_conv(
            inputs, kernel, self.strides, self.padding, self.dilation_rate, self.data_format
        )
        if outputs is None:
            return super().call(inputs)
        if self.use_bias:  # channels last: the bias broadcasts over the last axis
            outputs = outputs + keras.ops.convert_to_tensor(self.bias)
        return outputs if self.activation is None else self.activation(outputs)


FAST_LAYERS = {
    keras.layers.BatchNormalization: TrainingBatchNorm,
    keras.layers.DepthwiseConv2D: ShiftedDepthwiseConv2D,
}


@contextlib.contextmanager
def fast_layers(model: Any) -> Iterator[None]:
    """Inside, every Keras batch norm of `model` (nested models' too) trains through the fused
    kernel (`TrainingBatchNorm`) and every depthwise convolution runs as shifted products where
    that is faster (`ShiftedDepthwiseConv2D`): same variables, same formulas. After, the layers
    are Keras's own again, so a model saved later names no greenkd class.

    Around every `fit` of a whole model, the data-parallel fine-tune's step and every
    evaluation of a model (`distill.train.evaluate_accuracy`, `branch_accuracies`): a teacher
    and a student keep their layers as Keras builds them (48 batch norms in the default
    student, all training under `--finetune-batch-norm batch`). A one-core worker's step on
    half a batch of the default fine-tune took 0.68x the time with them fused, its first call
    (tracing) 0.79x; on a whole batch 0.62x and 0.43x (benchmarks/finetune_step.py). Under
    JAX the batch norm takes Keras's own path, and on the CPU the depthwise convolutions the
    shifted one. A function Keras compiled before the context keeps the layers it traced.
    """
    swapped = [
        (layer, type(layer))
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if type(layer) in FAST_LAYERS
    ]
    for layer, plain in swapped:
        layer.__class__ = FAST_LAYERS[plain]
    try:
        yield
    finally:
        for layer, plain in swapped:
            layer.__class__ = plain
