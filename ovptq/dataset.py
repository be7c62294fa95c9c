"""Calibration data: `Dataset` and the binding of one item to the model's inputs.

An item may be one array (single-input models), a tuple/list with one array per input (in input order), or a dict
keyed by input name. Arrays may be numpy arrays, `ov.Tensor`s, torch tensors or anything `np.asarray` accepts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov

from ovptq.errors import DatasetError, ParameterError
from ovptq.graph.graph import numpy_dtype

# Inputs of lower rank (scalars, vectors) have no batch axis: a vector is one sample, not one per element.
BATCH_MIN_RANK = 2


class Dataset:
    """An iterable of calibration items with an optional `transform_fn` applied to each (as `nncf.Dataset`)."""

    def __init__(self, data_source: Iterable, transform_fn: Callable[[Any], Any] | None = None):
        if not isinstance(data_source, Iterable):
            raise ParameterError(f"Dataset data_source must be iterable (a list, generator, DataLoader...), "
                                 f"not {type(data_source).__name__}.")
        if transform_fn is not None and not callable(transform_fn):
            raise ParameterError(f"Dataset transform_fn must be callable or None, not {type(transform_fn).__name__}.")
        self._source = data_source
        self._transform = transform_fn

    def reiterable(self) -> bool:
        """False for one-shot sources (generators, iterators), which a second pass cannot read again."""
        return iter(self._source) is not self._source

    def recording(self, count: int) -> tuple["Dataset", list]:
        """This dataset, keeping a copy of the first `count` raw items as they are read (for one-shot sources).

        Returns the recording dataset and the list that fills up; `Dataset(that_list, transform_fn)` replays them.
        """
        kept: list = []

        def source():
            for index, raw in enumerate(self._source):
                if index < count:
                    kept.append(raw)
                yield raw

        return Dataset(source(), self._transform), kept

    def replay(self, kept: list) -> "Dataset":
        return Dataset(kept, self._transform)

    def get_length(self) -> int | None:
        """len() of the source, or None when it has none or cannot tell (a tf.data.Dataset of unknown
        cardinality raises TypeError)."""
        try:
            return len(self._source)
        except TypeError:
            return None

    def get_batch_size(self) -> int | None:
        return getattr(self._source, "batch_size", None)

    def get_data(self) -> Iterator[Any]:
        return iter(self._source)

    def get_inference_data(self) -> Iterator[Any]:
        for _, item in self.items():
            yield item

    def items(self, limit: int | None = None, stage: str = "") -> Iterator[tuple[int, Any]]:
        """Yield (index, transformed item) for the first `limit` items; a failing transform names its item. An
        exception the data source itself raises reaches the caller as it is, with a note naming the item it was
        reading and the `stage` that read it."""
        source = iter(self._source)
        for index in itertools.count():
            if limit is not None and index >= limit:
                return
            try:
                raw = next(source)
            except StopIteration:
                return
            except Exception as error:
                error.add_note(f"ovptq: raised by the calibration data source while reading item {index}"
                               + (f" for {stage}" if stage else "") + ".")
                raise
            if self._transform is None:
                yield index, raw
                continue
            try:
                item = self._transform(raw)
            except Exception as error:
                raise DatasetError(f"transform_fn failed on dataset item {index}: {type(error).__name__}: {error}. "
                                   "Fix the transform or the item; the original exception is attached as the "
                                   "cause.") from error
            yield index, item


@dataclass(frozen=True)
class ModelInput:
    """What the model expects on one input."""

    name: str
    shape: ov.PartialShape
    element_type: ov.Type
    aliases: frozenset[str]  # tensor names and friendly name: a dict item may use any of them

    @staticmethod
    def of(model: ov.Model) -> list["ModelInput"]:
        inputs = []
        for parameter in model.get_parameters():
            names = parameter.output(0).get_names()
            name = parameter.output(0).get_any_name() if names else parameter.get_friendly_name()
            inputs.append(ModelInput(name, parameter.get_partial_shape(), parameter.get_element_type(),
                                     frozenset(names) | {parameter.get_friendly_name()}))
        return inputs


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, ov.Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _by_input(item: Any, inputs: list[ModelInput], index: int) -> dict[str, Any]:
    names = [i.name for i in inputs]
    if isinstance(item, dict):
        canonical = {alias: i.name for i in inputs for alias in i.aliases}
        unknown = [k for k in item if k not in canonical]
        if unknown:
            raise DatasetError(f"Dataset item {index} has keys {unknown} that are not model inputs; the model "
                               f"inputs are {names}. Return a dict keyed by these names from transform_fn.")
        by_name = {canonical[k]: v for k, v in item.items()}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DatasetError(f"Dataset item {index} lacks model inputs {missing} (given keys {list(item)}).")
        return by_name
    if isinstance(item, list | tuple):
        if len(item) != len(inputs):
            raise DatasetError(f"Dataset item {index} is a {type(item).__name__} of {len(item)} arrays but the "
                               f"model has {len(inputs)} inputs {names}. Give one array per input, in that order.")
        return dict(zip(names, item))
    if len(inputs) != 1:
        raise DatasetError(f"Dataset item {index} is a single array but the model has {len(inputs)} inputs "
                           f"{names}. Return a tuple (in input order) or a dict by input name from transform_fn.")
    return {names[0]: item}


def _fits(shape: tuple[int, ...], expected: ov.PartialShape) -> bool:
    if expected.rank.is_dynamic:
        return True
    if len(shape) != expected.rank.get_length():
        return False
    return all(d.is_dynamic or d.get_length() == s for d, s in zip(expected, shape))


def _cast(array: np.ndarray, model_input: ModelInput, index: int) -> np.ndarray:
    expected = model_input.element_type
    target = numpy_dtype(expected)
    if array.dtype == target:
        return array
    if expected.is_real() and (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return array.astype(target)
    if expected.is_integral() and np.issubdtype(array.dtype, np.integer):
        return array.astype(target)
    if expected == ov.Type.boolean and array.dtype == np.bool_:
        return array
    raise DatasetError(f"Dataset item {index}: input '{model_input.name}' expects {expected.get_type_name()} but "
                       f"got {array.dtype}. Convert the data in transform_fn.")


def bind_inputs(item: Any, inputs: list[ModelInput], index: int) -> list[dict[str, np.ndarray]]:
    """Map one dataset item to model inputs, as the feeds of one or more infer requests.

    An item whose leading axis is a multiple of a static batch dimension (e.g. 8 samples for a model fixed at
    batch 1) is split along axis 0 into several requests, so any batching of the samples gives the same statistics.
    """
    arrays = {name: _to_numpy(value) for name, value in _by_input(item, inputs, index).items()}
    bound: dict[str, np.ndarray] = {}
    pieces = 1
    batches: dict[str, int] = {}  # model-size batches each input holds
    for model_input in inputs:
        array = _cast(arrays[model_input.name], model_input, index)
        expected = model_input.shape
        if not _fits(array.shape, expected):
            split = _batch_split(array.shape, expected)
            if split is None:
                raise DatasetError(f"Dataset item {index}: input '{model_input.name}' expects shape {expected} but "
                                   f"got {list(array.shape)} ({array.dtype}). Reshape the data in transform_fn or "
                                   f"reshape the model (model.reshape) before quantizing.")
            if pieces not in (1, split):
                raise DatasetError(f"Dataset item {index}: the inputs disagree on the number of samples "
                                   f"(input '{model_input.name}' holds {split} batches of the model's size).")
            pieces = split
        batches[model_input.name] = 1 if _fits(array.shape, expected) else pieces
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise DatasetError(f"Dataset item {index}: input '{model_input.name}' holds NaN or Inf values. Clean the "
                               "calibration data (or its normalisation in transform_fn).")
        bound[model_input.name] = array
    if pieces == 1:
        return [bound]
    if len({count for name, count in batches.items() if bound[name].ndim}) > 1:
        held = ", ".join(f"'{name}' {count}" for name, count in batches.items())
        raise DatasetError(f"Dataset item {index}: the inputs disagree on the number of samples (model-size batches "
                           f"per input: {held}). Give every input the same batch.")
    return [{name: np.ascontiguousarray(a.reshape(pieces, -1, *a.shape[1:])[k]) if a.ndim else a
             for name, a in bound.items()} for k in range(pieces)]


def _batch_split(shape: tuple[int, ...], expected: ov.PartialShape) -> int | None:
    """The number of model-size batches in `shape` when only the leading axis differs, else None."""
    if expected.rank.is_dynamic or len(shape) != expected.rank.get_length() or not shape:
        return None
    first = expected[0]
    if first.is_dynamic or shape[0] % first.get_length() or not _fits((first.get_length(), *shape[1:]), expected):
        return None
    return shape[0] // first.get_length()


def bind_requests(item: Any, inputs: list[ModelInput], index: int) -> list[dict[int, np.ndarray]]:
    """`bind_inputs`, each request keyed by input position, as infer requests take it."""
    return [{i: bound[m.name] for i, m in enumerate(inputs)} for bound in bind_inputs(item, inputs, index)]


def batch_size_of(feed: dict) -> int:
    """The number of samples in one infer request's feed: the leading dimension of its first input of rank >=
    BATCH_MIN_RANK; a feed with none is one sample."""
    for array in feed.values():
        if array.ndim >= BATCH_MIN_RANK:
            return int(array.shape[0])
    return 1
