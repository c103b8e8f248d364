"""Running the protocol: settings read at the door, pretraining, the datasets as the protocol uses them,
the experiment loop over rows, the run directory and the checks that run before anything trains.

Contract: the only package below the entry points that sees the config system; everything it builds is
handed down as plain Python objects.
"""
