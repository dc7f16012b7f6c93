"""Detection building blocks: boxes, anchors, losses, target assignment, augmentation, the trainer task."""
