"""Files the demo-model trainer writes: the Hugging Face checkpoint, the GGUF export, the loss-curve plot.

Why apart from the training loop: exporting and plotting are re-run on their own (`--export`, `--plot-only`)
long after training, and the checkpoint layout is the contract with `vkmtp.convert`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vkmtp.text.chat_template import CHATML_TEMPLATE


def save_checkpoint(out: Path, model, mtp, tokenizer_json: str) -> None:
    """HF layout: model.safetensors (trunk + mtp.*), config.json, tokenizer.json, tokenizer_config.json."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"
    }
    tensors.update({f"mtp.{k}": v.detach().contiguous().clone() for k, v in mtp.state_dict().items()})
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    config = model.config.to_dict()
    config["architectures"] = ["Qwen3_5ForCausalLM"]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "tokenizer.json").write_text(tokenizer_json)
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen3_5Tokenizer",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "add_bos_token": False,
                "chat_template": CHATML_TEMPLATE,
            },
            indent=2,
        )
    )


def export_gguf(checkpoint: Path, out_path: Path, file_type: str = "q8_0") -> dict[str, str]:
    """Write the checkpoint as a llama.cpp-layout GGUF with vkmtp's converter and tokenizer exporter."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from vkmtp.convert import write_gguf
    from vkmtp.text.gguf_metadata import metadata_from_tokenizers

    config = json.loads((checkpoint / "config.json").read_text())
    chat_template = json.loads((checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    tokenizer_meta = metadata_from_tokenizers(
        Tokenizer.from_file(str(checkpoint / "tokenizer.json")),
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        padding_token="<|endoftext|>",
        add_bos=False,
        chat_template=chat_template,
    )
    state = load_file(str(checkpoint / "model.safetensors"))
    return write_gguf(
        state, config, out_path, file_type, tokenizer_meta=tokenizer_meta, name="vkmtp-demo-qwen35-mtp"
    )


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Training (smoothed) and held-out loss against tokens seen, main and MTP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("event") == "step"]
    evals = [r for r in records if r.get("event") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, colour, label in (("loss_main", "C0", "main"), ("loss_mtp", "C1", "MTP (distill-mixed target)")):
        values = np.array([r[key] for r in steps])
        smooth = np.convolve(values, np.ones(10) / 10, mode="valid") if len(values) >= 10 else values
        ax.plot(
            [r["tokens"] / 1e6 for r in steps][len(values) - len(smooth) :],
            smooth,
            colour,
            alpha=0.5,
            label=f"train {label}",
        )
    for key, colour, label in (("heldout_main", "C0", "main"), ("heldout_mtp", "C1", "MTP t+2")):
        ax.plot(
            [r["tokens"] / 1e6 for r in evals],
            [r[key] for r in evals],
            colour,
            marker="o",
            linestyle="--",
            label=f"held-out {label}",
        )
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("vkmtp demo model (qwen35 + MTP) on the Python stdlib")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
