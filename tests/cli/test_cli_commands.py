"""What each command prints when it works: env, profiles, diff, plan, knobs, the default rule."""
from __future__ import annotations

import json

import pytest

from autotune import hardware
from autotune.cli import defaults
from autotune.errors import InvalidTargetError
from helpers.cli import cli
from helpers.profiles import tiny_profile

FAKE_GPU = hardware.GpuInfo(index=0, name="NVIDIA H200", total_bytes=141 * 2**30, free_bytes=140 * 2**30,
                            compute_capability="9.0", driver="570.86", source="nvml")


# -- one default rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("has_gpu, device, model", [(True, "cuda", "builtin:sd15"), (False, "cpu", "builtin:tiny-sd-shapes")])
def test_auto_device_and_its_default_model(monkeypatch, has_gpu, device, model):
    monkeypatch.setattr(hardware, "torch_has_cuda", lambda: has_gpu)
    assert defaults.resolve_device("auto") == defaults.resolve_device(None) == device
    assert defaults.default_model(device) == model
    assert defaults.resolve_device("cuda") == "cuda"  # chosen, not required: plan needs no GPU
    with pytest.raises(InvalidTargetError, match="got 'gpu'"):
        defaults.resolve_device("gpu")


def test_knobs_follows_the_default_rule(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "torch_has_cuda", lambda: True)
    assert cli(capsys, "knobs").out.startswith("knobs for builtin:sd15 on cuda")
    monkeypatch.setattr(hardware, "torch_has_cuda", lambda: False)
    assert cli(capsys, "knobs").out.startswith("knobs for builtin:tiny-sd-shapes on cpu")
    rows = json.loads(cli(capsys, "knobs", "--device", "cpu", "--json").out)
    offload = [r for r in rows if r["knob"] == "offload" and r["value"] == "model"][0]
    assert offload["state"] == "unavailable" and "accelerator" in offload["reason"]
    judged = {(r["knob"], r["lossy"], r["judged_on_image"]) for r in rows if r["value"] != "none"}
    assert ("quantize_text", True, True) in judged and ("quantize", True, False) in judged
    table = cli(capsys, "knobs", "--device", "cpu").out
    assert "lossy (image)" in table and "on the final image" in table


# -- env -----------------------------------------------------------------------------------------

def test_env_reports_versions_gpus_and_variables(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "probe_gpus", lambda: [FAKE_GPU])
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = cli(capsys, "env")
    assert run.code == 0 and run.err == ""
    lines = run.out.splitlines()
    from autotune import __version__
    assert f"- autotune: {__version__}" in lines
    assert any(line.startswith("- torch: ") and "GPU usable" in line for line in lines)
    assert any(line.startswith("- diffusers: ") for line in lines)
    assert "- GPU 0: NVIDIA H200, 141.00 GiB, capability 9.0, driver 570.86 (via nvml)" in lines
    assert "- PYTORCH_CUDA_ALLOC_CONF: expandable_segments:True" in lines
    assert "- CUDA_VISIBLE_DEVICES: (unset)" in lines

    data = json.loads(cli(capsys, "env", "--json").out)
    assert data["gpus"][0]["name"] == "NVIDIA H200" and data["env"]["CUDA_VISIBLE_DEVICES"] is None
    assert set(data["packages"]) >= {"torch", "diffusers", "transformers", "accelerate", "optuna",
                                     "xformers", "nvidia-ml-py"}
    assert data["autotune"] == __version__


def test_env_without_gpu_says_so(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "probe_gpus", lambda: [])
    assert "- GPUs: none found" in cli(capsys, "env").out.splitlines()


# -- profiles ------------------------------------------------------------------------------------

