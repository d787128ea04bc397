"""Fused SGE + residual add + ReLU as an OpenVINO custom operation (sge_ov_op.cc), its build and its graph."""
