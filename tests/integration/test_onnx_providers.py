"""On a machine without CUDA (this one) the embedder starts quietly on the CPU: CUDA is not asked
for, so onnxruntime logs no red error about CUDA libraries it cannot load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.embedder.config import RuntimeSettings
from services.embedder.models import discover_models
from services.embedder.sessions import LoadedModel, ModelLoadError, cuda_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]

# The model opened as the embedder opens it, with the default providers (CUDA first), in a
# process of its own: onnxruntime writes its errors to the process's stderr, not to `logging`.
OPEN_THE_DEFAULT_MODEL = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from services.embedder.config import RuntimeSettings
    from services.embedder.models import discover_models
    from services.embedder.sessions import LoadedModel

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    registered = discover_models(Path(sys.argv[1]))["efficientnet-lite0"]
    print(LoadedModel(registered, RuntimeSettings()).provider)
    """
)


def test_without_cuda_the_embedder_starts_on_the_cpu_without_a_cuda_error(
    models_dir: Path,
) -> None:
    assert cuda_unavailable_reason() is not None, "this test is for a machine without CUDA"
    assert "CUDAExecutionProvider" in RuntimeSettings().providers  # asked for first by default
    opened = subprocess.run(
        [sys.executable, "-c", OPEN_THE_DEFAULT_MODEL, str(models_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "CPUExecutionProvider"
    onnxruntime_lines = [line for line in opened.stderr.splitlines() if ":onnxruntime:" in line]
    assert onnxruntime_lines == [], opened.stderr
    assert "CUDA" in opened.stderr and "not tried: no CUDA driver" in opened.stderr
    assert "cannot open shared object file" not in opened.stderr


def test_require_gpu_without_cuda_says_why(models_dir: Path) -> None:
    runtime = RuntimeSettings(require_gpu=True)
    with pytest.raises(ModelLoadError, match="a GPU is required .* no CUDA driver"):
        LoadedModel(discover_models(models_dir)["efficientnet-lite0"], runtime)
