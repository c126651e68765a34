"""The CUDA backend's logic against a fake device: no GPU needed, every branch reachable."""
from __future__ import annotations

import dataclasses
import types

import pytest

from autotune import hardware
from autotune.measure import worker as _worker
from autotune.measure.backends import cuda as cuda_backend
from autotune.measure.backends import nvml as nvml_module
from autotune.measure.backends.sampling import PeakSampler
from autotune.measure.backends.cuda import (CONTEXT_FLOOR_BYTES, REAL_CARD_HEADROOM_BYTES, WORKSPACE_RESIDUE_LIMIT_BYTES,
                                    CudaBackend, ProcessPeak, PynvmlReader, memory_fraction,
                                    parse_oom_request)
from autotune.errors import InvalidTargetError
from autotune.measure.measurer import TrialJob
from autotune.search.trials import classify
from autotune.target import Target

MiB, GiB = 2**20, 2**30
OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB "
               "of which 1.2 GiB is free. Of the allocated memory 6.1 GiB is allocated by PyTorch")


class FakeOOM(RuntimeError):
    pass


class FakeCuda:
    """The slice of torch.cuda the backend uses, with memory as plain counters. Like the real
    one, a matmul leaves cuBLAS workspaces allocated until they are cleared."""

    OutOfMemoryError = FakeOOM
    WORKSPACE = 32 * MiB

    def __init__(self, total=80 * GiB, name="Fake H100"):
        self.total, self.name = total, name
        self.reserved = self.allocated = self.max_reserved = self.max_allocated = 0
        self.workspace = 0
        self.fraction = None
        self.initialized = False

    def init(self):
        self.initialized = True

    def synchronize(self):
        pass

    def get_device_properties(self, index):
        return types.SimpleNamespace(total_memory=self.total, name=self.name)

    def set_per_process_memory_fraction(self, fraction, device):
        self.fraction = fraction

    def memory_reserved(self):
        return self.reserved

    def memory_allocated(self):
        return self.allocated

    def max_memory_reserved(self):
        return self.max_reserved

    def max_memory_allocated(self):
        return self.max_allocated

    def reset_peak_memory_stats(self):
        self.max_reserved, self.max_allocated = self.reserved, self.allocated

    def empty_cache(self):
        self.reserved = self.allocated

    def alloc(self, nbytes):
        self.allocated += nbytes
        self.reserved = max(self.reserved, self.allocated)
        self.max_allocated = max(self.max_allocated, self.allocated)
        self.max_reserved = max(self.max_reserved, self.reserved)

    def free(self, nbytes):
        self.allocated -= nbytes

    def matmul(self):
        """What any matmul does to the allocator: the first one allocates the workspace."""
        if not self.workspace:
            self.workspace = self.WORKSPACE
            self.alloc(self.WORKSPACE)

    def clear_workspaces(self):
        """torch._C._cuda_clearCublasWorkspaces."""
        self.free(self.workspace)
        self.workspace = 0


class FakeNvmlError(Exception):
    """pynvml.NVMLError, as NVML raises it in containers, MIG and vGPU."""


class FakeNvml:
    """NVML over the fake device. `failing`: the reads that raise NVMLError (e.g. NO_PERMISSION on
    the process list); `namespace`: the PIDs NVML lists are host PIDs, none of them ours."""

    def __init__(self, cuda: FakeCuda, context=500 * MiB, others=1 * GiB, visible=True, pid=4242):
        self.cuda, self.context, self.others, self.visible, self.pid = cuda, context, others, visible, pid
        self.extra = 0  # e.g. cuBLAS workspace NVML sees and PyTorch does not
        self.failing: set[str] = set()
        self.namespace = False

    def mine(self):
        return (self.context if self.cuda.initialized else 0) + self.cuda.reserved + self.extra

    def device_used_bytes(self):
        if "device" in self.failing:
            return None  # what PynvmlReader answers for an NVMLError
        return self.others + self.mine()

    def process_used_bytes(self, pid):
        if "processes" in self.failing or self.namespace:
            return None
        return self.mine() if self.visible and pid == self.pid else None

    def driver(self):
        return "580.1"


def backend(ceiling=8 * GiB, visible=True, total=80 * GiB, sample_in_process=False, clear=False):
    cuda = FakeCuda(total=total)
    nvml = FakeNvml(cuda, visible=visible)
    return CudaBackend(ceiling, cuda=cuda, nvml=nvml, pid=4242, sample_interval_s=0.001,
                       sample_in_process=sample_in_process,
                       clear_workspaces=cuda.clear_workspaces if clear else None), cuda, nvml


