"""INT8: calibrated Q/DQ graphs made with ONNX Runtime's quantisation tooling, with SGE's normalisation kept float.

calibration.py (photographs → inputs), sge_regions.py (where SGE is; the float check), quantize.py (ORT calibration
and quantize_static), parity.py (INT8 gates), stage.py (the export pipeline's INT8 stage), roles.py (file names,
manifest roles and the runners' ``precision``; torch- and ONNX-free, what the runtime imports).
"""
