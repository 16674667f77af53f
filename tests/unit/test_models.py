"""Manifests, presets and provider choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.embedder.models import (
    PRESETS,
    ManifestError,
    Pooling,
    ResizeMode,
    discover_models,
    resolve_manifest,
)
from services.embedder.sessions import (
    CPU_PROVIDER,
    ModelLoadError,
    l2_normalise,
    pool_embeddings,
    select_providers,
)


def test_presets_carry_the_papers_encoders() -> None:
    clip = resolve_manifest({"preset": "clip-vit-b-32"}, "clip")
    assert (clip.embedding_dim, clip.input_size, clip.pooling) == (512, 224, Pooling.NONE)
    assert clip.mean[0] == pytest.approx(0.48145466)
    siglip = resolve_manifest({"preset": "siglip-base-384"}, "siglip")
    assert (siglip.input_size, siglip.resize_mode, siglip.mean) == (
        384,
        ResizeMode.SQUASH,
        (0.5,) * 3,
    )
    nomic = resolve_manifest({"preset": "nomic-embed-vision-v1.5"}, "nomic")
    assert (nomic.pooling, nomic.embedding_output) == (Pooling.CLS, "last_hidden_state")


def test_manifest_fields_override_the_preset() -> None:
    manifest = resolve_manifest(
        {"preset": "clip-vit-b-32", "embedding_dim": 768, "name": "L14"}, "x"
    )
    assert (manifest.name, manifest.embedding_dim) == ("L14", 768)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"preset": "no-such-model"}, "unknown preset"),
        ({"preset": "clip-vit-b-32", "std": [0.5, 0, 0.5]}, "std values must be positive"),
        ({"input_size": 224}, "embedding_output"),
    ],
)
def test_bad_manifests_are_explained(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        resolve_manifest(raw, "bad")


def test_discovery_skips_broken_folders(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "manifest.json").write_text(json.dumps({"preset": "clip-vit-b-32"}))
    (tmp_path / "good" / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "no-onnx").mkdir()
    (tmp_path / "no-onnx" / "manifest.json").write_text(json.dumps({"preset": "clip-vit-b-32"}))
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "manifest.json").write_text("{not json")
    assert list(discover_models(tmp_path)) == ["good"]
    assert set(PRESETS) >= {"clip-vit-b-32", "siglip-base-224", "nomic-embed-vision-v1.5"}


def test_provider_ranking_keeps_the_order_and_ends_on_cpu() -> None:
    ranked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(ranked, ["CUDAExecutionProvider", CPU_PROVIDER]) == ranked
    assert select_providers(ranked, [CPU_PROVIDER]) == [CPU_PROVIDER]
    assert select_providers(
        ["TensorrtExecutionProvider"], ["TensorrtExecutionProvider", CPU_PROVIDER]
    ) == [
        "TensorrtExecutionProvider",
        CPU_PROVIDER,
    ]


def test_pooling_reads_the_embedding_from_each_output_shape() -> None:
    tokens = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(pool_embeddings(tokens, Pooling.CLS), tokens[:, 0, :])
    np.testing.assert_allclose(pool_embeddings(tokens, Pooling.MEAN), tokens.mean(axis=1))
    feature_map = np.ones((2, 5, 7, 7), dtype=np.float32)
    assert pool_embeddings(feature_map, Pooling.MEAN).shape == (2, 5)
    assert pool_embeddings(feature_map, Pooling.NONE).shape == (2, 5 * 7 * 7)
    with pytest.raises(ModelLoadError, match="cls pooling needs"):
        pool_embeddings(np.ones((2, 4), dtype=np.float32), Pooling.CLS)


def test_l2_normalise_leaves_zero_vectors_finite() -> None:
    vectors = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 0.0]])
