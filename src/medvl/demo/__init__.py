"""`medvl demo`: a small real corpus from medical images shipped inside pip packages."""
