"""The notebooks: their recipes (`recipes`, RunSpecs with the notebooks' published figures) and
`bench reproduce` (`reproduce`).

Layer: above engines, below sweeps and measure (which take notebook 000's recipe as their speed
workload); it may import engines and everything below, never sweeps, measure, report or the CLI.
"""
