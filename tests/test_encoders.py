import pytest
import torch
from torch import nn

from oneshot.encoders import Conv4, Koch, Pixels, ResNet12, Siamese
from oneshot.registry import build_encoder


@pytest.mark.parametrize("size, dim", [(28, 64), (84, 1600)])
def test_conv4_output_shape(size, dim):
    enc = Conv4(in_channels=3 if size == 84 else 1)
    x = torch.randn(2, 3 if size == 84 else 1, size, size)
    assert enc(x).shape == (2, dim)
    assert enc.out_dim(size) == dim


def test_koch_output_shape():
    torch.manual_seed(0)
    enc = Koch(in_channels=1)
    assert enc.fc[0].in_features == 256 * 6 * 6
    with torch.no_grad():
        z = enc(torch.rand(2, 1, 105, 105))
    assert z.shape == (2, 4096)
    assert ((z > 0) & (z < 1)).all()  # sigmoid output


def test_pixels_has_no_parameters():
    enc = Pixels()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(enc(x), x.reshape(3, -1))
    assert list(enc.parameters()) == []
    assert Pixels(3).out_dim(84) == 3 * 84 * 84


def test_build_encoder():
    assert isinstance(build_encoder("conv4", 1, 28), Conv4)
    assert isinstance(build_encoder("pixels", 3, 84), Pixels)
    with pytest.raises(ValueError, match="conv4, koch, pixels"):
        build_encoder("resnet", 1, 28)


@pytest.mark.parametrize("normalize", [False, True])
def test_siamese_shares_weights(normalize):
    torch.manual_seed(0)
    enc = Conv4()
    net = Siamese(enc, normalize=normalize)
    # exactly one set of parameters: the encoder's
    assert [id(p) for p in net.parameters()] == [id(p) for p in enc.parameters()]
    net.train()
    net(torch.randn(8, 1, 28, 28))  # move the BN running stats off their defaults
    net.eval()
    x1, x2, x3 = torch.randn(3, 1, 28, 28), torch.randn(2, 1, 28, 28), torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        z1, z2 = net.forward_pair(x1, x2)
        a, p, n = net.forward_triplet(x1, x2, x3)
        torch.testing.assert_close(z1, net(x1))
        torch.testing.assert_close(z2, net(x2))
        for z, x in [(a, x1), (p, x2), (n, x3)]:
            torch.testing.assert_close(z, net(x))


def test_siamese_normalize_gives_unit_norms():
    torch.manual_seed(0)
    net = Siamese(Conv4(), normalize=True).eval()
    with torch.no_grad():
        z = net(torch.randn(5, 1, 28, 28))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))


def test_siamese_pair_is_one_batch_for_batchnorm():
    torch.manual_seed(0)
    net = Siamese(Conv4(), normalize=False).train()
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    z1, z2 = net.forward_pair(x1, x2)
    torch.testing.assert_close(torch.cat([z1, z2]), net(torch.cat([x1, x2])))


def test_resnet12_output_shape():
    torch.manual_seed(0)
    enc = build_encoder("resnet12", 3, 84)
    assert isinstance(enc, ResNet12) and enc.out_dim(84) == 640
    with torch.no_grad():
        assert enc.eval()(torch.randn(2, 3, 84, 84)).shape == (2, 640)
    with pytest.raises(ValueError, match="16x16"):
        build_encoder("resnet12", 3, 8)


def test_conv4_pooling_before_relu_is_the_published_block():
    """Conv4 pools before its ReLU; outputs and gradients equal, bit for bit, those of the
    published [conv, BN, ReLU, pool] order with the same weights."""
    torch.manual_seed(0)
    ours = Conv4(3)
    blocks = []
    for conv, bn, pool, relu in zip(*[iter(list(ours.net)[:-1])] * 4):
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU)
        blocks += [conv, bn, nn.ReLU(), nn.MaxPool2d(2)]
    published = nn.Sequential(*blocks, nn.Flatten())  # shares the parameters of ours
    x = torch.randn(8, 3, 32, 32)
    grads = []
    for net in (ours, published):
        for p in net.parameters():
            p.grad = None
        out = net(x)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    (out_a, g_a), (out_b, g_b) = grads
    assert torch.equal(out_a, out_b)
    for a, b in zip(g_a, g_b):
        assert torch.equal(a, b)
