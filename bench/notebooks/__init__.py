"""The notebooks: their recipes (`recipes`, RunSpecs with the notebooks' published figures) and
`bench reproduce` (`reproduce`).

Layer: above engines; it may import engines and everything below, never sweeps, measure,
report or the CLI.
"""
