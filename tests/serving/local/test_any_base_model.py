"""Any Hugging Face causal LM folder is a base model: here a Llama-architecture model whose
tokenizer has no chat template (ChatML is used), with LoRA on its q/v projections."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.serving.local.inference import ModelCache, SamplingParams
from tuneops.serving.local.service import LocalService, ServiceConfig
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples

pytestmark = pytest.mark.slow


@pytest.fixture
def llama_dir(tmp_path: Path, tiny_test_model: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_test_model, local_files_only=True)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    target = tmp_path / "my-llama"
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def test_a_llama_folder_fine_tunes_and_answers(tmp_path: Path, llama_dir: Path) -> None:
    service = LocalService(ServiceConfig(home=tmp_path / "models", base_model_dirs=(llama_dir,)))
    try:
        assert "my-llama" in [m["id"] for m in service.list_models()]
        train = service.create_file("t.jsonl", "fine-tune", as_jsonl(claims_chat_examples(16, seed=1)))["id"]
        valid = service.create_file("v.jsonl", "fine-tune", as_jsonl(claims_chat_examples(6, seed=2)))["id"]
        job = service.create_job(
            {
                "model": "my-llama",
                "training_file": train,
                "validation_file": valid,
                "suffix": "llama",
                "hyperparameters": {"n_epochs": 2, "batch_size": 4},
            }
        )
        service.run_job(job["id"])  # the worker's step, run here synchronously
        done = service.get_job(job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["fine_tuned_model"].startswith("ft:my-llama:tuneops:llama:")
        adapter_config = (service.jobs_dir / job["id"] / "adapter" / "adapter_config.json").read_text()
        # the Llama names among the defaults, not GPT-2's (absent here) nor every linear layer
        assert '"q_proj"' in adapter_config and "down_proj" not in adapter_config

        base_dir, adapter_dir = service.resolve_model(done["fine_tuned_model"])
        assert base_dir == llama_dir.resolve() and adapter_dir is not None
        model = ModelCache().get(base_dir, adapter_dir)
        assert model.text_stops == ("<|im_end|>",)
        result = model.complete(
            claims_chat_examples(1, seed=3)[0]["messages"][:2], SamplingParams(max_tokens=8, temperature=0)
        )
        assert result.completion_tokens <= 8 and result.prompt_tokens > 0
    finally:
        service.store.close()
