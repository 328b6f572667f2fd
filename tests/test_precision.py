"""Precision: resolving fp32 / bf16 / auto per device, and a bf16 step that agrees with fp32."""

import pytest
import torch

from oneshot import precision
from oneshot.config import Config
from oneshot.data.episodes import generator
from oneshot.errors import OneshotError
from oneshot.evaluate import embed_split
from oneshot.registry import build_model
from oneshot.step import place, resolved, step_loss


def test_resolve_follows_the_hardware(monkeypatch):
    assert precision.resolve("fp32", "cpu") == "fp32"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve("auto", "cpu") == precision.resolve("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cuda") == "fp16"  # a GPU without bf16 gets fp16 and a grad scaler
    assert precision.grad_scaler("fp16", "cuda") is not None and precision.grad_scaler("bf16", "cpu") is None
    with pytest.raises(OneshotError, match="no native bf16"):
        precision.resolve("bf16", "cpu")
    with pytest.raises(OneshotError, match="unknown precision 'half'"):
        precision.resolve("half", "cpu")


def test_a_resolved_config_names_the_precision_used(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert resolved(Config(precision="auto")).precision == "fp32"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert resolved(Config(precision="auto")).precision == "bf16"


needs_bf16 = pytest.mark.skipif(not precision.bf16_supported("cpu"), reason="this CPU has no native bf16")


@needs_bf16
def test_bf16_step_and_embedding_stay_close_to_fp32(small_omniglot):
    from oneshot.data.load import load_split

    split = load_split("omniglot", "vinyals", "train", small_omniglot)
    out = {}
    for prec in ("fp32", "bf16"):
        cfg = resolved(Config(batch_classes=4, batch_shots=4, precision=prec, loss="contrastive"))
        torch.manual_seed(0)
        model, head = build_model(cfg, 1)
        place(cfg, model, head)
        loss, n = step_loss(cfg, split, model, head, generator(3))
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        model.eval()
        emb = embed_split(model, split, progress=False, precision=prec)
        out[prec] = (loss.detach(), grad, emb)
        assert loss.dtype == torch.float32 and emb.dtype == torch.float32 and n == 16
    (l32, g32, e32), (l16, g16, e16) = out["fp32"], out["bf16"]
    assert not torch.equal(e32, e16), "bf16 really ran"
    assert torch.allclose(l16, l32, rtol=0.05, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98
    assert (e16 - e32).norm(dim=1).max() < 0.05  # unit-length embeddings
