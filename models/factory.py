"""Any backbone from the command line: ``--model package.module:factory`` builds the user's own ``nn.Module``.

The factory is a function (or class) that takes no arguments and returns an image classifier, e.g. an
SGE-augmented ResNeXt defined in the user's package. The export records the spec in its manifest, so the torch
backend and ``validate`` rebuild the same module later; the weights must then be the exported ones: from the
recorded checkpoint, or, without one, a deterministic factory (checked by the state dict's digest).
"""

import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_DICT_PREFIX = "module-state-dict:"  # checkpoint_sha256 of a module exported without a checkpoint file


class FactoryError(ValueError):
    """A ``package.module:factory`` spec that cannot build a model (the message says what to fix)."""


def is_factory_spec(name: str) -> bool:
    """``package.module:factory`` rather than a registry name (registry names have no colon)."""
    return ":" in name


def _parse(spec: str) -> tuple[str, str]:
    module_name, _, attribute = spec.partition(":")
    if not all(part.isidentifier() for part in (*module_name.split("."), *attribute.split("."))):
        raise FactoryError(f"--model {spec!r}: expected package.module:factory, e.g. my_models.resnext:sge_resnext26")
    return module_name, attribute


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable that ``spec`` names; FactoryError if its module or attribute is missing or it is not callable."""
    module_name, attribute = _parse(spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise FactoryError(
                f"--model {spec}: no module named {module_name!r}; run from the folder that holds it, add that "
                "folder to PYTHONPATH, or install its package"
            ) from err
        raise FactoryError(f"--model {spec}: importing {module_name} failed: {err}; install what it needs") from err
    except SystemExit as err:  # a script's argparse or sys.exit at import: it would end the export with its code
        raise FactoryError(
            f"--model {spec}: importing {module_name} called sys.exit({err.code!r}); move the module's script part "
            "under `if __name__ == '__main__':`"
        ) from None
    except Exception as err:  # the user's module failed at import: one line, not a traceback
        raise FactoryError(f"--model {spec}: importing {module_name} failed: {type(err).__name__}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(obj, part):
            found = sorted(name for name in dir(obj) if not name.startswith("_") and callable(getattr(obj, name, None)))
            hint = f"; it has {', '.join(found[:8])}" if found else ""
            raise FactoryError(f"--model {spec}: {module_name} has no attribute {attribute!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(
            f"--model {spec}: {attribute} is a {type(obj).__name__}, not callable; name a function or class that "
            "returns an nn.Module"
        )
    return obj


def build_from_factory(spec: str) -> Any:
    """Call the factory; its model in eval mode. FactoryError if it fails or returns something else than a module."""
    from torch import nn

    factory = load_factory(spec)
    try:
        model = factory()
    except SystemExit as err:
        raise FactoryError(f"--model {spec}: the factory called sys.exit({err.code!r}); return the model") from None
    except Exception as err:  # the user's code: one line naming it
        raise FactoryError(f"--model {spec}: the factory raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise FactoryError(
            f"--model {spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module; return the model"
        )
    return model.eval()


def factory_model_name(spec: str) -> str:
    """The artifact's model name for a factory spec: the factory's own name (``sge_resnext26``)."""
    return _parse(spec)[1].split(".")[-1].lower()


def state_dict_sha256(model: Any) -> str:
    """A digest of a module's weights (names, shapes and bytes), for a module that came without a file."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return digest.hexdigest()


def rebuild(spec: str, *, checkpoint: str | Path | None, weights_sha256: str) -> Any:
    """The module an export was made from: the factory, then the checkpoint; without one, the factory's own weights,
    which must be the exported ones (``weights_sha256``, as recorded: ``module-state-dict:<digest>``)."""
    from models.checkpoints import load_checkpoint

    model = build_from_factory(spec)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        return model.eval()
    if weights_sha256.startswith(STATE_DICT_PREFIX) and weights_sha256 != STATE_DICT_PREFIX + state_dict_sha256(model):
        raise FactoryError(
            f"--model {spec}: the factory built other weights than the exported ones (state-dict sha256 differs); "
            "seed it so that it is deterministic, or export with --checkpoint"
        )
    return model
