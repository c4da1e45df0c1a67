"""A request's random draws come from its own generators, never from torch's process-wide one.

torch's global generator is shared by every thread: a model being built in another thread draws its
initial weights from it, so a draw from it depends on what else the server is doing at that moment.
Our own code passes a `torch.Generator` to every sampler. Code we call that cannot take one
(torchattacks' random starts, `nn.Linear`'s initialisation) runs inside `local_rng(seed)`: a torch
function mode, which is per thread, gives every random draw that names no generator a generator of
its own, seeded with `seed` (one per device). The draws are the ones torch's global generator would
give after `torch.manual_seed(seed)`, so seeded results stay what they were when that was the way.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

_T = torch.Tensor
_init = torch.nn.init
# Samplers that accept `generator=`: with none given, they get the local one.
SAMPLERS = frozenset({
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.normal, torch.bernoulli, torch.multinomial,
    torch.poisson, _T.uniform_, _T.normal_, _T.random_, _T.bernoulli_, _T.exponential_, _T.geometric_,
    _T.cauchy_, _T.log_normal_, _init.uniform_, _init.normal_, _init.trunc_normal_, _init.kaiming_uniform_,
    _init.kaiming_normal_, _init.xavier_uniform_, _init.xavier_normal_, _init.orthogonal_, _init.sparse_,
})
# Samplers without a `generator` argument, drawn instead through one that has it (same distribution).
LIKE = {torch.rand_like: torch.rand, torch.randn_like: torch.randn}


class _LocalGenerators(TorchFunctionMode):
    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)
        self.generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self.generators:
            self.generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self.generators[key]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in LIKE:
            like = args[0]
            func, args = LIKE[func], (like.shape,)
            kwargs = {"dtype": like.dtype, "device": like.device, **kwargs}
            kwargs.pop("memory_format", None)
        if func in SAMPLERS and kwargs.get("generator") is None:
            kwargs["generator"] = self.generator(_device_of(args, kwargs))
        return func(*args, **kwargs)


def _device_of(args, kwargs) -> torch.device:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    if kwargs.get("device") is not None:
        return torch.device(kwargs["device"])
    return torch.get_default_device()


@contextlib.contextmanager
def local_rng(seed: int) -> Iterator[None]:
    """Inside: in this thread, every random draw that names no generator uses one seeded with `seed`
    instead of torch's global generator; other threads are not affected."""
    with _LocalGenerators(seed):
        yield



@contextlib.contextmanager
def model_call() -> Iterator[None]:
    """Inside `local_rng`, a model's own forward and backward: the mode would see each of its hundreds of
    torch calls (several percent of a teaching-model pass), and it draws nothing unseeded (randomized
    defenses pass their own generators), so the mode is switched off for its duration."""
    with torch._C.DisableTorchFunction():
        yield
