"""Built-in backbone architectures for state-dict checkpoints (``--arch``).

``create_arch(name, **kw)`` is the one constructor; ``list_archs()`` the names. insightface
arcface_torch ``get_model`` short names (r18 ... r200, mbf, mbf_large) are registered as aliases.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from ...registry import Registry
from .iresnet import DEPTHS, IResNet, iresnet
from .mobilefacenet import MobileFaceNet
from .tinyocc import TinyOcc, tiny_occ

ARCHS: Registry = Registry("architecture")

for _depth in DEPTHS:
    _fn = partial(iresnet, _depth)
    ARCHS.add(f"iresnet{_depth}", _fn)
    ARCHS.add(f"r{_depth}", _fn)

_mbf = partial(MobileFaceNet, blocks=(1, 4, 6, 2), scale=2)
_mbf_large = partial(MobileFaceNet, blocks=(2, 8, 12, 4), scale=4)
for _name, _fn in (("mobilefacenet", _mbf), ("mbf", _mbf), ("mobilefacenet_large", _mbf_large),
                   ("mbf_large", _mbf_large)):
    ARCHS.add(_name, _fn)

ARCHS.add("tiny-occ", tiny_occ)  # embedding + mask + pattern outputs (examples/tiny_occlusion_model.py)


def create_arch(name: str, **kw) -> nn.Module:
    """Build architecture ``name`` with keyword overrides (e.g. ``num_features=256``)."""
    try:
        return ARCHS.get(name)(**kw)
    except TypeError as e:  # a wrong keyword: say which arch and what was passed
        from ...errors import ConfigError

        raise ConfigError(f"cannot build arch {name!r} with {kw}: {e}") from None


def list_archs(pattern: str = "*") -> list[str]:
    return ARCHS.names(pattern)


__all__ = ["ARCHS", "IResNet", "MobileFaceNet", "TinyOcc", "create_arch", "list_archs"]
