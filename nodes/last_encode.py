"""The Sampler's last VAE encode of the source, kept for the node's next run.

Core's inpaint graph has InpaintModelConditioning as a node of its own, so ComfyUI's cache serves
it when an artist only re-rolls the seed; the Sampler does that encode inside, so it keeps its last
result and uses it again while the very same source, mask, VAE, conditioning and noise_mask come
back (ComfyUI hands a cached node's outputs over as the same objects). Anything new, even an equal
copy, is encoded again; images and the VAE are held weakly, so this keeps none of them alive.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable


class LastEncode:
    def __init__(self):
        self._refs: tuple = ()
        self._value: Any = None

    def get(self, inputs: tuple, encode: Callable[[], Any]) -> Any:
        if self._refs and len(self._refs) == len(inputs) and all(
                held() is given for held, given in zip(self._refs, inputs)):
            return self._value
        self._refs, self._value = (), None  # let the old result go before the new one is made
        value = encode()
        self._refs, self._value = tuple(_ref(given) for given in inputs), value
        return value


def _ref(value: Any) -> Callable[[], Any]:
    """A weak reference where the object allows one (tensors, the VAE); conditioning lists and
    flags are small and are held as they are."""
    try:
        return weakref.ref(value)
    except TypeError:
        return lambda: value
