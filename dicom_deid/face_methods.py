"""The face methods: one entry per method, read by the node config, the profiles, every CLI's
choices, the face replacer and the evaluation.

Adding a method is one `register(FaceMethod(...))` call below plus its renderer module: a
class whose `render(rgb, landmarks, *, track_id, inplace)` returns the frame with the face
replaced (the `Renderer` protocol of faces/replacer.py).

This module is a leaf (no numpy, no OpenCV): the config and profile loaders import it, and a
renderer's module loads only when a replacer for that method is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_deid.errors import DeidError

# Not a method: the profile and rule value that switches the face pass off.
NONE = "none"


class MethodUnavailableError(DeidError, RuntimeError):
    """The method's renderer cannot be built in this installation (a dependency or one of its
    model files is missing). The message names the method and carries no PHI."""


# (donor_seed, shape) -> renderer; a factory raises ImportError or FileNotFoundError when
# something the renderer needs is absent.
RendererFactory = Callable[..., Any]


@dataclass(frozen=True)
class FaceMethod:
    """One face method and what it can do."""

    name: str
    # None: a baseline, painted by the replacer itself over the face region (faces/baselines.py).
    factory: RendererFactory | None = None
    keyed: bool = False        # the look (donor, mask texture) is chosen per study from the key
    shaped: bool = False       # takes the profile's face_shape (0..1 geometry blend)
    needs_models: bool = False  # renders with model files shipped in models/
    video: bool = True
    image: bool = True
    # The baseline covering a face the method could not render (lost, no mesh, renderer failed).
    fallback: str = "blur"

    @property
    def baseline(self) -> bool:
        return self.factory is None

    def renderer(self, *, shape: float = 0.0, donor_seed: int = 0) -> Any:
        """The method's renderer (None for a baseline); MethodUnavailableError when it cannot
        be built here."""
        if self.factory is None:
            return None
        try:
            return self.factory(donor_seed=donor_seed, shape=shape if self.shaped else 0.0)
        except (ImportError, FileNotFoundError) as exc:
            raise MethodUnavailableError(
                f"face method {self.name!r} is not available in this installation "
                f"({type(exc).__name__}: {exc}); use one of {', '.join(baselines())} meanwhile"
            ) from exc


_METHODS: dict[str, FaceMethod] = {}


def register(method: FaceMethod) -> FaceMethod:
    """Add a method (its name must be new and not 'none'; its fallback a baseline, checked when
    a replacer is built)."""
    if method.name == NONE or not method.name or method.name in _METHODS:
        raise ValueError(f"face method name {method.name!r} is taken or reserved")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests register their own and take them out again)."""
    _METHODS.pop(name, None)


def get(name: str) -> FaceMethod:
    """The method called name; ValueError naming the known ones otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown face method {name!r}; expected one of "
                         f"{', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Every registered method, in registration order."""
    return tuple(_METHODS)


def choices() -> tuple[str, ...]:
    """What a profile's `faces` or a rule's `faces` may say: every method, and 'none'."""
    return (*names(), NONE)


def keyed() -> tuple[str, ...]:
    return tuple(m.name for m in _METHODS.values() if m.keyed)


def baselines() -> tuple[str, ...]:
    return tuple(m.name for m in _METHODS.values() if m.baseline)


def _swap(*, donor_seed: int, shape: float) -> Any:
    from dicom_deid.faces.swap import SwapRenderer

    return SwapRenderer(donor_seed=donor_seed, shape=shape)


def _mask3d(*, donor_seed: int, shape: float) -> Any:
    from dicom_deid.faces.mask3d import Mask3DRenderer

    return Mask3DRenderer(donor_seed=donor_seed)


# Pixelate and blackout sites get their own method as fallback; the others a strong blur,
# which keeps the scene readable while hiding the identity.
register(FaceMethod("swap", _swap, keyed=True, shaped=True, needs_models=True))
register(FaceMethod("mask3d", _mask3d, keyed=True, needs_models=True))
register(FaceMethod("blur", fallback="blur"))
register(FaceMethod("pixelate", fallback="pixelate"))
register(FaceMethod("blackout", fallback="blackout"))
