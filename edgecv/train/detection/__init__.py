"""Detection training: box-preserving augmentation, the YOLO losses with their target assignment, and the trainer
task (:class:`~edgecv.train.detection.task.DetectTask`). The detectors themselves are in ``edgecv.zoo``."""