def test_memory_fraction_leaves_room_for_the_context_and_the_headroom():
    assert memory_fraction(8 * GiB, 500 * MiB, 80 * GiB) == pytest.approx((8 * GiB - 500 * MiB) / (80 * GiB))
    assert memory_fraction(8 * GiB, 500 * MiB, 80 * GiB, 384 * MiB) == pytest.approx(
        (8 * GiB - 884 * MiB) / (80 * GiB))
    assert memory_fraction(80 * GiB, 500 * MiB, 80 * GiB) is None
    with pytest.raises(InvalidTargetError, match="leaves nothing once this process's CUDA context"):
        memory_fraction(800 * MiB, 500 * MiB, 80 * GiB, 384 * MiB)


def test_parse_oom_request():
    assert parse_oom_request(OOM_MESSAGE) == int(2.5 * GiB)
    assert parse_oom_request("CUDA error: an illegal memory access") is None


@pytest.mark.parametrize("visible, source", [(True, "process"), (False, "device_delta")])
def test_setup_measures_context_and_emulates_the_ceiling(visible, source):
    b, cuda, _ = backend(visible=visible)
    b.setup()
    assert b.context_bytes == 500 * MiB and b.info.cuda_context_source == f"nvml ({source})"
    # What a real 8 GB card lacks is kept free too, and the profile's fingerprint says so.
    assert cuda.fraction == pytest.approx((8 * GiB - 500 * MiB - REAL_CARD_HEADROOM_BYTES) / (80 * GiB))
    assert b.info.emulated_headroom_bytes == REAL_CARD_HEADROOM_BYTES
    assert "384 MiB" in b.info.ceiling_note
    assert b.info.ceiling_mode == "emulated" and b.info.nvml_source == source
    assert b.info.total_memory_bytes == 80 * GiB and b.info.driver == "580.1"


def test_ceiling_at_least_the_card_is_native():
    b, cuda, _ = backend(ceiling=80 * GiB)
    b.setup()
    assert cuda.fraction is None and b.info.ceiling_mode == "native"
    assert b.info.emulated_headroom_bytes == 0 and b.info.ceiling_note is None


