"""The fused SGE kernel's speed study behind scripts/kernel_speed.py: the graphs and libraries timed (graphs), the
run itself (study), the ratios (ratios), the op's profile (profile) and the report's text (text)."""
