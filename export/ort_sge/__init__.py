"""SGE + residual add + ReLU as one ONNX Runtime CPU op, in one place: the graph rewrite that emits the op
(graph.py) and the export's stage that writes and checks the fused graph (export_stage.py), ORT's blocked NCHWc
layout kept across it (nchwc.py), the sessions that load its library (session.py),
and the C++ kernel with its install-time build and the loader's checks (kernels/). The OpenVINO form of the same op
is export/ov_sge/."""