def test_alloc_conf_is_recorded(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    b, _, _ = backend()
    b.setup()
    assert b.info.pytorch_cuda_alloc_conf == "expandable_segments:True"


def test_track_records_three_peaks_and_the_nvml_peak_decides():
    b, cuda, nvml = backend(sample_in_process=True)
    b.setup()
    cuda.alloc(3 * GiB)  # weights
    b.prepare(None)
    with b.track(None) as reading:
        cuda.alloc(2 * GiB)
        nvml.extra = 4 * GiB          # memory NVML sees outside PyTorch's allocator (workspaces)
        import time
        time.sleep(0.05)              # let the sampler see it
        nvml.extra = 0
    assert reading.memory.cuda_max_allocated == 5 * GiB
    assert reading.memory.cuda_max_reserved == 5 * GiB
    assert reading.memory.nvml_process_peak >= 500 * MiB + 5 * GiB + 4 * GiB
    assert reading.peak_bytes == reading.memory.nvml_process_peak
    # No OOM was raised, yet the process peak is over the 8 GiB ceiling: infeasible.
    from autotune.measure.measurer import Measurement
    m = Measurement(status="ok", backend="cuda", device_name="x", peak_metric=b.peak_metric,
                    latencies_s=[1.0], peak_bytes=reading.peak_bytes)
    assert classify(m, 8 * GiB)[0] == "over_ceiling"


def test_in_a_worker_the_parent_samples_nvml_by_pid_and_its_peak_decides():
    from autotune.measure.backends.cuda import ProcessPeak
    from autotune.measure.measurer import Measurement

    b, cuda, nvml = backend()  # a worker's backend: no sampling thread of its own
    b.setup()
    cuda.alloc(3 * GiB)
    with ProcessPeak(nvml, pid=4242, interval_s=0.001) as parent_side:
        with b.track(None) as reading:
            cuda.alloc(2 * GiB)
            nvml.extra = 4 * GiB
            import time
            time.sleep(0.05)
            nvml.extra = 0
    assert reading.memory.nvml_process_peak is None
    assert reading.peak_bytes == 5 * GiB + 500 * MiB  # reserved + context, inside the worker
    m = Measurement(status="ok", backend="cuda", device_name="x", peak_metric=b.peak_metric,
                    latencies_s=[1.0], peak_bytes=reading.peak_bytes, memory=dataclasses.replace(reading.memory))
    parent_side.merge_into(m)
    assert m.memory.nvml_process_peak >= 500 * MiB + 5 * GiB + 4 * GiB
    assert m.peak_bytes == m.memory.nvml_process_peak
    assert classify(m, 8 * GiB)[0] == "over_ceiling"


def test_release_says_whether_the_device_is_clean():
    b, cuda, _ = backend()
    b.setup()
    assert b.release()
    b.prepare(None)
    cuda.alloc(1 * GiB)  # a tensor the dropped pipeline left behind
    assert not b.release()


def test_a_first_trial_that_leaves_more_than_workspaces_is_not_a_baseline():
    b, cuda, _ = backend()
    b.setup()
    b.prepare(None)
    cuda.alloc(WORKSPACE_RESIDUE_LIMIT_BYTES + 1)
    assert not b.release()


def test_without_nvml_the_context_is_the_calibrated_floor_never_zero(monkeypatch):
    monkeypatch.setattr(cuda_backend, "open_nvml", lambda: None)
    cuda = FakeCuda()
    b = CudaBackend(8 * GiB, cuda=cuda, nvml=None, pid=1)
    b.setup()
    assert b.context_bytes == CONTEXT_FLOOR_BYTES > 0
    assert b.info.cuda_context_source.startswith("floor")
    cuda.alloc(7 * GiB + 700 * MiB)
    with b.track(None) as reading:
        pass
    assert reading.memory.nvml_process_peak is None
    assert reading.peak_bytes == 7 * GiB + 700 * MiB + CONTEXT_FLOOR_BYTES
    # 7.7 GiB in PyTorch's pool is over an 8 GiB ceiling once the context counts.
    from autotune.measure.measurer import Measurement
    m = Measurement(status="ok", backend="cuda", device_name="x", peak_metric=b.peak_metric,
                    latencies_s=[1.0], peak_bytes=reading.peak_bytes)
    assert classify(m, 8 * GiB)[0] == "over_ceiling"


def test_an_implausibly_small_nvml_context_is_replaced_by_the_floor():
    b, _, nvml = backend()
    nvml.context = 1 * MiB
    b.setup()
    assert b.context_bytes == CONTEXT_FLOOR_BYTES and "NVML read" in b.info.cuda_context_source


def test_oom_details_estimate_the_excess():
    b, cuda, _ = backend()
    b.setup()
    cuda.alloc(6 * GiB)
    details = b.oom_details(FakeOOM(OOM_MESSAGE))
    assert details.oom_requested_bytes == int(2.5 * GiB)
    assert details.oom_excess_bytes == 6 * GiB + 500 * MiB + int(2.5 * GiB) - 8 * GiB
    assert b.is_oom(FakeOOM("x")) and not b.is_oom(RuntimeError("CUDA error: device-side assert"))


def test_worker_records_oom_as_a_measured_outcome(monkeypatch):
    b, cuda, _ = backend()
    calls = []

    def run(pipe, job, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # warm-up passes, the first timed run does not fit
            raise FakeOOM(OOM_MESSAGE)

    monkeypatch.setattr(_worker, "run_pipeline", run)
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=1, max_vram=8 * GiB)
    result = _worker.measure(TrialJob(target, {}), backend=b)
    assert result.status == "oom" and "Tried to allocate" in result.error
    assert result.memory.oom_requested_bytes == int(2.5 * GiB)
    assert result.device_info.ceiling_mode == "emulated"
    outcome, constraint = classify(result, 8 * GiB)
    assert outcome == "oom" and constraint > 0


def test_worker_lets_other_errors_through(monkeypatch):
    b, _, _ = backend()
    monkeypatch.setattr(_worker, "run_pipeline", lambda p, j, **kw: (_ for _ in ()).throw(
        RuntimeError("CUDA error: an illegal memory access was encountered")))
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=1, max_vram=8 * GiB)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _worker.measure(TrialJob(target, {}), backend=b)


def test_peak_sampler_keeps_the_maximum():
    values = iter([1, 5, 3] + [2] * 10000)
    with PeakSampler(lambda: next(values), interval_s=0.0005) as sampler:
        import time
        time.sleep(0.02)
    assert sampler.peak == 5 and sampler.samples >= 3


