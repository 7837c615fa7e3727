"""Several units of an experiment trained together, in one Trainer (`cv.stack`).

`policy` decides whether a run stacks its folds; `run` sets them up, fits them together
and tests each; `module` is the LightningModule of the fit; `records` keeps each fold's
records as a fold alone keeps them.
"""
