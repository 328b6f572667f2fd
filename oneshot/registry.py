"""The one place where names become parts: loss, encoder and miner names -> builders.

A name in a config is one of
- a built-in: a key of `LOSSES` or `ENCODERS`;
- `pml:<Class>`: a class of pytorch-metric-learning (an optional extra, see `oneshot.pml`);
- an import path `package.module:name` to your own code. A loss is a function
  `fn(emb, labels, **loss_params) -> scalar` or an nn.Module class built with `loss_params`;
  an encoder is an nn.Module class (or a function returning one) built with `encoder_params`;
  a miner is a class built with `miner_params`, called as `miner(emb, labels)`. The module is
  imported from wherever Python finds it (installed, on PYTHONPATH, or the current directory).
An unknown name raises ConfigError listing the known ones; an import that fails names the module
and the reason.

A constructor that takes `num_classes` or `embedding_size` (a loss) or `in_channels` or
`image_size` (an encoder) gets them from the run unless the params set them: the training
split's class count, the encoder's output size. A table with a `class` key inside the params,
e.g. `distance = {class = "pml:LpDistance", normalize_embeddings = false}`, is built into that
object (a `pml:` class or an import path; its other keys are its arguments).

Every loss is an nn.Module called as `loss(emb [B, D], labels [B]) -> scalar`, labels being the
classes' indices in the training split. A loss that owns parameters (Koch's head, ArcFace's
class weights) holds them itself; the trainer optimises them with the encoder and keeps them in
its checkpoints.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from . import losses, pml
from .config import Config
from .encoders import Conv4, Koch, Pixels, ResNet12, Siamese
from .errors import ConfigError

PATH_HINT = "'package.module:name' (your own code)"


@dataclass
class LossContext:
    """What a loss may need to know of its run: the number of classes of the training split and
    the encoder's embedding size (`embed()` measures it; called only when a loss needs it)."""

    num_classes: int | None = None
    embed: Callable[[], int] | None = None

    def embedding_size(self) -> int:
        if self.embed is None:
            raise ConfigError("this loss needs the embedding size and there is no encoder to measure: "
                              "set embedding_size in loss_params")
        return self.embed()

    def classes(self) -> int:
        if self.num_classes is None:
            raise ConfigError("this loss needs the number of training classes, which only the training "
                              "split gives: set num_classes in loss_params")
        return self.num_classes


# ---- built-ins: name -> builder ----

# Each reads cfg.loss_params: BUILTIN_PARAMS's settings, defaults filled in and choices checked by the config.
LOSSES: dict[str, Callable[[Config, LossContext], nn.Module]] = {
    "contrastive": lambda cfg, ctx: losses.FunctionLoss(
        losses.contrastive, margin=cfg.loss_params["margin"], metric=cfg.loss_params["distance"],
        pos_weight=cfg.loss_params["pos_weight"]),
    "triplet": lambda cfg, ctx: losses.FunctionLoss(
        losses.triplet, margin=cfg.loss_params["margin"], metric=cfg.loss_params["distance"],
        mining=cfg.loss_params["mining"]),
    "koch": lambda cfg, ctx: losses.KochLoss(ctx.embedding_size()),
    "proto": lambda cfg, ctx: losses.FunctionLoss(losses.proto, n_support=cfg.n_support,
                                                  metric=cfg.loss_params["distance"]),
    "softmax": lambda cfg, ctx: losses.SoftmaxLoss(
        ctx.embedding_size(), ctx.classes(), cfg.loss_params["head"], cfg.loss_params["scale"]),
}


def _sized(enc: nn.Module, image_size: int) -> nn.Module:
    enc.out_dim(image_size)  # raises on inputs too small
    return enc


ENCODERS: dict[str, Callable[..., nn.Module]] = {  # (in_channels, image_size, **encoder_params)
    "conv4": lambda c, s, **p: _sized(Conv4(c, **p), s),
    "koch": lambda c, s, **p: Koch(c, s, **p),
    "pixels": lambda c, s, **p: Pixels(c, **p),
    "resnet12": lambda c, s, **p: _sized(ResNet12(c, **p), s),
}


# ---- user code and PML ----

