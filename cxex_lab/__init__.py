"""cxex-lab: a research workbench for the causal chain from employee experience (EX)
to customer experience (CX).

Modules
-------
simulate  ground-truth structural causal model (the test oracle)
io        load and save studies (CSV, Parquet, DuckDB)
schema    the data contract, validation and the data-quality ledger
"""

from cxex_lab.study import TABLES, Study

__version__ = "0.1.0"
__all__ = ["Study", "TABLES", "__version__"]
