"""A KV-cache layer for long tool traces: appends in place, growing its buffer by doubling.

transformers' ``DynamicLayer`` (the default cache of every attention model) appends a token with
``torch.cat``, which copies the whole cache: decoding a trace of l tokens copies O(l^2) keys and values. Tool
traces are long (a 50-digit n x 2 multiplication is about 2,500 tokens) and, at 3,000 tokens, that copy was 84% of a
2-layer GPT-NeoX decode step on the CPU (torch profiler, batch 50). :class:`GrowingKVLayer` writes each new
token into spare room at the end of a buffer and hands attention a view of the filled part; the buffer is copied
only when it doubles, O(l) in all. Its plain reference twin is ``DynamicLayer`` itself: tests hold the two to the
same logits, token by token and chunk by chunk, across dropped rows (tests/test_kv_cache.py).

Glossary: b batch, h key/value heads, l cached length, c buffer capacity (>= l), e head dim.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class GrowingKVLayer(DynamicLayer):
    """``DynamicLayer`` with amortized appends. ``keys`` / ``values`` stay the filled prefix of the buffer, so
    everything else a ``DynamicLayer`` does (masks, ``get_seq_length``, ``reorder_cache``, ``crop``) works
    unchanged: a method that replaces ``keys`` with a new tensor is noticed at the next append, which adopts it
    into a fresh buffer."""

    #: The smallest buffer, in tokens: spares the first few appends a regrowth each.
    MIN_CAPACITY = 64

    def __init__(self):
        super().__init__()
        self._key_buffer: torch.Tensor | None = None  # (b, h, c, e)
        self._value_buffer: torch.Tensor | None = None  # (b, h, c, e)

    @classmethod
    def from_layer(cls, layer: DynamicLayer) -> GrowingKVLayer:
        """The same cached keys and values, appended to in place from now on."""
        grown = cls()
        if layer.is_initialized:
            grown.lazy_initialization(layer.keys, layer.values)
            grown.keys, grown.values = layer.keys, layer.values
        return grown

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states, value_states: (b, h, new, e) -> the whole cache, (b, h, l + new, e) each
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        needed = length + key_states.shape[-2]
        if not self._keys_are_buffer_views() or needed > self._key_buffer.shape[-2]:
            self._reallocate(length, needed, key_states, value_states)
        self._key_buffer[:, :, length:needed].copy_(key_states)
        self._value_buffer[:, :, length:needed].copy_(value_states)
        self.keys = self._key_buffer[:, :, :needed]  # (b, h, l + new, e), a view of the buffer
        self.values = self._value_buffer[:, :, :needed]
        return self.keys, self.values

    def _keys_are_buffer_views(self) -> bool:
        """False before the first append and once something replaced ``keys`` by a new tensor (``reorder_cache``
        when rows finish, ``batch_select_indices``). ``crop`` leaves a shorter view: the next append overwrites
        the cropped tokens in place, as it should."""
        return (
            self._key_buffer is not None
            and self.keys is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == self._key_buffer.data_ptr()
            and self.keys.shape[0] == self._key_buffer.shape[0]
        )

    def _reallocate(self, length: int, needed: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """New buffers holding the ``length`` cached tokens: of the old capacity when ``keys`` was replaced and
        ``needed`` still fits, else of twice the old one (or ``needed``, if more)."""
        old_capacity = 0 if self._key_buffer is None else self._key_buffer.shape[-2]
        capacity = old_capacity if needed <= old_capacity else max(needed, 2 * old_capacity, self.MIN_CAPACITY)
        self._key_buffer = _buffer_holding(self.keys, key_states, capacity, length)
        self._value_buffer = _buffer_holding(self.values, value_states, capacity, length)


def _buffer_holding(cached: torch.Tensor, new: torch.Tensor, capacity: int, length: int) -> torch.Tensor:
    """An uninitialized (b, h, capacity, e) buffer like ``new`` whose first ``length`` tokens are ``cached``."""
    batch, heads, _, head_dim = new.shape
    buffer = new.new_empty(batch, heads, capacity, head_dim)  # (b, h, c, e)
    if length:
        buffer[:, :, :length].copy_(cached)
    return buffer


def use_growing_kv_layers(cache: Cache) -> int:
    """Swap every plain ``DynamicLayer`` of ``cache`` for a :class:`GrowingKVLayer` holding the same keys and
    values; return how many. Other layers are left alone: sliding-window layers are bounded already, and
    recurrent models' caches hold fixed-size states."""
    layers = getattr(cache, "layers", None) or []
    swapped = 0
    for index, layer in enumerate(layers):
        if type(layer) is DynamicLayer:
            layers[index] = GrowingKVLayer.from_layer(layer)
            swapped += 1
    return swapped


__all__ = ["GrowingKVLayer", "use_growing_kv_layers"]
