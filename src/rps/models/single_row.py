"""One-row LightGBM predictions through the C API's fast single-row path.

A served request forecasts one row. ``Booster.predict`` spends most of its time per call in
Python (building an inner predictor, copying its parameters, converting the array): about
40 us for a one-row call, against about 4 us for the same trees through LightGBM's C API made
for this case (``LGBM_BoosterPredictForMatSingleRowFastInit`` prepares a predictor once,
``LGBM_BoosterPredictForMatSingleRowFast`` then predicts one row; see LightGBM's ``c_api.h``).
The result is the same number (the same C++ predictor walks the same trees; a test compares
them bit for bit). Batches keep ``Booster.predict``.

The C API is reached through the shared library that the ``lightgbm`` package ships and has
already loaded; where that file cannot be found, :func:`single_row_predictor` returns None and
the caller keeps ``Booster.predict``.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# c_api.h: C_API_PREDICT_NORMAL, C_API_DTYPE_FLOAT64
_PREDICT_NORMAL, _FLOAT64 = 0, 1
_LIBRARY_NAMES = {"win32": "lib_lightgbm.dll", "darwin": "lib_lightgbm.dylib"}


@cache
def _library() -> ctypes.CDLL | None:
    """LightGBM's shared library (the one ``import lightgbm`` loaded), or None."""
    import lightgbm

    name = _LIBRARY_NAMES.get(sys.platform, "lib_lightgbm.so")
    path = Path(lightgbm.__file__).parent / "lib" / name
    if not path.is_file():
        logger.info("no %s beside lightgbm: one-row predictions use Booster.predict", path)
        return None
    library = ctypes.CDLL(str(path))
    library.LGBM_GetLastError.restype = ctypes.c_char_p
    return library


class SingleRowError(RuntimeError):
    """LightGBM's C API refused a call (its message attached)."""


class SingleRowPredictor:
    """A Booster's trees prepared for one-row predictions (thread-safe, one call at a time)."""

    def __init__(self, library: ctypes.CDLL, model: str, n_features: int) -> None:
        """Load ``model`` (a Booster's text model) into a C predictor of ``n_features`` inputs.

        Raises:
            SingleRowError: LightGBM refused the model.
        """
        self._library = library
        self._booster = ctypes.c_void_p()
        self._config = ctypes.c_void_p()
        self.n_features = n_features
        iterations = ctypes.c_int()
        self._check(
            library.LGBM_BoosterLoadModelFromString(
                ctypes.c_char_p(model.encode()),
                ctypes.byref(iterations),
                ctypes.byref(self._booster),
            )
        )
        self._check(
            library.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._booster,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration of the model text (the best, if saved so)
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        # fixed input and output buffers: their pointers are built once, not per call
        self._row = np.zeros(n_features)
        self._row_pointer = ctypes.c_void_p(self._row.ctypes.data)
        self._out = np.zeros(1)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_length = ctypes.byref(ctypes.c_int64())
        self._predict = library.LGBM_BoosterPredictForMatSingleRowFast
        self._lock = threading.Lock()  # one set of buffers: one call at a time

    def _check(self, status: int) -> None:
        if status != 0:
            message = self._library.LGBM_GetLastError()
            raise SingleRowError(message.decode() if message else f"LightGBM status {status}")

    def predict(self, row: np.ndarray) -> float:
        """The forecast for one row of ``n_features`` values."""
        if np.shape(row) != (self.n_features,):
            raise ValueError(f"expected one row of {self.n_features} values, got {np.shape(row)}")
        with self._lock:
            self._row[:] = row
            self._check(
                self._predict(self._config, self._row_pointer, self._out_length, self._out_pointer)
            )
            return float(self._out[0])

    def __del__(self) -> None:
        library = getattr(self, "_library", None)
        if library is None:
            return
        if getattr(self, "_config", None):
            library.LGBM_FastConfigFree(self._config)
        if getattr(self, "_booster", None):
            library.LGBM_BoosterFree(self._booster)


class BoosterPredictor:
    """A ``lightgbm.Booster``'s predictions: ``Booster.predict`` for a batch, the fast path
    for one row (prepared on the first one-row call)."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self._single: SingleRowPredictor | None = None
        self._prepared = False

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Forecasts of ``(n, n_features)`` rows."""
        if rows.shape[0] == 1:
            if not self._prepared:
                library = _library()
                if library is not None:
                    model = self.booster.model_to_string()
                    self._single = SingleRowPredictor(library, model, self.booster.num_feature())
                self._prepared = True
            if self._single is not None:
                return np.array([self._single.predict(rows[0])])
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=float)
