"""Serving a bundle beyond one box: an Open Inference Protocol server (``edgecv serve``, on MLServer) and model
repositories for Triton / OpenVINO Model Server (``edgecv repo``).

Runtime tier: numpy and the engines only; the server framework (``mlserver``) and the protobufs
(``tritonclient``) are imported lazily, each from its own module, never both in one process (both register the
``inference.*`` protobuf package and clash).
"""
