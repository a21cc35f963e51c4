"""cellseg.trainer: Detectron2-compatible training and fine-tuning (``cellseg train``).

Modules: ``losses`` (RPN / Fast R-CNN / cascade / mask / PointRend losses and sampling, called
by the engine's training hooks), ``augment`` and ``data`` (COCO or research-folder data,
config augmentations, sharded sampling), ``solver`` (SGD, warm-up multi-step / cosine LR,
gradient clipping), ``checkpointing`` (run-folder checkpoints, non-strict initialisation),
``evaluation`` (COCO AP), ``loop`` (the training loop), ``distributed`` (multi-process launch),
``setup`` (run preparation and the cell defaults), ``estimate`` (timed iterations before a
run), ``project_data`` (a project's reviewed images as train/val COCO files), ``plots`` (PNG
curves) and ``cli``.
"""
