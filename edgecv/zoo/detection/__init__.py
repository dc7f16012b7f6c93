"""Detection building blocks: boxes, anchors and the training settings a detector declares (training code: edgecv.train.detection)."""
