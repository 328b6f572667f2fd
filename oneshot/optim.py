"""How a run's parameters move: the optimiser (Adam, or SGD with momentum), the learning-rate
schedule of the config (`Config.lr_factor`, stepped every step) and, for fp16, a gradient scaler."""

from __future__ import annotations

import math

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
        self.params = params
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
            self.scaler.unscale_(self.opt)  # the gradients as they are, for grad_norm
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()

    def grad_norm(self) -> float:
        """The L2 norm of the last step's gradients, all parameters together (NaN if none)."""
        grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else math.nan

    @property
    def lr(self) -> float:
        return self.sched.get_last_lr()[0]
