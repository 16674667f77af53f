"""CLIP, SigLIP and Nomic manifests, served from small ONNX graphs built here.

Each graph averages the preprocessed pixels per channel and projects them with a known matrix,
so for a solid-colour image the expected embedding follows from the preset's mean and std alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings
from services.embedder.models import PRESETS, Pooling
from tests.helpers import encode, live_server, solid

COLOUR = (255, 128, 0)


def projection(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, dim)).astype(np.float32)


def build_graph(preset: str, seed: int) -> onnx.ModelProto:
    spec = PRESETS[preset]
    size, dim, output = spec["input_size"], spec["embedding_dim"], spec["embedding_output"]
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values", "axes"], ["channel_means"], keepdims=0),
        helper.make_node("MatMul", ["channel_means", "w_main"], ["main"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(projection(seed, dim), "w_main"),
    ]
    if spec["pooling"] == Pooling.CLS.value:
        # (batch, 2 tokens, dim): the CLS token first, a decoy token after it
        initializers += [
            numpy_helper.from_array(projection(seed + 100, dim), "w_decoy"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "token_axis"),
        ]
        nodes += [
            helper.make_node("MatMul", ["channel_means", "w_decoy"], ["decoy"]),
            helper.make_node("Unsqueeze", ["main", "token_axis"], ["cls_token"]),
            helper.make_node("Unsqueeze", ["decoy", "token_axis"], ["decoy_token"]),
            helper.make_node("Concat", ["cls_token", "decoy_token"], [output], axis=1),
        ]
        output_shape: list[object] = ["batch", 2, dim]
    else:
        nodes.append(helper.make_node("Identity", ["main"], [output]))
        output_shape = ["batch", dim]
    graph = helper.make_graph(
        nodes,
        preset,
        [
            helper.make_tensor_value_info(
                "pixel_values", TensorProto.FLOAT, ["batch", 3, size, size]
            )
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


SEEDS = {"clip-vit-b-32": 1, "siglip-base-384": 2, "nomic-embed-vision-v1.5": 3}


def expected_embedding(preset: str) -> np.ndarray:
    spec = PRESETS[preset]
    mean, std = np.array(spec["mean"]), np.array(spec["std"])
    channel_means = (np.array(COLOUR) / 255.0 - mean) / std
    vector = channel_means @ projection(SEEDS[preset], spec["embedding_dim"])
    return vector / np.linalg.norm(vector)


@pytest.fixture
def models_with_presets(models_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "efficientnet-lite0", folder / "efficientnet-lite0")
    shutil.copytree(models_dir / "detectors", folder / "detectors")  # as `models prepare` left it
    for preset, seed in SEEDS.items():
        model_folder = folder / preset.split("-")[0]
        model_folder.mkdir()
        onnx.save_model(build_graph(preset, seed), model_folder / "model.onnx")
        (model_folder / "manifest.json").write_text(json.dumps({"preset": preset}))
    return folder


def test_presets_are_served_with_their_preprocessing_and_pooling(
    models_with_presets: Path, embedder_settings: Callable[..., EmbedderSettings]
) -> None:
    settings = embedder_settings(models_dir=models_with_presets)
    image = encode(solid(COLOUR, (300, 200)), "PNG")
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert set(listed) == {"efficientnet-lite0", "clip", "siglip", "nomic"}
        assert not listed["clip"]["loaded"]  # loaded on first use
        for name, preset in (
            ("clip", "clip-vit-b-32"),
            ("siglip", "siglip-base-384"),
            ("nomic", "nomic-embed-vision-v1.5"),
        ):
            response = client.post(
                "/v1/embed", files={"images": ("a.png", image)}, data={"model": name}
            )
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            assert result["model"] == name
            assert result["dim"] == PRESETS[preset]["embedding_dim"] == len(result["embedding"])
            np.testing.assert_allclose(result["embedding"], expected_embedding(preset), atol=2e-3)
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed["clip"]["loaded"] and listed["clip"]["provider"] == "CPUExecutionProvider"


def test_a_manifest_that_does_not_fit_its_onnx_file_is_refused(
    models_with_presets: Path, embedder_settings: Callable[..., EmbedderSettings]
) -> None:
    manifest = models_with_presets / "clip" / "manifest.json"
    manifest.write_text(json.dumps({"preset": "clip-vit-b-32", "embedding_dim": 640}))
    settings = embedder_settings(models_dir=models_with_presets)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = client.post(
            "/v1/embed",
            files={"images": ("a.png", encode(solid(COLOUR), "PNG"))},
            data={"model": "clip"},
        )
        assert (response.status_code, response.json()["error"]["code"]) == (503, "unavailable")
        assert (
            "the manifest says dim 640, the model gives 512" in response.json()["error"]["message"]
        )
        assert response.headers["retry-after"]
