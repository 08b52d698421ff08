"""Publish a model folder (or a LoRA adapter folder) to the Hugging Face hub."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

# What a hub model repo needs; checkpoints and optimizer states stay home.
PUBLISHED_FILES = ["*.safetensors", "*.json", "README.md", "*.png"]
MODEL_FILES = ("config.json", "model.safetensors")
# Every adapter (prototype gates, LoRA, head) has its metadata and weights; only peft's have adapter_config.json.
ADAPTER_FILES = ("emotion_adapter.json", "adapter_model.safetensors")


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload emotion_vit model") -> str:
    """Create `repo_id` if needed and upload the folder's weights, configs, card and plots; returns the URL."""
    folder = Path(folder)
    if not (all((folder / f).is_file() for f in MODEL_FILES) or all((folder / f).is_file() for f in ADAPTER_FILES)):
        raise FileNotFoundError(f"{folder}: not a model folder ({', '.join(MODEL_FILES)}) "
                                f"nor an adapter folder ({', '.join(ADAPTER_FILES)})")
    if not (folder / "README.md").is_file():
        logger.warning("%s has no README.md model card", folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=PUBLISHED_FILES,
                             commit_message=commit_message)
    logger.info("pushed %s to %s", folder, repo_id)
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo_id}"))
