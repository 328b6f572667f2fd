"""The pieces of a pre-training recipe (SimpleShot's): softmax loss, uniform epoch batches, SGD,
multistep decay, random resized crop, validation by a chosen distance; and their config checks."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from oneshot.optim import optimizer
from oneshot.augment import crop_boxes, resized_crop
from oneshot.config import Config, from_dict
from oneshot.data.episodes import EpochBatches, generator
from oneshot.errors import ConfigError, OneshotError
from oneshot.losses import SoftmaxLoss
from oneshot.registry import build_model
from oneshot.train import train
from tiny import interrupt_at_step

pytestmark = pytest.mark.usefixtures("one_thread")

SOFTMAX = dict(loss="softmax", normalize=False, batch_size=16, steps=8, val_every=4, optimizer="sgd", lr=0.05,
               momentum=0.9, weight_decay=1e-4, schedule="multistep", milestones=[0.5, 6], lr_decay=0.1,
               val_ways=3, val_queries=2, val_episodes=10, val_classifier="nearest-prototype", val_distance="cosine")


def test_softmax_linear_head_is_cross_entropy_of_a_linear_layer_with_bias():
    torch.manual_seed(0)
    loss = SoftmaxLoss(8, 5)
    emb, labels = torch.randn(12, 8), torch.randint(0, 5, (12,))
    want = F.cross_entropy(emb @ loss.fc.weight.T + loss.fc.bias, labels)
    assert torch.allclose(loss(emb, labels), want)
    assert loss.fc.bias is not None


def test_softmax_cosine_head_scales_cosines_and_ignores_the_embedding_norm():
    torch.manual_seed(0)
    loss = SoftmaxLoss(8, 5, head="cosine", scale=4.0)
    emb, labels = torch.randn(12, 8), torch.randint(0, 5, (12,))
    w = loss.fc.weight
    cos = (emb / emb.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.allclose(loss(emb, labels), F.cross_entropy(4.0 * cos, labels), atol=1e-6)
    assert torch.allclose(loss(3 * emb, labels), loss(emb, labels), atol=1e-6)
    assert loss.fc.bias is None


def test_epoch_batches_cover_every_item_once_per_epoch_and_resume_exactly():
    b = EpochBatches(10, 3)
    g = generator(0)
    epoch = torch.cat([b.next(g) for _ in range(3)])  # 9 of 10: the remainder is left out
    assert len(set(epoch.tolist())) == 9
    state, g_state = b.state_dict(), g.get_state()
    ahead = [b.next(g) for _ in range(4)]
    again, g2 = EpochBatches(10, 3), generator(99)
    again.load_state_dict(state)
    g2.set_state(g_state)
    assert all(torch.equal(x, again.next(g2)) for x in ahead)
    with pytest.raises(ConfigError, match="larger than the training split"):
        EpochBatches(5, 6)


def test_multistep_decays_at_steps_and_fractions():
    cfg = from_dict(dict(SOFTMAX, steps=100, milestones=[0.5, 75]))
    assert cfg.milestone_steps == [50, 75]
    assert [cfg.lr_factor(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("bad, message", [
    (dict(momentum=-0.1), "'momentum' = -0.1 is out of range"),
    (dict(milestones=[6, 3]), "out of order"),
    (dict(milestones=[0.5, 8]), "reaches past the run"),
    (dict(milestones=[0]), "list of steps"),
    (dict(milestones=[]), "needs milestones"),
    (dict(optimizer="rmsprop"), "'optimizer' = 'rmsprop'"),
    (dict(val_distance="manhattan"), "'val_distance' = 'manhattan'"),
    (dict(augment="cutmix"), "'augment' = 'cutmix'"),
    (dict(loss_params={"head": "mlp"}), "'head' = 'mlp'"),
    (dict(loss="triplet", loss_params={}), "needs P x K batches"),
])
def test_bad_recipe_keys_are_refused_with_the_key_named(bad, message):
    with pytest.raises(OneshotError, match=message):
        from_dict(dict(SOFTMAX, **bad))


def test_new_keys_leave_old_configs_identities_alone():
    old = Config().identity()
    for key in ("batch_size", "optimizer", "val_classifier", "val_distance"):
        assert key in old  # read by every run, at today's behaviour by default
    for key in ("momentum", "milestones"):
        assert key not in old  # read only by sgd / multistep runs
    assert from_dict({"optimizer": "adam", "momentum": 0.5}).identity() == old


def test_crop_boxes_fit_and_follow_torchvision_ranges():
    boxes = crop_boxes(4000, 84, 84, generator(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 84).all() and (left + w <= 84).all()
    area = h * w / 84 ** 2
    assert area.min() >= 0.07 and area.max() <= 1.0
    ratio = (w / h)[(h > 20) & (area < 1)]  # rounding bends the ratio of small boxes
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4
    assert 0.3 < area.median() < 0.7  # area uniform in [0.08, 1], bent only by the boxes that do not fit


def test_resized_crop_of_a_whole_box_is_the_image_or_its_mirror(monkeypatch):
    import oneshot.augment as aug

    x = torch.randn(6, 3, 20, 20, generator=generator(1))
    monkeypatch.setattr(aug, "crop_boxes", lambda b, h, w, g: torch.tensor([[0.0, 0.0, h, w]]).repeat(b, 1))
    y = resized_crop(x, generator(2))
    for a, b in zip(x, y):
        assert torch.allclose(b, a, atol=1e-5) or torch.allclose(b, a.flip(-1), atol=1e-5)


def test_resized_crop_of_a_quarter_box_magnifies_that_quarter(monkeypatch):
    import oneshot.augment as aug

    x = torch.zeros(1, 1, 16, 16)
    x[..., 8:, 8:] = 1.0  # the bottom-right quarter is bright
    monkeypatch.setattr(aug, "crop_boxes", lambda b, h, w, g: torch.tensor([[8.0, 8.0, 8.0, 8.0]]))
    y = resized_crop(x, generator(0))
    assert torch.allclose(y, torch.ones_like(y))


def test_a_softmax_recipe_trains_resumes_and_keeps_its_head_out_of_the_encoder(small_omniglot, tmp_path, monkeypatch):
    cfg = from_dict(dict(SOFTMAX, augment="resized-crop"))
    out = train(cfg, tmp_path / "a", small_omniglot, progress=False).run_dir
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["images_seen"] == 8 * 16 and run["images_per_s"] > 0
    best = torch.load(out / "best.pt", weights_only=False)
    assert "fc.weight" in best["loss"] and not any(k.startswith("fc") for k in best["model"])
    assert math.isfinite(best["val_acc"])

    interrupt_at_step(6, cfg, tmp_path / "b", small_omniglot, monkeypatch)
    train(cfg, tmp_path / "b", small_omniglot, progress=False)
    train(cfg, tmp_path / "b", small_omniglot, progress=False)
    again = torch.load(tmp_path / "b" / "best.pt", weights_only=False)
    for k in best["model"]:
        assert torch.equal(best["model"][k], again["model"][k]), k


def test_sgd_recipe_uses_sgd_with_momentum_and_the_schedule():
    cfg = from_dict(SOFTMAX)
    model, loss = build_model(cfg, 1, 7)
    opt = optimizer(cfg, list(model.parameters()) + list(loss.parameters()))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    assert not opt.defaults["nesterov"]


def test_resized_crop_matches_torchvision_on_the_same_boxes(monkeypatch):
    tf = pytest.importorskip("torchvision.transforms.functional")
    import oneshot.augment as aug

    x = torch.randn(6, 3, 84, 84, generator=generator(0))
    boxes = crop_boxes(6, 84, 84, generator(3))
    monkeypatch.setattr(aug, "crop_boxes", lambda b, h, w, g: boxes)
    y = resized_crop(x, generator(5))
    flips = torch.rand(6, generator=generator(5)) < 0.5  # the draw after the (patched) boxes
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        want = tf.resized_crop(x[i], top, left, h, w, [84, 84], antialias=False)
        assert torch.allclose(y[i], want.flip(-1) if flips[i] else want, atol=1e-4), i
