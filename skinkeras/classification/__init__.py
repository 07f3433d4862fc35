"""The classification stage (paper 5-6): TDBN variants and Table 2 baselines, trained and evaluated."""
