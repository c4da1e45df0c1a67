import torch

from demo.timing import count_passes


def test_normalization_applied_exactly_once(tiny_model, tiny_clf, tiny_images):
    clip = tiny_model.clip
    mean = torch.tensor(tiny_model.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny_model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(clip.encode_image((tiny_images - mean) / std), dim=-1)
        expected = tiny_clf.logit_scale * feats @ tiny_clf.text_features.t()
        got = tiny_clf(tiny_images)
        twice = tiny_clf(tiny_clf.normalize(tiny_images))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, twice, atol=1e-3)


def test_cached_text_features_equal_fresh(tiny_model):
    from demo.models.classifier import build_text_features

    labels = ["a", "b", "c"]
    cached = tiny_model.text_features(labels)
    assert tiny_model.text_features(labels) is cached
    fresh = build_text_features(tiny_model.clip, tiny_model.tokenizer, labels, ("a photo of a {}.",))
    assert torch.allclose(cached, fresh, atol=1e-6)


def test_shared_weights_are_frozen(tiny_model):
    assert all(not p.requires_grad for p in tiny_model.clip.parameters())


def test_passes_are_counted_per_context(tiny_clf, tiny_images):
    with count_passes() as c:
        with torch.no_grad():
            tiny_clf(tiny_images)
        x = tiny_images.clone().requires_grad_(True)
        tiny_clf(x).sum().backward()
    assert c.forward == 3 and c.grad == 3


def test_a_classifier_keeps_its_whole_forward_on_the_models_device(tiny_model):
    """On a GPU the inputs, the model and the normalisation constants must all be on the GPU. The `meta`
    device stands in for one: any CPU tensor mixed into the forward pass raises there as it would on cuda."""
    import copy

    from demo.models.classifier import ZeroShotClassifier, build_text_features

    clip = copy.deepcopy(tiny_model.clip).to("meta")
    feats = build_text_features(clip, tiny_model.tokenizer, ["cat", "dog"], ["a photo of a {}."])
    clf = ZeroShotClassifier(clip, tiny_model.mean, tiny_model.std, feats, ["cat", "dog"], 10.0)
    size = tiny_model.image_size
    logits = clf(torch.rand(3, 3, size, size, device="meta"))
    assert logits.shape == (3, 2) and logits.device.type == "meta" and clf.mean.device.type == "meta"
