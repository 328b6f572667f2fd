"""Arithmetic precision of the training step and the test embedding: fp32, bf16 or fp16.

`resolve` turns a requested precision ("fp32", "bf16", "auto") into the one used on a device;
`autocast` is the context to run a forward pass (and loss) in; `grad_scaler` is needed only
for fp16, the fallback on GPUs without bf16. Weights, optimiser state and the loss reduction
stay in fp32 (autocast keeps them there).
"""

from __future__ import annotations

import contextlib

import torch

from .errors import OneshotError

PRECISIONS = ("fp32", "bf16", "auto")  # what a config or flag may ask for


def bf16_supported(device: str) -> bool:
    """Whether bf16 runs natively on `device` (a CUDA GPU with bf16, or a CPU whose oneDNN has bf16
    kernels: without them oneDNN falls back to a slow emulation)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve(precision: str, device: str) -> str:
    """The precision actually used: "fp32", "bf16" or "fp16" (a GPU without bf16 gets fp16)."""
    if precision not in PRECISIONS:
        raise OneshotError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    if bf16_supported(device):
        return "bf16"
    if precision == "auto":
        return "fp32"
    if torch.device(device).type == "cuda":
        return "fp16"
    raise OneshotError(f"precision 'bf16' was asked for, but {device} has no native bf16 "
                       "(oneDNN without bf16 kernels); use precision = 'fp32' or 'auto'")


def autocast(precision: str, device: str):
    """A context that runs the enclosed ops in `precision` (a resolved one) on `device`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (whose small gradients underflow); None otherwise."""
    return torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None
