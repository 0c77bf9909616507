"""Quality review of a finished build (``medvl review``): a judge model scores random samples of every
source dataset (:mod:`medvl.review.judge`, :mod:`medvl.review.report`), and a local page browses, draws and
grades samples by hand (:mod:`medvl.review.server`, :mod:`medvl.review.store`)."""