class FakePynvml(types.ModuleType):
    """Just enough of pynvml: two GPUs, one process."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return b"580.65.06"

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3" if h == 0 else b"NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=(80 if h == 0 else 141) * GiB, free=70 * GiB, used=10 * GiB)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [types.SimpleNamespace(pid=7, usedGpuMemory=3 * GiB),
                types.SimpleNamespace(pid=8, usedGpuMemory=None)]


def test_nvml_probe_parses_every_gpu(monkeypatch):
    fake = FakePynvml()
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    gpus = hardware.probe_gpus_nvml()
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert gpus[1].total_bytes == 141 * GiB and gpus[0].free_bytes == 70 * GiB
    assert gpus[0].compute_capability == "9.0" and gpus[0].driver == "580.65.06"
    assert fake.calls[-1] == "shutdown"
    reader = PynvmlReader()
    assert reader.process_used_bytes(7) == 3 * GiB
    assert reader.process_used_bytes(8) is None and reader.process_used_bytes(9) is None


def test_nvml_failure_means_no_gpus(monkeypatch):
    fake = FakePynvml()

    def fail():
        raise fake.NVMLError("Driver Not Loaded")

    fake.nvmlInit = fail
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    assert hardware.probe_gpus_nvml() == []


@pytest.mark.parametrize("visible, expected", [(None, 0), ("1", 1), ("1,0", 1), ("GPU-abc", "GPU-abc")])
def test_nvml_reads_the_gpu_torch_calls_cuda0(monkeypatch, visible, expected):
    fake = FakePynvml()
    fake.nvmlDeviceGetHandleByUUID = lambda uuid: uuid
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert PynvmlReader()._handle == expected
    if isinstance(expected, int):
        monkeypatch.setattr(hardware, "torch_has_cuda", lambda: True)
        assert hardware.require_gpu().name == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"][expected]


# ---- the fake GPU where a real one differs from a naive fake ------------------------------------

def _tiny_target():
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=1, max_vram=8 * GiB)


@pytest.mark.parametrize("clear", [False, True], ids=["workspaces-kept", "workspaces-cleared"])
def test_the_worker_stays_warm_despite_the_cublas_workspace(monkeypatch, clear):
    """Every trial's matmuls leave cuBLAS workspaces allocated: that is no reason for a fresh
    process (and a fresh weight load) per trial."""
    b, cuda, _ = backend(clear=clear)
    b.setup()

    def run(pipe, job, **kwargs):
        cuda.matmul()
        cuda.alloc(1 * GiB)  # activations, freed at the end of the run
        cuda.free(1 * GiB)

    monkeypatch.setattr(_worker, "run_pipeline", run)
    monkeypatch.setattr(_worker.HostWeights, "fresh", lambda self, model, settings, phases: object())
    monkeypatch.setattr("autotune.knobs.settings.apply_settings", lambda *a, **kw: None)
    worker = _worker.Worker(b)
    results = [worker.trial(TrialJob(_tiny_target(), {}, runs=2, max_runs=2)) for _ in range(3)]
    assert [r.status for r in results] == ["ok"] * 3
    assert [r.device_info.worker_clean_after for r in results] == [True] * 3
    assert cuda.allocated == (0 if clear else FakeCuda.WORKSPACE)
    # ... while a tensor a trial leaves behind still gets the process replaced.
    monkeypatch.setattr(_worker, "run_pipeline", lambda pipe, job, **kw: cuda.alloc(10 * MiB))
    assert worker.trial(TrialJob(_tiny_target(), {}, runs=2, max_runs=2)).device_info.worker_clean_after is False


def _pynvml_raising(monkeypatch, *failing):
    """pynvml whose reads named in `failing` raise NVMLError (NO_PERMISSION / NOT_SUPPORTED, as
    in containers, MIG and vGPU). It lists PIDs 7 and 8 only: host PIDs, as a PID namespace sees."""
    fake = FakePynvml()

    def fail(name):
        def read(*args):
            raise fake.NVMLError(f"{name}: Insufficient Permissions" if "proc" in name else f"{name}: Not Supported")
        return read

    if "processes" in failing:
        fake.nvmlDeviceGetComputeRunningProcesses = fail("processes")
    if "memory" in failing:
        fake.nvmlDeviceGetMemoryInfo = fail("memory")
    if "driver" in failing:
        fake.nvmlSystemGetDriverVersion = fail("driver")
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    monkeypatch.setattr(nvml_module, "_warned", set())
    return fake


def test_an_nvml_error_is_no_reading_with_one_warning(monkeypatch, caplog):
    _pynvml_raising(monkeypatch, "processes", "driver")
    reader = PynvmlReader()
    with caplog.at_level("WARNING", logger="autotune.measure.backends.cuda"):
        assert reader.process_used_bytes(7) is None
        assert reader.process_used_bytes(7) is None
    assert reader.driver() is None
    assert reader.device_used_bytes() == 10 * GiB  # what still reads, reads
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot list the processes" in warnings[0]


def test_a_pid_namespace_falls_back_to_the_device_delta(monkeypatch, caplog):
    _pynvml_raising(monkeypatch)
    reader = PynvmlReader()  # lists PIDs 7 and 8: the worker is 4242 in its namespace
    with caplog.at_level("WARNING", logger="autotune.measure.backends.cuda"):
        with ProcessPeak(reader, pid=4242, interval_s=0.001, baseline_used=4 * GiB) as peak:
            pass
    assert peak.peak == 10 * GiB - 4 * GiB and peak.source == "device_delta"
    assert any("no process with PID 4242" in r.getMessage() for r in caplog.records)


def test_an_nvml_error_in_the_parent_gives_a_trial_not_a_crash(monkeypatch):
    """The parent's sampler over an NVML that refuses the process list: the trial keeps the
    worker's own reading and gets the device-wide delta as its NVML peak."""
    from autotune.measure import measurer as measure
    from autotune.measure.measurer import Measurement

    _pynvml_raising(monkeypatch, "processes")
    monkeypatch.setattr(cuda_backend, "open_nvml", lambda: PynvmlReader())
    with measure._nvml_peak("cuda", pid=4242, baseline_used=9 * GiB) as sampler:
        pass
    m = Measurement(status="ok", backend="cuda", device_name="x", peak_metric="cuda_process_peak",
                    latencies_s=[1.0], peak_bytes=512 * MiB)
    sampler.merge_into(m)
    assert m.memory.nvml_process_peak == 1 * GiB and m.peak_bytes == 1 * GiB
    assert m.device_info.nvml_source == "device_delta (sampled by the parent)"


