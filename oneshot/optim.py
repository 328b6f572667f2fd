"""How a run's parameters move: the optimiser (Adam, or SGD with momentum), the learning-rate
schedule of the config (`Config.lr_factor`, stepped every step) and, for fp16, a gradient scaler."""

from __future__ import annotations

import torch

from . import precision
from .config import Config


def optimizer(cfg: Config, params: list) -> torch.optim.Optimizer:
    """The run's optimiser: Adam, or SGD with `momentum` (no Nesterov), each with `weight_decay`."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class Stepper:
    """The parameters' update: optimiser, schedule (per step) and, for fp16, the gradient scaler."""

    def __init__(self, cfg: Config, params: list):
        """`params`: the encoder's and the loss's own (Koch's head, a softmax head, ...)."""
        self.opt = optimizer(cfg, params)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cfg.lr_factor)
        self.scaler = precision.grad_scaler(cfg.precision, cfg.device)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()

    @property
    def lr(self) -> float:
        return self.sched.get_last_lr()[0]
