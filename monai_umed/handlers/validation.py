# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Handlers for scoring an exploiter on the clean test set during its training: when to validate
(:class:`ValidationSchedule`) and what each validation gave (:class:`ValidationCurve`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ignite.engine import Engine, Events

from monai.handlers import ValidationHandler

from monai_umed.distributed import all_gather_objects, is_main_process

__all__ = ["ValidationSchedule", "ValidationCurve", "curve_best"]


class ValidationSchedule(ValidationHandler):
    """MONAI's ``ValidationHandler`` that runs the validator every ``interval`` epochs **and** after the last one
    (``interval=0``: after the last epoch only), so that the final model is always scored.

    Args:
        interval: epochs between validations (>= 0).
        validator: the evaluator (a MONAI ``Evaluator``); can be set later with ``set_validator``.
    """

    def __init__(self, interval: int, validator: Any = None) -> None:
        if isinstance(interval, bool) or int(interval) != interval or interval < 0:
            raise ValueError(f"interval must be an integer >= 0, got {interval!r}.")
        super().__init__(interval=max(int(interval), 1), validator=validator, epoch_level=True)
        self.every = int(interval)

    def due(self, engine: Engine, epoch: int) -> bool:
        return (self.every > 0 and epoch % self.every == 0) or epoch == engine.state.max_epochs

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self.due), self)


