"""What gets replaced, and by what (paper §3.2).

`find(model)` lists every Conv2D whose kernel is not 1x1 — the paper's
compressible layers; a 1x1 convolution is already cheaper than a depthwise
separable one. `split(targets)` leaves out, by default, a target whose block would be larger
than its conv in params or FLOPs (VGG16's first conv), so a student never grows.
`make_block(target, kind)` builds the replacement:

- (a) two depthwise-separable layers (the paper's choice, Figure 3), each
  DepthwiseConv2D k x k -> BN -> ReLU -> 1x1 Conv2D -> BN -> ReLU; the first
  layer carries the teacher conv's stride, padding and dilation and the
  channel change, so the block's output shape equals the conv's for any of them;
- (b) three such layers;
- (c) (a) with a skip connection around the second layer;
- (d) (b) with a skip connection around the second and third layers.

The block regresses the teacher conv's *own* output (`layer.output`): its
last layer ends in the conv's own activation. VGG16's convs end in ReLU, so the
block does too; a ResNet50 conv is linear (its BN and ReLU are separate
layers), so the block's last layer is linear and can reproduce the negative
values a ReLU-ended block never could (the reference code's bug).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from greenkd.distill.select import grows
from greenkd.errors import GreenkdError
from greenkd.framework import (
    ShiftedDepthwiseConv2D,
    TrainingBatchNorm,
    keras,
    weights_set_afterwards,
)

BLOCK_LAYERS = {"a": 2, "b": 3, "c": 2, "d": 3}
# Blocks train for a few hundred steps; Keras's default 0.99 would leave the
# moving statistics used at evaluation far behind the batch statistics.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Target:
    """One compressible convolution and what replacing it would save."""

    name: str
    index: int  # position among the targets, in model order
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    dilation: tuple[int, int]
    activation: str
    input_shape: tuple[int, ...]  # per image, without the batch axis
    output_shape: tuple[int, ...]
    params_before: int
    flops_before: int  # 2 x multiply-adds per image
    params_after: int
    flops_after: int
    prefix_flops: int  # teacher forward up to and including this layer, per image

    @property
    def seed_offset(self) -> int:
        """A per-layer seed component: the same on every device, backend and schedule."""
        return zlib.crc32(self.name.encode())

    def to_dict(self) -> dict:
        return asdict(self)


def _is_target(layer: keras.layers.Layer) -> bool:
    # Keras 3 DepthwiseConv2D and SeparableConv2D are not Conv2D subclasses
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) != (1, 1)
        and getattr(layer, "groups", 1) == 1
    )


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in tensor.shape[1:])


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs (2 per multiply-add) of one call of a conv or dense layer; 0 for the rest.

    Batch norm folds into the preceding conv at inference, and activations,
    pooling and additions are a rounding error beside the convolutions, so they
    are not counted (the convention of the MobileNet paper the blocks come from).
    """
    if isinstance(layer, keras.Model):
        return sum(layer_flops(sub) for sub in layer.layers)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = _shape(layer.output)
        kh, kw = layer.kernel_size
        return 2 * _prod(out) * kh * kw  # the output already counts depth_multiplier
    if isinstance(layer, keras.layers.SeparableConv2D):
        out, inp = _shape(layer.output), _shape(layer.input)
        kh, kw = layer.kernel_size
        cin = inp[-1] if layer.data_format == "channels_last" else inp[0]
        spatial = _prod(out) // layer.filters
        return 2 * spatial * cin * (kh * kw * layer.depth_multiplier + layer.filters)
    if isinstance(layer, keras.layers.Conv2D):
        out, inp = _shape(layer.output), _shape(layer.input)
        kh, kw = layer.kernel_size
        cin = inp[-1] if layer.data_format == "channels_last" else inp[0]
        return 2 * _prod(out) * kh * kw * cin // getattr(layer, "groups", 1)
    if isinstance(layer, keras.layers.Dense):
        return 2 * _prod(_shape(layer.input)) * layer.units
    return 0


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def model_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of one image, summed over conv and dense layers."""
    return sum(layer_flops(layer) for layer in model.layers)


def flatten(model: keras.Model) -> keras.Model:
    """Inline nested Functional/Sequential sub-models so every layer sits in one graph.

    Graph surgery and the input/output sub-models need each target's tensors in
    the top-level graph. The layers are shared, not copied.
    """
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
    outputs = _inline(model, inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs, name=model.name)


def _inline(model: keras.Model, inputs):
    def call(op, *args, **kwargs):
        if isinstance(op, keras.Model):
            return _inline(op, args[0] if len(args) == 1 else list(args))
        return op(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = call(layer, x)
        return x
    return model._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call)


def _nodes_of(model: keras.Model, layer: keras.layers.Layer) -> list:
    return [
        node
        for nodes in model._nodes_by_depth.values()
        for node in nodes
        if node.operation is layer
    ]


def layer_io(model: keras.Model, layer: keras.layers.Layer):
    """The (input, output) tensors of `layer` in `model`'s own graph, found by identity.

    A layer shared with other models (a block being evaluated in a spliced
    copy) has several call sites; only the one inside `model` counts.
    """
    nodes = _nodes_of(model, layer)
    if len(nodes) != 1:
        raise GreenkdError(
            f"layer {layer.name} is called {len(nodes)} times in {model.name}; "
            "greenkd replaces layers that are used once"
        )
    return nodes[0].input_tensors[0], nodes[0].outputs[0]


def find(model: keras.Model, *, block: str = "a") -> list[Target]:
    """Every non-1x1 Conv2D of `model` in model order, with its cost before and after `block`."""
    model = flatten(model)
    targets: list[Target] = []
    prefix = 0
    for layer in model.layers:
        prefix += layer_flops(layer)
        if not _is_target(layer):
            continue
        tensor_in, tensor_out = layer_io(model, layer)
        partial = Target(
            name=layer.name,
            index=len(targets),
            kernel=tuple(layer.kernel_size),
            strides=tuple(layer.strides),
            padding=layer.padding,
            dilation=tuple(layer.dilation_rate),
            activation=keras.activations.serialize(layer.activation),
            input_shape=_shape(tensor_in),
            output_shape=_shape(tensor_out),
            params_before=layer.count_params(),
            flops_before=layer_flops(layer),
            params_after=0,
            flops_after=0,
            prefix_flops=prefix,
        )
        with weights_set_afterwards():  # built to count its parameters and FLOPs only
            counted = make_block(partial, block, layer=layer)
        targets.append(_with_block_cost(partial, counted))
    return targets


def _with_block_cost(target: Target, block: keras.Model) -> Target:
    values = target.to_dict()
    values.update(params_after=block.count_params(), flops_after=model_flops(block))
    return Target(**values)


@dataclass(frozen=True)
class Skipped:
    """A compressible conv left as it is: its block would make the student larger."""

    target: Target
    reason: str

    def to_dict(self) -> dict:
        t = self.target
        return {
            "name": t.name,
            "reason": self.reason,
            "params_before": t.params_before,
            "params_after": t.params_after,
            "flops_before": t.flops_before,
            "flops_after": t.flops_after,
        }


def growth(target: Target, block: str = "a") -> str | None:
    """Why `target`'s block would make the student larger, or None when it would not.

    A conv with few input channels (VGG16's first, 3 in) costs less than any block of two
    depthwise-separable layers: at width 1 its block has 3.2x the params and 2.8x the FLOPs.
    """
    t = target
    if not grows(t.params_before - t.params_after, t.flops_before - t.flops_after):
        return None
    larger = []
    if t.params_after > t.params_before:
        larger.append(f"params {t.params_before:,} -> {t.params_after:,}")
    if t.flops_after > t.flops_before:
        larger.append(f"FLOPs {t.flops_before:,} -> {t.flops_after:,}")
    return f"block {block} is larger than the conv ({', '.join(larger)})"


def split(
    targets: list[Target], *, block: str = "a", replace_growing: bool = False
) -> tuple[list[Target], list[Skipped]]:
    """The targets that become layer tasks, and those skipped because their block would grow.

    By default a student never grows: a target whose block has more params or more FLOPs than
    its conv is no task at all. `replace_growing` (the paper's behaviour) makes every target a task.
    """
    if replace_growing:
        return list(targets), []
    kept: list[Target] = []
    skipped: list[Skipped] = []
    for t in targets:
        reason = growth(t, block)
        if reason is None:
            kept.append(t)
        else:
            skipped.append(Skipped(t, reason))
    return kept, skipped


def require_targets(
    targets: list[Target], model_name: str, skipped: Sequence[Skipped] = ()
) -> list[Target]:
    """`targets`, or a user error saying why there is nothing to replace."""
    if not targets and skipped:
        why = "; ".join(f"{s.target.name}: {s.reason}" for s in skipped)
        raise GreenkdError(
            f"{model_name} has no compressible layer a block would make smaller ({why}); "
            "--replace-growing replaces it anyway (the paper's behaviour)"
        )
    if not targets:
        raise GreenkdError(
            f"{model_name} has no compressible layer: greenkd replaces Conv2D layers whose "
            "kernel is not 1x1, and this model has none"
        )
    return targets


def make_block(
    target: Target,
    kind: str = "a",
    *,
    layer: keras.layers.Layer | None = None,
    seed: int | None = None,
    for_training: bool = False,
) -> keras.Model:
    """The replacement block for `target` as a small functional model named `<conv>_kd`.

    `seed` fixes the initial weights (the layer's own seed, so the block starts
    the same on any device); the output shape always equals the conv's.
    `for_training` builds its batch norms as `TrainingBatchNorm` and its depthwise
    convolutions as `ShiftedDepthwiseConv2D` (same weights, same results, faster kernels where
    the framework has them); a block that is saved uses Keras's own.
    """
    norm = TrainingBatchNorm if for_training else keras.layers.BatchNormalization
    depthwise = ShiftedDepthwiseConv2D if for_training else keras.layers.DepthwiseConv2D
    if kind not in BLOCK_LAYERS:
        raise GreenkdError(f"unknown block {kind!r}: use one of {', '.join(BLOCK_LAYERS)}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    channels_last = True
    data_format = "channels_last"
    if layer is not None:
        data_format = layer.data_format
        channels_last = data_format == "channels_last"
    axis = -1 if channels_last else 1
    cout = target.output_shape[-1] if channels_last else target.output_shape[0]
    activation = _activation_from_name(target.activation)
    prefix = f"{target.name}_kd"

    def sep_layer(x, i: int, *, first: bool, last: bool):
        x = depthwise(
            target.kernel,
            strides=target.strides if first else 1,
            padding=target.padding if first else "same",
            dilation_rate=target.dilation if first else 1,
            use_bias=False,
            data_format=data_format,
            depthwise_initializer=_glorot(seed, 2 * i),
            name=f"{prefix}_dw{i}",
        )(x)
        x = norm(axis=axis, momentum=BN_MOMENTUM, name=f"{prefix}_dw{i}_bn")(x)
        x = keras.layers.ReLU(name=f"{prefix}_dw{i}_relu")(x)
        x = keras.layers.Conv2D(
            cout,
            1,
            use_bias=False,
            data_format=data_format,
            kernel_initializer=_glorot(seed, 2 * i + 1),
            name=f"{prefix}_pw{i}",
        )(x)
        x = norm(axis=axis, momentum=BN_MOMENTUM, name=f"{prefix}_pw{i}_bn")(x)
        if not last:
            return keras.layers.ReLU(name=f"{prefix}_pw{i}_relu")(x)
        return x

    def finish(x):
        if activation is None:
            return x  # the teacher conv is linear, so is the block's last layer
        return keras.layers.Activation(activation, name=f"{prefix}_out")(x)

    inputs = keras.Input(target.input_shape, name=f"{prefix}_in")
    n = BLOCK_LAYERS[kind]
    skip = kind in ("c", "d")
    x = sep_layer(inputs, 1, first=True, last=False)
    # the residual path starts after the first layer, which already has the
    # output's shape, so the skip needs no projection for any stride/padding
    head = x
    for i in range(2, n + 1):
        x = sep_layer(x, i, first=False, last=i == n)
    if skip:
        x = keras.layers.Add(name=f"{prefix}_add")([head, x])
    return keras.Model(inputs, finish(x), name=prefix)


def _glorot(seed: int | None, k: int):
    # An explicit seed per kernel. Left to Keras, an initializer draws its seed from
    # Python's global `random`, which other threads of the process (a Dask worker's
    # event loop) draw from too, so set_random_seed alone does not fix the weights.
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=(seed + k) % 2**31)


def _activation_from_name(name: str):
    if name in ("linear", None, "None"):
        return None
    return name
