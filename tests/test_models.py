"""Model registry: shapes, parameter counts, names, determinism, errors.

    .venv/bin/python -m pytest tests/test_models.py -q
"""

import pytest
import torch
from torch import nn

from distill import models
from distill.config import ModelConfig
from distill.errors import ConfigError
from distill.models import MODELS, check_name, create_model, list_models
from distill.models.parts import count_params, has_batchnorm


def build(name, shape, num_classes=10, **fields):
    return create_model(ModelConfig(name=name, **fields), shape, num_classes)


def forward(model, shape, batch=2):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


# A small enough config for each registered family, on an input it accepts.
SMALL = {
    "mlp": ((1, 40), {}),
    "cnn1d": ((1, 40), {}),
    "cnn2d": ((1, 28, 28), {}),
    "densenet_bc": ((3, 32, 32), {"depth": 40}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_gives_logits(name):
    shape, fields = SMALL.get(name, ((3, 8, 8), {}))
    if name in ("resnet110", "wrn_28_10", "wrn_40_4"):  # big: covered by the parameter-count tests
        pytest.skip("large model")
    if name in ("gpt", "hf_causal_lm"):  # token blocks in, (B, L, V) out: tests/test_lm.py
        pytest.skip("language model")
    model = build(name, shape, num_classes=7, **fields)
    assert forward(model, shape).shape == (2, 7)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 7


@pytest.mark.parametrize("name,shape", [
    ("mlp", (1, 40)), ("mlp", (1, 8, 8)), ("mlp", (3, 32, 32)),
    ("cnn1d", (1, 40)), ("cnn1d", (3, 17)),
    ("cnn2d", (1, 8, 8)), ("cnn2d", (1, 28, 28)), ("cnn2d", (3, 32, 32)),
    ("resnet20", (1, 8, 8)), ("resnet20", (1, 28, 28)), ("resnet20", (3, 32, 32)),
    ("wrn_16_1", (1, 28, 28)), ("wrn_16_1", (3, 32, 32)),
])
def test_input_shapes(name, shape):
    assert forward(build(name, shape), shape).shape == (2, 10)


@pytest.mark.parametrize("depth", [40, 100])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_densenet_shapes(depth, shape):
    model = build("densenet_bc", shape, depth=depth, growth_rate=4)
    assert forward(model, shape).shape == (2, 10)


@pytest.mark.parametrize("name,fields,expected", [
    ("resnet20", {}, 0.27e6),
    ("resnet56", {}, 0.85e6),
    ("resnet110", {}, 1.7e6),
    ("wrn_28_1", {}, 0.37e6),
    ("wrn_28_10", {}, 36.5e6),
    ("densenet_bc", {}, 0.8e6),
    ("mlp", {}, 15_210),  # MNIST-1D paper: 40-100-100-10
])
def test_parameter_counts_near_published(name, fields, expected):
    shape = (1, 40) if name == "mlp" else (3, 32, 32)
    params = count_params(build(name, shape, **fields))
    assert abs(params - expected) / expected < 0.05, params


@pytest.mark.parametrize("name,expected", [("resnet8x4", 1.23e6), ("resnet32x4", 7.43e6)])
def test_x4_resnets_match_the_crd_benchmark(name, expected):
    """The CRD/mdistiller resnet8x4 and resnet32x4 (100 classes: 1.23M and 7.43M parameters): a 32-channel
    stem, stages of 64/128/256 channels with 1x1-conv shortcuts."""
    model = build(name, (3, 32, 32), num_classes=100)
    assert abs(count_params(model) - expected) / expected < 0.01, count_params(model)
    assert model.conv1.out_channels == 32 and model.layer3[0].conv1.out_channels == 256
    assert isinstance(model.layer1[0].shortcut, nn.Sequential)  # 32 -> 64 channels: a 1x1 conv
    assert forward(model, (3, 32, 32)).shape == (2, 100)
    with pytest.raises(ConfigError, match="model.depth"):
        build(name, (3, 32, 32), depth=20)


@pytest.mark.parametrize("depth,growth", [(112, 33), (90, 60), (80, 80), (80, 120)])
def test_born_again_densenets_construct(depth, growth):
    # Build on the meta device: the widest is ~47M parameters, no need to allocate them.
    with torch.device("meta"):
        model = build("densenet_bc", (3, 32, 32), num_classes=100, depth=depth, growth_rate=growth)
    assert model.block3[-1].conv2.out_channels == growth
    assert 5e6 < count_params(model) < 60e6


def test_mlp_depth_width_dropout():
    model = build("mlp", (1, 40), width=50, depth=3, dropout=0.2)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [50, 50, 50, 10]
    assert any(isinstance(m, nn.Dropout) for m in model.modules())


def test_cnn1d_options():
    model = build("cnn1d", (1, 40), width=32, depth=4, kwargs={"norm": "batch", "kernel_size": 3,
                                                               "activation": "relu", "global_pool": True})
    assert has_batchnorm(model)
    assert sum(isinstance(m, nn.Conv1d) for m in model.modules()) == 4
    assert model.head.in_features == 32
    assert forward(model, (1, 40)).shape == (2, 10)


def test_batchnorm_detection():
    assert not has_batchnorm(build("mlp", (1, 40)))
    assert not has_batchnorm(build("cnn1d", (1, 40)))
    assert not has_batchnorm(build("cnn2d", (1, 8, 8)))
    assert has_batchnorm(build("cnn2d", (1, 8, 8), kwargs={"norm": "batch"}))
    assert not has_batchnorm(build("cnn1d", (1, 40), kwargs={"norm": "none"}))
    assert not has_batchnorm(build("cnn2d", (1, 8, 8), kwargs={"norm": "layer"}))
    assert has_batchnorm(build("resnet20", (3, 32, 32)))


def test_cnn1d_is_vmap_packable():
    """Default cnn1d (GroupNorm) has no batch statistics, so stacked seeds run as one vmapped call."""
    from torch.func import functional_call, stack_module_state

    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(build("cnn1d", (1, 40)))
    params, buffers = stack_module_state(members)
    x = torch.randn(4, 1, 40)

    def one(p, b):
        return functional_call(members[0], (p, b), (x,))

    packed = torch.vmap(one)(params, buffers)
    for i, member in enumerate(members):
        torch.testing.assert_close(packed[i], member(x))


def test_same_seed_same_weights():
    for name, shape in [("cnn1d", (1, 40)), ("resnet20", (3, 32, 32)), ("resnet18", (3, 32, 32))]:
        states = []
        for seed in (0, 0, 1):
            torch.manual_seed(seed)
            states.append(build(name, shape).state_dict())
        assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
        assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_meaningful_submodule_names():
    names = dict(build("resnet20", (3, 32, 32)).named_modules())
    assert {"layer1", "layer2", "layer3", "head"} <= set(names)
    names = dict(build("wrn_16_1", (3, 32, 32)).named_modules())
    assert {"block1", "block2", "block3", "head"} <= set(names)
    names = dict(build("densenet_bc", (3, 32, 32), depth=40).named_modules())
    assert {"block1", "trans1", "block2", "trans2", "block3", "head"} <= set(names)
    names = dict(build("cnn1d", (1, 40)).named_modules())
    assert {"features.0", "head"} <= set(names)


def test_resnet_shortcut_b():
    option_a = build("resnet20", (3, 32, 32))
    option_b = build("resnet20", (3, 32, 32), kwargs={"shortcut": "B"})
    assert count_params(option_b) > count_params(option_a)
    assert forward(option_b, (3, 32, 32)).shape == (2, 10)


def test_wrn_dropout_from_config():
    model = build("wrn_16_1", (3, 32, 32), dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 6  # one per block


@pytest.mark.parametrize("name", ["wrn_22_2", "resnet44", "resnet1202"])
def test_pattern_names_build(name):
    check_name(name)
    with torch.device("meta"):
        model = build(name, (3, 32, 32))
    assert model.head.out_features == 10


def test_torchvision_classifier():
    model = build("resnet18", (3, 32, 32))
    assert sum(p.numel() for p in model.fc.parameters()) == 512 * 10 + 10
    assert forward(model, (3, 32, 32)).shape == (2, 10)
    gray = build("resnet18", (1, 28, 28))
    assert gray.conv1.in_channels == 3  # checkpoint keys stay torchvision's
    assert forward(gray, (1, 28, 28)).shape == (2, 10)
    assert set(gray.state_dict()) == set(model.state_dict())


def test_torchvision_resnets_win_over_cifar_pattern():
    assert models._resolve("resnet50").keywords == {"name": "resnet50"}
    assert models._resolve("resnet56").keywords == {"depth": 56}


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d", "resnet20", "resnet56", "resnet1202", "wrn_28_10",
                                  "wrn_40_2", "wrn_100_3", "densenet_bc", "resnet18", "resnet50",
                                  "mobilenet_v3_small", "vit_b_16"])
def test_check_name_accepts(name):
    check_name(name)


@pytest.mark.parametrize("name", ["resnet", "resnet19", "resnet21", "wrn_27_2", "wrn_28", "wrn_28_0",
                                  "densenet", "MLP", "cnn3d", "fasterrcnn_resnet50_fpn", ""])
def test_check_name_rejects(name):
    with pytest.raises(ConfigError) as err:
        check_name(name)
    message = str(err.value)
    assert message.startswith("model.name:") and "\n" not in message


def test_unknown_name_message_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; choose one of mlp, cnn1d.*wrn_D_K.*"
                                          r"resnet\{6n\+2\}.*torchvision classifier"):
        check_name("nope")
    with pytest.raises(ConfigError, match="6n\\+4"):
        create_model(ModelConfig(name="wrn_27_2"), (3, 32, 32), 10)


