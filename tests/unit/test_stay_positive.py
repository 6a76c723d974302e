"""Stay-Positive on tiny tensors: the freeze, the zero start, the projection and what it guarantees."""

from __future__ import annotations

import pytest
import torch

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import build_config
from aligned_forensics.detector.models import create_detector
from aligned_forensics.training.stay_positive import (
    StayPositiveConfig,
    frozen_in_eval,
    inspect_weights,
    prepare_model,
    project_nonnegative,
)
from aligned_forensics.training.train import TrainConfig


def detector(seed: int = 0):
    return create_detector("res18", pretrained="none", seed=seed)


def test_prepare_freezes_everything_but_a_zeroed_final_layer():
    model = prepare_model(detector(), unfreeze_last_blocks=0)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert not model.fc.weight.any() and not model.fc.bias.any() and model.dropout.p == 0.0


def test_unfreezing_the_last_blocks_lets_exactly_them_learn():
    model = prepare_model(detector(), unfreeze_last_blocks=3)  # res18: layer3.1, layer4.0, layer4.1
    trainable = {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters()
                 if p.requires_grad and not name.startswith("fc.")}
    assert trainable == {"layer3.1", "layer4.0", "layer4.1"}
    frozen_in_eval(3)(model)
    modes = {name: module.training for name, module in model.named_modules()
             if isinstance(module, torch.nn.BatchNorm2d)}
    assert all(mode == name.startswith(("layer3.1.", "layer4.")) for name, mode in modes.items())


def test_more_blocks_than_the_network_has_names_the_key_and_the_limit():
    with pytest.raises(ParamsError, match=r"stay_positive\.unfreeze_last_blocks.*at most 8.*res18.*got 9"):
        prepare_model(detector(), unfreeze_last_blocks=9)


def test_config_errors_name_the_stay_positive_keys():
    with pytest.raises(ParamsError, match=r"'stay_positive\.lr'"):
        build_config(StayPositiveConfig, {"lr": -1.0}, section="stay_positive")
    with pytest.raises(ParamsError, match=r"'stay_positive\.unfreeze_last_blocks'"):
        build_config(StayPositiveConfig, {"unfreeze_last_blocks": -1}, section="stay_positive")
    assert build_config(TrainConfig, {}, section="train").patience == 10  # the base keeps its own defaults
    assert StayPositiveConfig().patience == 5 and StayPositiveConfig().batch_size == 512


def test_the_projection_removes_exactly_the_weights_that_would_vote_real():
    """Features 0-3 fire on fakes, 4-7 on reals: unconstrained, 4-7 get negative weights; projected, zero."""
    torch.manual_seed(0)
    fakes = torch.cat([torch.rand(32, 4) + 1, torch.rand(32, 4)], 1)  # (32, 8), >= 0
    reals = torch.cat([torch.rand(32, 4), torch.rand(32, 4) + 1], 1)
    features, labels = torch.cat([reals, fakes]), torch.cat([torch.zeros(32), torch.ones(32)])
    results = {}
    for projected in (False, True):
        model = prepare_model(create_detector("res18", pretrained="none", seed=0), unfreeze_last_blocks=0)
        model.fc = torch.nn.Linear(8, 1)  # the same head on 8 features
        torch.nn.init.zeros_(model.fc.weight), torch.nn.init.zeros_(model.fc.bias)
        optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.05)
        for _ in range(50):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model.head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if projected:
                project_nonnegative(model)
        results[projected] = model.fc.weight.detach().reshape(-1)
    assert (results[False][4:] < 0).all() and (results[False][:4] > 0).all()
    assert (results[True] >= 0).all() and (results[True][4:] == 0).all() and (results[True][:4] > 0).all()


def test_inspection_counts_and_ranks_the_weights():
    base, positive = torch.nn.Linear(6, 1), torch.nn.Linear(6, 1)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[-1.0, 2.0, -3.0, 0.5, 0.0, 1.0]]))
        positive.weight.copy_(torch.tensor([[0.0, 0.3, 0.0, 0.7, 0.1, 0.3]]))
    summary, ranking = inspect_weights(base, positive, top=3)
    assert summary["features"] == 6 and summary["positive"] == 4 and summary["zero"] == 2
    assert summary["negative"] == 0 and summary["base_negative"] == 2 and summary["base_positive"] == 3
    assert [row["feature"] for row in ranking] == [3, 1, 5]  # ties keep feature order
    assert ranking[0] == {"rank": 1, "feature": 3, "weight": pytest.approx(0.7), "base_weight": 0.5}
