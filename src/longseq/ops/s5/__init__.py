"""S5's stateless SSM: :func:`s5_ssm` (one autograd function) and its reference :func:`s5_ssm_naive`."""

from .fused import _S5SSM, input_matrix, readout_matrix, rows_view, s5_ssm, ssm_input
from .naive import s5_ssm_naive

TWINS = {_S5SSM: (s5_ssm, s5_ssm_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["s5_ssm", "s5_ssm_naive", "ssm_input", "input_matrix", "readout_matrix", "rows_view", "TWINS"]
