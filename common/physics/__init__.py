"""Physical models, one module per topic, as pure vectorised NumPy functions.

Every function takes and returns arrays (or scalars) in the units named in its parameters;
none of them holds state. They are shared by every solver, the evaluation of schedules and
the scenario builders.
"""