def _finite_or_none(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def curve_best(curve: dict[str, float | None]) -> tuple[float | None, int | None]:
    """``(best value, its epoch)`` of a ``{"epoch": value}`` curve: the maximum over the finite values, at the
    earliest epoch on a tie; ``(None, None)`` when no value is finite."""
    scored = [(float(v), int(e)) for e, v in curve.items() if v is not None and math.isfinite(v)]
    if not scored:
        return None, None
    value, epoch = max(scored, key=lambda ve: (ve[0], -ve[1]))
    return value, epoch


class ValidationCurve:
    """Record every validation of an evaluator whose metrics keep their per-image details (``save_details``):
    per-image rows, a summary, a TensorBoard point and a log line per validated epoch.

    The evaluator's epoch is the trainer's (MONAI's ``ValidationHandler`` runs ``validator.run(epoch)``), so
    :attr:`evaluations` maps trainer epochs to ``(summary, rows)``:

    - ``rows``: one dict per image in loader order, ``{"name", "image", "dsc", "jaccard", "empty_gt"}`` (the
      batch's ``name`` / ``image_path``; the metrics' per-image values, NaN where an image was not scored; with
      several foreground classes, ``dsc`` / ``jaccard`` are the image's mean over its scored classes and
      ``dsc_per_class`` / ``jaccard_per_class`` hold the class values);
    - ``summary``: ``{"dsc", "jaccard", "dsc_per_class", "jaccard_per_class", "n_test", "n_scored",
      "n_empty_gt"}`` (:meth:`summarize`; ``None`` where there is no score or it is not finite).

    Args:
        dice_name, iou_name: names of the evaluator's metrics (``key_val_metric`` / ``additional_metrics``).
        summary_writer: a TensorBoard ``SummaryWriter``: ``<dice_name>`` and ``<iou_name>`` scalars per epoch
            (a missing score leaves a gap).
        max_epochs: the trainer's epoch count, for the log line ``epoch E/N: clean test DSC ...``.
        logger: where the log line goes (default ``monai_umed.apps.exploit``).
    """

    def __init__(
        self,
        dice_name: str = "val_dsc",
        iou_name: str = "val_jaccard",
        summary_writer: Any = None,
        max_epochs: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.dice_name, self.iou_name = dice_name, iou_name
        self.summary_writer = summary_writer
        self.max_epochs = max_epochs
        self.logger = logger or logging.getLogger("monai_umed.apps.exploit")
        self.evaluations: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self.seconds = 0.0
        self._items: list[dict[str, Any]] = []
        self._t0 = 0.0

    def attach(self, engine: Engine) -> None:
        """Attach after the metrics (their per-image details are read when the evaluator's epoch completes)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._items, self._t0 = [], time.perf_counter()

    def _iteration(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [
            {k: v[i] for k, v in batch.items()} for i in range(len(batch["label"]))
        ]
        for item in items:
            label = torch.as_tensor(item["label"])
            self._items.append(
                {"name": item.get("name", ""), "image": item.get("image_path", ""), "empty_gt": not bool((label > 0).any())}
            )

    @staticmethod
    def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Means of the scored rows and the counts (see the class docstring). With several classes, ``dsc`` and
        ``jaccard`` are the means over the classes of the per-class means (``dsc_per_class``,
        ``jaccard_per_class``: each class's mean over the images where it was scored)."""
        dscs = np.array([r.get("dsc_per_class", [r["dsc"]]) for r in rows], dtype=np.float64).reshape(len(rows), -1)
        jacs = np.array([r.get("jaccard_per_class", [r["jaccard"]]) for r in rows], dtype=np.float64).reshape(len(rows), -1)

        def class_means(a: np.ndarray) -> list[float | None]:
            return [_finite_or_none(col[~np.isnan(col)].mean()) if (~np.isnan(col)).any() else None for col in a.T]

        dsc_pc, jac_pc = class_means(dscs), class_means(jacs)

        def mean_of(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return _finite_or_none(float(np.mean(known))) if known else None

        return {
            "dsc": mean_of(dsc_pc),
            "jaccard": mean_of(jac_pc),
            "dsc_per_class": dsc_pc,
            "jaccard_per_class": jac_pc,
            "n_test": len(rows),
            "n_scored": int((~np.isnan(dscs)).any(axis=1).sum()) if rows else 0,
            "n_empty_gt": int(sum(r["empty_gt"] for r in rows)),
        }

    def _completed(self, engine: Engine) -> None:
        details = engine.state.metric_details
        # several processes: MONAI's metrics gather every rank's scores in rank order; gather the items alike
        self._items = [item for part in all_gather_objects(self._items) for item in part]
        n = len(self._items)
        dsc = torch.as_tensor(details[self.dice_name]).reshape(n, -1).float().cpu().numpy().astype(np.float64)
        jac = torch.as_tensor(details[self.iou_name]).reshape(n, -1).float().cpu().numpy().astype(np.float64)

        def image_mean(v: np.ndarray) -> float:
            return float(v[~np.isnan(v)].mean()) if (~np.isnan(v)).any() else float("nan")

        rows = []
        for item, d, j in zip(self._items, dsc, jac):
            row = {"name": item["name"], "image": item["image"], "dsc": image_mean(d), "jaccard": image_mean(j),
                   "empty_gt": item["empty_gt"]}
            if dsc.shape[1] > 1:
                row["dsc_per_class"], row["jaccard_per_class"] = d.tolist(), j.tolist()
            rows.append(row)
        summary = self.summarize(rows)
        for key in ("dsc", "jaccard"):  # non-finite -> None: the results are written as strict JSON
            summary[key] = None if summary[key] is None else _finite_or_none(summary[key])
        epoch = int(engine.state.epoch)
        self.evaluations[epoch] = (summary, rows)
        self.seconds += time.perf_counter() - self._t0
        if not is_main_process():
            return
        if self.summary_writer is not None:
            for tag, key in ((self.dice_name, "dsc"), (self.iou_name, "jaccard")):
                if summary[key] is not None:
                    self.summary_writer.add_scalar(tag, summary[key], epoch)
        fmt: Callable[[Any], str] = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        per_class = ""
        if len(summary["dsc_per_class"]) > 1:
            per_class = " (per class " + ", ".join(fmt(v) for v in summary["dsc_per_class"]) + ")"
        self.logger.info(
            "epoch %d/%s: clean test DSC %s%s, Jaccard %s (%d/%d test images scored)",
            epoch,
            self.max_epochs if self.max_epochs is not None else "?",
            fmt(summary["dsc"]),
            per_class,
            fmt(summary["jaccard"]),
            summary["n_scored"],
            summary["n_test"],
        )

    def curves(self) -> tuple[dict[str, float | None], dict[str, float | None]]:
        """``(dsc_curve, jaccard_curve)``: ``{"epoch": value}`` over the validated epochs, in epoch order."""
        ordered = sorted(self.evaluations.items())
        return ({str(e): s["dsc"] for e, (s, _) in ordered}, {str(e): s["jaccard"] for e, (s, _) in ordered})
