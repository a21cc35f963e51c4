"""cellseg.trainer: Detectron2-compatible training and fine-tuning (``cellseg train``).

The losses are the engine's (``cellseg.core.engine.losses``, computed by the heads in training
mode); this package feeds the model and steps the optimiser. It imports ``cellseg.core``, never
the other way round.

Modules: ``augment`` and ``data`` (COCO or research-folder data, config augmentations, sharded
sampling), ``solver`` (SGD, warm-up multi-step / cosine LR, gradient clipping), ``checkpointing``
(run-folder checkpoints, non-strict initialisation), ``evaluation`` (COCO AP), ``loop`` (the
Trainer: one iteration per ``run_step``, hooks around it), ``hooks`` (stop requests, NaN/inf
check, metrics, checkpoints, evaluation, plots), ``worker`` (one rank's run: builds the Trainer
and its hooks), ``distributed`` (multi-process launch), ``setup`` (run preparation and the cell
defaults), ``estimate`` (timed iterations before a run), ``project_data`` (a project's reviewed images as train/val COCO files), ``plots`` (PNG
curves), ``loss_check`` (``--loss-check``: the losses of a fixed first batch, for comparison with
Detectron2) and ``cli``.
"""