@pytest.mark.parametrize("name,shape,fields,key", [
    ("cnn1d", (1, 28, 28), {}, "model.name"),
    ("cnn1d", (3, 32, 32), {}, "model.name"),
    ("cnn2d", (1, 40), {}, "model.name"),
    ("resnet20", (1, 40), {}, "model.name"),
    ("wrn_16_1", (1, 40), {}, "model.name"),
    ("densenet_bc", (1, 40), {}, "model.name"),
    ("resnet18", (1, 40), {}, "model.name"),
    ("wrn_16_1", (3, 32, 32), {"depth": 28}, "model.depth"),
    ("wrn_16_1", (3, 32, 32), {"width": 64}, "model.width"),
    ("resnet20", (3, 32, 32), {"depth": 32}, "model.depth"),
    ("densenet_bc", (3, 32, 32), {"depth": 7}, "model.depth"),
    ("cnn1d", (1, 40), {"kwargs": {"kernal_size": 3}}, "model.kwargs.kernal_size"),
    ("cnn1d", (1, 40), {"kwargs": {"activation": "tanh"}}, "model.kwargs.activation"),
    ("cnn1d", (1, 40), {"kwargs": {"norm": "instance"}}, "model.kwargs.norm"),
    ("resnet20", (3, 32, 32), {"kwargs": {"shortcut": "C"}}, "model.kwargs.shortcut"),
    ("resnet18", (3, 32, 32), {"kwargs": {"no_such_option": 1}}, "model.kwargs"),
])
def test_bad_combinations_raise_config_error(name, shape, fields, key):
    with pytest.raises(ConfigError) as err:
        build(name, shape, **fields)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message, message


def test_list_models():
    names = list_models()
    assert {"mlp", "cnn1d", "cnn2d", "resnet20", "wrn_28_10", "densenet_bc"} <= set(names)
    assert {"wrn_<depth>_<widen>", "resnet<6n+2>", "resnet18", "vit_b_16"} <= set(names)
