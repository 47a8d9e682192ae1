"""medcl.models: named tiny configs, weights I/O, offline failure, zero-shot heads (CPU, tiny)."""
from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.nn.functional as F

from medcl.models import (
    MODELS,
    ModelLoadError,
    ZeroShotClassifier,
    clip_logits,
    create_model,
    encode_class_prompts,
    list_models,
    load_weights,
    save_weights,
    state_fingerprint,
)
from medcl.registry import UnknownNameError

torch.set_num_threads(1)

PROMPTS = [["a chest x-ray with pneumonia", "pneumonia"], ["a normal chest x-ray"], ["a fracture", "a broken bone"]]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("medcl-tiny")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,size,dim,max_params", [("medcl-tiny", 32, 64, 5_000_000), ("medcl-tiny-vit", 32, 64, 5_000_000),
                                                       ("medcl-small", 64, 128, 10_000_000)])
def test_named_config_builds_offline_and_forward_is_normalised(name, size, dim, max_params):
    bundle = create_model(name)
    assert (bundle.name, bundle.image_size, bundle.pretrained) == (name, size, None)
    assert len(bundle.mean) == 3 and len(bundle.std) == 3
    assert sum(p.numel() for p in bundle.model.parameters()) < max_params
    tokens = bundle.tokenizer(["a", "b c", "d e f"])
    assert tokens.dtype == torch.long and tokens.shape == (3, 32)
    with torch.no_grad():
        image_features, text_features, scale = bundle.model(_images(2, size), tokens)
    assert image_features.shape == (2, dim) and text_features.shape == (3, dim)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scale.ndim == 0 and scale.item() > 1.0


def test_image_size_override():
    # The ViT config: its position embedding is sized by the image, so a 32 px input must fail.
    bundle = create_model("medcl-tiny-vit", image_size=48)
    assert bundle.image_size == 48
    with torch.no_grad():
        features = bundle.model.encode_image(_images(2, 48), normalize=True)
    assert features.shape == (2, 64)
    with pytest.raises(RuntimeError):
        bundle.model.encode_image(_images(2, 32))


def test_list_models_registered_first_then_open_clip():
    names = list_models()
    assert names[: len(MODELS.names())] == MODELS.names()
    assert {"medcl-tiny", "medcl-small", "biomedclip", "ViT-B-16", "ViT-B-32", "RN50"} <= set(MODELS.names())
    assert "ViT-L-14" in names and len(names) == len(set(names))


def test_default_pretrained_of_tiny_is_random_init():
    assert create_model("medcl-tiny", pretrained="default").pretrained is None


def test_unknown_name_lists_registered_names():
    with pytest.raises(UnknownNameError) as info:
        create_model("medcl-tiy")
    message = str(info.value)
    assert "medcl-tiny" in message and "did you mean 'medcl-tiny'" in message


def test_missing_local_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "weights.safetensors"
    with pytest.raises(ModelLoadError, match="nowhere/weights.safetensors"):
        create_model("medcl-tiny", pretrained=str(path))


def test_the_factory_copies_of_open_clip_constants_are_equal():
    """medcl.models.factory imports open_clip lazily and so keeps its own copies of these."""
    import open_clip.constants

    from medcl.models import factory

    for name in ("HF_CONFIG_NAME", "HF_SAFE_WEIGHTS_NAME", "HF_WEIGHTS_NAME", "OPENAI_DATASET_MEAN", "OPENAI_DATASET_STD"):
        assert getattr(factory, name) == getattr(open_clip.constants, name), name