def test_profiles_lists_each_profile_and_skips_unreadable_ones(tmp_path, monkeypatch, capsys):
    tiny_profile(max_vram=2 * 2**30, latency=0.25).save(tmp_path / "b.yaml")
    tiny_profile(height=128, batch=4, device="cuda", device_name="NVIDIA H200").save(tmp_path / "a.yml")
    (tmp_path / "broken.yaml").write_text("schema_version: 7\n")
    (tmp_path / "notes.txt").write_text("not a profile")

    run = cli(capsys, "profiles", tmp_path)
    assert run.code == 0
    assert "broken.yaml" in run.err and "schema_version 7" in run.err
    rows = [line.split() for line in run.out.splitlines()[4:]]
    assert [r[-1] for r in rows] == ["b.yaml", "a.yml"]  # by size: 64x64 before 64x128
    assert rows[0][:6] == ["builtin:tiny-sd", "64x64", "1", "2.00", "GiB", "cpu"]
    assert "cuda (NVIDIA H200)" in run.out and "0.250 s" in run.out

    monkeypatch.setenv("AUTOTUNE_PROFILE_DIR", str(tmp_path))  # the folder apply_profile searches
    data = json.loads(cli(capsys, "profiles", "--json").out)
    assert data["dir"] == str(tmp_path)
    assert [p["file"] for p in data["profiles"]] == [str(tmp_path / "b.yaml"), str(tmp_path / "a.yml")]
    assert data["profiles"][0]["max_vram_bytes"] == 2 * 2**30 and len(data["skipped"]) == 1


def test_profiles_in_an_empty_folder_say_how_to_make_one(tmp_path, monkeypatch, capsys):
    run = cli(capsys, "profiles", tmp_path)
    assert run.code == 0 and f"no profiles in {tmp_path}" in run.out and "autotune search" in run.out
    monkeypatch.chdir(tmp_path)  # no ./profiles yet: the default folder missing is not an error
    monkeypatch.delenv("AUTOTUNE_PROFILE_DIR", raising=False)
    run = cli(capsys, "profiles")
    assert run.code == 0 and "no profiles in profiles" in run.out and not (tmp_path / "profiles").exists()


# -- diff ----------------------------------------------------------------------------------------

