"""Encoders (Conv-4, ResNet-12, Koch's Siamese convnet, raw pixels) and the Siamese wrapper.

Every encoder maps images [B, C, H, W] to flat embeddings [B, D]. Names map to these classes
in `oneshot.registry` (`build_encoder`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


class Conv4(nn.Module):
    """Conv-4 backbone (Vinyals 2016, Snell 2017): four [conv3x3, BN, ReLU, maxpool2] blocks.

    [B, in_channels, S, S] -> [B, hidden * (S // 16)**2]: 28x28 -> 64-d, 84x84 -> 1600-d.
    Each block pools before its ReLU: max-pooling and ReLU commute, so outputs and gradients
    are bit for bit those of the published order, with the ReLU on a quarter of the values.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        blocks = []
        for c_in in (in_channels, hidden, hidden, hidden):
            blocks += [
                nn.Conv2d(c_in, hidden, 3, padding=1),
                nn.BatchNorm2d(hidden),
                nn.MaxPool2d(2),
                nn.ReLU(inplace=True),
            ]
        self.net = nn.Sequential(*blocks, nn.Flatten())

    def out_dim(self, size: int) -> int:
        """Embedding size for a size x size input (each pool floors the side by 2)."""
        for _ in range(4):
            size //= 2
        if size < 1:
            raise ConfigError("Conv4 needs inputs of at least 16x16")
        return self.hidden * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, D]."""
        return self.net(x)


class ResBlock(nn.Module):
    """ResNet-12 block: three conv3x3-BN layers (LeakyReLU 0.1 after each, the last one after
    adding the conv1x1-BN shortcut), then a 2x2 max-pool. [B, c_in, S, S] -> [B, c_out, S // 2, S // 2]."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        layers = []
        for i, c in enumerate((c_in, c_out, c_out)):
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1, inplace=True))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.out = nn.Sequential(nn.LeakyReLU(0.1, inplace=True), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """Few-shot ResNet-12 (Oreshkin et al. 2018, Lee et al. 2019): four `ResBlock`s of widths
    64-160-320-640, then global average pooling. [B, in_channels, S, S] -> [B, 640] (S >= 16)."""

    WIDTHS = (64, 160, 320, 640)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        chans = (in_channels,) + self.WIDTHS
        self.blocks = nn.Sequential(*(ResBlock(a, b) for a, b in zip(chans, chans[1:])))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def out_dim(self, size: int | None = None) -> int:
        """Embedding size (640); inputs must be at least 16x16 (four pools)."""
        if size is not None and size < 16:
            raise ConfigError("ResNet12 needs inputs of at least 16x16")
        return self.WIDTHS[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, 640]."""
        return self.pool(self.blocks(x))


class Koch(nn.Module):
    """Siamese convnet of Koch, Zemel & Salakhutdinov (2015) for 105x105 inputs.

    conv 64@10 -> pool -> conv 128@7 -> pool -> conv 128@4 -> pool -> conv 256@4 (ReLU after
    each conv), flatten (256*6*6 = 9216 at 105x105), linear 4096 + sigmoid.
    [B, in_channels, S, S] -> [B, 4096].
    """

    def __init__(self, in_channels: int = 1, image_size: int = 105):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 7), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 4), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        side = ((((image_size - 9) // 2 - 6) // 2 - 3) // 2) - 3
        if side < 1:
            raise ConfigError(f"Koch needs inputs of at least 53x53, got {image_size}")
        self.fc = nn.Sequential(nn.Linear(256 * side * side, 4096), nn.Sigmoid())

    def out_dim(self, size: int | None = None) -> int:
        """Embedding size (4096 for any accepted input size)."""
        return 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, 4096]."""
        return self.fc(self.features(x))


class Pixels(nn.Module):
    """Training-free baseline: the raw pixels. x [B, C, H, W] -> [B, C*H*W]; no parameters."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels

    def out_dim(self, size: int) -> int:
        """Embedding size for a size x size input."""
        return self.in_channels * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, C*H*W]."""
        return x.flatten(1)


class Siamese(nn.Module):
    """One encoder applied to every branch, so the weights are shared by construction.

    The branches of a pair or triplet are concatenated into one batch, encoded once and split
    again, so batch norm sees a single batch. normalize=True L2-normalises the embeddings
    (distances then lie in [0, 2], which makes margins comparable across runs).
    """

    def __init__(self, encoder: nn.Module, normalize: bool = True):
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> embeddings [B, D] (unit norm when normalize)."""
        return self.raw_and_embedded(x)[1]

    def raw_and_embedded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, H, W] -> (the encoder's output [B, D], the embedding [B, D]: it, normalised
        when normalize)."""
        z = self.encoder(x).flatten(1)
        return z, (F.normalize(z, dim=-1) if self.normalize else z)

    def _branches(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self(torch.cat(xs))
        return tuple(z.split([len(x) for x in xs]))

    def forward_pair(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x1 [B1, C, H, W], x2 [B2, C, H, W] -> ([B1, D], [B2, D])."""
        return self._branches(x1, x2)

    def forward_triplet(
        self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Anchor, positive, negative images [B*, C, H, W] -> three [B*, D] embeddings."""
        return self._branches(a, p, n)
