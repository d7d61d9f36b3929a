"""The network: MONAI DenseNet121 (2D, 1 input channel, one logit per label) behind a fixed normalization.

The model takes images in 0..1 (the cache's range) and normalizes them itself, so exported models
need no preprocessing beyond :mod:`dicomlab_training.pixels`. Initial weights come only from a local
file or an object-store URI named in the config — never from a hub at run time. State dicts saved by
DDP (``module.``), torch.compile (``_orig_mod.``) or a bare DenseNet (no ``net.``) all load.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets.densenet import DenseNet, DenseNet121
from torch import nn

from dicomlab_training.config import ModelConfig

logger = logging.getLogger(__name__)

INPUT_MEAN = 0.5
INPUT_STD = 0.25
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class Classifier(nn.Module):
    """Normalization + DenseNet; ``forward`` returns logits (B × labels)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        out: torch.Tensor = self.net((x - mean) / std)
        return out


def build_model(config: ModelConfig, num_labels: int) -> Classifier:
    """A fresh model (weights from the current torch RNG), with initial weights loaded if configured."""
    net: nn.Module
    if config.arch == "densenet-tiny":
        net = DenseNet(spatial_dims=2, in_channels=1, out_channels=num_labels, init_features=16, growth_rate=8,
                       block_config=(2, 2, 2, 2), bn_size=2)
    else:
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=num_labels, pretrained=False)
    model = Classifier(net)
    if config.init_weights:
        load_initial_weights(model, config.init_weights)
    return model


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """Strip DDP/compile wrappers and add the ``net.`` prefix for bare DenseNet state dicts."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    elif "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    changed = True
        if not name.startswith("net."):
            name = "net." + name
        out[name] = value
    return out


def _read(uri: str) -> bytes:
    if "://" in uri:
        from dicomlab_core.objectstore import open_store, split_uri

        store_url, key = split_uri(uri)
        return open_store(store_url).get_bytes(key)
    with open(uri, "rb") as handle:
        return handle.read()


def load_initial_weights(model: Classifier, uri: str) -> dict[str, list[str]]:
    """Load weights from ``uri`` where names and shapes fit; a 3-channel first conv is summed to 1 channel.

    Returns the keys that were loaded, skipped (shape mismatch, e.g. another label count) and missing.
    """
    state = torch.load(io.BytesIO(_read(uri)), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{uri} does not hold a state dict")
    incoming = clean_state_dict(state)
    own = model.state_dict()
    loadable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in incoming.items():
        if key not in own or not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        target = own[key]
        if value.shape != target.shape and value.dim() == 4 and value.shape[1] == 3 and target.shape[1] == 1 \
                and value.shape[0] == target.shape[0]:
            value = value.sum(dim=1, keepdim=True)  # RGB-pretrained first conv → greyscale
        if value.shape != target.shape:
            skipped.append(key)
            continue
        loadable[key] = value
    model.load_state_dict(loadable, strict=False)
    missing = [k for k in own if k not in loadable]
    logger.info("loaded initial weights", extra={"loaded": len(loadable), "skipped": len(skipped),
                                                 "missing": len(missing)})
    return {"loaded": sorted(loadable), "skipped": skipped, "missing": missing}
