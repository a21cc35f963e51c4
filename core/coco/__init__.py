"""COCO instance-segmentation files: one module per concern.

* :mod:`.dataset` -- the records (images, categories, a loaded dataset) and reading and
  validating a ground-truth file into one :class:`Instances` per image;
* :mod:`.writer` -- writing ground truth that Detectron2, pycocotools and CVAT load (RLE or
  traced polygons), deterministically;
* :mod:`.results` -- detections ("results") files, for ``cellseg eval`` and imports;
* :mod:`.research_folder` -- the research project's sample folders (``image.tif`` +
  ``classK.tif`` label images) <-> COCO, losslessly;
* :mod:`.checks` -- field checks for untrusted files, and masks decoded without dense buffers.
"""
