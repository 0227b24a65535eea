"""RNG capture and restore: torch (CPU and initialised CUDA), numpy's global and ``random``'s
generators, and the ``torch.Generator`` objects a loader draws from (its shuffle, its workers' seeds,
a sampler's or a dataset's own), as data that ``weights_only`` loading accepts.

With a capture restored, future draws repeat exactly: the LR finder puts every RNG back after its
test, and a resumed run continues with the same random numbers as one that never stopped.
"""

from __future__ import annotations

import collections.abc
import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "loader_generators"]


# Where a loader keeps the generators it draws from: its own attributes (torch's ``generator``: the
# default sampler's shuffle, and the base seed of its workers, drawn when its iterator is made), its
# sampler's, its batch sampler's, its batch sampler's sampler's and its dataset's (a generator an
# augmentation draws from). torch's DataLoader and torchdata's StatefulDataLoader have this shape;
# other loaders are searched the same way and may simply have no generators to capture.
_GENERATOR_OWNERS = ("", "sampler.", "batch_sampler.", "batch_sampler.sampler.", "dataset.")


def _owner_attrs(loader: Any, prefix: str) -> list[tuple[str, Any]]:
    """The attributes of the owner at ``prefix`` (``"batch_sampler.sampler."``), in definition order."""
    owner = loader
    for name in prefix.split(".")[:-1]:
        owner = getattr(owner, name, None)
    return list(vars(owner).items()) if hasattr(owner, "__dict__") else []


def _unset_paths(loader: Any) -> list[str]:
    """Attribute paths of the owners above that hold None. A sampler may make its generator lazily, at
    its first iteration (accelerate's ``SeedableRandomSampler``, in a Hugging Face Trainer's loaders):
    restoring the same loader puts the None back (``set_rng_state(..., same_loaders=True)``)."""
    return [prefix + attr for prefix in _GENERATOR_OWNERS for attr, obj in _owner_attrs(loader, prefix) if obj is None]


def loader_generators(loader: Any) -> list[tuple[list[str], torch.Generator]]:
    """The distinct ``torch.Generator`` objects ``loader`` draws from (deduplicated by identity, in
    a stable order: owner by owner as above, each owner's attributes in their definition order),
    each with every attribute path it is reachable at: a ``DataLoader(shuffle=True, generator=g)``
    gives ``[(["generator", "sampler.generator", "batch_sampler.sampler.generator"], g)]``."""
    found: list[tuple[list[str], torch.Generator]] = []
    for prefix in _GENERATOR_OWNERS:
        for attr, obj in _owner_attrs(loader, prefix):
            if not isinstance(obj, torch.Generator):
                continue
            for paths, gen in found:
                if gen is obj:
                    paths.append(prefix + attr)
                    break
            else:
                found.append(([prefix + attr], obj))
    return found


def _named_loaders(loaders: Any) -> list[tuple[str, Any]]:
    """``loaders`` (a sequence, or a mapping name -> loader for clearer errors) as (name, loader)
    pairs. A bare loader is refused: iterating it would draw batches, not list loaders."""
    if isinstance(loaders, collections.abc.Mapping):
        return [(str(name), loader) for name, loader in loaders.items()]
    if not isinstance(loaders, list | tuple):
        raise TypeError(f"loaders must be a list, tuple or dict of loaders, got {type(loaders).__name__}")
    return [(f"loaders[{i}] ({type(loader).__name__})", loader) for i, loader in enumerate(loaders)]


def _loader_layout(loader: Any) -> list[list[Any]]:
    """What a loader's generator state must match to be restored: per generator, its paths and device."""
    return [[*paths, str(gen.device)] for paths, gen in loader_generators(loader)]


