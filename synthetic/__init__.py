"""Synthetic landing zone: pt_BR customers, their contacts on every channel, and the truth.

`synthetic.generate.generate_landing_zone` is the entry point; the modules here hold
the catalogues (personas, places, products, agents), the Portuguese texts, the
people, the messiness of real logs and the per-source writers.
"""