def test_unknown_tag_lists_tags():
    with pytest.raises(ModelLoadError, match="openai"):
        create_model("ViT-B-32", pretrained="no-such-tag")


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    path = save_weights(tiny.model, tmp_path / "tiny.safetensors")
    reloaded = create_model("medcl-tiny", pretrained=str(path))
    other = create_model("medcl-tiny")
    assert reloaded.pretrained == str(path)
    assert state_fingerprint(reloaded.model) == state_fingerprint(tiny.model)
    assert state_fingerprint(other.model) != state_fingerprint(tiny.model)
    tokens = tiny.tokenizer(["a chest x-ray"])
    with torch.no_grad():
        expected = tiny.model(_images(2, 32), tokens)
        got = reloaded.model(_images(2, 32), tokens)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_torch_checkpoint_under_state_dict_with_module_prefix(tiny, tmp_path):
    state = {"module." + k: v for k, v in tiny.model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    model = create_model("medcl-tiny").model
    load_weights(model, tmp_path / "ckpt.pt")
    assert state_fingerprint(model) == state_fingerprint(tiny.model)


def test_fingerprint_sees_a_single_changed_value(tiny):
    model = create_model("medcl-tiny").model
    model.load_state_dict(tiny.model.state_dict())
    assert state_fingerprint(model) == state_fingerprint(tiny.model)
    with torch.no_grad():
        model.logit_scale.add_(1e-3)
    assert state_fingerprint(model) != state_fingerprint(tiny.model)


def test_wrong_architecture_checkpoint_is_a_clear_error(tmp_path):
    path = save_weights(create_model("medcl-small").model, tmp_path / "small.safetensors")
    with pytest.raises(ModelLoadError) as info:
        create_model("medcl-tiny", pretrained=str(path))
    message = str(info.value)
    assert "does not match" in message and "shape mismatch" in message and "small.safetensors" in message


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    state = dict(tiny.model.state_dict())
    state.pop("logit_scale")
    state["extra.weight"] = torch.zeros(1)
    path = save_weights(state, tmp_path / "partial.safetensors")
    with pytest.raises(ModelLoadError, match=r"1 missing: logit_scale; 1 unexpected: extra\.weight"):
        load_weights(create_model("medcl-tiny").model, path)
    mismatch = load_weights(create_model("medcl-tiny").model, path, strict=False)
    assert mismatch.missing == ["logit_scale"] and mismatch.unexpected == ["extra.weight"]


def test_tied_weights_save_and_load(tmp_path):
    module = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    module[1].weight = module[0].weight
    path = save_weights(module, tmp_path / "tied.safetensors")
    copy = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    copy[1].weight = copy[0].weight
    load_weights(copy, path)
    assert torch.equal(copy[0].weight, module[0].weight) and copy[1].weight is copy[0].weight


@pytest.mark.parametrize("name", ["biomedclip", "ViT-B-16"])
def test_offline_download_fails_fast_without_network(name, monkeypatch, tmp_path):
    import huggingface_hub.constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by test")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(OSError):
        socket.create_connection(("example.org", 443), timeout=1)
    attempts.clear()
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        create_model(name, pretrained="default")
    assert time.monotonic() - start < 5.0
    assert attempts == []
    message = str(info.value)
    assert "offline" in message and "pretrained:" in message and "hf download" in message
    assert "cache" in message and "lacks" in message  # the up-front cache check, not a failed download


def test_encode_class_prompts_shape_norm_and_averaging(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    with torch.no_grad():
        embeddings = encode_class_prompts(model, tokenizer, PROMPTS, "cpu")
        single = encode_class_prompts(model, tokenizer, [["pneumonia"]], "cpu")
        doubled = encode_class_prompts(model, tokenizer, [["pneumonia", "pneumonia"]], "cpu")
        per_prompt = model.encode_text(tokenizer(PROMPTS[0]), normalize=True)
    assert embeddings.shape == (3, 64)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(single, doubled, atol=1e-6)
    assert torch.allclose(embeddings[0], F.normalize(per_prompt.mean(0), dim=0), atol=1e-5)
    with pytest.raises(ValueError, match="class 1 has no prompts"):
        encode_class_prompts(model, tokenizer, [["a"], []], "cpu")


def test_clip_logits_are_scaled_cosines():
    generator = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    classes = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    logits = clip_logits(images, classes, torch.tensor(100.0))
    cosine = F.cosine_similarity(images[:, None, :], classes[None, :, :], dim=-1)
    assert logits.shape == (6, 4)
    assert torch.allclose(logits, 100.0 * cosine, atol=1e-4)
    assert torch.equal(logits.argmax(1), cosine.argmax(1))


def test_gradient_reaches_text_tower_through_class_prompts():
    bundle = create_model("medcl-tiny")
    model = bundle.model.train()
    embeddings = encode_class_prompts(model, bundle.tokenizer, PROMPTS, "cpu")
    features = model.encode_image(_images(4, 32), normalize=True)
    loss = F.cross_entropy(clip_logits(features, embeddings, model.logit_scale.exp()), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    text_params = [model.token_embedding.weight, model.text_projection, *model.transformer.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in text_params)


def test_zero_shot_classifier_predicts_argmax(tiny):
    classifier = ZeroShotClassifier(tiny.model, tiny.tokenizer, PROMPTS)
    images = _images(5, 32)
    predictions = classifier.predict(images)
    with torch.no_grad():
        features = tiny.model.encode_image(images, normalize=True)
        embeddings = encode_class_prompts(tiny.model, tiny.tokenizer, PROMPTS, "cpu")
    assert predictions.dtype == torch.long and predictions.shape == (5,)
    assert torch.equal(predictions, (features @ embeddings.T).argmax(1))
    assert classifier.class_embeddings.requires_grad is False