def test_when_nvml_reads_nothing_at_all_the_sampler_adds_nothing(monkeypatch):
    from autotune.measure.measurer import Measurement

    _pynvml_raising(monkeypatch, "processes", "memory")
    with ProcessPeak(PynvmlReader(), pid=4242, interval_s=0.001, baseline_used=1 * GiB) as peak:
        pass
    m = Measurement(status="ok", backend="cuda", device_name="x", peak_metric="cuda_process_peak",
                    latencies_s=[1.0], peak_bytes=3 * GiB)
    peak.merge_into(m)
    assert peak.samples == 0 and m.memory.nvml_process_peak is None and m.peak_bytes == 3 * GiB


@pytest.mark.parametrize("failing", [{"processes"}, {"processes", "device"}])
def test_setup_measures_the_context_whatever_nvml_refuses(failing):
    b, _, nvml = backend()
    nvml.failing = failing
    b.setup()
    if "device" in failing:
        assert b.context_bytes == CONTEXT_FLOOR_BYTES and b.info.cuda_context_source.startswith("floor")
    else:  # the device-wide delta over the baseline taken before the context existed
        assert b.context_bytes == 500 * MiB and b.info.cuda_context_source == "nvml (device_delta)"
    assert b.info.nvml_baseline_used_bytes == (None if "device" in failing else 1 * GiB)


def test_the_reference_output_is_made_without_tf32_and_every_trial_records_its_flags(monkeypatch, tmp_path):
    import torch

    from autotune.measure.judge import TrialJudge

    seen = []
    b, _, _ = backend()

    def run(pipe, job, **kwargs):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))

    monkeypatch.setattr(_worker, "run_pipeline", run)
    # Judged once, as the real one does, without writing an image file.
    monkeypatch.setattr(TrialJudge, "judge", lambda self, *args: setattr(self, "pending", False))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default
    job = TrialJob(_tiny_target(), {}, runs=2, max_runs=2, save_reference=str(tmp_path / "ref.npz"))
    result = _worker.measure(job, backend=b)
    assert seen[0] == (False, False)  # the judged warm-up: true fp32
    assert all(flags == (True, False) for flags in seen[1:])  # timed runs: production's flags
    assert torch.backends.cudnn.allow_tf32 is True  # put back
    assert result.device_info.reference_math_flags.cudnn_allow_tf32 is False
    assert result.device_info.math_flags.cudnn_allow_tf32 is True
    plain = _worker.measure(TrialJob(_tiny_target(), {}, runs=2, max_runs=2), backend=backend()[0])
    assert plain.device_info.reference_math_flags is None and plain.device_info.math_flags is not None
