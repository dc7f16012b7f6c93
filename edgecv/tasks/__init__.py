"""Per-task pre/post-processing shared by validate, bench and stream (numpy + OpenCV, no torch)."""