def import_object(spec: str, what: str, known) -> Any:
    """The object an import path `package.module:name` (name may be dotted) points to."""
    module, sep, attr = spec.partition(":")
    if not (sep and module and attr):
        raise ConfigError(f"unknown {what} {spec!r}; choose one of {', '.join(known)}, "
                          f"'pml:<Class>' (pytorch-metric-learning) or an import path {PATH_HINT}")
    if os.getcwd() not in sys.path:  # `oneshot` is a console script: let it find modules where it runs
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # ImportError, or whatever the module raises while it runs
        raise ConfigError(f"{what} {spec!r}: cannot import module {module!r}: {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {spec!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _takes(obj, name: str) -> bool:
    """Whether calling `obj` accepts the keyword `name`: a function's own parameters; a class's
    __init__, following base classes while each __init__ passes on **kwargs."""
    funcs = [k.__init__ for k in inspect.getmro(obj) if "__init__" in vars(k)] if inspect.isclass(obj) else [obj]
    for f in funcs:
        try:
            params = inspect.signature(f).parameters
        except (TypeError, ValueError):
            return False
        p = params.get(name)
        if p is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            return True
        if not any(q.kind is q.VAR_KEYWORD for q in params.values()):
            return False
    return False


def construct(obj, params: dict, supply: dict[str, Callable[[], Any]], what: str) -> Any:
    """obj(**params), each name of `supply` that obj takes and params lack filled in by its getter."""
    kwargs = dict(params)
    for name, get in supply.items():
        if name not in kwargs and _takes(obj, name):
            kwargs[name] = get()
    try:
        return obj(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: cannot build it with {kwargs}: {e}") from e


def _resolve(value, where: str):
    """Params with every table that has a `class` key built into its object (innermost first)."""
    if isinstance(value, list):
        return [_resolve(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    value = {k: _resolve(v, f"{where}.{k}") for k, v in value.items()}
    if "class" not in value:
        return value
    spec = value.pop("class")
    if not isinstance(spec, str):
        raise ConfigError(f"{where}.class must be a string ('pml:<Class>' or {PATH_HINT}), got {spec!r}")
    cls = pml.lookup(spec[4:]) if spec.startswith("pml:") else import_object(spec, f"{where}.class", ())
    return construct(cls, value, {}, f"{where} ({spec})")


def _params(params: dict, key: str) -> dict:
    return {k: _resolve(v, f"{key}.{k}") for k, v in params.items()}


def build_miner(cfg: Config) -> nn.Module | None:
    """The miner of `cfg` (None for "none"), called as miner(emb, labels) -> indices tuple."""
    if cfg.miner == "none":
        if cfg.miner_params:
            raise ConfigError(f"miner_params {cfg.miner_params} given without a miner")
        return None
    params = _params(cfg.miner_params, "miner_params")
    if cfg.miner.startswith("pml:"):
        cls = pml.lookup(cfg.miner[4:], ("miners",))
    else:
        cls = import_object(cfg.miner, "miner", ("none",))
    return construct(cls, params, {}, f"miner {cfg.miner!r}")


def build_loss(cfg: Config, ctx: LossContext | None = None) -> nn.Module:
    """The loss of `cfg` as a module: loss(emb [B, D], labels [B]) -> scalar (with its miner)."""
    ctx = ctx or LossContext()
    name = cfg.loss
    supply = {"num_classes": ctx.classes, "embedding_size": ctx.embedding_size}
    if name in LOSSES:
        loss = LOSSES[name](cfg, ctx)
    elif name.startswith("pml:"):
        loss = construct(pml.lookup(name[4:], ("losses",)), _params(cfg.loss_params, "loss_params"),
                         supply, f"loss {name!r}")
    else:
        obj = import_object(name, "loss", LOSSES)
        params = _params(cfg.loss_params, "loss_params")
        if inspect.isclass(obj):
            if not issubclass(obj, nn.Module):
                raise ConfigError(f"loss {name!r} is a class but not an nn.Module: write a function "
                                  f"fn(emb, labels, **loss_params) -> scalar or an nn.Module class")
            loss = construct(obj, params, supply, f"loss {name!r}")
        elif callable(obj):
            loss = losses.FunctionLoss(obj, **params)
        else:
            raise ConfigError(f"loss {name!r} is a {type(obj).__name__}, not a function or an nn.Module class")
    miner = build_miner(cfg)
    if miner is None:
        return loss
    if "indices_tuple" not in inspect.signature(loss.forward).parameters:
        raise ConfigError(f"miner {cfg.miner!r} needs a loss that takes the mined tuples "
                          f"(forward(emb, labels, indices_tuple), as pml: losses do); {name!r} does not")
    return pml.MinedLoss(loss, miner)


def build_encoder(name: str, in_channels: int, image_size: int, params: dict | None = None) -> nn.Module:
    """The encoder `name` for in_channels x image_size x image_size images: [B, C, H, W] -> [B, D]."""
    params = _params(params or {}, "encoder_params")
    if name in ENCODERS:
        try:
            return ENCODERS[name](in_channels, image_size, **params)
        except TypeError as e:
            raise ConfigError(f"encoder {name!r}: encoder_params {params} do not fit it: {e}") from e
    obj = import_object(name, "encoder", ENCODERS)
    if not callable(obj):
        raise ConfigError(f"encoder {name!r} is a {type(obj).__name__}, not an nn.Module class")
    enc = construct(obj, params, {"in_channels": lambda: in_channels, "image_size": lambda: image_size},
                    f"encoder {name!r}")
    if not isinstance(enc, nn.Module):
        raise ConfigError(f"encoder {name!r} built a {type(enc).__name__}, not an nn.Module")
    return enc


# ---- the model of a run: its Siamese encoder and its loss ----

def build_siamese(cfg: Config, in_channels: int) -> Siamese:
    """The Siamese encoder of `cfg` (its `encoder` with `encoder_params`)."""
    return Siamese(build_encoder(cfg.encoder, in_channels, cfg.image_size, cfg.encoder_params), cfg.normalize)


def build_model(cfg: Config, in_channels: int, num_classes: int | None = None) -> tuple[Siamese, nn.Module]:
    """The Siamese encoder of `cfg` and its loss: a module called as loss(emb, labels) -> scalar
    that owns whatever the loss trains (Koch's head, class weights). Built in this order, so a
    seeded RNG gives both the same initial weights every time. `num_classes`: the training
    split's class count, for losses that need it (PML's ArcFace, ProxyAnchor, ...)."""
    model = build_siamese(cfg, in_channels)
    dim: list[int] = []

    def embedding_size() -> int:  # measured once, only for a loss that needs it
        if not dim:
            with torch.no_grad():
                dim.append(model.eval()(torch.zeros(2, in_channels, cfg.image_size, cfg.image_size)).shape[1])
        return dim[0]

    criterion = build_loss(cfg, LossContext(num_classes, embedding_size))
    return model.train(), criterion
