"""dtype (autotune/knobs/builtin/dtype.py)."""
from __future__ import annotations

import numpy as np
import torch
from helpers.knob_conformance import baseline_images, conformance, run  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.settings import apply_settings


def check(pipe, value):
    expected = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[value]
    assert pipe.unet.dtype == expected
    assert pipe.unet.conv_in.weight.dtype == expected
    assert pipe.vae.dtype == expected
    assert pipe.text_encoder.dtype == expected


test_conformance = conformance("dtype", check)


def test_half_precision_actually_changes_the_output(tiny_pipe, baseline_images):
    apply_settings(tiny_pipe, {"dtype": "bf16"}, device="cpu")
    assert not np.array_equal(run(tiny_pipe), baseline_images)


def test_weights_load_in_the_dtype_and_the_load_key_names_it():
    assert knobs.load_kwargs({"dtype": "bf16"}) == {"torch_dtype": torch.bfloat16}
    assert knobs.load_kwargs({}) == {"torch_dtype": torch.float32}
    assert knobs.load_key({"dtype": "fp16", "vae_slicing": True}) == (("dtype", "fp16"),)


def test_half_precision_is_fastest_on_cuda_and_slowest_on_cpu():
    dtype = knobs.get("dtype")
    assert dtype.speed_rank("fp16", "cuda") < dtype.speed_rank("fp32", "cuda")
    assert dtype.speed_rank("fp32", "cpu") < dtype.speed_rank("bf16", "cpu") < dtype.speed_rank("fp16", "cpu")
