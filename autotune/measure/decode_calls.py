"""The VAE decode's error on one latent: what VAE tiling, slicing and the VAE's dtype do to the
image, apart from the denoising trajectory that produced the latent.

The reference run keeps the latent its pipeline passed to `vae.decode` and the image that came
out; a trial decodes that same latent with its own VAE (cast to the dtype and device its own
pipeline passed) and the SQNR of the result against the reference's image says what its decode
settings cost. The companion of denoiser_calls.py, which does the same for the denoiser.

`vae.decode` is a method, not `forward`, so it is wrapped on the instance for the run; diffusers'
`apply_forward_hook` on it still moves an offloaded VAE in, so the replay works under offload.
Runs in the worker (imports torch).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Keys of the decode call in the reference file (quality.save_reference's extra arrays).
INPUT_KEY = "vae_decode/in"
OUTPUT_KEY = "vae_decode/out"


def _sample(output: Any) -> Any:
    """The decoded image tensor from what `vae.decode` returned (tuple or DecoderOutput)."""
    return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


class DecodeRecorder:
    """Watches `vae.decode` during one pipeline run. `keep` (the reference): store its first
    call's latent and image; otherwise note the latent's dtype and device, for the replay."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.arrays: dict[str, np.ndarray] = {}
        self.placement: tuple[Any, Any] | None = None

    def seen(self, latent: Any, output: Any) -> None:
        import torch

        if self.placement is not None or not isinstance(latent, torch.Tensor):
            return  # the first call only (a pipeline decoding twice keeps its first)
        self.placement = (latent.dtype, latent.device)
        image = _sample(output)
        if self.keep and isinstance(image, torch.Tensor):
            self.arrays = {INPUT_KEY: latent.detach().float().cpu().numpy(),
                           OUTPUT_KEY: image.detach().float().cpu().numpy()}

    def reference_arrays(self) -> dict[str, np.ndarray]:
        """What the reference file keeps of the decode (empty when the run made none)."""
        return dict(self.arrays)


@contextlib.contextmanager
def recording(pipe: Any, keep: bool) -> Iterator[DecodeRecorder | None]:
    """Watch the VAE's decode while the block runs (None: the pipeline has no VAE decode)."""
    vae = getattr(pipe, "vae", None)
    decode = getattr(vae, "decode", None)
    if decode is None:
        yield None
        return
    recorder = DecodeRecorder(keep)
    own = vae.__dict__.get("decode")  # a wrapper a knob set on the instance, kept as it was

    def watched(z: Any, *args: Any, **kwargs: Any) -> Any:
        output = decode(z, *args, **kwargs)
        recorder.seen(z, output)
        return output

    vae.decode = watched
    try:
        yield recorder
    finally:
        if own is None:
            del vae.decode  # the class's own method again
        else:
            vae.decode = own


def replay_sqnr(pipe: Any, recorder: DecodeRecorder | None, reference: dict[str, np.ndarray]) -> float | None:
    """SQNR (dB) of this pipeline's decode of the reference's latent against the reference's
    image; None when the reference kept no decode or this trial made none."""
    import torch

    from autotune.measure import quality

    if recorder is None or recorder.placement is None or INPUT_KEY not in reference:
        return None
    dtype, device = recorder.placement
    latent = torch.from_numpy(np.ascontiguousarray(reference[INPUT_KEY])).to(device=device, dtype=dtype)
    with torch.inference_mode():
        image = _sample(pipe.vae.decode(latent, return_dict=False))
    return quality.sqnr(image.detach().float().cpu().numpy(), reference[OUTPUT_KEY])
