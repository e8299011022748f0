"""The demo-model trainer's own pieces (dev extra: torch + transformers; skipped in CI without them).

The solve patch changes the maths of every GDN training step and the MTP head's layout must match what
vkmtp.convert and the reference expect, so both are checked against their definitions.
"""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import train_demo_model as trainer  # noqa: E402
from demo_model_eval import repeat_rate  # noqa: E402


def test_unit_lower_solve_patch_matches_solve_triangular(monkeypatch):
    original = torch.linalg.solve_triangular
    monkeypatch.setattr(torch.linalg, "solve_triangular", original)
    trainer.patch_unit_lower_solve()
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 64, 64, generator=gen) * 0.1  # diagonal ignored (unitriangular)
    b = torch.randn(3, 2, 64, 32, generator=gen)
    want = original(a, b, upper=False, unitriangular=True)
    got = torch.linalg.solve_triangular(a, b, upper=False, unitriangular=True)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    upper = torch.linalg.solve_triangular(a.triu() + 4 * torch.eye(64), b, upper=True)  # falls through
    assert torch.allclose(upper, original(a.triu() + 4 * torch.eye(64), b, upper=True))


def test_mtp_head_names_and_shapes_follow_hf():
    args = trainer.parse_args(["--out", "unused", "--dim", "64", "--head-dim", "16", "--ffn", "96"])
    specials = {"<|endoftext|>": 253, "<|im_start|>": 254, "<|im_end|>": 255}
    config = trainer.model_config(args, 256, specials)
    assert config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    names = {k: tuple(v.shape) for k, v in trainer.MtpHead(config).state_dict().items()}
    assert names["fc.weight"] == (64, 128)
    assert names["layers.0.self_attn.q_proj.weight"] == (2 * 4 * 16, 64)  # [q; gate] per head
    for norm in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        assert names[f"{norm}.weight"] == (64,)
    assert not any("linear_attn" in k for k in names)


def test_repeat_rate_counts_generated_ngrams_seen_before():
    assert repeat_rate([1, 2, 3, 4, 1, 2, 3, 4], n_prompt=4) == pytest.approx(1 / 4)
    assert repeat_rate([1, 2, 3, 4, 5, 6], n_prompt=4) == 0.0
