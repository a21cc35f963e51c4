"""cellseg core: engine, post-processing, data, COCO I/O and editing model. No Qt below here."""
