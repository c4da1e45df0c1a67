"""A bounded cache of class text features for defenses whose text side is fixed once learned.

A learned prompt (APT's context, FAP's multi-modal prompts) does not depend on the image, so the class
text features it yields depend only on the model and the labels. Computing them once per label set keeps
a defended prediction at one image-tower pass, like the plain model's; recomputing them cost FAP about
four times its image-tower work per image on ViT-B/32.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable

import torch


class TextFeatureCache:
    """Thread-safe LRU of text features keyed by (model object, model key, device, class names, extra).

    The model object is held by a weak reference: ids are reused after garbage collection, and a stale
    entry must not answer for a new model that happens to get the old one's id. Cached tensors are
    shared between requests, so callers never modify them in place.
    """

    def __init__(self, size: int = 32):
        self.size = size
        self._entries: "OrderedDict[tuple, tuple[weakref.ref, torch.Tensor]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, clf, compute: Callable[[], torch.Tensor], extra: tuple = ()) -> torch.Tensor:
        """The cached features for `clf`'s labels, or `compute()` (run without gradients) stored."""
        key = (id(clf.clip), getattr(clf, "model_key", None), str(clf.device), tuple(clf.classnames), extra)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is clf.clip:
                self._entries.move_to_end(key)
                return hit[1]
        with torch.no_grad():
            features = compute()
        with self._lock:
            self._entries[key] = (weakref.ref(clf.clip), features)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return features

    def __len__(self) -> int:
        return len(self._entries)