def get_rng_state(loaders: Any = ()) -> dict[str, Any]:
    """Capture torch (CPU and initialised CUDA), numpy-global and ``random`` RNGs, and the generators
    each of ``loaders`` draws from (see :func:`loader_generators`), as weights_only-safe data.

    numpy and ``random`` states are converted to int64 tensors and plain scalars because their native
    forms (ndarray, long tuples) are either refused by, or wasteful under, ``weights_only`` loading.
    A loader's generators are what decide its shuffle and its workers' seeds, so with them restored
    (with the global RNGs, for loaders that draw from those) ``iter(loader)`` repeats its order
    exactly, whatever the number of workers. A loader's own ``state_dict()`` (torchdata's
    ``StatefulDataLoader``) is NOT taken here: it is a position inside an epoch, not an RNG, and
    asking for it before an iterator exists makes one (drawing from these very RNGs);
    ``onecycle.resume`` keeps it for mid-epoch checkpoints.
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {
        "format": 1,
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "name": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "random": {
            "version": int(version),
            "internal": torch.from_numpy(np.array(internal, dtype=np.int64)),  # 3x torch.tensor(tuple)
            "gauss_next": gauss_next,
        },
        "loaders": [{"layout": _loader_layout(loader), "states": [gen.get_state() for _, gen in
                                                                   loader_generators(loader)],
                     "unset": _unset_paths(loader)}
                    for _, loader in _named_loaders(loaders)],
    }


def _made_since(loader: Any, entry: dict[str, Any], same: bool) -> list[list[str]]:
    """With ``same`` (the loader captured, in this process), the paths of each generator it holds now
    at attributes that were None at the capture: made since, lazily. Restoring sets them back to None.
    Another loader (a resume) gets none: a generator where the capture saw None is another layout."""
    unset = set(entry.get("unset", ())) if same else set()
    return [paths for paths, _ in loader_generators(loader) if all(p in unset for p in paths)]


def _check_loader_states(saved: Any, named: list[tuple[str, Any]], same: bool) -> None:
    """Raise ``ValueError`` naming the loader whose generators do not match the captured ones (a
    generator made since the capture where the capture saw None aside)."""
    if saved is None or len(saved) != len(named):
        held = "no loaders" if saved is None else f"{len(saved)} loader(s)"
        raise ValueError(f"state holds the generators of {held}, but {len(named)} loader(s) were given: "
                         f"{', '.join(name for name, _ in named)}")
    for (name, loader), entry in zip(named, saved, strict=True):
        made = _made_since(loader, entry, same)
        now = [layout for layout in _loader_layout(loader) if layout[:-1] not in made]
        if entry["layout"] != now or len(entry["states"]) != len(now):
            raise ValueError(f"cannot restore the generators of {name}: it draws from {now} "
                             f"([paths..., device] per generator) but the state holds {entry['layout']}")


def _unset(loader: Any, path: str) -> None:
    """``loader.<path> = None``: the value the capture saw there."""
    *owners, attr = path.split(".")
    owner = loader
    for name in owners:
        owner = getattr(owner, name)
    setattr(owner, attr, None)


def set_rng_state(state: dict[str, Any], loaders: Any = (), same_loaders: bool = False) -> None:
    """Restore a :func:`get_rng_state` capture so future draws repeat exactly (LR finder, exact resume).

    ``loaders`` (the same loaders, in the same order, as at capture; none: their generators are left
    alone) get their generators back. ``same_loaders``: they are the very objects captured, in this
    process (the LR finder puts back what its test changed): a generator one of them made since at an
    attribute that held None (a sampler that makes its generator at its first iteration) is set back
    to None. A loader whose generators are laid out otherwise (another sampler, a generator added or
    shared differently) raises ``ValueError`` naming it, before any RNG is changed."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from get_rng_state(), got {type(state).__name__}")
    missing = {"format", "torch", "numpy", "random"} - state.keys()
    if missing or state["format"] != 1:
        raise ValueError(
            f"state is not a get_rng_state() v1 dict: {missing=}, format={state.get('format')!r}"
        )
    named = _named_loaders(loaders)
    saved = state.get("loaders") if named else []
    if named:
        _check_loader_states(saved, named, same_loaders)
    torch.set_rng_state(state["torch"].cpu())
    _set_cuda_rng_state(state.get("cuda"))
    npy = state["numpy"]
    key = npy["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["name"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    rnd = state["random"]
    random.setstate((rnd["version"], tuple(int(x) for x in rnd["internal"].tolist()), rnd["gauss_next"]))
    for (_, loader), entry in zip(named, saved, strict=True):
        for paths in _made_since(loader, entry, same_loaders):
            for path in paths:
                _unset(loader, path)
        for (_, gen), gen_state in zip(loader_generators(loader), entry["states"], strict=True):
            gen.set_state(gen_state.cpu())


def _set_cuda_rng_state(cuda: list[torch.Tensor] | None) -> None:
    """Restore per-device CUDA RNGs when possible; warn (do not fail) when resuming on other hardware."""
    if not cuda:
        return
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        warnings.warn(
            f"RNG state has {len(cuda)} CUDA device(s) but {available} are available; "
            "CUDA RNG not restored, so GPU-side randomness will differ",
            stacklevel=3,
        )
        return
    torch.cuda.set_rng_state_all([t.cpu() for t in cuda])