def test_diff_names_what_differs(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    tiny_profile(max_vram=2**30, latency=1.0).save(a)
    tiny_profile({"dtype": "fp16", "vae_slicing": True}, max_vram=2 * 2**30, latency=0.5, peak=2**21,
                 versions={"torch": "2.14.0", "diffusers": "0.42.1"}).save(b)
    run = cli(capsys, "diff", a, b)
    assert run.code == 0, run.err
    out = run.out.splitlines()
    assert any(line.split() == ["max_vram", "1.00", "GiB", "2.00", "GiB"] for line in out)
    assert any(line.split() == ["dtype", "fp32", "fp16"] for line in out)
    assert any(line.split() == ["vae_slicing", "False", "True"] for line in out)
    assert any(line.split() == ["latency_median_s", "1.000", "s", "0.500", "s", "-50.0%"] for line in out)
    assert any(line.split() == ["peak_bytes", "1.00", "MiB", "2.00", "MiB", "+100.0%"] for line in out)
    assert any(line.split() == ["versions.torch", "2.13.0", "2.14.0"] for line in out)
    assert not any(line.split()[:1] == ["versions.diffusers"] for line in out)  # same: not listed
    assert not any(line.split()[:1] == ["attention"] for line in out)
    assert not any(line.startswith("note:") for line in out)  # same device, same metric

    data = json.loads(cli(capsys, "diff", a, b, "--json").out)
    assert data["settings"] == {"dtype": ["fp32", "fp16"], "vae_slicing": [False, True]}
    assert data["target"] == {"max_vram": [2**30, 2 * 2**30]}
    assert data["fingerprint"] == {"versions.torch": ["2.13.0", "2.14.0"]}


def test_diff_warns_when_the_numbers_come_from_other_hardware(tmp_path, capsys):
    tiny_profile().save(tmp_path / "cpu.yaml")
    gpu = tiny_profile(device="cuda", device_name="NVIDIA H200")
    gpu.best.peak_metric = "cuda_process_peak"
    gpu.save(tmp_path / "gpu.yaml")
    out = cli(capsys, "diff", tmp_path / "cpu.yaml", tmp_path / "gpu.yaml").out.splitlines()
    assert "note: measured on different devices (Test CPU vs NVIDIA H200): latencies differ by hardware too" in out
    assert any(line.startswith("note: the peaks are different metrics (cpu_live_tensor_peak vs "
                               "cuda_process_peak)") for line in out)


def test_diff_of_a_profile_with_itself_is_all_same(tmp_path, capsys):
    tiny_profile().save(tmp_path / "a.yaml")
    out = cli(capsys, "diff", tmp_path / "a.yaml", tmp_path / "a.yaml").out
    for section in ("target", "settings", "fingerprint", "search"):
        assert f"{section}: same" in out
    assert "+0.0%" in out  # the headline numbers are always shown


# -- plan ----------------------------------------------------------------------------------------

def test_plan_without_a_ceiling_lists_predictions(capsys):
    run = cli(capsys, "plan", "--model", "builtin:tiny-sd", "--device", "cpu")
    assert run.code == 0, run.err
    # progress (vae tiling and slicing do nothing at 128 px, batch 1; an fp32 VAE goes with half precision only)
    assert "tracing 40 candidates" in run.err and "planned 40 candidates" in run.err
    lines = run.out.splitlines()
    header = lines[next(i for i, line in enumerate(lines) if line.startswith("---")) - 1]
    assert header.split() == ["predicted", "weights", "activations", "peak", "during", "settings",
                              "(vs", "defaults)"]  # no fits column, no CUDA columns on cpu
    assert "CUDA" not in run.out and "RAM" in run.out


def test_plan_with_a_ceiling_marks_what_fits(capsys):
    plan = json.loads(cli(capsys, "plan", "--model", "builtin:tiny-sd", "--device", "cpu",
                          "--max-vram", "8MB", "--json").out)
    assert plan["candidates"] == len(plan["plans"]) == 40 and plan["feasible"] == 16
    fits = {(p["settings"]["dtype"], p["settings"]["vae_dtype"]): p["fits"] for p in plan["plans"]
            if not p["settings"]["layerwise_fp8"]}
    # 11.2 MiB vs 5.6 MiB at 128 px; 9.2 MiB with the VAE's decode in fp32
    assert fits == {("fp32", "same"): False, ("fp16", "same"): True, ("bf16", "same"): True,
                    ("fp16", "fp32"): False, ("bf16", "fp32"): False}
    assert plan["plans"][0]["fits"] and plan["plans"][-1]["fits"] is False  # feasible listed first
    assert plan["smallest"]["total_bytes"] == min(p["total_bytes"] for p in plan["plans"])


def test_plan_when_nothing_fits_names_the_smallest_candidate(capsys):
    run = cli(capsys, "plan", "--model", "builtin:tiny-sd", "--device", "cuda", "--max-vram", "100MB",
              "--top", "2")
    assert run.code == 0, run.err
    assert "0 of " in run.err
    assert "context" in run.out and "CUDA context" in run.out and "... " in run.out
    last = run.out.strip().splitlines()[-1]
    assert last.startswith("nothing fits under 100.00 MiB: the smallest candidate (")
    assert "raise --max-vram to at least" in last


def test_plan_under_max_ram_shows_the_host_ram_and_says_when_nothing_fits_it(capsys):
    """Every weight passes through RAM: the plan's host column, and the ceiling that keeps
    everything out when only --max-ram does."""
    run = cli(capsys, "plan", "--model", "builtin:tiny-sd", "--device", "cuda", "--max-vram", "2GB",
              "--max-ram", "1MB")
    assert run.code == 0, run.err
    assert "--max-ram 1.00 MiB (1048576 bytes): 0 of " in run.err and "host RAM" in run.out
    last = run.out.strip().splitlines()[-1]
    assert last.startswith("nothing fits under --max-ram 1.00 MiB: the candidate needing the least host RAM (")
    assert "raise --max-ram to at least" in last
    plans = json.loads(cli(capsys, "plan", "--model", "builtin:tiny-sd", "--device", "cuda", "--max-ram", "1GB",
                           "--json").out)["plans"]
    assert plans and all(p["fits"] and p["host_bytes"] > 0 for p in plans)
